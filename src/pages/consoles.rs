//! The operator's console (`/admin`) and the finance close (`/finance`), for signed-in sessions
//! of those scopes. They read what the API reads; closing a month posts through the same rule.

use super::session::SignedIn;
use super::when;
use crate::domain::ledger::{Grant, HoldStatus};
use crate::domain::money::Credits;
use crate::domain::revrec::Period;
use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::extract::identifier;
use crate::http::reads::{CustomerRow, customers_page};
use crate::store::keys::Scope;
use crate::store::ledger::EntryView;
use crate::store::reports::RollforwardRow;
use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

/// Customers per page of the console.
const CUSTOMERS_PAGE: u64 = 50;
/// Ledger entries per page of a customer.
const LEDGER_PAGE: u64 = 20;
/// Months the finance page shows when none are asked for.
const FINANCE_MONTHS: u32 = 12;

#[derive(Deserialize)]
pub struct CustomersQuery {
    q: Option<String>,
    cursor: Option<String>,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    csrf: String,
    q: String,
    customers: Vec<CustomerRow>,
    next: Option<String>,
}

/// `/admin`: customers by id, searched by id or Stripe customer, a page at a time.
pub async fn admin(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(query): Query<CustomersQuery>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Admin) {
        return Ok(refused);
    }
    let q = query.q.filter(|q| !q.trim().is_empty());
    let q = q.map(|q| identifier("q", q.trim())).transpose()?;
    let cursor = query.cursor.map(|c| identifier("cursor", &c)).transpose()?;
    let page = customers_page(&state, q.as_deref(), cursor.as_deref(), CUSTOMERS_PAGE).await?;
    state.pages.page(
        StatusCode::OK,
        &AdminPage {
            csrf: signed_in.session.csrf.clone(),
            q: q.unwrap_or_default(),
            customers: page.customers,
            next: page.next_cursor,
        },
    )
}

#[derive(Deserialize)]
pub struct LedgerQuery {
    before: Option<i64>,
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
}

/// `/admin/customers/{id}`: one customer's grants, holds, overrides and ledger.
pub async fn admin_customer(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Query(query): Query<LedgerQuery>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Admin) {
        return Ok(refused);
    }
    let id = identifier("id", &id)?;
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
        .ledger_page(&id, query.before, LEDGER_PAGE)
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
    let page = CustomerPage {
        csrf: signed_in.session.csrf.clone(),
        plan: standing.plan_id.clone(),
        frozen: standing.frozen,
        balance: book.balance(),
        held: book.held(),
        available: book.available(),
        overdraft: book.overdraft,
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
        holds: book
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Held)
            .map(|h| HoldRow {
                id: h.id.clone(),
                action: h.action.clone(),
                credits: h.credits,
                expires: when(h.expires_at),
            })
            .collect(),
        overrides,
        entries,
        older: next.map(|n| n.to_string()),
        newer: query.before.is_some(),
        id,
    };
    state.pages.page(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct MonthsQuery {
    from: Option<String>,
    to: Option<String>,
    /// The month just closed, to say so.
    closed: Option<String>,
}

#[derive(Template)]
#[template(path = "finance.html")]
struct FinancePage {
    csrf: String,
    from: String,
    to: String,
    rows: Vec<RollforwardRow>,
    /// The last month that has ended: what may be closed.
    last_ended: String,
    message: Option<String>,
}

async fn finance_page(
    state: &AppState,
    signed_in: &SignedIn,
    from: Option<String>,
    to: Option<String>,
    status: StatusCode,
    message: Option<String>,
) -> Result<Response> {
    let now = state.clock.now();
    let this_month = Period::of(now);
    let to = match to {
        Some(to) => to,
        None => this_month.to_string(),
    };
    let from = match from {
        Some(from) => from,
        None => {
            let mut from = this_month;
            for _ in 1..FINANCE_MONTHS {
                from = from.previous();
            }
            from.to_string()
        }
    };
    let (first, last) = crate::http::revenue::month_range(&from, &to)?;
    let rows = state.store.rollforward(first, last).await?;
    state.pages.page(
        status,
        &FinancePage {
            csrf: signed_in.session.csrf.clone(),
            from: first.to_string(),
            to: last.to_string(),
            rows,
            last_ended: this_month.previous().to_string(),
            message,
        },
    )
}

/// `/finance`: the roll-forward per month and currency, downloads, and closing a month.
pub async fn finance(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(query): Query<MonthsQuery>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Finance) {
        return Ok(refused);
    }
    let message = query
        .closed
        .and_then(|p| p.parse::<Period>().ok())
        .map(|p| format!("{p} is closed."));
    finance_page(
        &state,
        &signed_in,
        query.from,
        query.to,
        StatusCode::OK,
        message,
    )
    .await
}

#[derive(Deserialize)]
pub struct CloseForm {
    csrf: String,
    period: String,
    /// The box that confirms it: closing cannot be undone.
    confirm: Option<String>,
}

/// `POST /finance/close`: closes a month that has ended, once confirmed.
pub async fn close(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Form(form): Form<CloseForm>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Finance) {
        return Ok(refused);
    }
    signed_in.check_csrf(&form.csrf)?;
    let refuse = |message: String| {
        finance_page(
            &state,
            &signed_in,
            None,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(message),
        )
    };
    let Ok(period) = form.period.parse::<Period>() else {
        return refuse(format!("{:?} is not a month YYYY-MM.", form.period)).await;
    };
    if form.confirm.as_deref() != Some("yes") {
        return refuse(format!("Tick the box to confirm closing {period}.")).await;
    }
    match crate::http::revenue::close(&state, period).await {
        Ok(_) => Ok(Redirect::to(&format!("/finance?closed={period}")).into_response()),
        Err(Error::PeriodNotEnded(p)) => {
            refuse(format!(
                "{p} has not ended: a month closes once it is over."
            ))
            .await
        }
        Err(e) => Err(e),
    }
}
