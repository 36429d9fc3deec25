sql_migration! {
    up: UP,
    down: DOWN,
}

/// Keys an operator can manage: a label, when a key was last used (to within the key cache's
/// staleness bound), and when it was revoked.
const UP: [&str; 3] = [
    "ALTER TABLE api_keys ADD COLUMN label TEXT NULL",
    "ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT NULL",
    "ALTER TABLE api_keys ADD COLUMN revoked_at BIGINT NULL",
];

const DOWN: [&str; 3] = [
    "ALTER TABLE api_keys DROP COLUMN revoked_at",
    "ALTER TABLE api_keys DROP COLUMN last_used_at",
    "ALTER TABLE api_keys DROP COLUMN label",
];
