//! Who did it: every write an operator makes (an admin's or finance's request, a page's form)
//! is recorded with the id of the key that made it, in the transaction of the write itself.

use super::Store;
use super::rows::time;
use crate::domain::Timestamp;
use crate::domain::adjustment::Reason;
use crate::domain::customer::CustomerId;
use crate::error::{Error, Result};
use entity::operator_actions;
use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

/// What an operator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorActionKind {
    Grant,
    Adjustment,
    Plan,
    Limits,
    AlertThresholds,
    AutoTopup,
    Override,
    PeriodClose,
    OutboxReplay,
    KeyRevoke,
    Parent,
}

impl OperatorActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorActionKind::Grant => "grant",
            OperatorActionKind::Adjustment => "adjustment",
            OperatorActionKind::Plan => "plan",
            OperatorActionKind::Limits => "limits",
            OperatorActionKind::AlertThresholds => "alert_thresholds",
            OperatorActionKind::AutoTopup => "auto_topup",
            OperatorActionKind::Override => "override",
            OperatorActionKind::PeriodClose => "period_close",
            OperatorActionKind::OutboxReplay => "outbox_replay",
            OperatorActionKind::KeyRevoke => "key_revoke",
            OperatorActionKind::Parent => "parent",
        }
    }
}

/// One operator's write, as it is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorAction {
    /// The id of the API key (never the key).
    pub key_id: String,
    pub kind: OperatorActionKind,
    pub customer: Option<String>,
    /// What it acted on besides the customer: a grant, a period, an outbox row.
    pub subject: Option<String>,
    /// The request as the operator made it.
    pub detail: serde_json::Value,
}

impl OperatorAction {
    pub fn new(key_id: &str, kind: OperatorActionKind, detail: serde_json::Value) -> Self {
        OperatorAction {
            key_id: key_id.to_owned(),
            kind,
            customer: None,
            subject: None,
            detail,
        }
    }

    pub fn on_customer(self, customer: &str) -> Self {
        OperatorAction {
            customer: Some(customer.to_owned()),
            ..self
        }
    }

    pub fn on(self, subject: &str) -> Self {
        OperatorAction {
            subject: Some(subject.to_owned()),
            ..self
        }
    }

    /// Records why, when the operator said (the console asks for it), as `reason` beside the
    /// request.
    pub fn because(mut self, reason: Option<&Reason>) -> Self {
        if let Some(reason) = reason {
            self.detail["reason"] = reason.as_str().into();
        }
        self
    }
}

/// Records `action`, done at `at`, inside the write's own transaction.
pub(crate) async fn record(
    txn: &impl ConnectionTrait,
    action: &OperatorAction,
    at: Timestamp,
) -> Result<()> {
    operator_actions::Entity::insert(operator_actions::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        at: Set(time(at)),
        key_id: Set(action.key_id.clone()),
        action: Set(action.kind.as_str().to_owned()),
        customer_id: Set(action.customer.clone()),
        subject: Set(action.subject.clone()),
        detail: Set(action.detail.to_string()),
    })
    .exec_without_returning(txn)
    .await?;
    Ok(())
}

impl Store {
    /// Operators' writes, oldest first, after the row `after`, of one customer when given.
    pub async fn operator_actions(
        &self,
        customer: Option<&CustomerId>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<operator_actions::Model>> {
        let mut query = operator_actions::Entity::find();
        if let Some(customer) = customer {
            query = query.filter(operator_actions::Column::CustomerId.eq(customer.as_str()));
        }
        if let Some(after) = after {
            query = query.filter(operator_actions::Column::Id.gt(after));
        }
        query
            .order_by_asc(operator_actions::Column::Id)
            .limit(limit)
            .all(self.connection())
            .await
            .map_err(Error::from)
    }

    /// The latest `limit` of the operators' writes on `customer`, newest first.
    pub async fn operator_actions_latest(
        &self,
        customer: &CustomerId,
        limit: u64,
    ) -> Result<Vec<operator_actions::Model>> {
        operator_actions::Entity::find()
            .filter(operator_actions::Column::CustomerId.eq(customer.as_str()))
            .order_by_desc(operator_actions::Column::Id)
            .limit(limit)
            .all(self.connection())
            .await
            .map_err(Error::from)
    }
}
