//! What every batch worker and every write needs: the database, the rules, the writer permit,
//! the books kept in memory, and the counters of what was done.

use super::book::Phases;
use crate::domain::catalog::Catalog;
use crate::domain::command::Rules;
use crate::domain::gate::Policy;
use crate::error::Result;
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode, TransactionOptions,
    TransactionTrait,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, OwnedMutexGuard};

/// What the runner has done, for `/metrics`.
#[derive(Debug, Default)]
pub struct RunnerStats {
    pub batches: AtomicU64,
    pub commands: AtomicU64,
    /// Sum of the time commands waited in the queue before their batch began, in microseconds.
    pub queue_wait_micros: AtomicU64,
    /// Batches that failed as a whole and were run again command by command.
    pub split_batches: AtomicU64,
    /// Time committed batches spent in each phase, in microseconds.
    pub load_micros: AtomicU64,
    pub decide_micros: AtomicU64,
    pub write_micros: AtomicU64,
    pub post_micros: AtomicU64,
    pub commit_micros: AtomicU64,
    /// Books decided on (by batches and by `check`), kept in memory or read from the database.
    pub books_from_memory: AtomicU64,
    pub books_from_database: AtomicU64,
    /// Kept books confirmed still current for `check` by a read of their versions: in the
    /// background, a chunk per statement, or by a check of its own.
    pub books_confirmed_in_background: AtomicU64,
    pub books_confirmed_by_check: AtomicU64,
    /// Stripe events applied in runs of checkouts decided together, and runs that failed as a
    /// whole and were applied again one event at a time.
    pub stripe_events_together: AtomicU64,
    pub stripe_runs_split: AtomicU64,
    /// Stripe events applied after their batch, having found a lock taken behind others.
    pub stripe_deferred: AtomicU64,
    /// Stripe batches committed (one transaction each), and the events they carried.
    pub stripe_batches: AtomicU64,
    pub stripe_batch_events: AtomicU64,
}

impl RunnerStats {
    pub(crate) fn record(&self, phases: &Phases, commit: Duration) {
        let add = |counter: &AtomicU64, d: Duration| {
            counter.fetch_add(
                u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        };
        add(&self.load_micros, phases.load);
        add(&self.decide_micros, phases.decide);
        add(&self.write_micros, phases.write);
        add(&self.post_micros, phases.post);
        add(&self.commit_micros, commit);
        self.books(phases.books_kept, phases.books_read);
    }

    /// Counts books decided on: `kept` from memory, `read` from the database.
    pub(crate) fn books(&self, kept: usize, read: usize) {
        self.books_from_memory
            .fetch_add(kept as u64, Ordering::Relaxed);
        self.books_from_database
            .fetch_add(read as u64, Ordering::Relaxed);
    }
}

/// What a worker needs: the database, the catalog for revenue postings, the writer permit.
#[derive(Clone)]
pub(crate) struct Engine {
    pub db: DatabaseConnection,
    pub catalog: Arc<Catalog>,
    pub policy: Policy,
    /// Held by whoever writes on SQLite: the batch worker, a Stripe event, a revenue job.
    pub writer: Arc<Mutex<()>>,
    pub stats: Arc<RunnerStats>,
    pub workers: Arc<crate::supervise::Workers>,
    /// The books committed last, kept between batches (`store::cache`).
    pub books: Arc<super::cache::BookCache>,
}

impl Engine {
    /// The rules the commands are decided by.
    pub fn rules(&self) -> Rules<'_> {
        Rules {
            catalog: &self.catalog,
            policy: self.policy,
        }
    }

    pub(crate) fn sqlite(&self) -> bool {
        self.db.get_database_backend() == DbBackend::Sqlite
    }

    /// The writer permit on SQLite (one writer per process); none needed on PostgreSQL.
    pub async fn write_permit(&self) -> Option<OwnedMutexGuard<()>> {
        if self.sqlite() {
            Some(self.writer.clone().lock_owned().await)
        } else {
            None
        }
    }

    /// A write transaction: on SQLite it takes the database's write lock at BEGIN, so it never
    /// has to upgrade a read snapshot (which fails at once instead of waiting).
    pub async fn begin(&self) -> Result<DatabaseTransaction> {
        let options = TransactionOptions {
            isolation_level: None,
            access_mode: None,
            sqlite_transaction_mode: self.sqlite().then_some(SqliteTransactionMode::Immediate),
        };
        Ok(self.db.begin_with_options(options).await?)
    }
}
