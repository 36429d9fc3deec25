use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Keys an operator can manage: a label, when a key was last used (to within the key cache's
/// staleness bound), and when it was revoked.
const UP: [&str; 3] = [
    "ALTER TABLE api_keys ADD COLUMN label TEXT NULL",
    "ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT NULL",
    "ALTER TABLE api_keys ADD COLUMN revoked_at BIGINT NULL",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in UP {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for column in ["revoked_at", "last_used_at", "label"] {
            db.execute_unprepared(&format!("ALTER TABLE api_keys DROP COLUMN {column}"))
                .await?;
        }
        Ok(())
    }
}
