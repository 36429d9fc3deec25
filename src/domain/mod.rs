//! Pure logic: no I/O and no clock reads. Time comes in as an argument.

pub mod adjustment;
pub mod billing;
pub mod catalog;
pub mod gate;
pub mod journal;
pub mod ledger;
pub mod money;
pub mod refunds;
pub mod revrec;

pub use money::{Credits, Quantity};

/// Points in time are UTC; the caller supplies "now".
pub type Timestamp = chrono::DateTime<chrono::Utc>;
