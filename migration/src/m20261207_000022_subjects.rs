sql_migration! {
    up: UP,
    down: DOWN,
}

/// Members and subjects: who inside a customer spends (a user, an API key, an agent), kept on
/// the hold, on every ledger entry of its spending and on the consumption. Usage and spend
/// limits by member read the consumptions and the month's entries by customer first, so the
/// indexes there serve them.
const UP: [&str; 3] = [
    "ALTER TABLE holds ADD COLUMN subject TEXT NULL",
    "ALTER TABLE ledger_entries ADD COLUMN subject TEXT NULL",
    "ALTER TABLE consumptions ADD COLUMN subject TEXT NULL",
];

const DOWN: [&str; 3] = [
    "ALTER TABLE consumptions DROP COLUMN subject",
    "ALTER TABLE ledger_entries DROP COLUMN subject",
    "ALTER TABLE holds DROP COLUMN subject",
];
