use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "customers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub plan_id: Option<String>,
    pub frozen: bool,
    /// Credits consumed beyond every grant under the `allow` overage rule (a debt, >= 0).
    pub overdraft: i64,
    /// Part of open holds not backed by any grant (>= 0).
    pub overdraft_held: i64,
    /// Bumped by every command: the row lock that serialises a customer's commands.
    pub version: i64,
    pub created_at: i64,
    /// Since when the Stripe subscription is past due (Unix microseconds), if it is.
    pub past_due_since: Option<i64>,
    /// End of the current Stripe subscription period (Unix microseconds).
    pub renews_at: Option<i64>,
    /// Balance alerts sent since the last recovery: 1 low, 2 depleted.
    pub alert_state: i32,
    /// Recoveries so far: each arming's alerts are distinct messages.
    pub alert_arming: i64,
    /// Spend limits and what was spent in each one's current window (JSON), if any.
    pub limits: Option<String>,
    /// Feature overrides in force (JSON), if any.
    pub overrides: Option<String>,
    /// The customer's own low-balance thresholds (JSON), if any.
    pub low_balance: Option<String>,
    /// The customer's auto top-up setting and where it stands (JSON), if ever set.
    pub auto_topup: Option<String>,
    /// The credit cycle of its plan outside Stripe (JSON), if it has one.
    pub credit_cycle: Option<String>,
    /// When that cycle's next grant is due (Unix microseconds), while one will be made.
    pub next_grant_at: Option<i64>,
    /// The customer whose shared grants it spends after its own (README, Organizations).
    pub parent_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
