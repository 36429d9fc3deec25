use sea_orm::entity::prelude::*;

/// A renewal's period start (the boundary), and when the previous period's unused plan credits
/// were rolled over into it. Unix microseconds.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_renewals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub customer_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub boundary: i64,
    pub plan_id: String,
    pub period_end: i64,
    pub rolled_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
