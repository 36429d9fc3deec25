use sea_orm::entity::prelude::*;

/// What a payment paid, tax included, and the tax in it, in the currency's minor unit.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_payments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub payment_key: String,
    pub paid_minor: i64,
    pub tax_minor: i64,
    pub currency: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
