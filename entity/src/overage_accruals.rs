use sea_orm::entity::prelude::*;

/// Overage billed under `bill`, per customer and currency: the exact sum at the overage price and
/// what has been posted (its rounding to the currency); the credits accrued and reported to Stripe.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "overage_accruals")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub customer_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub currency: String,
    pub exact: i64,
    pub posted: i64,
    /// Overage credits accrued in all.
    pub credits: i64,
    /// Whole credits reported to the plan's Stripe meter so far (scale 6, a multiple of 10^6).
    pub reported: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
