//! Customer controls: spend limits and low-balance thresholds (commands of the customer's book),
//! feature overrides (kept with who and why) and the expiry warnings.

use super::Store;
use super::book::Envelope;
use super::locks::lock_customer;
use super::rows::{self, time};
use crate::domain::Timestamp;
use crate::domain::alerts;
use crate::domain::command::{Answer, Command};
use crate::domain::limits::{self, Limit};
use crate::domain::money::Credits;
use crate::domain::overrides::{Flat, Override, Overrides};
use crate::domain::thresholds::AlertRule;
use crate::error::{Error, Result};
use entity::{customers, grants, override_history};
use sea_orm::ActiveValue::Set;
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
    pub customer: String,
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
        customer: &str,
        limits: Vec<Limit>,
        now: Timestamp,
        actor: super::operators::OperatorAction,
    ) -> Result<Option<LimitsSet>> {
        let set = Envelope::new(customer, Command::SetLimits { limits }, now).by(actor);
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
        customer: &str,
        own: Option<crate::domain::alerts::LowBalance>,
        now: Timestamp,
        actor: super::operators::OperatorAction,
    ) -> Result<Option<AlertRule>> {
        let set = Envelope::new(customer, Command::SetLowBalance { own }, now).by(actor);
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
    /// unknown), once per idempotency key: the same key and request answer the override first
    /// recorded; the same key with another request is a conflict.
    pub async fn add_override(&self, request: OverrideRequest) -> Result<OverrideMade> {
        let (_permit, txn) = self.begin_write().await?;
        let now = request.made.at;
        super::locks::insert_customer_if_absent(&txn, &request.customer, now).await?;
        lock_customer(&txn, &request.customer).await?;
        let earlier = override_history::Entity::find()
            .filter(override_history::Column::CustomerId.eq(request.customer.as_str()))
            .filter(override_history::Column::IdempotencyKey.eq(request.idempotency_key.as_str()))
            .one(&txn)
            .await?;
        if let Some(row) = earlier {
            if row.request_hash != request.request_hash {
                return Err(Error::IdempotencyConflict);
            }
            return Ok(OverrideMade {
                made: override_from_row(row)?,
                replayed: true,
            });
        }
        let current: Option<String> = customers::Entity::find_by_id(request.customer.clone())
            .select_only()
            .column(customers::Column::Overrides)
            .into_tuple::<Option<String>>()
            .one(&txn)
            .await?
            .flatten();
        let mut overrides: Overrides = rows::from_json_column(current.as_deref())?;
        overrides.set(request.made.clone());
        let made = &request.made;
        let action = super::operators::OperatorAction::new(
            &made.actor,
            super::operators::OperatorActionKind::Override,
            serde_json::to_value(crate::domain::overrides::Flat::from(made.clone()))
                .map_err(|e| Error::Internal(format!("an override as JSON: {e}")))?,
        )
        .on_customer(&request.customer)
        .on(&made.id);
        super::operators::record(&txn, &action, now).await?;
        override_history::Entity::insert(override_row(
            made,
            &request.customer,
            &request.idempotency_key,
            &request.request_hash,
        )?)
        .exec_without_returning(&txn)
        .await?;
        customers::Entity::update_many()
            .col_expr(
                customers::Column::Overrides,
                Expr::value(rows::json_column(&overrides, overrides.is_empty())?),
            )
            .filter(customers::Column::Id.eq(request.customer.as_str()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        self.books.forget([request.customer.as_str()]);
        Ok(OverrideMade {
            made: request.made,
            replayed: false,
        })
    }

    /// Every override made for a customer, newest first (at most `limit`).
    pub async fn override_history(&self, customer: &str, limit: u64) -> Result<Vec<Override>> {
        override_history::Entity::find()
            .filter(override_history::Column::CustomerId.eq(customer))
            .order_by_desc(override_history::Column::CreatedAt)
            .order_by_desc(override_history::Column::Id)
            .limit(limit)
            .all(self.connection())
            .await?
            .into_iter()
            .map(override_from_row)
            .collect()
    }
}

/// An override as its history row: the fields of its kind, the others empty.
fn override_row(
    made: &Override,
    customer: &str,
    idempotency_key: &str,
    request_hash: &str,
) -> Result<override_history::ActiveModel> {
    let flat = Flat::from(made.clone());
    let micros = |c: Option<Credits>| c.map(rows::micros).transpose();
    Ok(override_history::ActiveModel {
        id: Set(flat.id),
        customer_id: Set(customer.to_owned()),
        kind: Set(made.change.kind().to_owned()),
        feature: Set(flat.feature),
        enabled: Set(flat.enabled),
        action: Set(flat.action),
        credits_per_unit: Set(micros(flat.credits_per_unit)?),
        overage: Set(flat.overage),
        overage_limit: Set(micros(flat.overage_limit)?),
        overage_price: Set(flat.overage_price.map(|p| p.to_string())),
        until_at: Set(flat.until.map(time)),
        reason: Set(flat.reason),
        actor: Set(flat.actor),
        idempotency_key: Set(idempotency_key.to_owned()),
        request_hash: Set(request_hash.to_owned()),
        created_at: Set(time(made.at)),
    })
}

fn override_from_row(row: override_history::Model) -> Result<Override> {
    let overage_price = row
        .overage_price
        .map(|p| p.parse())
        .transpose()
        .map_err(|e| Error::Internal(format!("override {}: overage_price {e}", row.id)))?;
    let flat = Flat {
        id: row.id.clone(),
        kind: Some(row.kind),
        feature: row.feature,
        enabled: row.enabled,
        action: row.action,
        credits_per_unit: row.credits_per_unit.map(Credits::from_micros),
        overage: row.overage,
        overage_limit: row.overage_limit.map(Credits::from_micros),
        overage_price,
        until: row.until_at.map(rows::timestamp).transpose()?,
        reason: row.reason,
        actor: row.actor,
        at: rows::timestamp(row.created_at)?,
    };
    Override::try_from(flat).map_err(|e| Error::Internal(format!("override {}: {e}", row.id)))
}

impl Store {
    /// Sends `credit.grant_expiring` for the paid grants with credits left that expire within the
    /// alert rule's days of `now` and were not warned of for that expiry, at most `limit` of
    /// them; returns how many were looked at (fewer than `limit`: none left).
    pub async fn warn_expiring(&self, now: Timestamp, limit: u64) -> Result<usize> {
        let catalog = self.catalog();
        let rule = &catalog.alerts;
        let horizon = now + chrono::Duration::days(i64::from(rule.grant_expiring_days));
        let (_permit, txn) = self.begin_write().await?;
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
            .all(&txn)
            .await?;
        let looked_at = due.len();
        let mut messages = Vec::new();
        for row in due {
            let customer = row.customer_id.clone();
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
                .exec(&txn)
                .await?;
        }
        super::outbox::enqueue(&txn, &catalog.webhooks, &messages).await?;
        txn.commit().await?;
        Ok(looked_at)
    }
}
