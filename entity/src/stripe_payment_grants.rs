use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_payment_grants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub payment_key: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub grant_id: String,
    pub subscription_id: Option<String>,
    /// Money of this payment's refunds and lost disputes taken back from this grant (scale 6).
    pub clawed_back: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
