//! The outbox for operators: what was sent, what waits, what was given up, and sending again.

use super::AppState;
use super::extract::page_limit;
use super::extract::{ApiQuery, Caller, customer_id, identifier, time_ordered_cursor};
use crate::domain::outbound::{ReplayRefusal, stripe_replay};
use crate::error::{Error, Result};
use crate::store::keys::Scope;
use crate::store::operators::{OperatorAction, OperatorActionKind};
use crate::store::outbox::{OutboxQuery, OutboxStatus, row_time, stripe_write};
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Serialize, ToSchema)]
pub struct OutboxMessage {
    /// This row: one message to one destination.
    id: String,
    /// The message's id (`webhook-id`), the same on every retry and for every destination.
    message_id: String,
    /// `webhook` (to a `[[webhooks]]` endpoint), `stripe_meter_event` (overage to Stripe) or
    /// `stripe_payment_intent` (an automatic top-up charged through Stripe).
    kind: String,
    destination: String,
    #[serde(rename = "type")]
    event_type: String,
    customer: String,
    /// `pending`, `delivered` or `dead` (given up: replay it to send it again).
    status: String,
    attempts: i32,
    /// When it was written (or last replayed), in real time.
    created_at: DateTime<Utc>,
    /// When a pending message is tried next.
    next_attempt_at: Option<DateTime<Utc>>,
    last_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    last_error: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
    /// When it was first attempted: a Stripe write's idempotency window (24 hours) starts then.
    first_attempt_at: Option<DateTime<Utc>>,
    /// A Stripe write given up after it may have reached Stripe, whose idempotency window has
    /// closed: check Stripe (its idempotency key is `message_id`). creditbook does not send it
    /// again unless replayed with `absent_in_stripe=true`.
    needs_reconciling: bool,
    /// The body as sent.
    #[schema(value_type = Object)]
    body: serde_json::Value,
}

impl OutboxMessage {
    fn from_row(row: entity::outbox::Model, now: DateTime<Utc>) -> Result<Self> {
        let pending = row.status == OutboxStatus::Pending.as_str();
        let needs_reconciling = stripe_write(&row, now)?
            .is_some_and(|write| stripe_replay(write, false) == Err(ReplayRefusal::Unconfirmed));
        Ok(OutboxMessage {
            first_attempt_at: row.first_attempt_at.map(row_time).transpose()?,
            needs_reconciling,
            body: serde_json::from_str(&row.body)
                .map_err(|e| Error::Internal(format!("outbox body: {e}")))?,
            created_at: row_time(row.created_at)?,
            next_attempt_at: pending.then(|| row_time(row.next_attempt_at)).transpose()?,
            last_attempt_at: row.last_attempt_at.map(row_time).transpose()?,
            delivered_at: row.delivered_at.map(row_time).transpose()?,
            id: row.id,
            message_id: row.message_id,
            kind: row.kind,
            destination: row.destination,
            event_type: row.event_type,
            customer: row.customer_id,
            status: row.status,
            attempts: row.attempts,
            last_error: row.last_error,
        })
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutboxListQuery {
    /// `pending`, `delivered` or `dead`; every status when absent.
    status: Option<String>,
    /// Only this customer's messages.
    customer: Option<String>,
    /// Messages per page, 1 to 200 (default 50).
    limit: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OutboxPage {
    messages: Vec<OutboxMessage>,
    /// Pass as `cursor` for the next (newer) page; absent on the last page.
    next_cursor: Option<String>,
}

/// Messages to outside systems, oldest first.
#[utoipa::path(get, path = "/v1/outbox", params(OutboxListQuery),
    responses((status = 200, body = OutboxPage)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<OutboxListQuery>,
) -> Result<Json<OutboxPage>> {
    caller.require(Scope::Admin)?;
    let now = state.wall_clock.now();
    let limit = page_limit(query.limit)?;
    let status = query
        .status
        .map(|s| {
            OutboxStatus::parse(&s).ok_or_else(|| {
                Error::invalid("status", "must be \"pending\", \"delivered\" or \"dead\"")
            })
        })
        .transpose()?;
    let after = time_ordered_cursor(query.cursor)?;
    let customer = query
        .customer
        .map(|c| customer_id("customer", &c))
        .transpose()?;
    let rows = state
        .store
        .outbox_rows(&OutboxQuery {
            status,
            customer,
            after,
            limit: limit + 1,
        })
        .await?;
    let more = rows.len() as u64 > limit;
    let messages = rows
        .into_iter()
        .take(limit as usize)
        .map(|row| OutboxMessage::from_row(row, now))
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(OutboxPage {
        next_cursor: more
            .then(|| messages.last().map(|m| m.id.clone()))
            .flatten(),
        messages,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    /// For a Stripe write past Stripe's idempotency window (`needs_reconciling`): you have
    /// checked in Stripe that it is not there, so sending it again cannot bill twice.
    absent_in_stripe: Option<bool>,
}

/// Sends a delivered or given-up message again (a pending one is left as it is): pending, due
/// now, with a new retry window. A Stripe write (a meter event, an automatic top-up's charge) is
/// never sent again once Stripe acknowledged it (409 `outbox_already_delivered`), nor once it
/// may have reached Stripe more than 23 hours ago (409 `stripe_write_unconfirmed`) unless
/// `absent_in_stripe=true`.
#[utoipa::path(post, path = "/v1/outbox/{id}/replay", params(("id" = String, Path), ReplayQuery),
    responses((status = 200, body = OutboxMessage), (status = 404), (status = 409)), security(("bearer" = [])))]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ReplayQuery>,
) -> Result<Json<OutboxMessage>> {
    caller.require(Scope::Admin)?;
    let id = identifier("id", &id)?;
    let now = state.wall_clock.now();
    let absent_in_stripe = query.absent_in_stripe.unwrap_or(false);
    let actor = OperatorAction::new(
        caller.key_id(),
        OperatorActionKind::OutboxReplay,
        serde_json::json!({"absent_in_stripe": absent_in_stripe}),
    )
    .on(&id);
    let row = state
        .store
        .outbox_replay(&id, now, absent_in_stripe, &actor)
        .await?
        .ok_or_else(|| Error::OutboxMessageNotFound(id.clone()))?
        .map_err(Error::ReplayRefused)?;
    Ok(Json(OutboxMessage::from_row(row, now)?))
}
