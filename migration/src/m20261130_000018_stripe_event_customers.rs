sql_migration! {
    up: UP,
    down: DOWN,
}

/// Which customers' books a Stripe event touched, written with its outcome, so an operator can
/// read one customer's events from an index (events before this table have no rows here).
const UP: [&str; 2] = [
    "CREATE TABLE stripe_event_customers (
        customer_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (customer_id, event_id)
    )",
    "CREATE INDEX stripe_event_customers_time ON stripe_event_customers (customer_id, received_at)",
];

const DOWN: [&str; 1] = ["DROP TABLE stripe_event_customers"];
