use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_subscriptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub stripe_customer_id: String,
    pub status: String,
    pub plan_id: Option<String>,
    pub quantity: i64,
    pub current_period_end: Option<i64>,
    pub past_due_since: Option<i64>,
    pub as_of: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
