use sea_orm::entity::prelude::*;

/// A grant's terms (kind, credits, price, priority, source) are written once. `remaining`,
/// `held`, `expires_at` and `expired` are the ledger's running projection for that grant,
/// maintained in the same transaction as the entries that move them.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "grants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub customer_id: String,
    pub kind: String,
    pub credits: i64,
    pub remaining: i64,
    pub held: i64,
    pub price: Option<i64>,
    pub currency: Option<String>,
    pub expires_at: Option<i64>,
    pub expired: bool,
    pub priority: i32,
    pub plan_id: Option<String>,
    pub pack_id: Option<String>,
    pub source_type: String,
    pub source_id: String,
    pub created_at: i64,
    /// Money refunded on this grant so far (scale 6, in `currency`).
    pub refunded: i64,
    /// The expiry `credit.grant_expiring` was last sent for (Unix microseconds), if any.
    pub expiry_warned_for: Option<i64>,
    /// Its payment is disputed: its free credits cannot be spent until the dispute closes.
    pub frozen: bool,
    /// The first instant its credits may be spent (Unix microseconds), when bought ahead.
    pub starts_at: Option<i64>,
    /// Not started yet: in the balance, not available.
    pub scheduled: bool,
    /// Spent by the customers below its owner too (after their own grants).
    pub shared: bool,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
