//! The ledger and the journal are append-only in the database itself: an UPDATE, DELETE (or, on
//! PostgreSQL, TRUNCATE) of `ledger_entries` or `journal_lines` fails, whoever runs it. Mistakes
//! are fixed by new entries. (Dropping the tables stays possible for the schema's owner.)

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLES: [&str; 2] = ["ledger_entries", "journal_lines"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            db.execute_unprepared(
                "CREATE FUNCTION creditbook_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME \
                 USING ERRCODE = 'insufficient_privilege'; END $$",
            )
            .await?;
            for table in TABLES {
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} \
                     FOR EACH ROW EXECUTE FUNCTION creditbook_append_only()"
                ))
                .await?;
                db.execute_unprepared(&format!(
                    "CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} \
                     FOR EACH STATEMENT EXECUTE FUNCTION creditbook_append_only()"
                ))
                .await?;
            }
        } else {
            for table in TABLES {
                for (name, event) in [("no_update", "UPDATE"), ("no_delete", "DELETE")] {
                    db.execute_unprepared(&format!(
                        "CREATE TRIGGER {table}_{name} BEFORE {event} ON {table} \
                         BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                    ))
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == DbBackend::Postgres {
            for table in TABLES {
                db.execute_unprepared(&format!(
                    "DROP TRIGGER IF EXISTS {table}_append_only ON {table}"
                ))
                .await?;
                db.execute_unprepared(&format!(
                    "DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"
                ))
                .await?;
            }
            db.execute_unprepared("DROP FUNCTION IF EXISTS creditbook_append_only()")
                .await?;
        } else {
            for table in TABLES {
                for name in ["no_update", "no_delete"] {
                    db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS {table}_{name}"))
                        .await?;
                }
            }
        }
        Ok(())
    }
}
