use sea_orm::entity::prelude::*;

/// Effects of Stripe objects already applied (an invoice line, a checkout session), whichever
/// event or backfill brought them first.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_effects")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub effect_key: String,
    pub customer_id: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
