use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Written once for both engines; `{serial}` and `{bool}` differ between them.
const SCHEMA: &str = r#"
CREATE TABLE customers (
    id TEXT PRIMARY KEY,
    plan_id TEXT NULL,
    frozen {bool} NOT NULL DEFAULT FALSE,
    overdraft BIGINT NOT NULL DEFAULT 0 CHECK (overdraft >= 0),
    overdraft_held BIGINT NOT NULL DEFAULT 0 CHECK (overdraft_held >= 0),
    version BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE TABLE grants (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    kind TEXT NOT NULL,
    credits BIGINT NOT NULL CHECK (credits > 0),
    remaining BIGINT NOT NULL CHECK (remaining >= 0 AND remaining <= credits),
    held BIGINT NOT NULL CHECK (held >= 0 AND held <= remaining),
    price BIGINT NULL CHECK (price >= 0),
    currency TEXT NULL,
    expires_at BIGINT NULL,
    expired {bool} NOT NULL DEFAULT FALSE,
    priority INTEGER NOT NULL,
    plan_id TEXT NULL,
    pack_id TEXT NULL,
    source_type TEXT NOT NULL,
    source_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX grants_customer_open ON grants (customer_id, expired);
CREATE INDEX grants_expiry ON grants (expired, expires_at);
CREATE TABLE holds (
    id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    action TEXT NOT NULL,
    quantity TEXT NOT NULL,
    credits BIGINT NOT NULL CHECK (credits > 0),
    overdraft BIGINT NOT NULL CHECK (overdraft >= 0 AND overdraft <= credits),
    status TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    captured BIGINT NULL CHECK (captured >= 0),
    created_at BIGINT NOT NULL,
    resolved_at BIGINT NULL
);
CREATE INDEX holds_customer_status ON holds (customer_id, status);
CREATE INDEX holds_due ON holds (status, expires_at);
CREATE TABLE ledger_entries (
    id {serial},
    operation_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    kind TEXT NOT NULL,
    grant_id TEXT NULL REFERENCES grants (id),
    hold_id TEXT NULL REFERENCES holds (id),
    action TEXT NULL,
    quantity TEXT NULL,
    credits BIGINT NOT NULL,
    held BIGINT NOT NULL,
    overage BIGINT NOT NULL CHECK (overage >= 0),
    effective_at BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL,
    UNIQUE (operation_id, position)
);
CREATE INDEX ledger_customer ON ledger_entries (customer_id, id);
CREATE INDEX ledger_hold ON ledger_entries (hold_id);
CREATE TABLE idempotency_records (
    customer_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (customer_id, idempotency_key)
);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
"#;

const TABLES: [&str; 6] = [
    "api_keys",
    "idempotency_records",
    "ledger_entries",
    "holds",
    "grants",
    "customers",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let (serial, boolean) = match db.get_database_backend() {
            DbBackend::Postgres => ("BIGSERIAL PRIMARY KEY", "BOOLEAN"),
            _ => ("INTEGER PRIMARY KEY AUTOINCREMENT", "BOOLEAN"),
        };
        let sql = SCHEMA
            .replace("{serial}", serial)
            .replace("{bool}", boolean);
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
