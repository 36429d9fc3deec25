use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

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

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, &UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(
            manager,
            &[
                "DROP TABLE stripe_sync_cursors",
                "DROP TABLE stripe_invoice_payments",
                "DROP TABLE stripe_payments",
            ],
        )
        .await
    }
}
