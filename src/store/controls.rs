//! Customer controls: spend limits and low-balance thresholds (commands of the customer's book),
//! feature overrides (kept with who and why) and the expiry warnings.

use super::Store;
use super::book::{Envelope, Idempotency};
use super::rows::{self, time};
use super::unit::Write;
use crate::domain::Timestamp;
use crate::domain::alerts;
use crate::domain::command::{Answer, Command};
use crate::domain::customer::CustomerId;
use crate::domain::limits::{self, Limit};
use crate::domain::overrides::Override;
use crate::domain::thresholds::AlertRule;
use crate::error::{Error, Result};
use entity::{grants, override_history};
use sea_orm::DatabaseTransaction;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

/// A customer's limits as set, and where each stands.
pub struct LimitsSet {
    pub limits: Vec<limits::LimitState>,
}

/// An override as recorded, and whether it was recorded by an earlier request.
pub struct OverrideMade {
    pub made: Override,
    pub replayed: bool,
}

/// An override request, as parsed.
pub struct OverrideRequest {
    pub customer: CustomerId,
    pub made: Override,
    pub idempotency_key: String,
    pub request_hash: String,
}

impl Store {
    /// Replaces a customer's spend limits, as a command of its book (`Command::SetLimits`):
    /// each limit starts from the credits the ledger shows spent in its current window, so that
    /// setting a limit mid-day counts the day's spend; a cap already reached says so at once.
    /// `None` when there is no customer.
    pub async fn set_limits(
        &self,
        customer: &CustomerId,
        limits: Vec<Limit>,
        now: Timestamp,
        actor: super::operators::OperatorAction,
    ) -> Result<Option<LimitsSet>> {
        let set = Envelope::new(customer.clone(), Command::SetLimits { limits }, now).by(actor);
        match self.execute(set).await {
            Ok(executed) => match executed.value {
                Answer::LimitsSet(limits) => Ok(Some(LimitsSet { limits })),
                other => Err(Error::unexpected(&other)),
            },
            Err(Error::CustomerNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sets (or, with none, removes) a customer's own low-balance thresholds, as a command of
    /// its book (`Command::SetLowBalance`). Returns the rule now in force for the customer; none
    /// when the customer does not exist.
    pub async fn set_low_balance(
        &self,
        customer: &CustomerId,
        own: Option<crate::domain::alerts::LowBalance>,
        now: Timestamp,
        actor: super::operators::OperatorAction,
    ) -> Result<Option<AlertRule>> {
        let set = Envelope::new(customer.clone(), Command::SetLowBalance { own }, now).by(actor);
        match self.execute(set).await {
            Ok(executed) => match executed.value {
                Answer::Thresholds(rule) => Ok(Some(rule)),
                other => Err(Error::unexpected(&other)),
            },
            Err(Error::CustomerNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records an override and makes it the feature's override for the customer (created when
    /// unknown), as a command of its book (`Command::SetOverride`), once per idempotency key: the
    /// same key and request answer the override first recorded; the same key with another
    /// request is a conflict.
    pub async fn add_override(&self, request: OverrideRequest) -> Result<OverrideMade> {
        let made = &request.made;
        let action = super::operators::OperatorAction::new(
            &made.actor,
            super::operators::OperatorActionKind::Override,
            serde_json::to_value(crate::domain::overrides::Flat::from(made.clone()))
                .map_err(|e| Error::Internal(format!("an override as JSON: {e}")))?,
        )
        .on_customer(request.customer.as_str())
        .on(&made.id);
        let now = made.at;
        let set = Envelope::new(
            request.customer.clone(),
            Command::SetOverride { made: request.made },
            now,
        )
        .idempotent(Idempotency::override_request(
            &request.idempotency_key,
            request.request_hash,
        ))
        .by(action);
        let executed = self.execute(set).await?;
        match executed.value {
            Answer::Overridden(made) => Ok(OverrideMade {
                made,
                replayed: executed.replayed,
            }),
            other => Err(Error::unexpected(&other)),
        }
    }

    /// Every override made for a customer, newest first (at most `limit`).
    pub async fn override_history(
        &self,
        customer: &CustomerId,
        limit: u64,
    ) -> Result<Vec<Override>> {
        let customer = customer.as_str();
        override_history::Entity::find()
            .filter(override_history::Column::CustomerId.eq(customer))
            .order_by_desc(override_history::Column::CreatedAt)
            .order_by_desc(override_history::Column::Id)
            .limit(limit)
            .all(self.connection())
            .await?
            .into_iter()
            .map(rows::override_from_row)
            .collect()
    }
}

impl Store {
    /// Sends `credit.grant_expiring` for the paid grants with credits left that expire within the
    /// alert rule's days of `now` and were not warned of for that expiry, at most `limit` of
    /// them; returns how many were looked at (fewer than `limit`: none left).
    pub async fn warn_expiring(&self, now: Timestamp, limit: u64) -> Result<usize> {
        self.write(&WarnExpiring { now, limit }).await
    }
}

/// `credit.grant_expiring` for up to `limit` paid grants due a warning at `now`
/// (`Store::warn_expiring`): how many it looked at.
struct WarnExpiring {
    now: Timestamp,
    limit: u64,
}

impl Write for WarnExpiring {
    type Written = usize;

    async fn carry_out(&self, txn: &DatabaseTransaction, store: &Store) -> Result<usize> {
        let WarnExpiring { now, limit } = *self;
        let catalog = store.catalog();
        let rule = &catalog.alerts;
        let horizon = now + chrono::Duration::days(i64::from(rule.grant_expiring_days));
        let due = grants::Entity::find()
            .filter(grants::Column::Expired.eq(false))
            .filter(grants::Column::ExpiresAt.gt(time(now)))
            .filter(grants::Column::ExpiresAt.lte(time(horizon)))
            .filter(grants::Column::Remaining.gt(0))
            .filter(grants::Column::Price.is_not_null())
            .filter(
                Condition::any()
                    .add(grants::Column::ExpiryWarnedFor.is_null())
                    .add(
                        Expr::col(grants::Column::ExpiryWarnedFor)
                            .ne(Expr::col(grants::Column::ExpiresAt)),
                    ),
            )
            .order_by_asc(grants::Column::ExpiresAt)
            .order_by_asc(grants::Column::Id)
            .limit(limit)
            .all(txn)
            .await?;
        let looked_at = due.len();
        let mut messages = Vec::new();
        for row in due {
            let customer = CustomerId::known(row.customer_id.clone());
            let warned_for = row.expiry_warned_for.map(rows::timestamp).transpose()?;
            let expires_at = row.expires_at;
            let id = row.id.clone();
            let grant = rows::grant_from_row(row)?;
            if let Some(message) = alerts::grant_expiring(&customer, &grant, warned_for, rule, now)
            {
                messages.push(message);
            }
            grants::Entity::update_many()
                .col_expr(grants::Column::ExpiryWarnedFor, Expr::value(expires_at))
                .filter(grants::Column::Id.eq(id))
                .exec(txn)
                .await?;
        }
        super::outbox::enqueue(txn, &catalog.webhooks, &messages).await?;
        Ok(looked_at)
    }
}
