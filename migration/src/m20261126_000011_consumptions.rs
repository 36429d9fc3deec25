sql_migration! {
    up: UP,
    down: DOWN,
}

/// One row per usage or capture that used credits (append-only): the action, its feature, the
/// plan in force, the credits and what they cost at the vendor at the terms in force then.
/// `source` is the usage or hold id, as on the journal lines its revenue posts; the margin report
/// joins the two on (customer_id, source). `period` is the UTC month of `effective_at`.
const UP: [&str; 2] = [
    "CREATE TABLE consumptions (
        customer_id TEXT NOT NULL,
        source TEXT NOT NULL,
        action TEXT NOT NULL,
        feature TEXT NOT NULL,
        plan_id TEXT NULL,
        quantity TEXT NULL,
        credits BIGINT NOT NULL CHECK (credits > 0),
        vendor_cost BIGINT NULL CHECK (vendor_cost >= 0),
        effective_at BIGINT NOT NULL,
        period TEXT NOT NULL,
        recorded_at BIGINT NOT NULL,
        PRIMARY KEY (customer_id, source)
    )",
    "CREATE INDEX consumptions_period ON consumptions (period)",
];

const DOWN: [&str; 2] = ["DROP INDEX consumptions_period", "DROP TABLE consumptions"];
