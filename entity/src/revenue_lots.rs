use sea_orm::entity::prelude::*;

/// A paid grant's revenue (README, Revenue recognition): its price, the counters of what became of its credits,
/// what it has posted, and the platform part of a plan line with its daily schedule. Updated in
/// the same transaction as the ledger entries and journal lines that move it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "revenue_lots")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub grant_id: String,
    pub customer_id: String,
    /// `plan:ID` or `pack:ID`: whose breakage estimate the lot follows.
    pub catalog_item: String,
    pub currency: String,
    pub price: i64,
    pub credits: i64,
    pub breakage: String,
    pub expected_unused: Option<i64>,
    pub consumed: i64,
    pub lapsed: i64,
    pub removed: i64,
    /// Credits an adjustment took back while the money was kept.
    pub forfeited: i64,
    pub usage_recognized: i64,
    pub breakage_recognized: i64,
    pub refunded: i64,
    pub contra: i64,
    pub transferred: i64,
    pub platform_amount: Option<i64>,
    /// `YYYY-MM-DD` (UTC).
    pub platform_first_day: Option<String>,
    pub platform_days: Option<i32>,
    pub platform_days_done: Option<i32>,
    pub platform_recognized: Option<i64>,
    pub platform_refunded: Option<i64>,
    pub platform_contra: Option<i64>,
    /// When the next day of the platform part is due; none once all of it is recognized.
    pub platform_next_at: Option<i64>,
    /// The period the lot's payment was booked in (`YYYY-MM`): its row in the waterfall.
    pub booked_period: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
