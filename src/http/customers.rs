//! Customer reads (balance, grants, ledger) and admin writes (grants, plan).

use super::AppState;
use super::extract::{
    Amount, ApiJson, ApiQuery, Caller, customer_id, identifier, page_limit, request_hash,
};
use crate::domain::adjustment::{Change, Reason};
pub use crate::domain::command::{AdjustmentResponse, GrantResponse};
use crate::domain::ledger::{Grant, GrantKind, GrantSource};
use crate::domain::money::{Credits, Money};
use crate::domain::operator_grant::{self, GrantAsked, GrantRefused};
use crate::domain::summary::Summary;
use crate::error::{Error, Result};
use crate::store::keys::Scope;
use crate::store::operators::{OperatorAction, OperatorActionKind};
use crate::store::revenue::Origin;
use crate::store::{Answer, Command, Envelope, Idempotency};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Serialize, ToSchema)]
pub struct GrantView {
    id: String,
    #[schema(value_type = String)]
    kind: GrantKind,
    #[schema(value_type = String)]
    credits: Credits,
    #[schema(value_type = String)]
    remaining: Credits,
    #[schema(value_type = String)]
    held: Credits,
    #[schema(value_type = Option<String>)]
    price: Option<Money>,
    currency: Option<String>,
    expires_at: Option<DateTime<Utc>>,
    priority: i32,
    plan: Option<String>,
    pack: Option<String>,
    source: String,
    /// Its payment is disputed: its free credits are not available until the dispute closes.
    frozen: bool,
    /// Bought ahead for a later credit period: spendable from this instant.
    starts_at: Option<DateTime<Utc>>,
    /// Not started yet.
    scheduled: bool,
    /// Spent by the customers below this one too, after their own grants.
    shared: bool,
}

