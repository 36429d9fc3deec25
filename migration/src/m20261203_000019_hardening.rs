sql_migration! {
    up: UP,
    down: DOWN,
}

/// When an outbox row was first attempted: a Stripe write is retried, or replayed, only while
/// Stripe still honours its idempotency key (24 hours from that first attempt).
///
/// A dispute freezes what the disputed payment bought (`grants.frozen`), no longer the whole
/// customer: grants of payments with a dispute still open are frozen, and customers are thawed.
///
/// Who did it: the key id of an operator's write on its ledger entries (`actor`), on a closed
/// period (`closed_by`), and every operator's write in `operator_actions`.
const UP: [&str; 11] = [
    "ALTER TABLE outbox ADD COLUMN first_attempt_at BIGINT",
    "ALTER TABLE grants ADD COLUMN frozen BOOLEAN NOT NULL DEFAULT FALSE",
    "UPDATE grants SET frozen = TRUE WHERE id IN (
        SELECT pg.grant_id FROM stripe_payment_grants pg
        JOIN stripe_disputes d ON d.payment_intent = pg.payment_key OR d.charge = pg.payment_key
        WHERE d.status NOT IN ('won', 'lost', 'warning_closed', 'prevented'))",
    "UPDATE customers SET frozen = FALSE WHERE frozen = TRUE",
    "ALTER TABLE ledger_entries ADD COLUMN actor TEXT",
    "ALTER TABLE revenue_periods ADD COLUMN closed_by TEXT",
    "CREATE TABLE operator_actions (
        id TEXT PRIMARY KEY,
        at BIGINT NOT NULL,
        key_id TEXT NOT NULL,
        action TEXT NOT NULL,
        customer_id TEXT,
        subject TEXT,
        detail TEXT NOT NULL
    )",
    "CREATE INDEX operator_actions_customer ON operator_actions (customer_id, id)",
    // Retention prunes by age: each batch reads an index, not the table.
    "CREATE INDEX idempotency_records_created ON idempotency_records (created_at)",
    "CREATE INDEX outbox_delivered ON outbox (delivered_at)",
    "CREATE INDEX stripe_events_received ON stripe_events (received_at)",
];

const DOWN: [&str; 8] = [
    "DROP INDEX stripe_events_received",
    "DROP INDEX outbox_delivered",
    "DROP INDEX idempotency_records_created",
    "DROP TABLE operator_actions",
    "ALTER TABLE revenue_periods DROP COLUMN closed_by",
    "ALTER TABLE ledger_entries DROP COLUMN actor",
    "ALTER TABLE grants DROP COLUMN frozen",
    "ALTER TABLE outbox DROP COLUMN first_attempt_at",
];
