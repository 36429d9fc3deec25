sql_migration! {
    up: UP,
    down: DOWN,
}

/// Customer controls. On each customer, its spend limits with what was spent in each limit's
/// current window (`limits`, JSON), and the feature overrides in force (`overrides`, JSON): both
/// read with the customer's row and written under its lock. `customer_overrides` keeps every
/// override ever made, with who made it and why (append-only).
const UP: [&str; 4] = [
    "ALTER TABLE customers ADD COLUMN limits TEXT NULL",
    "ALTER TABLE customers ADD COLUMN overrides TEXT NULL",
    "CREATE TABLE customer_overrides (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers (id),
        feature TEXT NOT NULL,
        enabled BOOLEAN NOT NULL,
        until_at BIGINT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (customer_id, idempotency_key)
    )",
    "CREATE INDEX customer_overrides_customer ON customer_overrides (customer_id, created_at)",
];

const DOWN: [&str; 4] = [
    "DROP INDEX customer_overrides_customer",
    "DROP TABLE customer_overrides",
    "ALTER TABLE customers DROP COLUMN overrides",
    "ALTER TABLE customers DROP COLUMN limits",
];
