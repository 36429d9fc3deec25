sql_migration! {
    up: UP,
    down: DOWN,
}

/// A customer's usage per day or month is read from its consumptions in a time range: an index
/// on both keeps that read to the range, however many consumptions the customer has.
const UP: [&str; 1] =
    ["CREATE INDEX consumptions_customer_time ON consumptions (customer_id, effective_at)"];

const DOWN: [&str; 1] = ["DROP INDEX consumptions_customer_time"];
