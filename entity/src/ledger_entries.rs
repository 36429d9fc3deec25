use sea_orm::entity::prelude::*;

/// One append-only line of the credit ledger. `credits` moves the balance (and the remaining
/// credits of `grant_id`, or the overdraft when there is no grant); `held` moves what is held.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "ledger_entries")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub operation_id: String,
    pub position: i32,
    pub customer_id: String,
    pub kind: String,
    pub grant_id: Option<String>,
    pub hold_id: Option<String>,
    pub action: Option<String>,
    pub quantity: Option<String>,
    pub credits: i64,
    pub held: i64,
    pub overage: i64,
    pub effective_at: i64,
    pub recorded_at: i64,
    /// Money moved with the entry (a refund clawed back), scale 6, in the grant's currency.
    pub money: Option<i64>,
    /// Why an operator adjusted the credits (adjustments only).
    pub reason: Option<String>,
    /// The id of the API key whose request wrote it, for an operator's write (a grant, an
    /// adjustment); none for the gate's and Stripe's.
    pub actor: Option<String>,
    /// Who inside the customer spent (holds, captures and usages).
    pub subject: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
