//! Customer controls: spend limits (app or admin), overrides of a feature, a price or the overage
//! rule (admin), low-balance thresholds and auto top-up.

use super::AppState;
use super::extract::{Amount, ApiJson, Caller, customer_id, identifier, request_hash};
use crate::domain::adjustment::Reason;
use crate::domain::alerts::LowBalance;
use crate::domain::customer::Subject;
use crate::domain::limits::{self, Limit, LimitError, Limits, Members, Mode, Period};
use crate::domain::money::{Credits, Money};
use crate::domain::overrides::{Change, Flat, OverageKind, Override, PLAN_RULE};
use crate::error::{Error, Result};
use crate::store::controls::OverrideRequest as StoredOverride;
use crate::store::keys::Scope;
use crate::store::operators::{OperatorAction, OperatorActionKind};
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
    /// The one member (the `subject` of spends) it caps; the whole customer when absent.
    subject: Option<String>,
    /// `true`: it caps each member apart (every `subject`, counted on its own); spends naming
    /// no subject are not counted. Not with `subject`.
    #[serde(default)]
    each_subject: bool,
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
    /// The one member it caps, if it caps one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    /// Whether it caps each member apart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    each_subject: bool,
    /// With `each_subject`: each member that spent or holds credits in the window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    members: Vec<MemberView>,
}

/// Where one member stands under a limit on each member.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    subject: String,
    #[schema(value_type = String)]
    spent: Credits,
    #[schema(value_type = String)]
    held: Credits,
    #[schema(value_type = String)]
    remaining: Credits,
}

