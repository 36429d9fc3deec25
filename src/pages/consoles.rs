//! The operator's console (`/admin`), for signed-in admin sessions. It reads what the API reads.

use super::Render;
use super::notice::{Done, Notice, limit_text};
use super::session::SignedIn;
use super::when;
use crate::domain::customer::CustomerId;
use crate::domain::ledger::Grant;
use crate::domain::money::Credits;
use crate::domain::summary::Summary;
use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::extract::{ApiQuery, customer_id, identifier};
use crate::service::customers::{CustomerRow, customers_page};
use crate::store::keys::Scope;
use crate::store::ledger::EntryView;
use crate::store::outbox::OutboxStatus;
use crate::stripe::apply::OutcomeKind;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

/// Customers per page of the console.
const CUSTOMERS_PAGE: u64 = 50;
/// Ledger entries per page of a customer.
const LEDGER_PAGE: u64 = 20;

#[derive(Deserialize)]
pub struct CustomersQuery {
    q: Option<String>,
    cursor: Option<String>,
}

/// Stripe events listed per page.
const EVENTS_PAGE: u64 = 50;
/// A customer's Stripe events and outbox rows shown on its page.
const CUSTOMER_RECENT: u64 = 20;

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    csrf: String,
    q: String,
    customers: Vec<CustomerRow>,
    next: Option<String>,
    /// (outcome, events, needs an operator)
    outcomes: Vec<(&'static str, i64, bool)>,
    /// The `/metrics` figures an operator looks at first: (name, value).
    essentials: Vec<(&'static str, String)>,
}

/// The figures of `/metrics` an operator reads first, since this process started (counters) or
/// now (the outbox and pending refunds).
async fn essentials(state: &AppState) -> Result<Vec<(&'static str, String)>> {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &state.metrics;
    let outbox = state.store.outbox_counts().await?;
    let count = |status: OutboxStatus| outbox.get(&status).copied().unwrap_or(0).to_string();
    Ok(vec![
        ("Responses 2xx", m.responses_2xx.load(Relaxed).to_string()),
        ("Responses 4xx", m.responses_4xx.load(Relaxed).to_string()),
        ("Responses 5xx", m.responses_5xx.load(Relaxed).to_string()),
        (
            "Holds approved",
            m.authorizations_approved.load(Relaxed).to_string(),
        ),
        (
            "Holds refused",
            m.authorizations_refused.load(Relaxed).to_string(),
        ),
        ("Usages", m.usages.load(Relaxed).to_string()),
        (
            "Webhooks delivered",
            m.webhooks_delivered.load(Relaxed).to_string(),
        ),
        (
            "Webhooks failed",
            m.webhooks_failed.load(Relaxed).to_string(),
        ),
        ("Outbox pending", count(OutboxStatus::Pending)),
        ("Outbox dead", count(OutboxStatus::Dead)),
        (
            "Refunds waiting for their payment",
            state.store.pending_stripe_refunds().await?.to_string(),
        ),
    ])
}

/// Events per outcome, every outcome listed.
async fn outcome_counts(state: &AppState) -> Result<Vec<(&'static str, i64, bool)>> {
    let counts = state.store.stripe_outcome_counts().await?;
    Ok(OutcomeKind::ALL
        .into_iter()
        .map(|o| {
            let n = counts
                .iter()
                .find(|(text, _)| text == o.as_str())
                .map_or(0, |(_, n)| *n);
            (
                o.as_str(),
                n,
                matches!(o, OutcomeKind::Pending | OutcomeKind::UnmappedPrice),
            )
        })
        .collect())
}

/// `/admin`: customers by id, searched by id or Stripe customer, a page at a time.
pub async fn admin(
    State(state): State<AppState>,
    signed_in: SignedIn,
    ApiQuery(query): ApiQuery<CustomersQuery>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Admin) {
        return Ok(refused);
    }
    let q = query.q.filter(|q| !q.trim().is_empty());
    let q = q.map(|q| identifier("q", q.trim())).transpose()?;
    let cursor = query.cursor.map(|c| identifier("cursor", &c)).transpose()?;
    let page = customers_page(
        &state.store,
        (q.as_deref(), cursor.as_deref(), CUSTOMERS_PAGE),
        state.clock.now(),
    )
    .await?;
    state.pages.page(
        StatusCode::OK,
        &AdminPage {
            csrf: signed_in.session.csrf.clone(),
            q: q.unwrap_or_default(),
            customers: page.customers,
            next: page.next_cursor,
            outcomes: outcome_counts(&state).await?,
            essentials: essentials(&state).await?,
        },
    )
}

