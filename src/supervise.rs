//! Background workers run supervised. Each worker is a loop of rounds (a batch of the gate's
//! runner, a group commit of Stripe events, a run of the time-driven jobs, a pass of the outbox);
//! a panic in a round is logged (once, here) and counted, what the round held is dropped (its
//! transaction rolls back, its callers are answered), and the worker starts its next round.
//! `/healthz` answers 503 naming any worker that keeps failing.

use futures_util::FutureExt;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The workers by name, as `/healthz` and `/metrics` report them.
pub const BATCH_RUNNER: &str = "batch_runner";
pub const STRIPE_BATCHER: &str = "stripe_batcher";
pub const JOBS: &str = "jobs";
pub const OUTBOX: &str = "outbox";

/// A worker that panicked this many times within `FAILING_WINDOW` is reported as failing.
pub const FAILING_PANICS: usize = 3;
pub const FAILING_WINDOW: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Worker {
    /// Panics since the process started.
    panics: u64,
    /// When the panics of the last `FAILING_WINDOW` happened (at most `FAILING_PANICS` kept).
    recent: VecDeque<Instant>,
}

/// The health of the process's workers.
#[derive(Default)]
pub struct Workers {
    workers: Mutex<BTreeMap<&'static str, Worker>>,
    /// Panics asked for by a test (`inject_panic`), taken by the worker's next round.
    injected: Mutex<BTreeSet<&'static str>>,
}

impl Workers {
    /// Records a panic of `name` (already logged by the caller or here).
    pub fn panicked(&self, name: &'static str, at: Instant) {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let worker = workers.entry(name).or_default();
        worker.panics += 1;
        worker.recent.push_back(at);
        while worker.recent.len() > FAILING_PANICS {
            worker.recent.pop_front();
        }
    }

    /// Workers that panicked `FAILING_PANICS` times within `FAILING_WINDOW` before `now`.
    pub fn failing(&self, now: Instant) -> Vec<&'static str> {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        workers
            .iter()
            .filter(|(_, w)| {
                w.recent.len() >= FAILING_PANICS
                    && w.recent.front().is_some_and(|first| {
                        now.saturating_duration_since(*first) <= FAILING_WINDOW
                    })
            })
            .map(|(name, _)| *name)
            .collect()
    }

    /// Panics per worker since the process started, for `/metrics`.
    pub fn panics(&self) -> Vec<(&'static str, u64)> {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        [BATCH_RUNNER, STRIPE_BATCHER, JOBS, OUTBOX]
            .into_iter()
            .map(|name| (name, workers.get(name).map_or(0, |w| w.panics)))
            .collect()
    }

    /// Makes `name` panic at the start of its next round: for tests of the supervision.
    #[doc(hidden)]
    pub fn inject_panic(&self, name: &'static str) {
        self.injected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name);
    }

    /// Called by a worker at the start of each round: panics when a test asked for it.
    pub fn checkpoint(&self, name: &'static str) {
        let asked = self
            .injected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if asked {
            panic!("a panic injected into {name}");
        }
    }

    /// Runs one round of a loop-shaped worker, catching a panic: `None` when it panicked.
    pub async fn round<T>(&self, name: &'static str, work: impl Future<Output = T>) -> Option<T> {
        let work = async {
            self.checkpoint(name);
            work.await
        };
        match AssertUnwindSafe(work).catch_unwind().await {
            Ok(value) => Some(value),
            Err(panic) => {
                tracing::error!(
                    worker = name,
                    panic = panic_text(&*panic),
                    "a worker panicked; it goes on with its next round"
                );
                self.panicked(name, Instant::now());
                None
            }
        }
    }
}

/// What a panic said, when it said it as text.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not text)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_failing_after_repeated_panics_within_the_window() {
        let workers = Workers::default();
        let start = Instant::now();
        workers.panicked(JOBS, start);
        workers.panicked(JOBS, start + Duration::from_secs(1));
        assert!(workers.failing(start + Duration::from_secs(2)).is_empty());
        workers.panicked(JOBS, start + Duration::from_secs(2));
        assert_eq!(workers.failing(start + Duration::from_secs(3)), vec![JOBS]);
        // Long after, the same panics no longer count.
        assert!(
            workers
                .failing(start + FAILING_WINDOW + Duration::from_secs(10))
                .is_empty()
        );
        assert_eq!(workers.panics()[2], (JOBS, 3));
    }

    #[tokio::test]
    async fn a_round_that_panics_is_caught() {
        let workers = Workers::default();
        workers.inject_panic(BATCH_RUNNER);
        assert_eq!(workers.round(BATCH_RUNNER, async { 1 }).await, None);
        assert_eq!(workers.round(BATCH_RUNNER, async { 2 }).await, Some(2));
        assert_eq!(workers.panics()[0], (BATCH_RUNNER, 1));
    }
}
