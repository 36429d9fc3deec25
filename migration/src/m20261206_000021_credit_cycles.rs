sql_migration! {
    up: UP,
    down: DOWN,
}

/// Credit cycles of plans outside Stripe: where the customer's cycle stands (JSON on the
/// customer, read with its book), and when its next grant is due (Unix microseconds; null with
/// no cycle). The index serves the time-driven jobs both ways: cycles due (`next_grant_at <=`),
/// and customers with no plan and no cycle yet (both null) when there is a default plan.
/// A grant bought ahead of its month (a plan paid for several credit periods) starts at
/// `grants.starts_at` (Unix microseconds) and is `scheduled` until then.
const UP: [&str; 5] = [
    "ALTER TABLE customers ADD COLUMN credit_cycle TEXT NULL",
    "ALTER TABLE customers ADD COLUMN next_grant_at BIGINT NULL",
    "CREATE INDEX customers_next_grant ON customers (next_grant_at, plan_id)",
    "ALTER TABLE grants ADD COLUMN starts_at BIGINT NULL",
    "ALTER TABLE grants ADD COLUMN scheduled BOOLEAN NOT NULL DEFAULT FALSE",
];

const DOWN: [&str; 5] = [
    "ALTER TABLE grants DROP COLUMN scheduled",
    "ALTER TABLE grants DROP COLUMN starts_at",
    "DROP INDEX customers_next_grant",
    "ALTER TABLE customers DROP COLUMN next_grant_at",
    "ALTER TABLE customers DROP COLUMN credit_cycle",
];