impl From<&Grant> for GrantView {
    fn from(g: &Grant) -> Self {
        GrantView {
            id: g.id.clone(),
            kind: g.kind,
            credits: g.credits,
            remaining: g.remaining,
            held: g.held,
            price: g.price,
            currency: g.currency.clone(),
            expires_at: g.expires_at,
            frozen: g.frozen,
            starts_at: g.starts_at,
            scheduled: g.scheduled,
            shared: g.shared,
            priority: g.priority,
            plan: g.plan_id.clone(),
            pack: g.pack_id.clone(),
            source: format!("{}:{}", g.source_type, g.source_id),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HoldView {
    id: String,
    action: String,
    #[schema(value_type = String)]
    credits: Credits,
    expires_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct CustomerView {
    id: String,
    /// The plan in force: none once a past-due subscription outlives its grace.
    plan: Option<String>,
    /// Since when the subscription is past due, if it is.
    past_due_since: Option<DateTime<Utc>>,
    features: Vec<String>,
    /// Some of its credits are frozen by an open dispute on the payment that bought them.
    frozen: bool,
    /// Those credits: in the balance, not available.
    #[schema(value_type = String)]
    frozen_credits: Credits,
    /// Credits bought ahead for credit periods not started yet (the later months of an annual
    /// plan): in the balance, not available until their month starts.
    #[schema(value_type = String)]
    scheduled: Credits,
    #[schema(value_type = String)]
    balance: Credits,
    #[schema(value_type = String)]
    held: Credits,
    #[schema(value_type = String)]
    available: Credits,
    /// Credits owed beyond every grant under an `allow` overage rule.
    #[schema(value_type = String)]
    overdraft: Credits,
    /// The customer whose shared grants it spends after its own, if it has one.
    parent: Option<String>,
    /// What it can spend: `available`, and what its parent's and grandparent's shared grants
    /// have available.
    #[schema(value_type = String)]
    pool_available: Credits,
    /// Grants with credits left, in consumption order.
    grants: Vec<GrantView>,
    holds: Vec<HoldView>,
    /// End of the current subscription period, from Stripe.
    renews_at: Option<DateTime<Utc>>,
    /// When the plan's next grant is due: the end of the credit period of a plan outside Stripe;
    /// for a plan sold through Stripe, the start of the next month bought ahead, else the end of
    /// the subscription's period; none without a plan.
    next_grant_at: Option<DateTime<Utc>>,
    /// The plan's credits each period (per seat for a per-seat plan), when a grant is due.
    #[schema(value_type = Option<String>)]
    allowance: Option<Credits>,
    /// What would roll over into the next period were it to start now (up to the plan's
    /// `rollover_max`).
    #[schema(value_type = String)]
    rolls_over: Credits,
    /// Spend limits, and where each stands in its current window.
    limits: Vec<super::controls::LimitView>,
    /// Feature overrides in force, with who made them and why.
    overrides: Vec<super::controls::OverrideView>,
}

#[utoipa::path(get, path = "/v1/customers/{id}", params(("id" = String, Path)),
    responses((status = 200, body = CustomerView), (status = 404)), security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CustomerView>> {
    caller.require(Scope::App)?;
    let id = customer_id("id", &id)?;
    let now = state.clock.now();
    let (book, standing) = state
        .store
        .view(&id, now)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(id.to_string()))?;
    let summary = Summary::of(&state.catalog, state.policy(), &book, &standing, now);
    let pool_available = match &standing.parent {
        Some(_) => state
            .store
            .pool_available(&id, now)
            .await?
            .unwrap_or(summary.available),
        None => summary.available,
    };
    Ok(Json(CustomerView {
        parent: standing.parent.as_ref().map(ToString::to_string),
        pool_available,
        id: id.to_string(),
        plan: summary.plan.map(str::to_owned),
        past_due_since: summary.past_due_since,
        features: summary.features.iter().map(|f| (*f).to_owned()).collect(),
        frozen: summary.frozen,
        frozen_credits: summary.frozen_credits,
        scheduled: summary.scheduled,
        balance: summary.balance,
        held: summary.held,
        available: summary.available,
        overdraft: summary.overdraft,
        grants: summary.grants.into_iter().map(GrantView::from).collect(),
        holds: summary
            .holds
            .into_iter()
            .map(|h| HoldView {
                id: h.id.clone(),
                action: h.action.clone(),
                credits: h.credits,
                expires_at: h.expires_at,
            })
            .collect(),
        renews_at: summary.renews_at,
        next_grant_at: summary.next_grant_at,
        allowance: summary.allowance,
        rolls_over: summary.rolls_over,
        limits: summary.limits.into_iter().map(Into::into).collect(),
        overrides: standing
            .overrides
            .in_force(now)
            .map(|o| super::controls::OverrideView::of(o.clone()))
            .collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// Entries per page, 1 to 200 (default 50).
    limit: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LedgerPage {
    entries: Vec<crate::store::ledger::EntryView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/customers/{id}/ledger", params(("id" = String, Path), LedgerQuery),
    responses((status = 200, body = LedgerPage), (status = 404)), security(("bearer" = [])))]
pub async fn ledger(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<LedgerQuery>,
) -> Result<Json<LedgerPage>> {
    caller.require(Scope::App)?;
    let id = customer_id("id", &id)?;
    let limit = page_limit(query.limit)?;
    let before = query
        .cursor
        .map(|c| {
            // A cursor is what `next_cursor` gave: 1 to 18 digits.
            c.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| c.parse::<i64>().ok())
                .flatten()
                .filter(|_| (1..=18).contains(&c.len()))
                .ok_or_else(|| Error::invalid("cursor", "is not a cursor this API returned"))
        })
        .transpose()?;
    let (entries, next) = state
        .store
        .ledger_page(&id, before, limit)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(id.to_string()))?;
    Ok(Json(LedgerPage {
        entries,
        next_cursor: next.map(|n| n.to_string()),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    /// `promotional` or `adjustment`; `pack` and `plan` record a sale made outside Stripe.
    kind: String,
    /// Credits to grant; for `pack` and `plan` the catalog's unless given.
    #[schema(value_type = Option<String>)]
    credits: Option<Amount>,
    expires_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "super::extract::optional_integer")]
    priority: Option<i32>,
    /// Pack id, with kind `pack`.
    pack: Option<String>,
    /// Plan id, with kind `plan`.
    plan: Option<String>,
    /// Price net of tax, for `pack` (default: the catalog's) and `plan`.
    #[schema(value_type = Option<String>)]
    price: Option<Amount>,
    currency: Option<String>,
    /// Why, kept as the grant's source.
    memo: Option<String>,
    /// Whether the customers below this one may spend it after their own grants (default true).
    shared: Option<bool>,
    idempotency_key: String,
}

pub use crate::domain::operator_grant::MAX_MEMO_LENGTH;

#[utoipa::path(post, path = "/v1/customers/{id}/grants", params(("id" = String, Path)), request_body = GrantRequest,
    responses((status = 201, body = GrantResponse), (status = 409), (status = 422)), security(("bearer" = [])))]
pub async fn create_grant(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<GrantRequest>,
) -> Result<(StatusCode, Json<GrantResponse>)> {
    caller.require(Scope::Admin)?;
    let granted = grant(&state, caller.key_id(), &id, request).await?;
    Ok((StatusCode::CREATED, Json(granted)))
}

/// An operator's grant to customer `id`, made by key `key_id` (the API's or the console's).
pub async fn grant(
    state: &AppState,
    key_id: &str,
    id: &str,
    request: GrantRequest,
) -> Result<GrantResponse> {
    let customer = customer_id("id", id)?;
    let key = identifier("idempotency_key", &request.idempotency_key)?;
    let now = state.clock.now();
    let kind = GrantKind::parse(&request.kind).ok_or_else(|| {
        Error::invalid("kind", "must be one of promotional, adjustment, pack, plan")
    })?;
    let memo = request.memo.clone().unwrap_or_default();
    let asked = GrantAsked {
        kind,
        credits: request.credits.map(|a| a.0),
        price: request.price.map(|a| a.0),
        currency: request.currency.clone(),
        pack: request.pack.clone(),
        plan: request.plan.clone(),
        expires_at: request.expires_at,
        priority: request.priority,
        memo: memo.clone(),
        key: key.clone(),
    };
    let grant = operator_grant::grant(&asked, &state.catalog, crate::store::new_grant_id(), now)
        .map_err(|refused| match refused {
            GrantRefused::Invalid(field, why) => Error::invalid(field, why),
            GrantRefused::UnknownItem { kind, id } => Error::UnknownCatalogItem { kind, id },
        })?;
    let shared = request.shared.unwrap_or(true);
    let grant = if shared { grant } else { grant.unshared() };
    // What the client sent, never what is derived from it at this moment (a pack's expiry runs
    // from now): the same request retried later is the same request.
    let amount = |a: Option<Amount>| a.map(|a| a.0.normalize().to_string()).unwrap_or_default();
    let hash = request_hash(&[
        if shared {
            "POST grants"
        } else {
            "POST grants unshared"
        },
        kind.as_str(),
        &amount(request.credits),
        &request
            .expires_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        &request.priority.map(|p| p.to_string()).unwrap_or_default(),
        &amount(request.price),
        request.currency.as_deref().unwrap_or_default(),
        grant.plan_id.as_deref().unwrap_or_default(),
        grant.pack_id.as_deref().unwrap_or_default(),
        &memo,
    ]);
    let actor = OperatorAction::new(
        key_id,
        OperatorActionKind::Grant,
        serde_json::json!({"kind": kind.as_str(), "credits": grant.credits,
            "expires_at": grant.expires_at, "priority": grant.priority, "plan": grant.plan_id,
            "pack": grant.pack_id, "price": grant.price, "memo": memo, "idempotency_key": key,
            "shared": shared}),
    )
    .on_customer(customer.as_str())
    .on(&grant.id);
    let envelope = Envelope::new(customer, Command::Grant { grant }, now)
        .idempotent(Idempotency::request(&key, hash))
        .by(actor);
    match state.store.execute(envelope).await?.value {
        Answer::Granted(granted) => Ok(granted),
        other => Err(Error::unexpected(&other)),
    }
}

/// A signed change of a customer's credits by an operator.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// Credits to add (positive: a new `adjustment` grant) or take back (negative: free credits,
    /// never below zero available, unpaid grants first). Never zero.
    #[schema(value_type = String, example = "-250")]
    credits: Amount,
    /// Why: kept on every ledger entry of the adjustment (1 to 500 characters).
    reason: String,
    idempotency_key: String,
}

/// Adds or takes back credits with a reason. Taking back refuses (409, nothing changed) more than
/// is available; credits taken from a paid grant are forfeited (their deferred price becomes
/// breakage revenue; the money is not refunded).
#[utoipa::path(post, path = "/v1/customers/{id}/adjustments", params(("id" = String, Path)), request_body = AdjustmentRequest,
    responses((status = 201, body = AdjustmentResponse), (status = 404), (status = 409), (status = 422)), security(("bearer" = [])))]