/// A Stripe event as the console lists it.
struct EventRow {
    id: String,
    event_type: String,
    outcome: String,
    detail: String,
    received: String,
}

impl EventRow {
    fn of(e: entity::stripe_events::Model) -> EventRow {
        EventRow {
            received: crate::store::rows::timestamp(e.received_at)
                .map(when)
                .unwrap_or_default(),
            id: e.id,
            event_type: e.event_type,
            outcome: e.outcome,
            detail: e.detail.unwrap_or_default(),
        }
    }
}

#[derive(Deserialize)]
pub struct EventsQuery {
    outcome: Option<String>,
    /// Events received before this instant (microseconds): the next page.
    before: Option<i64>,
}

#[derive(Template)]
#[template(path = "admin_events.html")]
struct EventsPage {
    csrf: String,
    outcome: Option<&'static str>,
    advice: Option<&'static str>,
    outcomes: Vec<(&'static str, i64, bool)>,
    events: Vec<EventRow>,
    older: Option<i64>,
}

/// `/admin/stripe-events?outcome=`: Stripe events, newest first, by outcome, with what to do.
pub async fn stripe_events(
    State(state): State<AppState>,
    signed_in: SignedIn,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Admin) {
        return Ok(refused);
    }
    let outcome = match query.outcome.as_deref().filter(|o| !o.is_empty()) {
        None => None,
        Some(text) => Some(
            OutcomeKind::parse(text)
                .ok_or_else(|| Error::invalid("outcome", format!("{text:?} is not an outcome")))?,
        ),
    };
    let rows = state
        .store
        .stripe_events_where(outcome.map(|o| o.as_str()), None, query.before, EVENTS_PAGE)
        .await?;
    let older = (rows.len() as u64 == EVENTS_PAGE)
        .then(|| rows.last().map(|e| e.received_at))
        .flatten();
    state.pages.page(
        StatusCode::OK,
        &EventsPage {
            csrf: signed_in.session.csrf.clone(),
            outcome: outcome.map(|o| o.as_str()),
            advice: outcome.map(|o| o.advice()),
            outcomes: outcome_counts(&state).await?,
            events: rows.into_iter().map(EventRow::of).collect(),
            older,
        },
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    before: Option<i64>,
    /// What an action of this page just did (`Done`).
    done: Option<String>,
}

/// A spend limit as the page shows it, with its place in the list (to remove it).
struct LimitRow {
    index: usize,
    text: String,
}

/// An operator's write on the customer, newest first.
struct ActionRow {
    at: String,
    key_id: String,
    action: String,
    what: String,
    why: String,
}

struct GrantRow {
    id: String,
    kind: String,
    credits: Credits,
    remaining: Credits,
    held: Credits,
    expires: String,
    source: String,
}

struct HoldRow {
    id: String,
    action: String,
    /// The member holding it, if one was named.
    subject: String,
    credits: Credits,
    expires: String,
}

struct OverrideRow {
    kind: &'static str,
    what: String,
    until: String,
    reason: String,
    made_by: String,
}

#[derive(Template)]
#[template(path = "admin_customer.html")]
struct CustomerPage {
    csrf: String,
    id: String,
    plan: Option<String>,
    next_grant: Option<String>,
    frozen: bool,
    balance: Credits,
    held: Credits,
    available: Credits,
    overdraft: Credits,
    grants: Vec<GrantRow>,
    holds: Vec<HoldRow>,
    overrides: Vec<OverrideRow>,
    entries: Vec<EntryView>,
    older: Option<String>,
    newer: bool,
    events: Vec<EventRow>,
    deliveries: Vec<DeliveryRow>,
    notice: Option<Notice>,
    /// A fresh idempotency key for each form that writes: a form sent twice acts once.
    form_key: String,
    plans: Vec<String>,
    features: Vec<String>,
    /// The catalog's actions, for a price of the customer's own.
    actions_priced: Vec<String>,
    limits: Vec<LimitRow>,
    actions: Vec<ActionRow>,
    /// Its organization: the customers above it (nearest first) and below it.
    above: Vec<String>,
    below: Vec<ChildRow>,
    /// How many customers are below it in all, when more than the page lists.
    below_more: usize,
    pool_available: Option<Credits>,
}

/// A customer below the one shown, and the customers below that one.
struct ChildRow {
    id: String,
    children: Vec<String>,
}

/// Customers below one shown on its console page at most (the rest are counted).
const CHILDREN_LISTED: usize = 100;

/// An outbox row of the customer: an alert to an endpoint, a meter event or a charge.
struct DeliveryRow {
    kind: String,
    event_type: String,
    destination: String,
    status: String,
    attempts: i32,
    created: String,
    last_error: String,
}

/// `/admin/customers/{id}`: one customer's grants, holds, overrides and ledger, and the forms
/// that act on it.
pub async fn admin_customer(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<LedgerQuery>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Admin) {
        return Ok(refused);
    }
    let id = customer_id("id", &id)?;
    let notice = query
        .done
        .as_deref()
        .and_then(Done::parse)
        .map(Notice::done);
    customer_page(
        &state,
        &signed_in,
        &id,
        query.before,
        (StatusCode::OK, notice),
    )
    .await
}

