use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::ConnectionTrait;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Stripe sync: the events received, what was learnt from them (links, subscriptions, payments,
/// refunds, disputes), and the customer and grant facts they move. Money from Stripe is kept in
/// the currency's minor units, as Stripe sends it; times from Stripe in Unix seconds.
const SCHEMA: &str = r#"
ALTER TABLE customers ADD COLUMN past_due_since BIGINT NULL;
ALTER TABLE customers ADD COLUMN renews_at BIGINT NULL;
ALTER TABLE grants ADD COLUMN refunded BIGINT NOT NULL DEFAULT 0 CHECK (refunded >= 0);
ALTER TABLE ledger_entries ADD COLUMN money BIGINT NULL;
CREATE UNIQUE INDEX grants_stripe_source ON grants (source_type, source_id) WHERE source_type = 'stripe';
CREATE TABLE stripe_lock (
    id INTEGER PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO stripe_lock (id, version) VALUES (1, 0);
CREATE TABLE stripe_events (
    id TEXT PRIMARY KEY,
    event_type TEXT NOT NULL,
    api_version TEXT NULL,
    created BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    origin TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX stripe_events_outcome ON stripe_events (outcome);
CREATE TABLE stripe_effects (
    effect_key TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE stripe_renewals (
    customer_id TEXT NOT NULL,
    boundary BIGINT NOT NULL,
    plan_id TEXT NOT NULL,
    period_end BIGINT NOT NULL,
    rolled_at BIGINT NULL,
    PRIMARY KEY (customer_id, boundary)
);
CREATE TABLE stripe_customers (
    stripe_customer_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL,
    linked_by TEXT NOT NULL
);
CREATE TABLE stripe_subscriptions (
    id TEXT PRIMARY KEY,
    stripe_customer_id TEXT NOT NULL,
    status TEXT NOT NULL,
    plan_id TEXT NULL,
    quantity BIGINT NOT NULL,
    current_period_end BIGINT NULL,
    past_due_since BIGINT NULL,
    as_of BIGINT NOT NULL
);
CREATE INDEX stripe_subscriptions_customer ON stripe_subscriptions (stripe_customer_id);
CREATE TABLE stripe_payment_grants (
    payment_key TEXT NOT NULL,
    grant_id TEXT NOT NULL REFERENCES grants (id),
    subscription_id TEXT NULL,
    clawed_back BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (payment_key, grant_id)
);
CREATE INDEX stripe_payment_grants_grant ON stripe_payment_grants (grant_id);
CREATE TABLE stripe_refunds (
    id TEXT PRIMARY KEY,
    payment_intent TEXT NULL,
    charge TEXT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX stripe_refunds_payment_intent ON stripe_refunds (payment_intent);
CREATE INDEX stripe_refunds_charge ON stripe_refunds (charge);
CREATE TABLE stripe_charges (
    id TEXT PRIMARY KEY,
    payment_intent TEXT NULL,
    amount_refunded BIGINT NOT NULL,
    currency TEXT NOT NULL
);
CREATE INDEX stripe_charges_payment_intent ON stripe_charges (payment_intent);
CREATE TABLE stripe_disputes (
    id TEXT PRIMARY KEY,
    payment_intent TEXT NULL,
    charge TEXT NULL,
    amount BIGINT NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    as_of BIGINT NOT NULL
);
CREATE INDEX stripe_disputes_payment_intent ON stripe_disputes (payment_intent);
CREATE INDEX stripe_disputes_charge ON stripe_disputes (charge)
"#;

const TABLES: [&str; 10] = [
    "stripe_renewals",
    "stripe_effects",
    "stripe_disputes",
    "stripe_charges",
    "stripe_refunds",
    "stripe_payment_grants",
    "stripe_subscriptions",
    "stripe_customers",
    "stripe_events",
    "stripe_lock",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in SCHEMA.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in TABLES {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        db.execute_unprepared("DROP INDEX IF EXISTS grants_stripe_source")
            .await?;
        for (table, column) in [
            ("ledger_entries", "money"),
            ("grants", "refunded"),
            ("customers", "renews_at"),
            ("customers", "past_due_since"),
        ] {
            db.execute_unprepared(&format!("ALTER TABLE {table} DROP COLUMN {column}"))
                .await?;
        }
        Ok(())
    }
}
