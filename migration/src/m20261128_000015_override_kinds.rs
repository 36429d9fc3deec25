sql_migration! {
    up: UP,
    down: DOWN,
}

/// Overrides of an action's price and of the overage rule beside those of a feature: the history
/// keeps every kind in one table, `override_history`, each row with the fields of its kind
/// (`kind` says which). It replaces `customer_overrides`, whose feature columns could not be
/// made nullable on SQLite; the feature overrides made so far are copied.
const UP: [&str; 5] = [
    "CREATE TABLE override_history (
        id TEXT PRIMARY KEY,
        customer_id TEXT NOT NULL REFERENCES customers (id),
        kind TEXT NOT NULL CHECK (kind IN ('feature', 'price', 'overage')),
        feature TEXT NULL,
        enabled BOOLEAN NULL,
        action TEXT NULL,
        credits_per_unit BIGINT NULL CHECK (credits_per_unit > 0),
        overage TEXT NULL,
        overage_limit BIGINT NULL CHECK (overage_limit > 0),
        overage_price TEXT NULL,
        until_at BIGINT NULL,
        reason TEXT NOT NULL,
        actor TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (customer_id, idempotency_key)
    )",
    "INSERT INTO override_history (id, customer_id, kind, feature, enabled, until_at,
        reason, actor, idempotency_key, request_hash, created_at)
     SELECT id, customer_id, 'feature', feature, enabled, until_at, reason, actor,
        idempotency_key, request_hash, created_at
     FROM customer_overrides",
    "DROP INDEX customer_overrides_customer",
    "DROP TABLE customer_overrides",
    "CREATE INDEX override_history_customer ON override_history (customer_id, created_at)",
];

/// Back to feature overrides only: the others are dropped.
const DOWN: [&str; 5] = [
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
    "INSERT INTO customer_overrides (id, customer_id, feature, enabled, until_at, reason,
        actor, idempotency_key, request_hash, created_at)
     SELECT id, customer_id, feature, enabled, until_at, reason, actor, idempotency_key,
        request_hash, created_at
     FROM override_history WHERE kind = 'feature'",
    "DROP INDEX override_history_customer",
    "DROP TABLE override_history",
    "CREATE INDEX customer_overrides_customer ON customer_overrides (customer_id, created_at)",
];
