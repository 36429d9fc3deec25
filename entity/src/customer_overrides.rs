use sea_orm::entity::prelude::*;

/// One override of a customer's access to a feature, as an operator made it: append-only.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customer_overrides")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub customer_id: String,
    pub feature: String,
    pub enabled: bool,
    /// When it ends by itself (Unix microseconds), if it does.
    pub until_at: Option<i64>,
    pub reason: String,
    /// The API key that made it.
    pub actor: String,
    pub idempotency_key: String,
    pub request_hash: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
