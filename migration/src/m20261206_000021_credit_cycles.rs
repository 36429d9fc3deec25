sql_migration! {
    up: UP,
    down: DOWN,
}

/// Credit cycles of plans outside Stripe: where the customer's cycle stands (JSON on the
/// customer, read with its book), and when its next grant is due (Unix microseconds; null with
/// no cycle). The index serves the time-driven jobs both ways: cycles due (`next_grant_at <=`),
/// and customers with no plan and no cycle yet (both null) when there is a default plan.
const UP: [&str; 3] = [
    "ALTER TABLE customers ADD COLUMN credit_cycle TEXT NULL",
    "ALTER TABLE customers ADD COLUMN next_grant_at BIGINT NULL",
    "CREATE INDEX customers_next_grant ON customers (next_grant_at, plan_id)",
];

const DOWN: [&str; 3] = [
    "DROP INDEX customers_next_grant",
    "ALTER TABLE customers DROP COLUMN next_grant_at",
    "ALTER TABLE customers DROP COLUMN credit_cycle",
];
