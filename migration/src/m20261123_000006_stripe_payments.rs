sql_migration! {
    up: UP,
    down: DOWN,
}

/// What a payment paid, tax included, and the tax in it (so that a refund's tax share is not
/// taken back as price); and which payment paid an invoice, learnt from `invoice_payment.paid` or
/// the API (API version 2025-03-31.basil no longer names it on the invoice); and where a backfill
/// stopped, per source, so that the next run resumes there.
const UP: [&str; 3] = [
    "CREATE TABLE stripe_payments (
        payment_key TEXT PRIMARY KEY NOT NULL,
        paid_minor BIGINT NOT NULL,
        tax_minor BIGINT NOT NULL,
        currency TEXT NOT NULL
    )",
    "CREATE TABLE stripe_invoice_payments (
        invoice_id TEXT PRIMARY KEY NOT NULL,
        payment_key TEXT NOT NULL
    )",
    "CREATE TABLE stripe_sync_cursors (
        source TEXT PRIMARY KEY NOT NULL,
        since BIGINT NOT NULL,
        starting_after TEXT NULL,
        done BOOLEAN NOT NULL,
        updated_at BIGINT NOT NULL
    )",
];

const DOWN: [&str; 3] = [
    "DROP TABLE stripe_sync_cursors",
    "DROP TABLE stripe_invoice_payments",
    "DROP TABLE stripe_payments",
];
