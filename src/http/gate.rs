//! The pre-call gate: check, authorize (hold), capture, void, and one-shot usage.

use super::AppState;
use super::extract::{Amount, ApiJson, Caller, identifier, request_hash};
use crate::domain::Timestamp;
use crate::domain::catalog::Action;
use crate::domain::entitlement::{self, Refusal};
use crate::domain::ledger::{Book, Rejection, Usage};
use crate::domain::money::{Credits, Quantity};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::keys::Scope;
use crate::store::revenue::Origin;
use crate::store::{Command, Idempotency, Standing};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
pub struct CheckRequest {
    customer: String,
    action: String,
    #[schema(value_type = String, example = "1")]
    quantity: Amount,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CheckResponse {
    allowed: bool,
    #[schema(value_type = String)]
    credits: Credits,
    #[schema(value_type = String)]
    available: Credits,
    /// `ok`, or the problem type an authorization would be refused with.
    reason: String,
}

#[derive(Deserialize, ToSchema)]
pub struct SpendRequest {
    customer: String,
    action: String,
    #[schema(value_type = String, example = "1")]
    quantity: Amount,
    idempotency_key: String,
    /// Usage only: when the usage happened, if it is reported late (at most
    /// `MAX_USAGE_LATENESS_DAYS` ago). Its revenue is dated then; credits are spent now.
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
}

/// How late a usage may be reported: a limit on how far back revenue can be dated.
pub const MAX_USAGE_LATENESS_DAYS: i64 = 35;

/// When a reported usage happened: now, or a past time within the lateness limit.
fn occurred(occurred_at: Option<DateTime<Utc>>, now: Timestamp) -> Result<Timestamp> {
    match occurred_at {
        None => Ok(now),
        Some(at) if at > now => Err(Error::invalid("occurred_at", "is in the future")),
        Some(at) if now - at > chrono::Duration::days(MAX_USAGE_LATENESS_DAYS) => {
            Err(Error::invalid(
                "occurred_at",
                format!("is more than {MAX_USAGE_LATENESS_DAYS} days ago"),
            ))
        }
        Some(at) => Ok(at),
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AuthorizationResponse {
    id: String,
    status: String,
    customer: String,
    action: String,
    #[schema(value_type = String)]
    credits: Credits,
    #[schema(value_type = String)]
    available: Credits,
    expires_at: DateTime<Utc>,
}

#[derive(Deserialize, ToSchema)]
pub struct CaptureRequest {
    /// Units of the held action actually used; or give `credits`.
    #[schema(value_type = Option<String>)]
    quantity: Option<Amount>,
    #[schema(value_type = Option<String>)]
    credits: Option<Amount>,
    /// Accepted for uniformity; a hold resolves once, so the hold itself is the key.
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ResolutionResponse {
    id: String,
    status: String,
    #[schema(value_type = String)]
    credits: Credits,
    #[schema(value_type = String)]
    available: Credits,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UsageResponse {
    id: String,
    customer: String,
    action: String,
    #[schema(value_type = String)]
    credits: Credits,
    #[schema(value_type = String)]
    available: Credits,
}

/// A request to spend, parsed: the customer, the priced action, and its cost.
struct Spend<'a> {
    customer: String,
    action: &'a Action,
    quantity: Quantity,
    credits: Credits,
}

fn parse_spend<'a>(
    state: &'a AppState,
    customer: &str,
    action: &str,
    quantity: Amount,
) -> Result<Spend<'a>> {
    let customer = identifier("customer", customer)?;
    let action = state
        .catalog
        .action(action)
        .ok_or_else(|| Error::UnknownAction(action.to_owned()))?;
    let quantity = Quantity::try_from(quantity.0)
        .map_err(|e| Error::invalid("quantity", format!("{} {e}", quantity.0)))?;
    let credits = action
        .cost(quantity)
        .map_err(|e| Error::invalid("quantity", format!("the cost {e}")))?;
    Ok(Spend {
        customer,
        action,
        quantity,
        credits,
    })
}

impl Spend<'_> {
    fn usage(&self) -> Usage {
        Usage {
            action: Some(self.action.id.clone()),
            quantity: Some(self.quantity.to_string()),
        }
    }

    fn entitle(&self, state: &AppState, standing: &Standing, now: Timestamp) -> Result<()> {
        let standing = entitlement::Standing {
            plan_id: standing
                .plan_in_force(now, state.stripe.past_due_grace_seconds)
                .map(str::to_owned),
            frozen: standing.frozen,
        };
        entitlement::entitle(&state.catalog, &standing, self.action).map_err(
            |refusal| match refusal {
                Refusal::FeatureNotEntitled => Error::FeatureNotEntitled(self.action.id.clone()),
                Refusal::CustomerFrozen => Error::CustomerFrozen,
            },
        )
    }

    fn idempotency(&self, route: &str, key: &str) -> Result<Idempotency> {
        Ok(Idempotency::request(
            &identifier("idempotency_key", key)?,
            request_hash(&[route, &self.action.id, &self.quantity.to_string()]),
        ))
    }

    /// An unknown customer has no credits (DESIGN.md §5).
    fn unknown_customer(&self, e: Error) -> Error {
        match e {
            Error::CustomerNotFound(_) => Error::Rejected(Rejection::InsufficientCredits {
                required: self.credits,
                available: Credits::ZERO,
            }),
            other => other,
        }
    }
}

#[utoipa::path(post, path = "/v1/check", request_body = CheckRequest,
    responses((status = 200, body = CheckResponse)), security(("bearer" = [])))]
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CheckRequest>,
) -> Result<Json<CheckResponse>> {
    caller.require(Scope::App)?;
    let spend = parse_spend(&state, &request.customer, &request.action, request.quantity)?;
    let now = state.clock.now();
    let Some((mut book, standing)) = state.store.view(&spend.customer, now).await? else {
        return Ok(Json(CheckResponse {
            allowed: false,
            credits: spend.credits,
            available: Credits::ZERO,
            reason: "insufficient_credits".into(),
        }));
    };
    let available = book.available();
    let decision = spend.entitle(&state, &standing, now).and_then(|()| {
        let overage = state
            .catalog
            .overage_for(standing.plan_in_force(now, state.stripe.past_due_grace_seconds));
        // Decide on a scratch copy exactly as an authorization would; nothing is written.
        book.authorize("check", &spend.usage(), spend.credits, &overage, now, now)
            .map_err(Error::from)
    });
    let reason = match decision {
        Ok(()) => "ok",
        Err(e) => e.status_and_type().1,
    };
    Ok(Json(CheckResponse {
        allowed: reason == "ok",
        credits: spend.credits,
        available,
        reason: reason.into(),
    }))
}

