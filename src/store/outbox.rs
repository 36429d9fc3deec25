//! The transactional outbox (README, Outbound webhooks): messages are written in the transaction
//! of the change that causes them, one row per destination, and claimed by delivery workers with
//! a lease, so that several instances never deliver the same row at once.

use super::Store;
use super::rows::ByKey;
use super::rows::statement_chunks;
use super::rows::time;
use super::unit::Write;
use crate::domain::Timestamp;
use crate::domain::customer::CustomerId;
use crate::domain::outbound::{
    AfterFailure, EventType, Message, ReplayRefusal, StripeWrite, Subscription, destinations,
    stripe_replay,
};
use crate::error::{Error, Result};
use entity::outbox;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use std::collections::BTreeMap;

/// What an outbox row is, and so how the worker delivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// An event POSTed to a `[[webhooks]]` endpoint, signed per Standard Webhooks.
    Webhook,
    /// A meter event sent to Stripe's API (`POST /v1/billing/meter_events`).
    MeterEvent,
    /// An automatic top-up charged through Stripe's API (`POST /v1/payment_intents`).
    PaymentIntent,
}

impl OutboxKind {
    pub const ALL: [OutboxKind; 3] = [
        OutboxKind::Webhook,
        OutboxKind::MeterEvent,
        OutboxKind::PaymentIntent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Webhook => "webhook",
            OutboxKind::MeterEvent => "stripe_meter_event",
            OutboxKind::PaymentIntent => "stripe_payment_intent",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxKind> {
        OutboxKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// A write to Stripe's API, which may bill: never sent twice.
    pub fn is_stripe_write(self) -> bool {
        matches!(self, OutboxKind::MeterEvent | OutboxKind::PaymentIntent)
    }
}

/// The destination of meter events.
pub const STRIPE_DESTINATION: &str = "stripe";

/// A row's delivery state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OutboxStatus {
    Pending,
    Delivered,
    Dead,
}

impl OutboxStatus {
    pub const ALL: [OutboxStatus; 3] = [
        OutboxStatus::Pending,
        OutboxStatus::Delivered,
        OutboxStatus::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxStatus> {
        OutboxStatus::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Longest error text kept per row.
const MAX_ERROR_CHARS: usize = 500;

/// Writes `messages` for every endpoint that takes their type, inside `txn`. A message already
/// written for an endpoint (the same cause) is not written again.
pub(crate) async fn enqueue(
    txn: &DatabaseTransaction,
    subscriptions: &[Subscription],
    messages: &[Message],
) -> Result<()> {
    let now = time(chrono::Utc::now());
    let mut rows = Vec::new();
    for message in messages {
        let (id, body) = (message.id(), message.body());
        for url in destinations(subscriptions, message.event_type) {
            rows.push(pending(
                &id,
                OutboxKind::Webhook,
                url,
                message.event_type.as_str(),
                message.customer.as_str(),
                body.clone(),
                now,
            ));
        }
    }
    insert_new(txn, rows).await
}

/// Writes one meter event per report inside `txn`, its identifier as the message id (the same
/// report is never written twice).
pub(crate) async fn enqueue_meter_events(
    txn: &DatabaseTransaction,
    reports: &[crate::domain::overage::MeterReport],
) -> Result<()> {
    let now = time(chrono::Utc::now());
    let rows: Vec<outbox::ActiveModel> = reports
        .iter()
        .map(|r| {
            pending(
                &r.identifier,
                OutboxKind::MeterEvent,
                STRIPE_DESTINATION,
                EventType::OverageReported.as_str(),
                r.customer.as_str(),
                r.body().to_string(),
                now,
            )
        })
        .collect();
    insert_new(txn, rows).await
}

/// A row to deliver now.
pub(crate) fn pending(
    message_id: &str,
    kind: OutboxKind,
    destination: &str,
    event_type: &str,
    customer: &str,
    body: String,
    now: i64,
) -> outbox::ActiveModel {
    outbox::ActiveModel {
        id: Set(uuid::Uuid::now_v7().to_string()),
        message_id: Set(message_id.to_owned()),
        kind: Set(kind.as_str().into()),
        destination: Set(destination.to_owned()),
        event_type: Set(event_type.into()),
        customer_id: Set(customer.to_owned()),
        body: Set(body),
        status: Set(OutboxStatus::Pending.as_str().into()),
        attempts: Set(0),
        created_at: Set(now),
        next_attempt_at: Set(now),
        last_attempt_at: Set(None),
        last_error: Set(None),
        delivered_at: Set(None),
        first_attempt_at: Set(None),
    }
}

/// Inserts `rows`, leaving out those already written (the same message and destination).
pub(crate) async fn insert_new(
    txn: &DatabaseTransaction,
    rows: Vec<outbox::ActiveModel>,
) -> Result<()> {
    for chunk in statement_chunks(&rows, super::rows::ROWS_PER_STATEMENT) {
        outbox::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([outbox::Column::MessageId, outbox::Column::Destination])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// How an attempt at delivering a row ended.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    Delivered,
    /// Failed with `error`; `next` says whether it is tried again.
    Failed {
        next: AfterFailure,
        error: &'a str,
    },
}

/// What an operator asks of the outbox.
#[derive(Debug, Clone, Default)]
pub struct OutboxQuery {
    pub status: Option<OutboxStatus>,
    pub customer: Option<CustomerId>,
    /// Rows after this id (ids are time-ordered).
    pub after: Option<String>,
    pub limit: u64,
}

impl Store {
    /// Claims up to `limit` rows due at `now` for `lease_ms`: their next attempt moves past the
    /// lease, so no other worker takes them meanwhile (PostgreSQL skips rows another worker is
    /// claiming; SQLite has one writer).
    pub async fn outbox_claim(
        &self,
        now: Timestamp,
        limit: u64,
        lease_ms: i64,
    ) -> Result<Vec<outbox::Model>> {
        self.write(&Claim {
            now,
            limit,
            lease_ms,
        })
        .await
    }

    /// Records an attempt at a pending row.
    pub async fn outbox_attempted(
        &self,
        id: &str,
        now: Timestamp,
        attempt: Attempt<'_>,
    ) -> Result<()> {
        self.write(&Attempted { id, now, attempt }).await
    }

    /// Rows, oldest first, as an operator filters them.
    pub async fn outbox_rows(&self, query: &OutboxQuery) -> Result<Vec<outbox::Model>> {
        let mut select = outbox::Entity::find();
        if let Some(status) = query.status {
            select = select.filter(outbox::Column::Status.eq(status.as_str()));
        }
        if let Some(customer) = &query.customer {
            select = select.filter(outbox::Column::CustomerId.eq(customer.as_str()));
        }
        if let Some(after) = &query.after {
            select = select.filter(outbox::Column::Id.gt(after.as_str()));
        }
        Ok(select
            .order_by_asc(outbox::Column::Id)
            .limit(query.limit)
            .all(self.connection())
            .await?)
    }

    /// A customer's newest rows, newest first: its alerts and their deliveries.
    pub async fn outbox_recent(
        &self,
        customer: &CustomerId,
        limit: u64,
    ) -> Result<Vec<outbox::Model>> {
        let customer = customer.as_str();
        Ok(outbox::Entity::find()
            .filter(outbox::Column::CustomerId.eq(customer))
            .order_by_desc(outbox::Column::Id)
            .limit(limit)
            .all(self.connection())
            .await?)
    }

    pub async fn outbox_row(&self, id: &str) -> Result<Option<outbox::Model>> {
        Ok(outbox::Entity::find_by_id(id.to_owned())
            .by_key(self.connection())
            .await?)
    }

    /// Sends a row again: pending, due now, its retry window starting anew (its attempts are
    /// kept). A pending row is left as it is. A Stripe write is sent again only as
    /// `domain::outbound::stripe_replay` allows, decided on the row as it is under the write lock
    /// (so a delivery that lands meanwhile is not sent twice); `Err` says why not.
    pub async fn outbox_replay(
        &self,
        id: &str,
        now: Timestamp,
        checked_absent_in_stripe: bool,
        actor: &super::operators::OperatorAction,
    ) -> Result<Option<std::result::Result<outbox::Model, ReplayRefusal>>> {
        self.write(&Replay {
            id,
            now,
            checked_absent_in_stripe,
            actor,
        })
        .await
    }

    /// Rows per status, for `/metrics`.
    pub async fn outbox_counts(&self) -> Result<BTreeMap<OutboxStatus, u64>> {
        let rows: Vec<(String, i64)> = outbox::Entity::find()
            .select_only()
            .column(outbox::Column::Status)
            .column_as(outbox::Column::Id.count(), "n")
            .group_by(outbox::Column::Status)
            .into_tuple()
            .all(self.connection())
            .await?;
        let mut counts: BTreeMap<OutboxStatus, u64> =
            OutboxStatus::ALL.into_iter().map(|s| (s, 0)).collect();
        for (status, n) in rows {
            let status = OutboxStatus::parse(&status)
                .ok_or_else(|| Error::Internal(format!("outbox status {status:?}")))?;
            counts.insert(status, u64::try_from(n).unwrap_or(0));
        }
        Ok(counts)
    }
}

/// A Stripe write's delivery as the replay rule reads it; `None` for a webhook row.
pub fn stripe_write(row: &outbox::Model, now: Timestamp) -> Result<Option<StripeWrite>> {
    let kind = OutboxKind::parse(&row.kind)
        .ok_or_else(|| Error::Internal(format!("outbox kind {:?}", row.kind)))?;
    if !kind.is_stripe_write() {
        return Ok(None);
    }
    let status = OutboxStatus::parse(&row.status)
        .ok_or_else(|| Error::Internal(format!("outbox status {:?}", row.status)))?;
    Ok(Some(match status {
        OutboxStatus::Pending => StripeWrite::Pending,
        OutboxStatus::Delivered => StripeWrite::Delivered,
        OutboxStatus::Dead => StripeWrite::GivenUp {
            first_attempt_ms_ago: row
                .first_attempt_at
                .map(|first| u64::try_from((time(now) - first) / 1_000).unwrap_or(0)),
        },
    }))
}

/// A row's wall-clock time (Unix microseconds), for answers.
pub use super::rows::timestamp as row_time;

/// Rows due claimed for a lease (`Store::outbox_claim`).
struct Claim {
    now: Timestamp,
    limit: u64,
    lease_ms: i64,
}

impl Write for Claim {
    type Written = Vec<outbox::Model>;

    async fn carry_out(&self, txn: &DatabaseTransaction, _: &Store) -> Result<Self::Written> {
        let Claim {
            now,
            limit,
            lease_ms,
        } = *self;
        let backend = txn.get_database_backend();
        let (skip, p) = match backend {
            DbBackend::Postgres => (" FOR UPDATE SKIP LOCKED", ["$1", "$2", "$3"]),
            _ => ("", ["?", "?", "?"]),
        };
        let sql = format!(
            "UPDATE outbox SET next_attempt_at = {} WHERE id IN (SELECT id FROM outbox \
             WHERE status = 'pending' AND next_attempt_at <= {} ORDER BY next_attempt_at, id \
             LIMIT {}{skip}) RETURNING *",
            p[0], p[1], p[2]
        );
        let leased = time(now) + lease_ms.saturating_mul(1_000);
        let claimed = outbox::Entity::find()
            .from_raw_sql(Statement::from_sql_and_values(
                backend,
                sql,
                [leased.into(), time(now).into(), (limit as i64).into()],
            ))
            .all(txn)
            .await?;
        Ok(claimed)
    }
}

/// An attempt at a pending row recorded (`Store::outbox_attempted`).
struct Attempted<'a> {
    id: &'a str,
    now: Timestamp,
    attempt: Attempt<'a>,
}

impl Write for Attempted<'_> {
    type Written = ();

    async fn carry_out(&self, txn: &DatabaseTransaction, _: &Store) -> Result<()> {
        let Attempted { id, now, attempt } = *self;
        let (status, next_at, delivered_at, error) = match attempt {
            Attempt::Delivered => (OutboxStatus::Delivered, time(now), Some(time(now)), None),
            Attempt::Failed {
                next: AfterFailure::RetryInMs(ms),
                error,
            } => (
                OutboxStatus::Pending,
                time(now) + i64::try_from(ms).unwrap_or(i64::MAX / 2) * 1_000,
                None,
                Some(error),
            ),
            Attempt::Failed {
                next: AfterFailure::Dead,
                error,
            } => (OutboxStatus::Dead, time(now), None, Some(error)),
        };
        let error: Option<String> = error.map(|e| e.chars().take(MAX_ERROR_CHARS).collect());
        outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::value(status.as_str()))
            .col_expr(
                outbox::Column::Attempts,
                Expr::col(outbox::Column::Attempts).add(1),
            )
            .col_expr(outbox::Column::LastAttemptAt, Expr::value(time(now)))
            .col_expr(
                outbox::Column::FirstAttemptAt,
                Expr::col(outbox::Column::FirstAttemptAt).if_null(time(now)),
            )
            .col_expr(outbox::Column::NextAttemptAt, Expr::value(next_at))
            .col_expr(outbox::Column::DeliveredAt, Expr::value(delivered_at))
            .col_expr(outbox::Column::LastError, Expr::value(error))
            .filter(outbox::Column::Id.eq(id))
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending.as_str()))
            .exec(txn)
            .await?;
        Ok(())
    }
}

