sql_migration! {
    up: UP,
    down: DOWN,
}

/// When an outbox row was first attempted: a Stripe write is retried, or replayed, only while
/// Stripe still honours its idempotency key (24 hours from that first attempt).
///
/// A dispute freezes what the disputed payment bought (`grants.frozen`), no longer the whole
/// customer: grants of payments with a dispute still open are frozen, and customers are thawed.
const UP: [&str; 4] = [
    "ALTER TABLE outbox ADD COLUMN first_attempt_at BIGINT",
    "ALTER TABLE grants ADD COLUMN frozen BOOLEAN NOT NULL DEFAULT FALSE",
    "UPDATE grants SET frozen = TRUE WHERE id IN (
        SELECT pg.grant_id FROM stripe_payment_grants pg
        JOIN stripe_disputes d ON d.payment_intent = pg.payment_key OR d.charge = pg.payment_key
        WHERE d.status NOT IN ('won', 'lost', 'warning_closed', 'prevented'))",
    "UPDATE customers SET frozen = FALSE WHERE frozen = TRUE",
];

const DOWN: [&str; 2] = [
    "ALTER TABLE grants DROP COLUMN frozen",
    "ALTER TABLE outbox DROP COLUMN first_attempt_at",
];
