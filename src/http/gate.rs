//! The pre-call gate: check, authorize (hold), capture, void, and one-shot usage.

use super::AppState;
use super::extract::{Amount, ApiJson, Caller, customer_id, identifier, parse_value, request_hash};
use crate::domain::Timestamp;
use crate::domain::catalog::{Action, Catalog};
pub use crate::domain::command::{AuthorizationResponse, ResolutionResponse, UsageResponse};
use crate::domain::customer::{CustomerId, Subject};
use crate::domain::gate::{self, Actual, Policy};
use crate::domain::ledger::Rejection;
use crate::domain::money::{Credits, Quantity};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::keys::Scope;
use crate::store::{Answer, Command, Envelope, Executed, Idempotency};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    customer: String,
    action: String,
    #[schema(value_type = String, example = "1")]
    quantity: Amount,
    /// Who inside the customer would spend (a user, an API key, an agent): limits on members
    /// apply to it. 1 to 255 characters, no control characters.
    #[serde(default)]
    subject: Option<String>,
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
#[serde(deny_unknown_fields)]
pub struct SpendRequest {
    customer: String,
    action: String,
    #[schema(value_type = String, example = "1")]
    quantity: Amount,
    idempotency_key: String,
    /// Who inside the customer spends (a user, an API key, an agent, a project): kept on the
    /// hold and on every consumption; limits on members apply to it. 1 to 255 characters, no
    /// control characters.
    #[serde(default)]
    subject: Option<String>,
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
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

/// A request to spend, parsed: the customer, the action (as the catalog prices it at the time
/// of the spend), and its cost at the catalog's price. The gate prices it for the customer.
#[derive(Debug, Clone)]
struct Spend {
    customer: CustomerId,
    action: Action,
    quantity: Quantity,
    credits: Credits,
    subject: Option<Subject>,
}

/// Parses a request to spend on `action` by `subject`, priced at the terms in force `at`.
fn parse_spend(
    state: &AppState,
    (customer, subject): (&str, Option<&str>),
    action: &str,
    quantity: Amount,
    at: Timestamp,
) -> Result<Spend> {
    let customer = customer_id("customer", customer)?;
    let subject = subject
        .map(|s| Subject::parse(s).map_err(|e| Error::invalid("subject", e)))
        .transpose()?;
    let action = state
        .catalog
        .action_at(action, at)
        .ok_or_else(|| Error::UnknownAction(action.to_owned()))?;
    let quantity = Quantity::try_from(quantity.0)
        .map_err(|e| Error::invalid("quantity", format!("{} {e}", quantity.0)))?;
    let credits = action
        .cost(quantity)
        .map_err(|e| Error::invalid("quantity", format!("{} {e}", quantity.value())))?;
    Ok(Spend {
        customer,
        action,
        quantity,
        credits,
        subject,
    })
}

impl Spend {
    fn idempotency(
        &self,
        route: &str,
        key: &str,
        occurred_at: Option<Timestamp>,
    ) -> Result<Idempotency> {
        let key = identifier("idempotency_key", key)?;
        let quantity = self.quantity.to_string();
        let mut parts = vec![route, &self.action.id, &quantity];
        let occurred = occurred_at.map(|t| t.to_rfc3339());
        if let Some(at) = &occurred {
            parts.push(at);
        }
        // Named apart from the time, so neither can pass for the other.
        let subject = self.subject.as_ref().map(|s| format!("subject {s}"));
        if let Some(subject) = &subject {
            parts.push(subject);
        }
        Ok(Idempotency::request(&key, request_hash(&parts)))
    }

