sql_migration! {
    up: UP,
    down: DOWN,
}

/// A customer's own low-balance thresholds (JSON: `consumed_share`, `credits`), which replace its
/// plan's and `[alerts]`' for `credit.balance_low`.
const UP: [&str; 1] = ["ALTER TABLE customers ADD COLUMN low_balance TEXT NULL"];

const DOWN: [&str; 1] = ["ALTER TABLE customers DROP COLUMN low_balance"];
