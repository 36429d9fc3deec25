use sea_orm::entity::prelude::*;

/// One write an operator made through the API or the pages, with the key that made it: who
/// granted, adjusted, set a plan or limits, closed a period, replayed a message.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "operator_actions")]
pub struct Model {
    /// Time-ordered (UUID v7): the order actions were recorded in.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Unix microseconds, business time.
    pub at: i64,
    /// The id of the API key that made it (never the key).
    pub key_id: String,
    /// What was done: `grant`, `adjustment`, `plan`, `limits`, `alert_thresholds`,
    /// `auto_topup`, `override`, `period_close`, `outbox_replay`.
    pub action: String,
    /// The customer it concerns, if one.
    pub customer_id: Option<String>,
    /// What it acted on besides the customer: a grant, a period, an outbox row.
    pub subject: Option<String>,
    /// The request as the operator made it (JSON).
    pub detail: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