    /// An unknown customer has no credits (README, HTTP API).
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

/// What a command's decision needs besides the book: the catalog and the gate's policy.
#[derive(Clone)]
struct Rules {
    catalog: Arc<Catalog>,
    policy: Policy,
}

impl Rules {
    fn of(state: &AppState) -> Rules {
        Rules {
            catalog: state.catalog.clone(),
            policy: state.policy(),
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
    let now = state.clock.now();
    let spend = parse_spend(
        &state,
        (&request.customer, request.subject.as_deref()),
        &request.action,
        request.quantity,
        now,
    )?;
    super::note_customer(spend.customer.as_str());
    let Some((mut book, mut standing)) = state.store.check_view(&spend.customer, now).await? else {
        return Ok(Json(CheckResponse {
            allowed: false,
            credits: spend.credits,
            available: Credits::ZERO,
            reason: "insufficient_credits".into(),
        }));
    };
    let available = book.available();
    let rules = Rules::of(&state);
    // What the customer would pay: at its own price when it has one.
    let credits = gate::Terms::of(&rules.catalog, &standing, now, rules.policy)
        .cost(&spend.action, spend.quantity)
        .map_err(Error::from)?;
    // Decided on the copy just read exactly as an authorization would be; nothing is written.
    let decision = gate::decide(
        &rules.catalog,
        &mut standing,
        rules.policy,
        &mut book,
        &gate::Spend::Check {
            action: &spend.action,
            quantity: spend.quantity,
            subject: spend.subject.as_ref(),
        },
        now,
    );
    let reason = match decision {
        Ok(_) => "ok",
        Err(refusal) => Error::from(refusal).status_and_type().1,
    };
    Ok(Json(CheckResponse {
        allowed: reason == "ok",
        credits,
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
    let now = state.clock.now();
    let spend = parse_spend(
        &state,
        (&request.customer, request.subject.as_deref()),
        &request.action,
        request.quantity,
        now,
    )?;
    super::note_customer(spend.customer.as_str());
    let hold_id = format!("hold_{}", uuid::Uuid::now_v7().simple());
    let expires_at = now + chrono::Duration::seconds(state.hold_timeout_seconds as i64);
    let idempotency = spend.idempotency(POST_AUTHORIZATIONS, &request.idempotency_key, None)?;
    let command = Command::Authorize {
        hold_id,
        action: spend.action.clone(),
        quantity: spend.quantity,
        subject: spend.subject.clone(),
        expires_at,
    };
    let result = state
        .store
        .execute(Envelope::new(spend.customer.clone(), command, now).idempotent(idempotency))
        .await
        .map_err(|e| spend.unknown_customer(e));
    match &result {
        Ok(executed) if executed.replayed => Metrics::bump(&state.metrics.idempotent_replays),
        Ok(_) => Metrics::bump(&state.metrics.authorizations_approved),
        Err(_) => Metrics::bump(&state.metrics.authorizations_refused),
    }
    match result?.value {
        Answer::Held(held) => Ok((StatusCode::CREATED, Json(held))),
        other => Err(Error::unexpected(&other)),
    }
}

const POST_AUTHORIZATIONS: &str = "POST /v1/authorizations";
const POST_USAGE: &str = "POST /v1/usage";

/// Runs a capture or void: the hold resolves once, so its id is the idempotency key and a
/// different second resolution is refused with `hold_already_resolved`.
async fn resolve(
    state: &AppState,
    hold_id: &str,
    request: &str,
    now: DateTime<Utc>,
    actual: Option<Actual>,
) -> Result<Executed<ResolutionResponse>> {
    let hold_id = identifier("id", hold_id)?;
    let customer = state
        .store
        .hold_customer(&hold_id)
        .await?
        .ok_or(Error::Rejected(Rejection::HoldNotFound))?;
    let command = match actual {
        Some(actual) => Command::Capture {
            hold_id: hold_id.clone(),
            actual,
        },
        None => Command::Void {
            hold_id: hold_id.clone(),
        },
    };
    let idempotency = Idempotency::hold_resolution(&hold_id, request_hash(&[request]));
    let executed = state
        .store
        .execute(Envelope::new(CustomerId::known(customer), command, now).idempotent(idempotency))
        .await;
    match executed {
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
        Ok(Executed {
            value: Answer::Resolved(value),
            replayed,
        }) => Ok(Executed { value, replayed }),
        Ok(other) => Err(Error::unexpected(&other.value)),
    }
}

fn count_resolution(
    state: &AppState,
    executed: &Executed<ResolutionResponse>,
    counter: &std::sync::atomic::AtomicU64,
) {
    Metrics::bump(if executed.replayed {
        &state.metrics.idempotent_replays
    } else {
        counter
    });
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
    let executed = resolve(&state, &hold_id, &request_text, now, Some(actual)).await?;
    count_resolution(&state, &executed, &state.metrics.captures);
    Ok(Json(executed.value))
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
    let executed = resolve(&state, &hold_id, "void", now, None).await?;
    count_resolution(&state, &executed, &state.metrics.voids);
    Ok(Json(executed.value))
}

/// A usage parsed into its command, ready for the runner.
fn usage_command(
    state: &AppState,
    request: SpendRequest,
    now: Timestamp,
) -> Result<(Spend, Envelope)> {
    let occurred_at = occurred(request.occurred_at, now)?;
    // Priced at the terms in force when it happened.
    let spend = parse_spend(
        state,
        (&request.customer, request.subject.as_deref()),
        &request.action,
        request.quantity,
        occurred_at,
    )?;
    let dated = (occurred_at != now).then_some(occurred_at);
    let idempotency = spend.idempotency(POST_USAGE, &request.idempotency_key, dated)?;
    let usage_id = format!("usage_{}", uuid::Uuid::now_v7().simple());
    let command = Command::Usage {
        usage_id,
        action: spend.action.clone(),
        quantity: spend.quantity,
        subject: spend.subject.clone(),
        occurred_at,
    };
    let envelope = Envelope::new(spend.customer.clone(), command, now).idempotent(idempotency);
    Ok((spend, envelope))
}

/// A usage's answer, as its response.
fn used(executed: Executed<Answer>) -> Result<(UsageResponse, bool)> {
    match executed.value {
        Answer::Used(used) => Ok((used, executed.replayed)),
        other => Err(Error::unexpected(&other)),
    }
}

fn count_usage(state: &AppState, replayed: bool) {
    Metrics::bump(if replayed {
        &state.metrics.idempotent_replays
    } else {
        &state.metrics.usages
    });
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
    let now = state.clock.now();
    let (spend, envelope) = usage_command(&state, request, now)?;
    super::note_customer(spend.customer.as_str());
    let answer = state
        .store
        .execute(envelope)
        .await
        .map_err(|e| spend.unknown_customer(e))?;
    let (value, replayed) = used(answer)?;
    count_usage(&state, replayed);
    Ok((StatusCode::CREATED, Json(value)))
}

/// Most usages in one `POST /v1/usage/batch`.
pub const MAX_BATCH_USAGES: usize = 1_000;
/// Largest body of a usage batch, in bytes (1,000 usages of about 1 KiB each).
pub const MAX_BATCH_BODY_BYTES: usize = 1024 * 1024;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBatchRequest {
    /// At most 1,000 usages, each with its own `idempotency_key`; each is answered on its own.
    #[schema(value_type = Vec<Object>)]
    usages: Vec<serde_json::Value>,
}

#[derive(Serialize, ToSchema)]
pub struct UsageBatchResponse {
    /// One per usage, in order: the fields of a single usage's 201 with `"status": 201`, or the
    /// usage's problem (`type`, `status`, `detail`).
    #[schema(value_type = Vec<Object>)]
    results: Vec<serde_json::Value>,
}

/// One usage of a batch: the fields of `POST /v1/usage`, and no others.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchUsage {
    customer: String,
    action: String,
    quantity: Amount,
    idempotency_key: String,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
}

#[utoipa::path(post, path = "/v1/usage/batch", request_body = UsageBatchRequest,
    responses((status = 200, body = UsageBatchResponse), (status = 422)),
    security(("bearer" = [])))]
pub async fn usage_batch(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<UsageBatchRequest, MAX_BATCH_BODY_BYTES>,
) -> Result<Json<UsageBatchResponse>> {
    caller.require(Scope::App)?;
    let count = request.usages.len();
    if count == 0 || count > MAX_BATCH_USAGES {
        return Err(Error::invalid(
            "usages",
            format!("must hold 1 to {MAX_BATCH_USAGES} usages (got {count})"),
        ));
    }
    let now = state.clock.now();
    // Each usage is parsed on its own: a bad one is answered with its problem and the rest run.
    let mut results: Vec<Option<Result<serde_json::Value>>> = Vec::with_capacity(count);
    let mut queued = Vec::new();
    let mut spends = Vec::new();
    for (i, item) in request.usages.into_iter().enumerate() {
        let parsed = parse_value::<BatchUsage>(item, &format!("usages[{i}]")).and_then(|u| {
            usage_command(
                &state,
                SpendRequest {
                    customer: u.customer,
                    action: u.action,
                    quantity: u.quantity,
                    idempotency_key: u.idempotency_key,
                    subject: u.subject,
                    occurred_at: u.occurred_at,
                },
                now,
            )
        });
        match parsed {
            Ok((spend, envelope)) => {
                results.push(None);
                spends.push((i, spend));
                queued.push(envelope);
            }
            Err(e) => results.push(Some(Err(e))),
        }
    }
    let answers = state.store.execute_all(queued).await;
    for ((i, spend), answer) in spends.into_iter().zip(answers) {
        results[i] = Some(match answer.and_then(used) {
            Ok((value, replayed)) => {
                count_usage(&state, replayed);
                serde_json::to_value(value).map_err(|e| Error::Internal(format!("answer: {e}")))
            }
            Err(e) => Err(spend.unknown_customer(e)),
        });
    }
    let results = results
        .into_iter()
        .map(|r| match r.expect("every usage is answered") {
            Ok(mut value) => {
                value["status"] = serde_json::Value::from(201);
                value
            }
            Err(e) => {
                let (_, mut problem) = e.problem();
                if let Some(o) = problem.as_object_mut() {
                    o.remove("title");
                }
                problem
            }
        })
        .collect();
    Ok(Json(UsageBatchResponse { results }))
}
