sql_migration! {
    up: UP,
    down: DOWN,
}

/// On each overage accrual, the overage credits accrued in all and the whole credits reported to
/// the plan's Stripe meter so far. Accruals made before are counted from the ledger's overage
/// entries and taken as reported: what was billed before reporting existed is not sent.
const UP: [&str; 3] = [
    "ALTER TABLE overage_accruals ADD COLUMN credits BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE overage_accruals ADD COLUMN reported BIGINT NOT NULL DEFAULT 0",
    "UPDATE overage_accruals SET credits = COALESCE((SELECT CAST(SUM(e.overage) AS BIGINT) FROM ledger_entries e \
     WHERE e.customer_id = overage_accruals.customer_id AND e.kind = 'overage'), 0), \
     reported = (COALESCE((SELECT CAST(SUM(e.overage) AS BIGINT) FROM ledger_entries e \
     WHERE e.customer_id = overage_accruals.customer_id AND e.kind = 'overage'), 0) / 1000000) * 1000000",
];

const DOWN: [&str; 2] = [
    "ALTER TABLE overage_accruals DROP COLUMN reported",
    "ALTER TABLE overage_accruals DROP COLUMN credits",
];