#[utoipa::path(post, path = "/v1/authorizations", request_body = SpendRequest,
    responses((status = 201, body = AuthorizationResponse), (status = 402), (status = 403)),
    security(("bearer" = [])))]
pub async fn authorize(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<SpendRequest>,
) -> Result<(StatusCode, Json<AuthorizationResponse>)> {
    caller.require(Scope::App)?;
    if request.occurred_at.is_some() {
        return Err(Error::invalid(
            "occurred_at",
            "applies to usage only; an authorization is made now",
        ));
    }
    let spend = parse_spend(&state, &request.customer, &request.action, request.quantity)?;
    let now = state.clock.now();
    let hold_id = format!("hold_{}", uuid::Uuid::now_v7().simple());
    let expires_at = now + chrono::Duration::seconds(state.hold_timeout_seconds as i64);
    let command = Command {
        customer_id: &spend.customer,
        create_customer: false,
        idempotency: Some(spend.idempotency(POST_AUTHORIZATIONS, &request.idempotency_key)?),
        hold_id: None,
        now,
        origin: Default::default(),
    };
    let result = state
        .store
        .execute(command, |book: &mut Book, standing| {
            spend.entitle(&state, standing, now)?;
            let overage = state
                .catalog
                .overage_for(standing.plan_in_force(now, state.stripe.past_due_grace_seconds));
            book.authorize(
                &hold_id,
                &spend.usage(),
                spend.credits,
                &overage,
                expires_at,
                now,
            )?;
            Ok(AuthorizationResponse {
                id: hold_id.clone(),
                status: "held".into(),
                customer: spend.customer.clone(),
                action: spend.action.id.clone(),
                credits: spend.credits,
                available: book.available(),
                expires_at,
            })
        })
        .await
        .map_err(|e| spend.unknown_customer(e));
    match &result {
        Ok(executed) if executed.replayed => Metrics::bump(&state.metrics.idempotent_replays),
        Ok(_) => Metrics::bump(&state.metrics.authorizations_approved),
        Err(_) => Metrics::bump(&state.metrics.authorizations_refused),
    }
    Ok((StatusCode::CREATED, Json(result?.value)))
}

