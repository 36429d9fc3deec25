//! Schema migrations, run by `creditbook migrate` and at the start of `creditbook serve`.
//!
//! Amounts (credits and money) are stored as fixed-point integers of scale 6 (`BIGINT`), so that
//! they round-trip exactly on SQLite and PostgreSQL alike; timestamps are Unix microseconds
//! (`BIGINT`, UTC), comparable in SQL on both engines.

pub use sea_orm_migration::prelude::*;

/// A migration made of SQL statements only, the same on both engines: `up` in order, `down`
/// undoing them.
macro_rules! sql_migration {
    (up: $up:expr, down: $down:expr $(,)?) => {
        use sea_orm_migration::prelude::*;

        #[derive(DeriveMigrationName)]
        pub struct Migration;

        #[async_trait::async_trait]
        impl MigrationTrait for Migration {
            async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
                crate::execute_all(manager, &$up).await
            }

            async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
                crate::execute_all(manager, &$down).await
            }
        }
    };
}

mod m20261121_000001_ledger;
mod m20261121_000002_stripe;
mod m20261121_000003_revenue;
mod m20261123_000004_adjustments;
mod m20261123_000005_key_management;
mod m20261123_000006_stripe_payments;
mod m20261123_000007_renewal_carried;
mod m20261124_000008_outbox;
mod m20261125_000009_customer_controls;
mod m20261125_000010_grant_expiry_warning;
mod m20261126_000011_consumptions;
mod m20261126_000012_overage_reports;
mod m20261126_000013_customer_thresholds;
mod m20261127_000014_auto_topup;
mod m20261128_000015_override_kinds;
mod m20261129_000016_usage_reads;
mod m20261129_000017_page_sessions;
mod m20261130_000018_stripe_event_customers;
mod m20261203_000019_hardening;
mod m20261203_000020_append_only;
mod m20261206_000021_credit_cycles;
mod m20261207_000022_subjects;
mod m20261208_000023_organizations;

pub struct Migrator;

/// Runs `statements` in order, as one migration's steps.
pub(crate) async fn execute_all(
    manager: &SchemaManager<'_>,
    statements: &[&str],
) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261121_000001_ledger::Migration),
            Box::new(m20261121_000002_stripe::Migration),
            Box::new(m20261121_000003_revenue::Migration),
            Box::new(m20261123_000004_adjustments::Migration),
            Box::new(m20261123_000005_key_management::Migration),
            Box::new(m20261123_000006_stripe_payments::Migration),
            Box::new(m20261123_000007_renewal_carried::Migration),
            Box::new(m20261124_000008_outbox::Migration),
            Box::new(m20261125_000009_customer_controls::Migration),
            Box::new(m20261125_000010_grant_expiry_warning::Migration),
            Box::new(m20261126_000011_consumptions::Migration),
            Box::new(m20261126_000012_overage_reports::Migration),
            Box::new(m20261126_000013_customer_thresholds::Migration),
            Box::new(m20261127_000014_auto_topup::Migration),
            Box::new(m20261128_000015_override_kinds::Migration),
            Box::new(m20261129_000016_usage_reads::Migration),
            Box::new(m20261129_000017_page_sessions::Migration),
            Box::new(m20261130_000018_stripe_event_customers::Migration),
            Box::new(m20261203_000019_hardening::Migration),
            Box::new(m20261203_000020_append_only::Migration),
            Box::new(m20261206_000021_credit_cycles::Migration),
            Box::new(m20261207_000022_subjects::Migration),
            Box::new(m20261208_000023_organizations::Migration),
        ]
    }
}
