sql_migration! {
    up: UP,
    down: DOWN,
}

/// Sessions of the finance and admin pages, started from an API key of that scope: the hash of
/// the cookie's token (never the token), the key it came from, the form token that guards its
/// posts, and when it was last used (idle sessions end) or ended (logout).
const UP: [&str; 1] = ["CREATE TABLE page_sessions (
        id TEXT PRIMARY KEY,
        key_id TEXT NOT NULL,
        scope TEXT NOT NULL,
        csrf TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_seen_at BIGINT NOT NULL,
        ended_at BIGINT NULL
    )"];

const DOWN: [&str; 1] = ["DROP TABLE page_sessions"];
