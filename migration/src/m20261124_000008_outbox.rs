sql_migration! {
    up: UP,
    down: DOWN,
}

/// The transactional outbox: what creditbook must tell the outside world, written in the same
/// transaction as the change that causes it, one row per message and destination, delivered by a
/// worker. Times are wall-clock Unix microseconds (deliveries are real, whatever a test clock
/// says). And on each customer, which balance alerts have fired since the last recovery
/// (`alert_state`: 1 low, 2 depleted) and how many recoveries there have been (`alert_arming`).
const UP: [&str; 5] = [
    "CREATE TABLE outbox (
        id TEXT PRIMARY KEY,
        message_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        destination TEXT NOT NULL,
        event_type TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        body TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        created_at BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        last_attempt_at BIGINT NULL,
        last_error TEXT NULL,
        delivered_at BIGINT NULL,
        UNIQUE (message_id, destination)
    )",
    "CREATE INDEX outbox_due ON outbox (status, next_attempt_at)",
    "CREATE INDEX outbox_customer ON outbox (customer_id, created_at)",
    "ALTER TABLE customers ADD COLUMN alert_state INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE customers ADD COLUMN alert_arming BIGINT NOT NULL DEFAULT 0",
];

const DOWN: [&str; 5] = [
    "ALTER TABLE customers DROP COLUMN alert_arming",
    "ALTER TABLE customers DROP COLUMN alert_state",
    "DROP INDEX outbox_customer",
    "DROP INDEX outbox_due",
    "DROP TABLE outbox",
];
