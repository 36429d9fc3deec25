//! Persistence with sea-orm. One transaction per command; the customer's row lock serialises the
//! commands of one customer across every process sharing the database.

pub mod audit;
pub mod autotopup;
mod book;
mod cache;
pub mod controls;
pub(crate) mod engine;
pub mod keys;
pub mod ledger;
mod locks;
pub mod operators;
pub mod outbox;
pub mod overage;
pub mod reads;
pub mod reports;
pub mod retention;
pub mod revenue;
pub(crate) mod rows;
pub mod runner;
pub mod sessions;
pub mod stripe;
pub(crate) mod unit;

pub use crate::domain::command::{Answer, Command};
pub use crate::domain::gate::Standing;
pub use book::{Answers, Envelope, Executed, Idempotency};
pub use cache::{DEFAULT_CHECK_STALENESS_MS, MAX_CHECK_STALENESS_MS};
pub use engine::RunnerStats;
pub use runner::BatchSettings;

use crate::domain::catalog::Catalog;
use crate::domain::gate::Policy;
use crate::error::{Error, Result};
use engine::Engine;
use migration::{Migrator, MigratorTrait};
use runner::Runner;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Breakage, platform shares and the accounting currency, for the revenue postings.
    catalog: Arc<Catalog>,
    /// The gate's rules from configuration, for the commands' decisions.
    policy: Policy,
    settings: BatchSettings,
    /// Started on first use, with the catalog in force then.
    runner: Arc<tokio::sync::OnceCell<Runner>>,
    writer: Arc<tokio::sync::Mutex<()>>,
    stats: Arc<RunnerStats>,
    keys: Arc<keys::KeyCache>,
    /// The books committed last (`store::cache`): made again with the catalog or the batching.
    books: Arc<cache::BookCache>,
    /// The customer of each hold this process made, for captures and voids (`store::cache`).
    hold_owners: Arc<cache::HoldOwners>,
    /// The health of the background workers (the runner's, the Stripe batcher's, the server's).
    workers: Arc<crate::supervise::Workers>,
    /// What may be pruned, and when (`[retention]`).
    retention: retention::RetentionSettings,
}

/// Connections per process. SQLite has one writer at a time whatever the pool; PostgreSQL
/// serialises per customer row, so a few connections carry many customers.
const SQLITE_POOL_SIZE: u32 = 8;
const POSTGRES_POOL_SIZE: u32 = 16;
/// SQLite page cache per connection, in KiB (SQLite's negative `cache_size`).
const SQLITE_CACHE_KIB: i64 = -32_768;
/// Pages of write-ahead log past which a committing writer checkpoints itself; below it the
/// runner's background checkpoint keeps the log short, off the commit path.
const SQLITE_CHECKPOINT_PAGES: u32 = 16_384;
/// SQLite memory-mapped reads, in bytes.
const SQLITE_MMAP_BYTES: i64 = 256 * 1024 * 1024;

/// The connection pool (`[server] max_connections`, `acquire_timeout_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Connections of this process; none: 8 on SQLite, 16 on PostgreSQL.
    pub max_connections: Option<u32>,
    /// Longest a request waits for a free connection (or to connect) before failing with 503.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: None,
            acquire_timeout: Duration::from_secs(DEFAULT_ACQUIRE_TIMEOUT_SECONDS),
        }
    }
}

pub const DEFAULT_ACQUIRE_TIMEOUT_SECONDS: u64 = 10;

/// Prepared statements kept per connection. Multi-row statements come in at most
/// `rows::ONE_STATEMENT_ROWS` lengths per table plus a few powers of two
/// (`rows::statement_chunks`), `IN` lists in powers of two (`rows::in_list`): room for all of
/// them, so a batch's statements are prepared once per connection, not once per batch.
const STATEMENT_CACHE_CAPACITY: usize = 1_024;