/// The customer's console page, with `status` and what an action did or why it was refused.
// Long: gathers each part the customer's console page shows from its read, in the page's order.
pub(super) async fn customer_page(
    state: &AppState,
    signed_in: &SignedIn,
    id: &CustomerId,
    before: Option<i64>,
    (status, notice): (StatusCode, Option<Notice>),
) -> Result<Response> {
    let id = id.clone();
    let now = state.clock.now();
    let Some((book, standing)) = state.store.view(&id, now).await? else {
        return state.pages.page(
            StatusCode::NOT_FOUND,
            &super::Message {
                title: "No such customer",
                message: "No customer has this id.",
            },
        );
    };
    let mut grants: Vec<&Grant> = book.grants.iter().collect();
    grants.sort_by(|a, b| Grant::consumption_order(a, b));
    let (entries, next) = state
        .store
        .ledger_page(&id, before, LEDGER_PAGE)
        .await?
        .unwrap_or_default();
    use crate::domain::overrides::{Change, Flat};
    let overrides = standing
        .overrides
        .in_force(now)
        .map(|o| {
            let what = match &o.change {
                Change::Feature { feature, enabled } => {
                    format!("{feature} {}", if *enabled { "on" } else { "off" })
                }
                Change::Price {
                    action,
                    credits_per_unit,
                } => match credits_per_unit {
                    Some(c) => format!("{action} at {c} credits a unit"),
                    None => format!("{action} at the catalog's price"),
                },
                Change::Overage(_) => {
                    let flat = Flat::from(o.clone());
                    let detail = flat
                        .overage_limit
                        .map(|l| format!(" down to -{l}"))
                        .or(flat.overage_price.map(|p| format!(" at {p} a credit")))
                        .unwrap_or_default();
                    format!("overage {}{detail}", flat.overage.unwrap_or_default())
                }
            };
            OverrideRow {
                kind: o.change.kind(),
                what,
                until: o.until.map_or_else(|| "for good".to_owned(), when),
                reason: o.reason.clone(),
                made_by: o.actor.clone(),
            }
        })
        .collect();
    let events = state
        .store
        .stripe_events_where(None, Some(id.as_str()), None, CUSTOMER_RECENT)
        .await?
        .into_iter()
        .map(EventRow::of)
        .collect();
    let deliveries = state
        .store
        .outbox_recent(&id, CUSTOMER_RECENT)
        .await?
        .into_iter()
        .map(|o| DeliveryRow {
            created: crate::store::rows::timestamp(o.created_at)
                .map(when)
                .unwrap_or_default(),
            kind: o.kind,
            event_type: o.event_type,
            destination: o.destination,
            status: o.status,
            attempts: o.attempts,
            last_error: o.last_error.unwrap_or_default(),
        })
        .collect();
    let summary = Summary::of(&state.catalog, state.policy(), &book, &standing, now);
    let limits = standing
        .limits
        .states(&book, &state.catalog, now)
        .into_iter()
        .enumerate()
        .map(|(index, s)| LimitRow {
            index,
            text: limit_text(&s.limit),
        })
        .collect();
    let actions = state
        .store
        .operator_actions_latest(&id, CUSTOMER_RECENT)
        .await?
        .into_iter()
        .map(|a| {
            let detail: serde_json::Value = serde_json::from_str(&a.detail).unwrap_or_default();
            let why = ["reason", "memo"]
                .iter()
                .find_map(|k| detail[k].as_str().filter(|s| !s.is_empty()))
                .unwrap_or_default()
                .to_owned();
            ActionRow {
                at: crate::store::rows::timestamp(a.at)
                    .map(when)
                    .unwrap_or_default(),
                key_id: a.key_id,
                action: a.action,
                what: detail.to_string(),
                why,
            }
        })
        .collect();
    let above = state.store.line_above(&id).await?;
    let children = state.store.children_of(&[id.to_string()]).await?;
    let children: Vec<String> = children.into_values().flatten().collect();
    let below_more = children.len().saturating_sub(CHILDREN_LISTED);
    let listed: Vec<String> = children.into_iter().take(CHILDREN_LISTED).collect();
    let mut grandchildren = state.store.children_of(&listed).await?;
    let below = listed
        .into_iter()
        .map(|child| ChildRow {
            children: grandchildren.remove(&child).unwrap_or_default(),
            id: child,
        })
        .collect();
    let pool_available = match standing.parent {
        Some(_) => state.store.pool_available(&id, now).await?,
        None => None,
    };
    let page = CustomerPage {
        above,
        below,
        below_more,
        pool_available,
        notice,
        form_key: uuid::Uuid::new_v4().to_string(),
        plans: state.catalog.plans.keys().cloned().collect(),
        features: state.catalog.features.keys().cloned().collect(),
        actions_priced: state.catalog.actions.keys().cloned().collect(),
        limits,
        actions,
        csrf: signed_in.session.csrf.clone(),
        events,
        deliveries,
        plan: summary.plan.map(str::to_owned),
        next_grant: super::next_grant(&summary),
        frozen: summary.frozen,
        balance: summary.balance,
        held: summary.held,
        available: summary.available,
        overdraft: summary.overdraft,
        grants: grants
            .into_iter()
            .map(|g| GrantRow {
                id: g.id.clone(),
                kind: g.kind.as_str().to_owned(),
                credits: g.credits,
                remaining: g.remaining,
                held: g.held,
                expires: g.expires_at.map_or_else(|| "never".to_owned(), when),
                source: format!("{} {}", g.source_type, g.source_id),
            })
            .collect(),
        holds: summary
            .holds
            .iter()
            .map(|h| HoldRow {
                id: h.id.clone(),
                action: h.action.clone(),
                subject: h
                    .subject
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                credits: h.credits,
                expires: when(h.expires_at),
            })
            .collect(),
        overrides,
        entries,
        older: next.map(|n| n.to_string()),
        newer: before.is_some(),
        id: id.to_string(),
    };
    state.pages.page(status, &page)
}
