//! sea-orm entities. Amounts are fixed-point integers of scale 6 (see `migration`), timestamps
//! Unix microseconds; the `creditbook` crate converts them to domain types at the store's edge.

pub mod api_keys;
pub mod auto_topup_attempts;
pub mod consumptions;
pub mod customers;
pub mod grants;
pub mod holds;
pub mod idempotency_records;
pub mod journal_lines;
pub mod ledger_entries;
pub mod operator_actions;
pub mod outbox;
pub mod overage_accruals;
pub mod override_history;
pub mod page_sessions;
pub mod revenue_lots;
pub mod revenue_periods;
pub mod stripe_charges;
pub mod stripe_customers;
pub mod stripe_disputes;
pub mod stripe_effects;
pub mod stripe_event_customers;
pub mod stripe_events;
pub mod stripe_invoice_payments;
pub mod stripe_lock;
pub mod stripe_payment_grants;
pub mod stripe_payments;
pub mod stripe_refunds;
pub mod stripe_renewals;
pub mod stripe_subscriptions;
pub mod stripe_sync_cursors;