impl Store {
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, PoolSettings::default()).await
    }

    pub async fn connect_with(url: &str, pool: PoolSettings) -> Result<Store> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .acquire_timeout(pool.acquire_timeout)
            .connect_timeout(pool.acquire_timeout);
        if url.starts_with("sqlite:") {
            options
                .max_connections(pool.max_connections.unwrap_or(SQLITE_POOL_SIZE))
                .map_sqlx_sqlite_opts(|o| {
                    use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Full)
                        .busy_timeout(Duration::from_secs(10))
                        .foreign_keys(true)
                        // Pages kept per connection (KiB when negative): a batch of commands
                        // spread over many customers touches many pages, and the default 2 MiB
                        // makes each a read from the OS.
                        .pragma("cache_size", SQLITE_CACHE_KIB.to_string())
                        // Reads of the database file through memory maps, without copies.
                        .pragma("mmap_size", SQLITE_MMAP_BYTES.to_string())
                        // The runner checkpoints in the background (`store::runner`); a commit
                        // checkpoints itself only past this many pages of log.
                        .pragma("wal_autocheckpoint", SQLITE_CHECKPOINT_PAGES.to_string())
                        .statement_cache_capacity(STATEMENT_CACHE_CAPACITY)
                });
        } else {
            options
                .max_connections(pool.max_connections.unwrap_or(POSTGRES_POOL_SIZE))
                .map_sqlx_postgres_opts(|o| o.statement_cache_capacity(STATEMENT_CACHE_CAPACITY));
        }
        let db = Database::connect(options).await?;
        Ok(Store {
            db,
            catalog: Arc::new(Catalog::default()),
            policy: Policy::default(),
            settings: BatchSettings::default(),
            runner: Arc::default(),
            writer: Arc::default(),
            stats: Arc::default(),
            keys: Arc::default(),
            books: Arc::new(cache::BookCache::new(
                BatchSettings::default().check_staleness,
                cache::MAX_CACHED_BOOKS,
            )),
            hold_owners: Arc::new(cache::HoldOwners::new(cache::MAX_REMEMBERED_HOLDS)),
            workers: Arc::default(),
            retention: retention::RetentionSettings::default(),
        })
    }

    /// What `prune` lets go (`[retention]`).
    pub fn with_retention(mut self, retention: retention::RetentionSettings) -> Store {
        self.retention = retention;
        self
    }

    /// The gate's rules from configuration (`[stripe] past_due_grace_seconds`).
    pub fn with_policy(mut self, policy: Policy) -> Store {
        self.policy = policy;
        self
    }

    /// The catalog whose breakage methods and platform shares the revenue postings follow.
    pub fn with_catalog(mut self, catalog: Arc<Catalog>) -> Store {
        self.catalog = catalog;
        self.runner = Arc::default();
        self.books = Arc::new(cache::BookCache::new(
            self.settings.check_staleness,
            cache::MAX_CACHED_BOOKS,
        ));
        self
    }

    /// How commands are batched (before the first command runs).
    pub fn with_batching(mut self, settings: BatchSettings) -> Store {
        self.settings = settings;
        self.runner = Arc::default();
        self.books = Arc::new(cache::BookCache::new(
            settings.check_staleness,
            cache::MAX_CACHED_BOOKS,
        ));
        self
    }

    /// How long a verified API key is trusted from memory (`[server] key_cache_seconds`).
    pub fn with_key_cache(mut self, ttl: Duration) -> Store {
        self.keys = Arc::new(keys::KeyCache::new(ttl));
        self
    }

    pub fn runner_stats(&self) -> &RunnerStats {
        &self.stats
    }

    fn engine(&self) -> Engine {
        Engine {
            db: self.db.clone(),
            catalog: self.catalog.clone(),
            policy: self.policy,
            writer: self.writer.clone(),
            stats: self.stats.clone(),
            workers: self.workers.clone(),
            books: self.books.clone(),
        }
    }

    /// The health of the background workers.
    pub fn workers(&self) -> &Arc<crate::supervise::Workers> {
        &self.workers
    }

    pub(crate) async fn runner(&self) -> &Runner {
        self.runner
            .get_or_init(|| async { Runner::start(self.engine(), self.settings) })
            .await
    }

    /// Runs a command on its customer's book under its row lock, in the next batch, and returns
    /// its answer once the batch has committed. When it is refused nothing of it is written.
    pub async fn execute(&self, envelope: Envelope) -> Result<Executed<Answer>> {
        let answer = self.runner().await.submit(envelope).await;
        let executed = answer.await.map_err(|_| Error::Unavailable)?;
        if let Ok(Executed {
            value: Answer::Held(held),
            ..
        }) = &executed
        {
            self.hold_owners.remember(&held.id, held.customer.as_str());
        }
        executed
    }

    /// The customer of a hold, if the hold exists: remembered when this process made it,
    /// otherwise read.
    pub async fn hold_customer(&self, hold_id: &str) -> Result<Option<String>> {
        if let Some(customer) = self.hold_owners.owner(hold_id) {
            return Ok(Some(customer));
        }
        Ok(self
            .hold_status(hold_id)
            .await?
            .map(|(customer, _)| customer))
    }

    /// Queues every command at once (they share batches) and returns their answers in order.
    pub async fn execute_all(&self, envelopes: Vec<Envelope>) -> Answers {
        let runner = self.runner().await;
        let mut waiting = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            waiting.push(runner.submit(envelope).await);
        }
        let mut answers = Vec::with_capacity(waiting.len());
        for answer in waiting {
            answers.push(answer.await.unwrap_or(Err(Error::Unavailable)));
        }
        answers
    }

    /// The gate's rules from configuration this store decides by.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Applies pending migrations. With none pending it changes nothing, not even the migrations
    /// table, so that instances can run as a role that may not change tables.
    pub async fn migrate(&self) -> Result<()> {
        let pending = Migrator::get_pending_migrations_read_only(&self.db).await?;
        if pending.is_empty() {
            return Ok(());
        }
        Migrator::up(&self.db, None).await.map_err(|e| {
            Error::Internal(format!(
                "{} pending migration(s) could not be applied ({e}); if this database role may \
                 not change tables, run `creditbook migrate` with the schema owner's database URL",
                pending.len()
            ))
        })?;
        Ok(())
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    pub async fn ping(&self) -> Result<()> {
        self.db.ping().await.map_err(Error::from)
    }

    /// An online, consistent copy of a SQLite database at `out` (`VACUUM INTO`: one read
    /// snapshot, so writers go on while it copies), then checked with `PRAGMA integrity_check`.
    /// `out` must not exist. Returns the copy's size in bytes.
    pub async fn backup(&self, out: &std::path::Path) -> std::result::Result<u64, String> {
        use sea_orm::{ConnectionTrait, Statement};
        if self.backend() != DbBackend::Sqlite {
            return Err(
                "backup copies SQLite databases; back PostgreSQL up with pg_dump (see the README)"
                    .into(),
            );
        }
        if out.exists() {
            return Err(format!("{} exists; name a new file", out.display()));
        }
        let path = out
            .to_str()
            .ok_or_else(|| format!("{}: the path is not UTF-8", out.display()))?;
        self.db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "VACUUM INTO ?",
                [path.into()],
            ))
            .await
            .map_err(|e| format!("copying to {path}: {e}"))?;
        let copy = Store::connect(&format!("sqlite://{path}"))
            .await
            .map_err(|e| format!("opening the copy {path}: {e}"))?;
        let check = copy
            .db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA integrity_check",
            ))
            .await
            .map_err(|e| format!("checking the copy {path}: {e}"))?
            .and_then(|row| row.try_get_by_index::<String>(0).ok())
            .unwrap_or_default();
        copy.db.close_by_ref().await.map_err(|e| e.to_string())?;
        if check != "ok" {
            return Err(format!(
                "the copy {path} fails its integrity check: {check}"
            ));
        }
        std::fs::metadata(out)
            .map(|m| m.len())
            .map_err(|e| format!("{path}: {e}"))
    }
}

/// A new grant's id: time-ordered, unique across instances.
pub fn new_grant_id() -> String {
    format!("grant_{}", uuid::Uuid::now_v7().simple())
}
