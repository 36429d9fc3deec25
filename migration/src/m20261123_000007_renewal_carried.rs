use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// What a renewal has carried over so far (micro-credits), so that plan grants ending at its
/// boundary that arrive in separate events share one `rollover_max`. NULL on renewals rolled over
/// before this migration: their room counts as used.
const UP: [&str; 1] = ["ALTER TABLE stripe_renewals ADD COLUMN carried BIGINT NULL"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(manager, &UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_all(
            manager,
            &["ALTER TABLE stripe_renewals DROP COLUMN carried"],
        )
        .await
    }
}
