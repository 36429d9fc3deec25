sql_migration! {
    up: UP,
    down: DOWN,
}

/// Adjustments: the reason an operator gave is kept on the ledger entries it caused, and a paid
/// grant's lot counts the credits an adjustment took back (forfeited: the money is kept).
const UP: [&str; 2] = [
    "ALTER TABLE ledger_entries ADD COLUMN reason TEXT NULL",
    "ALTER TABLE revenue_lots ADD COLUMN forfeited BIGINT NOT NULL DEFAULT 0",
];

const DOWN: [&str; 2] = [
    "ALTER TABLE revenue_lots DROP COLUMN forfeited",
    "ALTER TABLE ledger_entries DROP COLUMN reason",
];
