use sea_orm::entity::prelude::*;

/// What one usage or capture used and cost at the vendor (append-only): the margin report's
/// costs. `source` is the usage or hold id its journal lines carry.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "consumptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub customer_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub source: String,
    pub action: String,
    pub feature: String,
    pub plan_id: Option<String>,
    pub quantity: Option<String>,
    pub credits: i64,
    /// Scale 6, in the accounting currency; none when the action has no vendor cost.
    pub vendor_cost: Option<i64>,
    pub effective_at: i64,
    /// `YYYY-MM` (UTC) of `effective_at`.
    pub period: String,
    pub recorded_at: i64,
    /// Who inside the customer used it.
    pub subject: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
