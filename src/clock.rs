//! The clock is injected: the domain never reads it, handlers and jobs take "now" from here.

use crate::domain::Timestamp;
use std::sync::{Arc, RwLock};

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        to_stored_precision(chrono::Utc::now())
    }
}

/// Times are stored in microseconds; a clock that gives no finer time keeps responses and stored
/// values equal.
pub fn to_stored_precision(t: Timestamp) -> Timestamp {
    use chrono::DurationRound;
    t.duration_trunc(chrono::Duration::microseconds(1))
        .unwrap_or(t)
}

/// A clock that moves only when told (`--test-clock`), shared by handlers and jobs.
#[derive(Clone)]
pub struct TestClock {
    now: Arc<RwLock<Timestamp>>,
}

impl TestClock {
    pub fn starting_at(now: Timestamp) -> Self {
        TestClock {
            now: Arc::new(RwLock::new(to_stored_precision(now))),
        }
    }

    /// Moves to `to`; refuses to move backwards and returns the current time instead.
    pub fn advance_to(&self, to: Timestamp) -> Result<Timestamp, Timestamp> {
        let mut now = self.now.write().expect("test clock lock poisoned");
        if to < *now {
            return Err(*now);
        }
        *now = to_stored_precision(to);
        Ok(*now)
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.now.read().expect("test clock lock poisoned")
    }
}