pub async fn create_adjustment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<AdjustmentRequest>,
) -> Result<(StatusCode, Json<AdjustmentResponse>)> {
    caller.require(Scope::Admin)?;
    let adjusted = adjust(&state, caller.key_id(), &id, request).await?;
    Ok((StatusCode::CREATED, Json(adjusted)))
}

/// An operator's adjustment of customer `id`, made by key `key_id`.
pub async fn adjust(
    state: &AppState,
    key_id: &str,
    id: &str,
    request: AdjustmentRequest,
) -> Result<AdjustmentResponse> {
    let customer = customer_id("id", id)?;
    let key = identifier("idempotency_key", &request.idempotency_key)?;
    let change = Change::parse(request.credits.0)
        .map_err(|e| Error::invalid("credits", format!("{} {e}", request.credits.0)))?;
    let reason = Reason::parse(&request.reason).map_err(|e| Error::invalid("reason", e))?;
    let reason_text = reason.as_str().to_owned();
    let now = state.clock.now();
    let grant_id = crate::store::new_grant_id();
    let hash = request_hash(&[
        "POST adjustments",
        &change.signed().to_string(),
        &reason_text,
    ]);
    let actor = OperatorAction::new(
        key_id,
        OperatorActionKind::Adjustment,
        serde_json::json!({"credits": change.signed(), "reason": reason_text,
            "idempotency_key": key}),
    )
    .on_customer(customer.as_str());
    let command = Command::Adjust {
        change,
        grant_id,
        reason,
        source: (GrantSource::Admin, format!("{key}: {reason_text}")),
    };
    let envelope = Envelope::new(customer, command, now)
        .idempotent(Idempotency::request(&key, hash))
        .from_origin(Origin {
            source: Some(format!("adjustment {key}")),
            event: None,
        })
        .by(actor);
    match state.store.execute(envelope).await?.value {
        Answer::Adjusted(adjusted) => Ok(adjusted),
        other => Err(Error::unexpected(&other)),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    /// A plan id of the catalog, or null for none.
    plan: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PlanResponse {
    customer: String,
    plan: Option<String>,
}

/// Sets a customer's plan by hand (customers billed outside Stripe); Stripe subscriptions set it
/// otherwise. Setting the same plan again changes nothing.
#[utoipa::path(put, path = "/v1/customers/{id}/plan", params(("id" = String, Path)), request_body = PlanRequest,
    responses((status = 200, body = PlanResponse), (status = 422)), security(("bearer" = [])))]