impl From<limits::LimitState> for LimitView {
    fn from(s: limits::LimitState) -> Self {
        let (subject, each_subject) = match s.limit.members {
            Members::All => (None, false),
            Members::One(subject) => (Some(subject.to_string()), false),
            Members::Each => (None, true),
        };
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
            subject,
            each_subject,
            members: s
                .members
                .into_iter()
                .map(|m| MemberView {
                    subject: m.subject.to_string(),
                    spent: m.spent,
                    held: m.held,
                    remaining: m.remaining,
                })
                .collect(),
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
    Ok(Json(
        limits(&state, (caller.key_id(), None), &id, request).await?,
    ))
}

/// Replaces customer `id`'s spend limits, by key `key_id` for the reason given when there is
/// one (the console asks for it).
pub async fn limits(
    state: &AppState,
    (key_id, why): (&str, Option<&Reason>),
    id: &str,
    request: LimitsRequest,
) -> Result<LimitsResponse> {
    let customer = customer_id("id", id)?;
    let limits = parse_limits(request.limits)?;
    Limits::validate(&limits, &state.catalog).map_err(|e| {
        let field = match &e {
            LimitError::UnknownFeature(_) => "limits[].feature",
            LimitError::NotPositive => "limits[].credits",
            LimitError::TooMany | LimitError::Duplicate { .. } => "limits",
        };
        Error::invalid(field, e)
    })?;
    let actor = OperatorAction::new(
        key_id,
        OperatorActionKind::Limits,
        serde_json::json!({ "limits": limits }),
    )
    .because(why)
    .on_customer(customer.as_str());
    let set = state
        .store
        .set_limits(&customer, limits, state.clock.now(), actor)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(customer.to_string()))?;
    Ok(LimitsResponse {
        customer: customer.to_string(),
        limits: set.limits.into_iter().map(LimitView::from).collect(),
    })
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
    /// The thresholds in force for the customer: its own, its plan's, its pack's, or `[alerts]`'.
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
    let customer = customer_id("id", &id)?;
    let own = LowBalance::of(
        request.low_balance_consumed_share.map(|a| a.0),
        request.low_balance_credits.map(|a| a.0),
    )
    .map_err(|bad| Error::invalid(bad.field, bad.reason))?;
    let actor = OperatorAction::new(
        caller.key_id(),
        OperatorActionKind::AlertThresholds,
        serde_json::json!({
            "low_balance_consumed_share": own.and_then(|o| o.consumed_share),
            "low_balance_credits": own.and_then(|o| o.credits),
        }),
    )
    .on_customer(customer.as_str());
    let rule = state
        .store
        .set_low_balance(&customer, own, state.clock.now(), actor)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(customer.to_string()))?;
    Ok(Json(ThresholdsResponse {
        customer: customer.to_string(),
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
            let members = match (r.subject, r.each_subject) {
                (None, false) => Members::All,
                (None, true) => Members::Each,
                (Some(subject), false) => Members::One(
                    Subject::parse(&subject).map_err(|e| Error::invalid(field("subject"), e))?,
                ),
                (Some(_), true) => {
                    return Err(Error::invalid(
                        field("each_subject"),
                        "give a subject or each_subject, not both",
                    ));
                }
            };
            Ok(Limit {
                period,
                feature: r.feature,
                credits,
                mode,
                members,
            })
        })
        .collect()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest {
    /// A feature of the catalog, switched on or off for the customer: give `enabled` with it.
    /// Give exactly one of `feature`, `action` or `overage`.
    feature: Option<String>,
    /// With `feature`: on (a plan-only feature without the plan, a trial) or off (whatever the
    /// plan says).
    enabled: Option<bool>,
    /// An action of the catalog, priced differently for the customer: give `credits_per_unit`
    /// with it.
    action: Option<String>,
    /// With `action`: the customer's credits per unit (above 0, with no more decimal places than
    /// the catalog's price), or `null` for the catalog's price again.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    credits_per_unit: Option<Option<Amount>>,
    /// The customer's own overage rule: `block`, `allow` (with `overage_limit`), `bill` (with
    /// `overage_price`), or `plan` for its plan's rule again.
    overage: Option<String>,
    /// With `overage = "allow"`: how far below zero available credits may go.
    #[schema(value_type = Option<String>)]
    overage_limit: Option<Amount>,
    /// With `overage = "bill"`: the price of a credit of overage, in the accounting currency.
    #[schema(value_type = Option<String>)]
    overage_price: Option<Amount>,
    /// When the override lapses by itself (a trial's end); for good when absent.
    until: Option<DateTime<Utc>>,
    /// Why: kept with the override (1 to 500 characters).
    reason: String,
    idempotency_key: String,
}

/// A field that may be `null` told apart from one left out: `Some(None)` for `null`.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The change an override request asks for, parsed against the catalog.
// Long: one arm per kind of override, each parsed against the catalog.
fn parse_change(state: &AppState, request: &OverrideRequest, now: DateTime<Utc>) -> Result<Change> {
    let only = |field: &'static str, given: bool, with: &str| {
        if given {
            Err(Error::invalid(field, format!("only applies with {with}")))
        } else {
            Ok(())
        }
    };
    let price_given = matches!(request.credits_per_unit, Some(Some(_)));
    match (&request.feature, &request.action, &request.overage) {
        (Some(feature), None, None) => {
            only("credits_per_unit", price_given, "action")?;
            only("overage_limit", request.overage_limit.is_some(), "overage")?;
            only("overage_price", request.overage_price.is_some(), "overage")?;
            if !state.catalog.features.contains_key(feature) {
                return Err(Error::UnknownCatalogItem {
                    kind: "feature",
                    id: feature.clone(),
                });
            }
            let enabled = request
                .enabled
                .ok_or_else(|| Error::invalid("enabled", "is required with feature"))?;
            Ok(Change::Feature {
                feature: feature.clone(),
                enabled,
            })
        }
        (None, Some(action), None) => {
            only("enabled", request.enabled.is_some(), "feature")?;
            only("overage_limit", request.overage_limit.is_some(), "overage")?;
            only("overage_price", request.overage_price.is_some(), "overage")?;
            let action = state
                .catalog
                .action(action)
                .ok_or_else(|| Error::UnknownAction(action.clone()))?;
            let credits_per_unit = match request.credits_per_unit {
                None => {
                    return Err(Error::invalid(
                        "credits_per_unit",
                        "is required with action (null for the catalog's price)",
                    ));
                }
                Some(None) => None,
                Some(Some(amount)) => Some(Credits::positive(amount.0).map_err(|e| {
                    Error::invalid("credits_per_unit", format!("{} {e}", amount.0))
                })?),
            };
            Change::price(action, credits_per_unit, now)
                .map_err(|e| Error::invalid("credits_per_unit", e))
        }
        (None, None, Some(rule)) => {
            only("enabled", request.enabled.is_some(), "feature")?;
            only("credits_per_unit", price_given, "action")?;
            let kind = match rule.as_str() {
                PLAN_RULE => None,
                other => Some(OverageKind::parse(other).ok_or_else(|| {
                    Error::invalid(
                        "overage",
                        format!("{other:?} is not one of \"block\", \"allow\", \"bill\", \"plan\""),
                    )
                })?),
            };
            only(
                "overage_limit",
                request.overage_limit.is_some() && kind != Some(OverageKind::Allow),
                "overage = \"allow\"",
            )?;
            only(
                "overage_price",
                request.overage_price.is_some() && kind != Some(OverageKind::Bill),
                "overage = \"bill\"",
            )?;
            let limit = request
                .overage_limit
                .map(|a| {
                    Credits::positive(a.0)
                        .map_err(|e| Error::invalid("overage_limit", format!("{} {e}", a.0)))
                })
                .transpose()?;
            Change::overage(kind, limit, request.overage_price.map(|a| a.0))
                .map_err(|(field, e)| Error::invalid(field, e))
        }
        (None, None, None) => Err(Error::invalid(
            "body",
            "give one of feature, action or overage",
        )),
        _ => Err(Error::invalid(
            "body",
            "give only one of feature, action or overage",
        )),
    }
}

