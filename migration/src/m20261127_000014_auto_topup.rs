sql_migration! {
    up: UP,
    down: DOWN,
}

/// Auto top-up: the customer's setting and where it stands (JSON on the customer, read with its
/// book), and one row per charge started (append-only but for its settlement): the pack, its
/// price in minor units, the Stripe payment intent once known, and how it ended.
const UP: [&str; 3] = [
    "ALTER TABLE customers ADD COLUMN auto_topup TEXT NULL",
    "CREATE TABLE auto_topup_attempts (
        id TEXT NOT NULL PRIMARY KEY,
        customer_id TEXT NOT NULL,
        pack_id TEXT NOT NULL,
        credits BIGINT NOT NULL CHECK (credits > 0),
        amount_minor BIGINT NOT NULL CHECK (amount_minor > 0),
        currency TEXT NOT NULL,
        status TEXT NOT NULL,
        payment_intent TEXT NULL,
        failure TEXT NULL,
        failure_code TEXT NULL,
        created_at BIGINT NOT NULL,
        settled_at BIGINT NULL
    )",
    "CREATE INDEX auto_topup_attempts_customer ON auto_topup_attempts (customer_id, created_at)",
];

const DOWN: [&str; 3] = [
    "DROP INDEX auto_topup_attempts_customer",
    "DROP TABLE auto_topup_attempts",
    "ALTER TABLE customers DROP COLUMN auto_topup",
];