pub async fn set_plan(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<PlanRequest>,
) -> Result<Json<PlanResponse>> {
    caller.require(Scope::Admin)?;
    Ok(Json(
        plan(&state, (caller.key_id(), None), &id, request).await?,
    ))
}

/// Sets customer `id`'s plan, by key `key_id` for the reason given when there is one (the
/// console asks for it).
pub async fn plan(
    state: &AppState,
    (key_id, why): (&str, Option<&Reason>),
    id: &str,
    request: PlanRequest,
) -> Result<PlanResponse> {
    let customer = customer_id("id", id)?;
    if let Some(plan) = &request.plan
        && state.catalog.plan(plan).is_none()
    {
        return Err(Error::UnknownCatalogItem {
            kind: "plan",
            id: plan.clone(),
        });
    }
    let actor = OperatorAction::new(
        key_id,
        OperatorActionKind::Plan,
        serde_json::json!({"plan": request.plan}),
    )
    .because(why)
    .on_customer(customer.as_str());
    state
        .store
        .set_plan(&customer, request.plan.as_deref(), state.clock.now(), actor)
        .await?;
    Ok(PlanResponse {
        customer: customer.to_string(),
        plan: request.plan,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParentRequest {
    /// The customer whose shared grants this one spends after its own, or null for none.
    /// Required: a request that names no parent changes nothing.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, required = true)]
    parent: Option<Option<String>>,
}

/// A field that may be null but must be given: `Some(None)` for null, `None` when absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Serialize, ToSchema)]
pub struct ParentResponse {
    customer: String,
    parent: Option<String>,
    /// What it can spend now, its pools' shared grants included.
    #[schema(value_type = String)]
    pool_available: Credits,
}

/// Puts a customer under a parent (README, Organizations): it spends its own grants, then its
/// parent's shared grants, then its grandparent's. At most three levels, no cycles; both
/// customers must exist. `null` puts it on its own again.
#[utoipa::path(put, path = "/v1/customers/{id}/parent", params(("id" = String, Path)), request_body = ParentRequest,
    responses((status = 200, body = ParentResponse), (status = 404), (status = 409), (status = 422)), security(("bearer" = [])))]
pub async fn set_parent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ParentRequest>,
) -> Result<Json<ParentResponse>> {
    caller.require(Scope::Admin)?;
    Ok(Json(
        parent(&state, (caller.key_id(), None), &id, request).await?,
    ))
}

/// Sets customer `id`'s parent, by key `key_id` for the reason given when there is one (the
/// console asks for it).
pub async fn parent(
    state: &AppState,
    (key_id, why): (&str, Option<&Reason>),
    id: &str,
    request: ParentRequest,
) -> Result<ParentResponse> {
    let customer = customer_id("id", id)?;
    let parent = request
        .parent
        .ok_or_else(|| Error::invalid("parent", "is required: a customer id, or null for none"))?
        .map(|p| customer_id("parent", &p))
        .transpose()?;
    let actor = OperatorAction::new(
        key_id,
        OperatorActionKind::Parent,
        serde_json::json!({"parent": parent}),
    )
    .because(why)
    .on_customer(customer.as_str());
    let now = state.clock.now();
    state
        .store
        .set_parent(&customer, parent.clone(), now, actor)
        .await?;
    let pool_available = state
        .store
        .pool_available(&customer, now)
        .await?
        .unwrap_or(Credits::ZERO);
    Ok(ParentResponse {
        customer: customer.to_string(),
        parent: parent.map(|p| p.to_string()),
        pool_available,
    })
}
