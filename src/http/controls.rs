//! Customer controls: spend limits (app or admin) and feature overrides (admin).

use super::AppState;
use super::extract::{Amount, ApiJson, Caller, identifier, request_hash};
use crate::domain::adjustment::Reason;
use crate::domain::alerts::LowBalance;
use crate::domain::limits::{self, Limit, LimitError, Limits, Mode, Period};
use crate::domain::money::Credits;
use crate::domain::overrides::Override;
use crate::error::{Error, Result};
use crate::store::controls::OverrideRequest as StoredOverride;
use crate::store::keys::Scope;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    /// `day` or `month`: UTC calendar windows.
    period: String,
    /// The most credits that may be spent (and held) in a window.
    #[schema(value_type = String)]
    credits: Amount,
    /// The feature it caps; every feature when absent.
    feature: Option<String>,
    /// `hard` refuses with 402 `spend_limit_reached`; `soft` only sends `spend_limit.reached`.
    mode: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// The customer's limits: these replace any set before; an empty list removes them all.
    limits: Vec<LimitRequest>,
}

/// A limit and where it stands in its current window.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct LimitView {
    #[schema(value_type = String)]
    period: Period,
    feature: Option<String>,
    #[schema(value_type = String)]
    credits: Credits,
    #[schema(value_type = String)]
    mode: Mode,
    /// Credits used in the window (overage included).
    #[schema(value_type = String)]
    spent: Credits,
    /// Credits held by open authorizations under this limit: they count as spent.
    #[schema(value_type = String)]
    held: Credits,
    /// Credits that may still be spent or held in the window.
    #[schema(value_type = String)]
    remaining: Credits,
    window_start: DateTime<Utc>,
    resets_at: DateTime<Utc>,
}

impl From<limits::LimitState> for LimitView {
    fn from(s: limits::LimitState) -> Self {
        LimitView {
            period: s.limit.period,
            feature: s.limit.feature,
            credits: s.limit.credits,
            mode: s.limit.mode,
            spent: s.spent,
            held: s.held,
            remaining: s.remaining,
            window_start: s.window_start,
            resets_at: s.resets_at,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct LimitsResponse {
    customer: String,
    limits: Vec<LimitView>,
}

/// Sets a customer's spend limits. Each starts from what the customer already spent in its
/// current window; a hard limit refuses (402 `spend_limit_reached`) any check, authorization,
/// usage or capture beyond its hold that would take spent and held credits past it.
#[utoipa::path(put, path = "/v1/customers/{id}/limits", params(("id" = String, Path)), request_body = LimitsRequest,
    responses((status = 200, body = LimitsResponse), (status = 404), (status = 422)), security(("bearer" = [])))]
pub async fn set_limits(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<LimitsRequest>,
) -> Result<Json<LimitsResponse>> {
    caller.require_app_or_admin()?;
    let customer = identifier("id", &id)?;
    let limits = parse_limits(request.limits)?;
    Limits::validate(&limits, &state.catalog).map_err(|e| {
        let field = match &e {
            LimitError::UnknownFeature(_) => "limits[].feature",
            LimitError::NotPositive => "limits[].credits",
            LimitError::TooMany | LimitError::Duplicate { .. } => "limits",
        };
        Error::invalid(field, e)
    })?;
    let set = state
        .store
        .set_limits(&customer, limits, state.clock.now())
        .await?
        .ok_or_else(|| Error::CustomerNotFound(customer.clone()))?;
    Ok(Json(LimitsResponse {
        customer,
        limits: set.limits.into_iter().map(LimitView::from).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsRequest {
    /// Low once this share of the credits of the live grants is consumed (above 0, at most 1).
    #[schema(value_type = Option<String>)]
    low_balance_consumed_share: Option<Amount>,
    /// Also low once available credits are at or below this.
    #[schema(value_type = Option<String>)]
    low_balance_credits: Option<Amount>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ThresholdsResponse {
    customer: String,
    /// The customer's own thresholds (null: its plan's or the defaults).
    #[schema(value_type = Option<String>)]
    low_balance_consumed_share: Option<rust_decimal::Decimal>,
    #[schema(value_type = Option<String>)]
    low_balance_credits: Option<Credits>,
    /// The thresholds in force for the customer: its own, its plan's, or `[alerts]`'.
    #[schema(value_type = String)]
    effective_consumed_share: rust_decimal::Decimal,
    #[schema(value_type = Option<String>)]
    effective_credits: Option<Credits>,
}

/// Sets a customer's own low-balance thresholds for `credit.balance_low`; each given replaces
/// its plan's and the default; none given removes the customer's own.
#[utoipa::path(put, path = "/v1/customers/{id}/alert-thresholds", params(("id" = String, Path)), request_body = ThresholdsRequest,
    responses((status = 200, body = ThresholdsResponse), (status = 404), (status = 422)), security(("bearer" = [])))]
pub async fn set_thresholds(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<ThresholdsRequest>,
) -> Result<Json<ThresholdsResponse>> {
    caller.require_app_or_admin()?;
    let customer = identifier("id", &id)?;
    let own = LowBalance::of(
        request.low_balance_consumed_share.map(|a| a.0),
        request.low_balance_credits.map(|a| a.0),
    )
    .map_err(|bad| Error::invalid(bad.field, bad.reason))?;
    let plan = state
        .store
        .set_low_balance(&customer, own)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(customer.clone()))?;
    let rule = state.catalog.alerts.for_customer(
        plan.as_deref()
            .and_then(|p| state.catalog.plan(p))
            .and_then(|p| p.low_balance.as_ref()),
        own.as_ref(),
    );
    Ok(Json(ThresholdsResponse {
        customer,
        low_balance_consumed_share: own.and_then(|o| o.consumed_share),
        low_balance_credits: own.and_then(|o| o.credits),
        effective_consumed_share: rule.low_consumed_share,
        effective_credits: rule.low_credits,
    }))
}

fn parse_limits(requests: Vec<LimitRequest>) -> Result<Vec<Limit>> {
    requests
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let field = |name: &str| format!("limits[{i}].{name}");
            let period = Period::parse(&r.period)
                .ok_or_else(|| Error::invalid(field("period"), "must be day or month"))?;
            let mode = Mode::parse(&r.mode)
                .ok_or_else(|| Error::invalid(field("mode"), "must be hard or soft"))?;
            let credits = Credits::positive(r.credits.0)
                .map_err(|e| Error::invalid(field("credits"), format!("{} {e}", r.credits.0)))?;
            if let Some(feature) = &r.feature {
                identifier(&field("feature"), feature)?;
            }
            Ok(Limit {
                period,
                feature: r.feature,
                credits,
                mode,
            })
        })
        .collect()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// A feature of the catalog.
    feature: String,
    /// On (a plan-only feature without the plan, a trial) or off (whatever the plan says).
    enabled: bool,
    /// When the override lapses by itself (a trial's end); for good when absent.
    until: Option<DateTime<Utc>>,
    /// Why: kept with the override (1 to 500 characters).
    reason: String,
    idempotency_key: String,
}

/// An override as recorded.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct OverrideView {
    id: String,
    feature: String,
    enabled: bool,
    until: Option<DateTime<Utc>>,
    reason: String,
    /// The API key that made it.
    made_by: String,
    made_at: DateTime<Utc>,
}

