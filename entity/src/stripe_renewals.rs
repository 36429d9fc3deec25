use sea_orm::entity::prelude::*;

/// A renewal's period start (the boundary), when the previous period's unused plan credits were
/// first rolled over into it, and how many it has carried so far (micro-credits; NULL for a
/// renewal rolled over before that was kept, whose room counts as used). Times in Unix
/// microseconds.
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
    pub carried: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
