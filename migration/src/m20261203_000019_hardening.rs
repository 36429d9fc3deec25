sql_migration! {
    up: UP,
    down: DOWN,
}

/// When an outbox row was first attempted: a Stripe write is retried, or replayed, only while
/// Stripe still honours its idempotency key (24 hours from that first attempt).
const UP: [&str; 1] = ["ALTER TABLE outbox ADD COLUMN first_attempt_at BIGINT"];

const DOWN: [&str; 1] = ["ALTER TABLE outbox DROP COLUMN first_attempt_at"];
