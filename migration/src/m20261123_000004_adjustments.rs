use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Adjustments: the reason an operator gave is kept on the ledger entries it caused, and a paid
/// grant's lot counts the credits an adjustment took back (forfeited: the money is kept).
const UP: [&str; 2] = [
    "ALTER TABLE ledger_entries ADD COLUMN reason TEXT NULL",
    "ALTER TABLE revenue_lots ADD COLUMN forfeited BIGINT NOT NULL DEFAULT 0",
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
                "ALTER TABLE revenue_lots DROP COLUMN forfeited",
                "ALTER TABLE ledger_entries DROP COLUMN reason",
            ],
        )
        .await
    }
}