/// What makes two override requests the same request, for their idempotency key.
fn override_hash(change: &Change, until: Option<DateTime<Utc>>, reason: &str) -> String {
    let until = until.map(|t| t.to_rfc3339()).unwrap_or_default();
    match change {
        // As feature overrides have always been hashed.
        Change::Feature { feature, enabled } => request_hash(&[
            "POST overrides",
            feature,
            &enabled.to_string(),
            &until,
            reason,
        ]),
        other => {
            let flat = Flat::from(Override {
                id: String::new(),
                change: other.clone(),
                until: None,
                reason: String::new(),
                actor: String::new(),
                at: DateTime::<Utc>::UNIX_EPOCH,
            });
            let fields = serde_json::to_string(&(
                flat.kind,
                flat.action,
                flat.credits_per_unit,
                flat.overage,
                flat.overage_limit,
                flat.overage_price,
            ))
            .expect("plain values serialize");
            request_hash(&["POST overrides", &fields, &until, reason])
        }
    }
}

/// An override as recorded: `kind` says which of its fields apply (the others are null).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct OverrideView {
    id: String,
    /// `feature`, `price` or `overage`.
    kind: String,
    feature: Option<String>,
    enabled: Option<bool>,
    action: Option<String>,
    /// The customer's credits per unit of `action`; null for the catalog's price again.
    #[schema(value_type = Option<String>)]
    credits_per_unit: Option<Credits>,
    /// `block`, `allow`, `bill`, or `plan` (the plan's rule again).
    overage: Option<String>,
    #[schema(value_type = Option<String>)]
    overage_limit: Option<Credits>,
    #[schema(value_type = Option<String>)]
    overage_price: Option<rust_decimal::Decimal>,
    until: Option<DateTime<Utc>>,
    reason: String,
    /// The API key that made it.
    made_by: String,
    made_at: DateTime<Utc>,
}

impl OverrideView {
    pub fn of(o: Override) -> Self {
        let kind = o.change.kind().to_owned();
        let f = Flat::from(o);
        OverrideView {
            id: f.id,
            kind,
            feature: f.feature,
            enabled: f.enabled,
            action: f.action,
            credits_per_unit: f.credits_per_unit,
            overage: f.overage,
            overage_limit: f.overage_limit,
            overage_price: f.overage_price,
            until: f.until,
            reason: f.reason,
            made_by: f.actor,
            made_at: f.at,
        }
    }
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct OverrideResponse {
    customer: String,
    #[serde(flatten)]
    made: OverrideView,
}

/// Overrides one thing for one customer (created when unknown), for good or until a date,
/// recorded with the key that did it and why: a feature switched on or off, an action priced
/// differently, or the overage rule. The latest override of a feature, an action or the overage
/// rule replaces the one before; once it lapses, the plan and catalog decide again.
#[utoipa::path(post, path = "/v1/customers/{id}/overrides", params(("id" = String, Path)), request_body = OverrideRequest,
    responses((status = 201, body = OverrideResponse), (status = 409), (status = 422)), security(("bearer" = [])))]