const POST_AUTHORIZATIONS: &str = "POST /v1/authorizations";
const POST_USAGE: &str = "POST /v1/usage";

/// Runs a capture or void: the hold resolves once, so its id is the idempotency key and a
/// different second resolution is refused with `hold_already_resolved`.
async fn resolve<F>(
    state: &AppState,
    hold_id: &str,
    request: &str,
    now: DateTime<Utc>,
    decide: F,
) -> Result<ResolutionResponse>
where
    F: Fn(&mut Book, &Standing) -> Result<ResolutionResponse>,
{
    let hold_id = identifier("id", hold_id)?;
    let (customer, _) = state
        .store
        .hold_status(&hold_id)
        .await?
        .ok_or(Error::Rejected(Rejection::HoldNotFound))?;
    let command = Command {
        customer_id: &customer,
        create_customer: false,
        idempotency: Some(Idempotency::hold_resolution(
            &hold_id,
            request_hash(&[request]),
        )),
        hold_id: Some(&hold_id),
        now,
        origin: Default::default(),
    };
    match state.store.execute(command, decide).await {
        Ok(executed) => {
            if executed.replayed {
                Metrics::bump(&state.metrics.idempotent_replays);
            }
            Ok(executed.value)
        }
        Err(Error::IdempotencyConflict) => {
            // The hold was resolved by a different request.
            let status = state
                .store
                .hold_status(&hold_id)
                .await?
                .map_or("resolved", |(_, s)| s.as_str());
            Err(Error::Rejected(Rejection::HoldResolved(status)))
        }
        Err(e) => Err(e),
    }
}

#[utoipa::path(post, path = "/v1/authorizations/{id}/capture", request_body = CaptureRequest,
    params(("id" = String, Path, description = "hold id")),
    responses((status = 200, body = ResolutionResponse), (status = 402), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub async fn capture(
    State(state): State<AppState>,
    caller: Caller,
    Path(hold_id): Path<String>,
    ApiJson(request): ApiJson<CaptureRequest>,
) -> Result<Json<ResolutionResponse>> {
    caller.require(Scope::App)?;
    // Zero is a valid capture (the call produced nothing): the whole hold is released.
    enum Actual {
        Nothing,
        Quantity(Quantity),
        Credits(Credits),
    }
    let (actual, described) = match (request.quantity, request.credits) {
        (Some(q), None) if q.0.is_zero() => (Actual::Nothing, "0".to_owned()),
        (None, Some(c)) if c.0.is_zero() => (Actual::Nothing, "0".to_owned()),
        (Some(q), None) => {
            let quantity = Quantity::try_from(q.0)
                .map_err(|e| Error::invalid("quantity", format!("{} {e}", q.0)))?;
            (Actual::Quantity(quantity), format!("quantity {quantity}"))
        }
        (None, Some(c)) => {
            let credits = Credits::positive(c.0)
                .map_err(|e| Error::invalid("credits", format!("{} {e}", c.0)))?;
            (Actual::Credits(credits), format!("credits {credits}"))
        }
        _ => {
            return Err(Error::invalid(
                "body",
                "give exactly one of quantity or credits",
            ));
        }
    };
    let now = state.clock.now();
    let request_text = format!("capture {described}");
    let value = resolve(&state, &hold_id, &request_text, now, |book, standing| {
        let hold = book.hold(&hold_id).ok_or(Rejection::HoldNotFound)?;
        let credits = match &actual {
            Actual::Nothing => Credits::ZERO,
            Actual::Credits(c) => *c,
            Actual::Quantity(q) => state
                .catalog
                .action(&hold.action)
                .ok_or_else(|| Error::UnknownAction(hold.action.clone()))?
                .cost(*q)
                .map_err(|e| Error::invalid("quantity", format!("the cost {e}")))?,
        };
        let overage = state
            .catalog
            .overage_for(standing.plan_in_force(now, state.stripe.past_due_grace_seconds));
        let quantity = match &actual {
            Actual::Nothing => Some("0".to_owned()),
            Actual::Quantity(q) => Some(q.to_string()),
            Actual::Credits(_) => None,
        };
        book.capture(&hold_id, credits, quantity, &overage, now)?;
        Ok(ResolutionResponse {
            id: hold_id.clone(),
            status: "captured".into(),
            credits,
            available: book.available(),
        })
    })
    .await?;
    Metrics::bump(&state.metrics.captures);
    Ok(Json(value))
}

#[utoipa::path(post, path = "/v1/authorizations/{id}/void",
    params(("id" = String, Path, description = "hold id")),
    responses((status = 200, body = ResolutionResponse), (status = 404), (status = 409)),
    security(("bearer" = [])))]
