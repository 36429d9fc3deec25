//! What an admin does from the console (README, The console and the finance pages): grant
//! promotional credits, adjust, set or clear a plan, add or remove a spend limit, switch a
//! feature on or off, revoke a key. Each form is turned into the API's own request and runs
//! through the API's own function, with the session's key as the actor and a reason the form
//! asks for: the same rules, the same records. A refusal shows the API's problem in words, on
//! the page, with the problem's status.

use super::Render;
use super::consoles::customer_page;
use super::notice::{Done, Notice};
use super::session::SignedIn;
use super::when;
use crate::domain::adjustment::Reason;
use crate::domain::customer::CustomerId;
use crate::domain::limits::{Limit, Members};
use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::controls::{self, LimitsRequest, OverrideRequest};
use crate::http::customers::{self, AdjustmentRequest, GrantRequest, ParentRequest, PlanRequest};
use crate::http::extract::{customer_id, parse_value};
use crate::store::keys::{Revoked, Scope};
use crate::store::operators::{OperatorAction, OperatorActionKind};
use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// The form's text, `None` when left empty.
fn given(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

/// The reason every console action asks for, by the rule of every operator's reason.
fn reason(text: &str) -> Result<Reason> {
    if text.trim().is_empty() {
        return Err(Error::invalid(
            "reason",
            "say why: it is kept with the action",
        ));
    }
    Reason::parse(text).map_err(|e| Error::invalid("reason", e))
}

/// A date of a form (`YYYY-MM-DD`) as the API's time: midnight UTC.
fn midnight(field: &str, date: Option<&str>) -> Result<Value> {
    match date {
        None => Ok(Value::Null),
        Some(text) => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map(|d| json!(format!("{d}T00:00:00Z")))
            .map_err(|_| Error::invalid(field, format!("{text:?} is not a date YYYY-MM-DD"))),
    }
}

/// Back to the customer's page saying what was done, or the page again with the refusal in words.
async fn answer(
    state: &AppState,
    signed_in: &SignedIn,
    customer: &CustomerId,
    result: Result<Done>,
) -> Result<Response> {
    match result {
        Ok(done) => Ok(Redirect::to(&format!(
            "/admin/customers/{}?done={}",
            urlencoding(customer.as_str()),
            done.as_str()
        ))
        .into_response()),
        Err(e) => {
            let (status, problem) = e.problem();
            if status.is_server_error() {
                return Err(e);
            }
            let notice = Notice {
                refused: true,
                text: refusal_text(&problem),
            };
            customer_page(state, signed_in, customer, None, (status, Some(notice))).await
        }
    }
}

/// A refusal in words: the problem's detail (or title) and its type.
fn refusal_text(problem: &Value) -> String {
    let detail = problem["detail"]
        .as_str()
        .or(problem["title"].as_str())
        .unwrap_or("refused");
    format!(
        "Refused: {detail} ({}).",
        problem["type"].as_str().unwrap_or("")
    )
}

/// A path segment, percent-encoded.
fn urlencoding(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs a form's `work` on the customer of its path, when the session may act (an admin's, with
/// its form token), and answers with what it did or why it was refused.
async fn act<Work>(
    state: &AppState,
    signed_in: &SignedIn,
    id: &str,
    csrf: &str,
    work: impl FnOnce(CustomerId) -> Work,
) -> Result<Response>
where
    Work: std::future::Future<Output = Result<Done>>,
{
    let customer = match acting(state, signed_in, id, csrf) {
        Ok(customer) => customer,
        Err(refused) => return Ok(*refused),
    };
    let result = work(customer.clone()).await;
    answer(state, signed_in, &customer, result).await
}

/// The customer of a form's path, and the session's right to act: an admin's, with its form token.
fn acting(
    state: &AppState,
    signed_in: &SignedIn,
    id: &str,
    csrf: &str,
) -> std::result::Result<CustomerId, Box<Response>> {
    if let Some(refused) = signed_in.refusal(state, Scope::Admin) {
        return Err(Box::new(refused));
    }
    signed_in
        .check_csrf(csrf)
        .and_then(|()| customer_id("id", id))
        .map_err(|e| Box::new(e.into_response()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantForm {
    csrf: String,
    key: String,
    credits: String,
    expires_on: Option<String>,
    reason: String,
}

/// `POST /admin/customers/{id}/grant`: promotional credits, with why (the grant's memo).
pub async fn grant(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<GrantForm>,
) -> Result<Response> {
    let (state, signed_in, form) = (&state, &signed_in, &form);
    act(state, signed_in, &id, &form.csrf, |customer| async move {
        let request: GrantRequest = parse_value(
            json!({"kind": "promotional", "credits": form.credits.trim(),
                "expires_at": midnight("expires_on", given(&form.expires_on))?,
                "memo": reason(&form.reason)?.as_str(), "idempotency_key": form.key}),
            "form",
        )?;
        customers::grant(state, &signed_in.session.key_id, customer.as_str(), request).await?;
        Ok(Done::Granted)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustForm {
    csrf: String,
    key: String,
    credits: String,
    reason: String,
}

/// `POST /admin/customers/{id}/adjust`: adds or takes back credits, with why.
pub async fn adjust(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<AdjustForm>,
) -> Result<Response> {
    let (state, signed_in, form) = (&state, &signed_in, &form);
    act(state, signed_in, &id, &form.csrf, |customer| async move {
        let request: AdjustmentRequest = parse_value(
            json!({"credits": form.credits.trim(), "reason": reason(&form.reason)?.as_str(),
                "idempotency_key": form.key}),
            "form",
        )?;
        customers::adjust(state, &signed_in.session.key_id, customer.as_str(), request).await?;
        Ok(Done::Adjusted)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanForm {
    csrf: String,
    /// A plan id, or empty for none.
    plan: Option<String>,
    reason: String,
}

/// `POST /admin/customers/{id}/plan`: sets or clears the plan, with why.
pub async fn plan(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<PlanForm>,
) -> Result<Response> {
    let (state, signed_in, form) = (&state, &signed_in, &form);
    act(state, signed_in, &id, &form.csrf, |customer| async move {
        let why = reason(&form.reason)?;
        let request: PlanRequest = parse_value(json!({"plan": given(&form.plan)}), "form")?;
        let actor = (signed_in.session.key_id.as_str(), Some(&why));
        customers::plan(state, actor, customer.as_str(), request).await?;
        Ok(Done::PlanSet)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentForm {
    csrf: String,
    /// A customer id, or empty for none.
    parent: Option<String>,
    reason: String,
}

/// `POST /admin/customers/{id}/parent`: puts the customer under a parent, or on its own, with
/// why.
pub async fn parent(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<ParentForm>,
) -> Result<Response> {
    let (state, signed_in, form) = (&state, &signed_in, &form);
    act(state, signed_in, &id, &form.csrf, |customer| async move {
        let why = reason(&form.reason)?;
        let parent = given(&form.parent).map(str::trim);
        let request: ParentRequest = parse_value(json!({ "parent": parent }), "form")?;
        let actor = (signed_in.session.key_id.as_str(), Some(&why));
        customers::parent(state, actor, customer.as_str(), request).await?;
        Ok(Done::ParentSet)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitForm {
    csrf: String,
    reason: String,
    /// The place of a limit to remove; otherwise the limit below is added.
    remove: Option<usize>,
    period: Option<String>,
    credits: Option<String>,
    mode: Option<String>,
    feature: Option<String>,
    subject: Option<String>,
    each_subject: Option<String>,
}

/// A limit as the API's request gives it.
fn limit_request(limit: &Limit) -> Value {
    let mut request = json!({"period": limit.period.as_str(), "credits": limit.credits.to_string(),
        "mode": limit.mode.as_str(), "feature": limit.feature});
    match &limit.members {
        Members::All => {}
        Members::One(subject) => request["subject"] = json!(subject.as_str()),
        Members::Each => request["each_subject"] = json!(true),
    }
    request
}

/// `POST /admin/customers/{id}/limits`: adds a spend limit to the customer's, or removes one,
/// with why. The customer's other limits are kept as they are.
pub async fn limits(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<LimitForm>,
) -> Result<Response> {
    let (state, signed_in, form) = (&state, &signed_in, &form);
    act(state, signed_in, &id, &form.csrf, |customer| async move {
        let why = reason(&form.reason)?;
        let now = state.clock.now();
        let (book, standing) = state
            .store
            .view(&customer, now)
            .await?
            .ok_or_else(|| Error::CustomerNotFound(customer.to_string()))?;
        let mut requests: Vec<Value> = standing
            .limits
            .states(&book, &state.catalog, now)
            .iter()
            .map(|s| limit_request(&s.limit))
            .collect();
        match form.remove {
            Some(index) if index < requests.len() => {
                requests.remove(index);
            }
            Some(_) => return Err(Error::invalid("remove", "no such limit")),
            None => {
                let mut added = json!({"period": given(&form.period), "mode": given(&form.mode),
                    "credits": given(&form.credits), "feature": given(&form.feature),
                    "subject": given(&form.subject)});
                if form.each_subject.is_some() {
                    added["each_subject"] = json!(true);
                }
                requests.push(added);
            }
        }
        let request: LimitsRequest = parse_value(json!({ "limits": requests }), "form")?;
        let actor = (signed_in.session.key_id.as_str(), Some(&why));
        controls::limits(state, actor, customer.as_str(), request).await?;
        Ok(Done::LimitsSet)
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideForm {
    csrf: String,
    key: String,
    /// `feature` (with `feature` and `enabled`), `price` (with `action` and
    /// `credits_per_unit`, empty for the catalog's price) or `overage` (with `overage` and
    /// `overage_limit` or `overage_price`).
    kind: String,
    feature: Option<String>,
    /// `on` or `off`.
    enabled: Option<String>,
    action: Option<String>,
    credits_per_unit: Option<String>,
    overage: Option<String>,
    overage_limit: Option<String>,
    overage_price: Option<String>,
    until: Option<String>,
    reason: String,
}

/// The API's override request for what the form asks.
fn override_request(form: &OverrideForm) -> Result<Value> {
    let mut request = match form.kind.as_str() {
        "feature" => {
            let enabled = match given(&form.enabled) {
                Some("on") => true,
                Some("off") => false,
                other => {
                    return Err(Error::invalid(
                        "enabled",
                        format!("{:?} is not on or off", other.unwrap_or("")),
                    ));
                }
            };
            json!({"feature": given(&form.feature), "enabled": enabled})
        }
        "price" => {
            json!({"action": given(&form.action), "credits_per_unit": given(&form.credits_per_unit)})
        }
        "overage" => {
            let mut request = json!({"overage": given(&form.overage)});
            if let Some(limit) = given(&form.overage_limit) {
                request["overage_limit"] = json!(limit);
            }
            if let Some(price) = given(&form.overage_price) {
                request["overage_price"] = json!(price);
            }
            request
        }
        other => {
            return Err(Error::invalid(
                "kind",
                format!("{other:?} is not feature, price or overage"),
            ));
        }
    };
    request["until"] = midnight("until", given(&form.until))?;
    request["reason"] = json!(reason(&form.reason)?.as_str());
    request["idempotency_key"] = json!(form.key);
    Ok(request)
}

/// `POST /admin/customers/{id}/override`: switches a feature on or off, prices an action or
/// sets the overage rule for the customer, until a day or for good, with why.
pub async fn make_override(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<OverrideForm>,
) -> Result<Response> {
    let (state, signed_in, form) = (&state, &signed_in, &form);
    act(state, signed_in, &id, &form.csrf, |customer| async move {
        let request: OverrideRequest = parse_value(override_request(form)?, "form")?;
        controls::make_override(state, &signed_in.session.key_id, customer.as_str(), request)
            .await?;
        Ok(Done::Overridden)
    })
    .await
}

/// The most keys the keys page lists.
const KEYS_PAGE: usize = 500;

struct KeyRow {
    id: String,
    scope: &'static str,
    label: String,
    created: String,
    last_used: String,
    revoked: String,
    /// The key of this session: not revoked from it.
    own: bool,
}

#[derive(Template)]
#[template(path = "admin_keys.html")]
struct KeysPage {
    csrf: String,
    keys: Vec<KeyRow>,
    notice: Option<Notice>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysQuery {
    done: Option<String>,
}

/// `GET /admin/keys`: the API keys, oldest first (never the keys themselves), to revoke.
pub async fn keys(
    State(state): State<AppState>,
    signed_in: SignedIn,
    crate::http::extract::ApiQuery(query): crate::http::extract::ApiQuery<KeysQuery>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Admin) {
        return Ok(refused);
    }
    let notice = query.done.as_deref().and_then(Done::parse).map(|d| Notice {
        refused: false,
        text: d.said().to_owned(),
    });
    keys_page(&state, &signed_in, StatusCode::OK, notice).await
}

async fn keys_page(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    notice: Option<Notice>,
) -> Result<Response> {
    let keys = state
        .store
        .list_api_keys()
        .await?
        .into_iter()
        .take(KEYS_PAGE)
        .map(|k| KeyRow {
            own: k.id == signed_in.session.key_id,
            scope: k.scope.as_str(),
            label: k.label.unwrap_or_default(),
            created: when(k.created_at),
            last_used: k.last_used_at.map(when).unwrap_or_default(),
            revoked: k.revoked_at.map(when).unwrap_or_default(),
            id: k.id,
        })
        .collect();
    state.pages.page(
        status,
        &KeysPage {
            csrf: signed_in.session.csrf.clone(),
            keys,
            notice,
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeForm {
    csrf: String,
    reason: String,
}

/// `POST /admin/keys/{id}/revoke`: revokes a key, with why; never the session's own.
pub async fn revoke(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Admin) {
        return Ok(refused);
    }
    signed_in.check_csrf(&form.csrf)?;
    let refuse = |status: StatusCode, text: String| {
        keys_page(
            &state,
            &signed_in,
            status,
            Some(Notice {
                refused: true,
                text,
            }),
        )
    };
    let why = match reason(&form.reason) {
        Ok(why) => why,
        Err(e) => {
            let (status, problem) = e.problem();
            return refuse(status, refusal_text(&problem)).await;
        }
    };
    if id == signed_in.session.key_id {
        return refuse(
            StatusCode::CONFLICT,
            "Refused: this is the key of your session; sign in with another admin key to revoke it."
                .into(),
        )
        .await;
    }
    let actor = OperatorAction::new(
        &signed_in.session.key_id,
        OperatorActionKind::KeyRevoke,
        json!({ "key": id }),
    )
    .because(Some(&why))
    .on(&id);
    match state
        .store
        .revoke_api_key(&id, state.clock.now(), Some(&actor))
        .await?
    {
        Some(Revoked::Now) => Ok(Redirect::to(&format!(
            "/admin/keys?done={}",
            Done::KeyRevoked.as_str()
        ))
        .into_response()),
        Some(Revoked::Already(at)) => {
            refuse(
                StatusCode::CONFLICT,
                format!("Refused: key {id} was revoked already, at {}.", when(at)),
            )
            .await
        }
        None => {
            refuse(
                StatusCode::NOT_FOUND,
                format!("Refused: there is no key {id}."),
            )
            .await
        }
    }
}