pub async fn create_override(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<OverrideRequest>,
) -> Result<(StatusCode, Json<OverrideResponse>)> {
    caller.require(Scope::Admin)?;
    let made = make_override(&state, caller.key_id(), &id, request).await?;
    Ok((StatusCode::CREATED, Json(made)))
}

/// An override for customer `id`, made by key `key_id`.
pub async fn make_override(
    state: &AppState,
    key_id: &str,
    id: &str,
    request: OverrideRequest,
) -> Result<OverrideResponse> {
    let customer = customer_id("id", id)?;
    let key = identifier("idempotency_key", &request.idempotency_key)?;
    let now = state.clock.now();
    let change = parse_change(state, &request, now)?;
    let reason = Reason::parse(&request.reason).map_err(|e| Error::invalid("reason", e))?;
    if let Some(until) = request.until
        && until <= now
    {
        return Err(Error::invalid("until", "must be in the future"));
    }
    let hash = override_hash(&change, request.until, reason.as_str());
    let made = state
        .store
        .add_override(StoredOverride {
            customer: customer.clone(),
            made: Override {
                id: format!("ovr_{}", uuid::Uuid::now_v7().simple()),
                change,
                until: request.until,
                reason: reason.as_str().to_owned(),
                actor: key_id.to_owned(),
                at: now,
            },
            idempotency_key: key,
            request_hash: hash,
        })
        .await?;
    Ok(OverrideResponse {
        customer: customer.to_string(),
        made: OverrideView::of(made.made),
    })
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
    let customer = customer_id("id", &id)?;
    let overrides = state
        .store
        .override_history(&customer, super::extract::MAX_PAGE)
        .await?;
    if overrides.is_empty()
        && state
            .store
            .view(&customer, state.clock.now())
            .await?
            .is_none()
    {
        return Err(Error::CustomerNotFound(customer.to_string()));
    }
    Ok(Json(OverrideHistory {
        customer: customer.to_string(),
        overrides: overrides.into_iter().map(OverrideView::of).collect(),
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoTopupRequest {
    /// A charge starts when available credits fall below this (above 0).
    #[schema(value_type = String)]
    threshold: Amount,
    /// The pack bought each time (a `[[packs]]` id), at its catalog price.
    pack: String,
    /// Charges started per calendar month (UTC) at most, 1 to 100; failed ones are not counted.
    #[serde(deserialize_with = "super::extract::integer")]
    monthly_limit: i32,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AutoTopupSettingView {
    #[schema(value_type = String)]
    threshold: Credits,
    pack: String,
    monthly_limit: u32,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AutoTopupStopView {
    /// The attempt that failed.
    attempt: String,
    /// What Stripe (or creditbook) said.
    reason: String,
    code: Option<String>,
    at: DateTime<Utc>,
}

/// One automatic charge.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AutoTopupAttemptView {
    /// The attempt's id: the payment intent's idempotency key and `creditbook_auto_topup`.
    id: String,
    pack: String,
    #[schema(value_type = String)]
    credits: Credits,
    /// The pack's price charged, in `currency`.
    #[schema(value_type = String)]
    amount: Money,
    currency: String,
    /// `pending`, `succeeded` or `failed`.
    status: String,
    payment_intent: Option<String>,
    failure: Option<String>,
    failure_code: Option<String>,
    created_at: DateTime<Utc>,
    settled_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AutoTopupView {
    customer: String,
    /// The customer's setting; null when off.
    setting: Option<AutoTopupSettingView>,
    /// `off`, `active`, `charging` (a charge in flight) or `stopped` (a charge failed: set it
    /// again to resume).
    #[schema(value_type = String)]
    status: AutoTopupStatus,
    /// The attempt in flight.
    in_flight: Option<String>,
    stopped: Option<AutoTopupStopView>,
    /// Charges started this calendar month (UTC), failed ones not counted.
    started_this_month: u32,
    /// The latest attempts, newest first (at most 20).
    attempts: Vec<AutoTopupAttemptView>,
}

use crate::domain::autotopup::{Setting as AutoTopupSetting, Status as AutoTopupStatus};
use crate::store::autotopup::AutoTopupState;

impl AutoTopupView {
    fn of(customer: String, state: AutoTopupState, now: DateTime<Utc>) -> Result<Self> {
        let auto = state.auto_topup;
        let attempts = state
            .attempts
            .into_iter()
            .map(|a| {
                Ok(AutoTopupAttemptView {
                    amount: crate::domain::billing::money_from_minor(a.amount_minor, &a.currency),
                    credits: Credits::from_micros(a.credits),
                    created_at: crate::store::outbox::row_time(a.created_at)?,
                    settled_at: a
                        .settled_at
                        .map(crate::store::outbox::row_time)
                        .transpose()?,
                    id: a.id,
                    pack: a.pack_id,
                    currency: a.currency,
                    status: a.status,
                    payment_intent: a.payment_intent,
                    failure: a.failure,
                    failure_code: a.failure_code,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AutoTopupView {
            customer,
            status: auto.status(),
            started_this_month: auto.started_in(now),
            setting: auto.setting.map(|s| AutoTopupSettingView {
                threshold: s.threshold,
                pack: s.pack,
                monthly_limit: s.monthly_limit,
            }),
            in_flight: auto.in_flight,
            stopped: auto.stopped.map(|s| AutoTopupStopView {
                attempt: s.attempt,
                reason: s.reason,
                code: s.code,
                at: s.at,
            }),
            attempts,
        })
    }
}

/// Sets a customer's auto top-up (admin): when its available credits fall below `threshold`,
/// creditbook charges its saved payment method in Stripe for `pack`, off-session. `null` turns it
/// off. Setting it again resumes it after a failed charge; set below the threshold, a charge
/// starts at once. The customer must be linked to a Stripe customer and `[stripe] api_key` set.
#[utoipa::path(put, path = "/v1/customers/{id}/auto-topup", params(("id" = String, Path)),
    request_body(content = Option<AutoTopupRequest>, description = "The setting, or null to turn it off"),
    responses((status = 200, body = AutoTopupView), (status = 404), (status = 409), (status = 422)),
    security(("bearer" = [])))]
pub async fn set_auto_topup(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<Option<AutoTopupRequest>>,
) -> Result<Json<AutoTopupView>> {
    caller.require(Scope::Admin)?;
    let customer = customer_id("id", &id)?;
    let setting = request
        .map(|r| {
            AutoTopupSetting::of(
                r.threshold.0,
                &r.pack,
                i64::from(r.monthly_limit),
                &state.catalog,
            )
            .map_err(|bad| Error::invalid(bad.field, bad.reason))
        })
        .transpose()?;
    if state.store.auto_topup(&customer).await?.is_none() {
        return Err(Error::CustomerNotFound(customer.to_string()));
    }
    if setting.is_some() {
        if state.stripe.api_key.as_deref().is_none_or(str::is_empty) {
            return Err(Error::AutoTopupUnavailable(
                "no Stripe API key is configured ([stripe] api_key)".into(),
            ));
        }
        if state
            .store
            .stripe_customer_of(customer.as_str())
            .await?
            .is_none()
        {
            return Err(Error::AutoTopupUnavailable(format!(
                "{customer} is not linked to a Stripe customer (a checkout or subscription links it)"
            )));
        }
    }
    let now = state.clock.now();
    let actor = OperatorAction::new(
        caller.key_id(),
        OperatorActionKind::AutoTopup,
        serde_json::json!({ "setting": setting }),
    )
    .on_customer(customer.as_str());
    let set = state
        .store
        .set_auto_topup(&customer, setting, now, actor)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(customer.to_string()))?;
    Ok(Json(AutoTopupView::of(customer.to_string(), set, now)?))
}

/// A customer's auto top-up: its setting, where it stands and its latest charges (admin).
#[utoipa::path(get, path = "/v1/customers/{id}/auto-topup", params(("id" = String, Path)),
    responses((status = 200, body = AutoTopupView), (status = 404)), security(("bearer" = [])))]
pub async fn auto_topup(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AutoTopupView>> {
    caller.require(Scope::Admin)?;
    let customer = customer_id("id", &id)?;
    let found = state
        .store
        .auto_topup(&customer)
        .await?
        .ok_or_else(|| Error::CustomerNotFound(customer.to_string()))?;
    Ok(Json(AutoTopupView::of(
        customer.to_string(),
        found,
        state.clock.now(),
    )?))
}
