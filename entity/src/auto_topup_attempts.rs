use sea_orm::entity::prelude::*;

/// One automatic charge for a pack: started with the change of balance that called for it,
/// settled by Stripe's answer or its `payment_intent.*` events.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "auto_topup_attempts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub customer_id: String,
    pub pack_id: String,
    /// Scale 6.
    pub credits: i64,
    pub amount_minor: i64,
    pub currency: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    pub payment_intent: Option<String>,
    pub failure: Option<String>,
    pub failure_code: Option<String>,
    pub created_at: i64,
    pub settled_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