impl OverrideView {
    pub fn of(o: Override) -> Self {
        OverrideView {
            id: o.id,
            feature: o.feature,
            enabled: o.enabled,
            until: o.until,
            reason: o.reason,
            made_by: o.actor,
            made_at: o.at,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct OverrideResponse {
    customer: String,
    #[serde(flatten)]
    made: OverrideView,
}

/// Switches a feature on or off for one customer (created when unknown), for good or until a
/// date, recorded with the key that did it and why. The latest override of a feature replaces
/// the one before; once it lapses, the plan decides again.
#[utoipa::path(post, path = "/v1/customers/{id}/overrides", params(("id" = String, Path)), request_body = OverrideRequest,
    responses((status = 201, body = OverrideResponse), (status = 409), (status = 422)), security(("bearer" = [])))]
pub async fn create_override(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<OverrideRequest>,
) -> Result<(StatusCode, Json<OverrideResponse>)> {
    caller.require(Scope::Admin)?;
    let customer = identifier("id", &id)?;
    let key = identifier("idempotency_key", &request.idempotency_key)?;
    if !state.catalog.features.contains_key(&request.feature) {
        return Err(Error::UnknownCatalogItem {
            kind: "feature",
            id: request.feature,
        });
    }
    let reason = Reason::parse(&request.reason).map_err(|e| Error::invalid("reason", e))?;
    let now = state.clock.now();
    if let Some(until) = request.until
        && until <= now
    {
        return Err(Error::invalid("until", "must be in the future"));
    }
    let hash = request_hash(&[
        "POST overrides",
        &request.feature,
        &request.enabled.to_string(),
        &request.until.map(|t| t.to_rfc3339()).unwrap_or_default(),
        reason.as_str(),
    ]);
    let made = state
        .store
        .add_override(StoredOverride {
            customer: customer.clone(),
            made: Override {
                id: format!("ovr_{}", uuid::Uuid::now_v7().simple()),
                feature: request.feature,
                enabled: request.enabled,
                until: request.until,
                reason: reason.as_str().to_owned(),
                actor: caller.key_id().to_owned(),
                at: now,
            },
            idempotency_key: key,
            request_hash: hash,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(OverrideResponse {
            customer,
            made: OverrideView::of(made.made),
        }),
    ))
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct OverrideHistory {
    customer: String,
    /// Every override made for the customer, newest first (at most 200).
    overrides: Vec<OverrideView>,
}

/// Every override made for a customer, in force or not, newest first: who made it and why.
#[utoipa::path(get, path = "/v1/customers/{id}/overrides", params(("id" = String, Path)),
    responses((status = 200, body = OverrideHistory), (status = 404)), security(("bearer" = [])))]
pub async fn override_history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OverrideHistory>> {
    caller.require(Scope::Admin)?;
    let customer = identifier("id", &id)?;
    let overrides = state
        .store
        .override_history(&customer, super::customers::MAX_PAGE)
        .await?;
    if overrides.is_empty()
        && state
            .store
            .view(&customer, state.clock.now())
            .await?
            .is_none()
    {
        return Err(Error::CustomerNotFound(customer));
    }
    Ok(Json(OverrideHistory {
        customer,
        overrides: overrides.into_iter().map(OverrideView::of).collect(),
    }))
}
