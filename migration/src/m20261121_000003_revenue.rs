use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Revenue recognition: one lot per paid grant (its price and what has been posted from it), the
/// overage accrued per customer, the journal (one row per line, append-only) and the closed
/// periods. Money is scale 6 like every amount; `expected_unused` is a fraction of scale 6.
const SCHEMA: &str = r#"
CREATE TABLE revenue_lots (
    grant_id TEXT PRIMARY KEY REFERENCES grants (id),
    customer_id TEXT NOT NULL,
    catalog_item TEXT NOT NULL,
    currency TEXT NOT NULL,
    price BIGINT NOT NULL CHECK (price >= 0),
    credits BIGINT NOT NULL CHECK (credits > 0),
    breakage TEXT NOT NULL,
    expected_unused BIGINT NULL,
    consumed BIGINT NOT NULL,
    lapsed BIGINT NOT NULL,
    removed BIGINT NOT NULL,
    usage_recognized BIGINT NOT NULL,
    breakage_recognized BIGINT NOT NULL,
    refunded BIGINT NOT NULL,
    contra BIGINT NOT NULL,
    transferred BIGINT NOT NULL,
    platform_amount BIGINT NULL,
    platform_first_day TEXT NULL,
    platform_days INTEGER NULL,
    platform_days_done INTEGER NULL,
    platform_recognized BIGINT NULL,
    platform_refunded BIGINT NULL,
    platform_contra BIGINT NULL,
    platform_next_at BIGINT NULL,
    booked_period TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    CHECK (price - usage_recognized - breakage_recognized - refunded - transferred >= 0)
);
CREATE INDEX revenue_lots_platform_due ON revenue_lots (platform_next_at);
CREATE INDEX revenue_lots_customer ON revenue_lots (customer_id);
CREATE INDEX revenue_lots_item ON revenue_lots (catalog_item);
CREATE TABLE overage_accruals (
    customer_id TEXT NOT NULL,
    currency TEXT NOT NULL,
    exact BIGINT NOT NULL,
    posted BIGINT NOT NULL,
    PRIMARY KEY (customer_id, currency)
);
CREATE TABLE journal_lines (
    id {serial},
    entry_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    kind TEXT NOT NULL,
    effective_at BIGINT NOT NULL,
    booked_at BIGINT NOT NULL,
    period TEXT NOT NULL,
    adjustment {bool} NOT NULL,
    account TEXT NOT NULL,
    debit BIGINT NOT NULL CHECK (debit >= 0),
    credit BIGINT NOT NULL CHECK (credit >= 0),
    currency TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    grant_id TEXT NULL,
    source TEXT NULL,
    event TEXT NULL,
    memo TEXT NOT NULL,
    posted_at BIGINT NOT NULL,
    UNIQUE (entry_id, line),
    CHECK (debit = 0 OR credit = 0)
);
CREATE INDEX journal_lines_booked ON journal_lines (booked_at, entry_id, line);
CREATE INDEX journal_lines_period ON journal_lines (period, currency, account);
CREATE INDEX journal_lines_grant ON journal_lines (grant_id, id);
CREATE TABLE revenue_periods (
    period TEXT PRIMARY KEY,
    closed_at BIGINT NOT NULL
)
"#;

const TABLES: [&str; 4] = [
    "revenue_periods",
    "journal_lines",
    "overage_accruals",
    "revenue_lots",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let serial = match db.get_database_backend() {
            DbBackend::Postgres => "BIGSERIAL PRIMARY KEY",
            _ => "INTEGER PRIMARY KEY AUTOINCREMENT",
        };
        let sql = SCHEMA
            .replace("{serial}", serial)
            .replace("{bool}", "BOOLEAN");
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in TABLES {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}
