use sea_orm::entity::prelude::*;

/// One override made for a customer, as an operator made it: append-only. `kind` says which
/// fields it has: `feature` (`feature`, `enabled`), `price` (`action`, `credits_per_unit`, none
/// meaning the catalog's price again) or `overage` (`overage`, with `overage_limit` for `allow`
/// and `overage_price` for `bill`; `plan` meaning the plan's rule again).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "override_history")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub customer_id: String,
    pub kind: String,
    pub feature: Option<String>,
    pub enabled: Option<bool>,
    pub action: Option<String>,
    /// Credits per unit, fixed-point scale 6.
    pub credits_per_unit: Option<i64>,
    pub overage: Option<String>,
    /// Credits, fixed-point scale 6.
    pub overage_limit: Option<i64>,
    /// Money per credit, as a decimal string.
    pub overage_price: Option<String>,
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
