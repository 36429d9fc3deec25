//! sea-orm entities. Amounts are fixed-point integers of scale 6 (see `migration`), timestamps
//! Unix microseconds; the `creditbook` crate converts them to domain types at the store's edge.

pub mod api_keys;
pub mod customers;
pub mod grants;
pub mod holds;
pub mod idempotency_records;
pub mod ledger_entries;