pub async fn void(
    State(state): State<AppState>,
    caller: Caller,
    Path(hold_id): Path<String>,
) -> Result<Json<ResolutionResponse>> {
    caller.require(Scope::App)?;
    let now = state.clock.now();
    let value = resolve(&state, &hold_id, "void", now, |book, _| {
        book.void(&hold_id, now)?;
        Ok(ResolutionResponse {
            id: hold_id.clone(),
            status: "voided".into(),
            credits: Credits::ZERO,
            available: book.available(),
        })
    })
    .await?;
    Metrics::bump(&state.metrics.voids);
    Ok(Json(value))
}

#[utoipa::path(post, path = "/v1/usage", request_body = SpendRequest,
    responses((status = 201, body = UsageResponse), (status = 402), (status = 403)),
    security(("bearer" = [])))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<SpendRequest>,
) -> Result<(StatusCode, Json<UsageResponse>)> {
    caller.require(Scope::App)?;
    let spend = parse_spend(&state, &request.customer, &request.action, request.quantity)?;
    let now = state.clock.now();
    let occurred_at = occurred(request.occurred_at, now)?;
    let mut idempotency = spend.idempotency(POST_USAGE, &request.idempotency_key)?;
    if occurred_at != now {
        idempotency = Idempotency::request(
            &identifier("idempotency_key", &request.idempotency_key)?,
            request_hash(&[
                POST_USAGE,
                &spend.action.id,
                &spend.quantity.to_string(),
                &occurred_at.to_rfc3339(),
            ]),
        );
    }
    let usage_id = format!("usage_{}", uuid::Uuid::now_v7().simple());
    let command = Command {
        customer_id: &spend.customer,
        create_customer: false,
        idempotency: Some(idempotency),
        hold_id: None,
        now,
        origin: Origin {
            source: Some(&usage_id),
            event: None,
        },
    };
    let executed = state
        .store
        .execute(command, |book: &mut Book, standing| {
            spend.entitle(&state, standing, now)?;
            let overage = state
                .catalog
                .overage_for(standing.plan_in_force(now, state.stripe.past_due_grace_seconds));
            // Spent now, against what is available now; dated when it happened.
            book.debit(spend.credits, &spend.usage(), &overage, occurred_at)?;
            Ok(UsageResponse {
                id: usage_id.clone(),
                customer: spend.customer.clone(),
                action: spend.action.id.clone(),
                credits: spend.credits,
                available: book.available(),
            })
        })
        .await
        .map_err(|e| spend.unknown_customer(e))?;
    Metrics::bump(if executed.replayed {
        &state.metrics.idempotent_replays
    } else {
        &state.metrics.usages
    });
    Ok((StatusCode::CREATED, Json(executed.value)))
}