/// A row sent again, as an operator asked (`Store::outbox_replay`).
struct Replay<'a> {
    id: &'a str,
    now: Timestamp,
    checked_absent_in_stripe: bool,
    actor: &'a super::operators::OperatorAction,
}

impl Write for Replay<'_> {
    type Written = Option<std::result::Result<outbox::Model, ReplayRefusal>>;

    async fn carry_out(&self, txn: &DatabaseTransaction, _: &Store) -> Result<Self::Written> {
        let Replay {
            id,
            now,
            checked_absent_in_stripe,
            actor,
        } = *self;
        let Some(row) = outbox::Entity::find_by_id(id.to_owned())
            .lock_exclusive()
            .by_key(txn)
            .await?
        else {
            return Ok(None);
        };
        if let Some(write) = stripe_write(&row, now)?
            && let Err(refusal) = stripe_replay(write, checked_absent_in_stripe)
        {
            return Ok(Some(Err(refusal)));
        }
        outbox::Entity::update_many()
            .col_expr(
                outbox::Column::Status,
                Expr::value(OutboxStatus::Pending.as_str()),
            )
            .col_expr(outbox::Column::NextAttemptAt, Expr::value(time(now)))
            .col_expr(outbox::Column::CreatedAt, Expr::value(time(now)))
            .filter(outbox::Column::Id.eq(id))
            .filter(outbox::Column::Status.ne(OutboxStatus::Pending.as_str()))
            .exec(txn)
            .await?;
        let actor = super::operators::OperatorAction {
            customer: Some(row.customer_id.clone()),
            ..actor.clone()
        };
        super::operators::record(txn, &actor, now).await?;
        let row = outbox::Entity::find_by_id(id.to_owned())
            .by_key(txn)
            .await?;
        Ok(row.map(Ok))
    }
}
