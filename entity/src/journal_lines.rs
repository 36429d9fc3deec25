use sea_orm::entity::prelude::*;

/// One line of a journal entry (append-only). The lines of one `entry_id` balance in their
/// currency. `period` is where the entry is booked: its own month, or the first open one after it
/// when that month was closed (`adjustment`); `booked_at` is `effective_at`, or the start of the
/// booking period for an adjustment, and is what date filters use.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "journal_lines")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub entry_id: String,
    pub line: i32,
    pub kind: String,
    pub effective_at: i64,
    pub booked_at: i64,
    pub period: String,
    pub adjustment: bool,
    pub account: String,
    pub debit: i64,
    pub credit: i64,
    pub currency: String,
    pub customer_id: String,
    pub grant_id: Option<String>,
    /// The Stripe object, hold or usage the entry comes from.
    pub source: Option<String>,
    /// The Stripe event that carried it.
    pub event: Option<String>,
    pub memo: String,
    pub posted_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
