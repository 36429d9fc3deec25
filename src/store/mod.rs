//! Persistence with sea-orm. One transaction per command; the customer's row lock serialises the
//! commands of one customer across every process sharing the database.

pub mod audit;
mod book;
pub mod keys;
pub mod ledger;
pub mod reports;
pub mod revenue;
mod rows;
pub mod stripe;

pub use book::{Command, Executed, Idempotency, Standing};

use crate::domain::catalog::Catalog;
use crate::error::{Error, Result};
use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Breakage, platform shares and the accounting currency, for the revenue postings.
    catalog: Arc<Catalog>,
}

/// Connections per process. SQLite has one writer at a time whatever the pool; PostgreSQL
/// serialises per customer row, so a few connections carry many customers.
const SQLITE_POOL_SIZE: u32 = 8;
const POSTGRES_POOL_SIZE: u32 = 16;

impl Store {
    pub async fn connect(url: &str) -> Result<Store> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .sqlx_logging(false)
            .acquire_timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(10));
        if url.starts_with("sqlite:") {
            options
                .max_connections(SQLITE_POOL_SIZE)
                .map_sqlx_sqlite_opts(|o| {
                    use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(10))
                        .foreign_keys(true)
                });
        } else {
            options.max_connections(POSTGRES_POOL_SIZE);
        }
        let db = Database::connect(options).await?;
        Ok(Store {
            db,
            catalog: Arc::new(Catalog::default()),
        })
    }

    /// The catalog whose breakage methods and platform shares the revenue postings follow.
    pub fn with_catalog(mut self, catalog: Arc<Catalog>) -> Store {
        self.catalog = catalog;
        self
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub async fn migrate(&self) -> Result<()> {
        Migrator::up(&self.db, None).await?;
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
}
