sql_migration! {
    up: UP,
    down: DOWN,
}

/// On each grant, the expiry `credit.grant_expiring` was last sent for: the warning goes once per
/// expiry (a rollover that moves the expiry warns again before the new one).
const UP: [&str; 1] = ["ALTER TABLE grants ADD COLUMN expiry_warned_for BIGINT NULL"];

const DOWN: [&str; 1] = ["ALTER TABLE grants DROP COLUMN expiry_warned_for"];
