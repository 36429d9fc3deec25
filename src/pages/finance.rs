//! The finance pages (`/finance`), for signed-in finance sessions: the roll-forward, recognized
//! revenue as a chart, the deferred revenue waterfall, margin, each paid grant's schedule, the
//! reports as CSV downloads, and closing a month. They read what the API reads; closing posts
//! through the same rule.

use super::Render;
use super::chart::{self, StackedBars};
use super::session::SignedIn;
use crate::domain::margin::MarginBy;
use crate::domain::money::Money;
use crate::domain::reports::{RollforwardRow, Schedule};
use crate::domain::revrec::Period;
use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::extract::{ApiQuery, customer_id, identifier};
use crate::service::revenue::{self, Format, MarginLine};
use crate::store::keys::Scope;
use crate::store::reports::Lot;
use askama::Template;
use axum::Form;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

/// Months the finance page shows when none are asked for.
const FINANCE_MONTHS: u32 = 12;
/// Months one finance page may span: a chart and a grid a person can read.
const MAX_PAGE_MONTHS: usize = 60;
/// Paid grants listed for one customer.
const LOTS_PAGE: u64 = 100;

#[derive(Deserialize)]
pub struct MonthsQuery {
    from: Option<String>,
    to: Option<String>,
    /// The month just closed, to say so.
    closed: Option<String>,
}

/// One row of the waterfall grid: a booking month's billings and what each month recognized.
struct WaterfallLine {
    booked_period: String,
    currency: String,
    billed: Money,
    cells: Vec<Money>,
    deferred: Money,
}

#[derive(Template)]
#[template(path = "finance.html")]
struct FinancePage {
    csrf: String,
    from: String,
    to: String,
    rows: Vec<RollforwardRow>,
    currency: String,
    chart: StackedBars,
    months: Vec<String>,
    waterfall: Vec<WaterfallLine>,
    /// Margin by month and plan; empty unless some action has a vendor cost.
    margin: Vec<MarginLine>,
    /// The last month that has ended: what may be closed.
    last_ended: String,
    message: Option<String>,
}

/// The months `from` to `to`, as the pages ask for them: the last 12 by default, 60 at most.
fn months(state: &AppState, from: Option<String>, to: Option<String>) -> Result<(Period, Period)> {
    let this_month = Period::of(state.clock.now());
    let to = to.unwrap_or_else(|| this_month.to_string());
    let from = match from {
        Some(from) => from,
        None => {
            let mut from = to.parse().unwrap_or(this_month);
            for _ in 1..FINANCE_MONTHS {
                from = from.previous();
            }
            from.to_string()
        }
    };
    let (first, last) = revenue::month_range(&from, &to)?;
    if month_list(first, last).len() > MAX_PAGE_MONTHS {
        return Err(Error::invalid(
            "to",
            format!("a page shows at most {MAX_PAGE_MONTHS} months; download longer ranges"),
        ));
    }
    Ok((first, last))
}

fn month_list(from: Period, to: Period) -> Vec<String> {
    let mut months = Vec::new();
    let mut period = from;
    while period <= to && months.len() <= MAX_PAGE_MONTHS {
        months.push(period.to_string());
        period = period.next();
    }
    months
}

/// Recognized revenue per month in the catalog's currency: usage, platform and breakage above
/// the axis, revenue reversed by refunds below it.
fn revenue_chart(rows: &[RollforwardRow], months: &[String], currency: &str) -> StackedBars {
    let groups: Vec<String> = ["usage", "platform", "breakage", "refunds"]
        .map(String::from)
        .to_vec();
    let mut points = Vec::new();
    for row in rows.iter().filter(|r| r.currency == currency) {
        let Some(slot) = months.iter().position(|m| *m == row.period) else {
            continue;
        };
        points.push((slot, groups[0].clone(), row.usage_recognized.value()));
        points.push((slot, groups[1].clone(), row.platform_recognized.value()));
        points.push((slot, groups[2].clone(), row.breakage.value()));
        points.push((slot, groups[3].clone(), -row.revenue_reversed.value()));
    }
    chart::stacked(months.len(), &groups, &points)
}

async fn finance_page(
    state: &AppState,
    signed_in: &SignedIn,
    (from, to): (Period, Period),
    status: StatusCode,
    message: Option<String>,
) -> Result<Response> {
    let rows = state.store.rollforward(from, to).await?;
    let months = month_list(from, to);
    let currency = state.catalog.currency.clone();
    let chart = revenue_chart(&rows, &months, &currency);
    let waterfall = state
        .store
        .waterfall(from, to)
        .await?
        .into_iter()
        .map(|row| WaterfallLine {
            cells: months
                .iter()
                .map(|m| row.recognized.get(m).copied().unwrap_or_default())
                .collect(),
            booked_period: row.booked_period,
            currency: row.currency,
            billed: row.billed,
            deferred: row.deferred,
        })
        .collect();
    let margin = revenue::margin_lines(&state.store, &currency, (from, to), MarginBy::Plan).await?;
    let costed = margin.iter().any(|m| !m.vendor_cost.is_zero());
    state.pages.page(
        status,
        &FinancePage {
            csrf: signed_in.session.csrf.clone(),
            from: from.to_string(),
            to: to.to_string(),
            rows,
            currency,
            chart,
            months,
            waterfall,
            margin: if costed { margin } else { Vec::new() },
            last_ended: Period::of(state.clock.now()).previous().to_string(),
            message,
        },
    )
}

/// `/finance`: the roll-forward, revenue, waterfall and margin per month; downloads; closing.
pub async fn finance(
    State(state): State<AppState>,
    signed_in: SignedIn,
    ApiQuery(query): ApiQuery<MonthsQuery>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Finance) {
        return Ok(refused);
    }
    let message = query
        .closed
        .and_then(|p| p.parse::<Period>().ok())
        .map(|p| format!("{p} is closed."));
    let range = months(&state, query.from, query.to)?;
    finance_page(&state, &signed_in, range, StatusCode::OK, message).await
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
    let range = months(&state, None, None)?;
    let refuse = |message: String| {
        finance_page(
            &state,
            &signed_in,
            range,
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
    match revenue::close(
        &state.store,
        period,
        &signed_in.session.key_id,
        state.clock.now(),
    )
    .await
    {
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

#[derive(Deserialize)]
pub struct ExportQuery {
    from: String,
    to: String,
}

/// `/finance/export/{report}.csv?from=&to=` (months): the journal, roll-forward, waterfall or
/// margin (by action) as the API's CSV, as a download.
pub async fn export(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(file): Path<String>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Finance) {
        return Ok(refused);
    }
    let (from, to) = revenue::month_range(&query.from, &query.to)?;
    let body = match file.as_str() {
        "journal.csv" => {
            revenue::journal_body(state.store.clone(), from.start(), to.end(), Format::Csv)
        }
        "rollforward.csv" => Body::from(revenue::rollforward_csv(
            &state.store.rollforward(from, to).await?,
        )),
        "waterfall.csv" => Body::from(revenue::waterfall_csv(
            &state.store.waterfall(from, to).await?,
            from,
            to,
        )),
        "margin.csv" => Body::from(revenue::margin_csv(
            &revenue::margin_lines(
                &state.store,
                &state.catalog.currency,
                (from, to),
                MarginBy::Action,
            )
            .await?,
        )),
        _ => return Err(Error::NotFound),
    };
    let name = format!(
        "creditbook-{}-{from}-to-{to}.csv",
        file.trim_end_matches(".csv")
    );
    Ok(download(body, &name))
}

/// A CSV download named `name`.
fn download(body: Body, name: &str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    // The name is ASCII letters, digits and `-`: anything else in a grant id becomes `_`.
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
            .expect("a name of ASCII letters, digits and -._"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[derive(Deserialize)]
pub struct GrantsQuery {
    customer: Option<String>,
    grant: Option<String>,
}

#[derive(Template)]
#[template(path = "finance_grants.html")]
struct GrantsPage {
    csrf: String,
    customer: String,
    lots: Vec<Lot>,
    limit: u64,
}

/// `/finance/grants?customer=`: a customer's paid grants, each linking to its schedule;
/// `?grant=` goes to that grant's schedule.
pub async fn grants(
    State(state): State<AppState>,
    signed_in: SignedIn,
    ApiQuery(query): ApiQuery<GrantsQuery>,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(&state, Scope::Finance) {
        return Ok(refused);
    }
    if let Some(grant) = query.grant.filter(|g| !g.trim().is_empty()) {
        let grant = identifier("grant", grant.trim())?;
        let encoded: String = form_urlencoded::byte_serialize(grant.as_bytes()).collect();
        return Ok(Redirect::to(&format!("/finance/grants/{encoded}")).into_response());
    }
    let customer = query
        .customer
        .filter(|c| !c.trim().is_empty())
        .map(|c| customer_id("customer", c.trim()))
        .transpose()?;
    let lots = match &customer {
        None => Vec::new(),
        Some(customer) => state.store.lots_of(customer, LOTS_PAGE).await?,
    };
    let customer = customer.map(String::from).unwrap_or_default();
    state.pages.page(
        StatusCode::OK,
        &GrantsPage {
            csrf: signed_in.session.csrf.clone(),
            customer,
            lots,
            limit: LOTS_PAGE,
        },
    )
}

#[derive(Template)]
#[template(path = "finance_schedule.html")]
struct SchedulePage {
    csrf: String,
    schedule: Schedule,
}

/// `/finance/grants/{id}`: one paid grant's revenue schedule, month by month, and its totals.
pub async fn schedule(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Response> {
    grant_schedule(&state, &signed_in, &id, false).await
}

/// `/finance/grants/{id}/schedule.csv`: the schedule as the API's CSV, as a download.
pub async fn schedule_download(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> Result<Response> {
    grant_schedule(&state, &signed_in, &id, true).await
}

async fn grant_schedule(
    state: &AppState,
    signed_in: &SignedIn,
    id: &str,
    csv: bool,
) -> Result<Response> {
    if let Some(refused) = signed_in.refusal(state, Scope::Finance) {
        return Ok(refused);
    }
    let id = identifier("id", id)?;
    let found = state.store.schedule(&id).await?;
    if let (true, Some(schedule)) = (csv, &found) {
        return Ok(download(
            Body::from(revenue::schedule_csv(schedule)),
            &format!("creditbook-schedule-{}.csv", schedule.grant),
        ));
    }
    let Some(schedule) = found else {
        return state.pages.page(
            StatusCode::NOT_FOUND,
            &super::Message {
                title: "No such paid grant",
                message: "No paid grant has this id: only grants paid for have a schedule.",
            },
        );
    };
    state.pages.page(
        StatusCode::OK,
        &SchedulePage {
            csrf: signed_in.session.csrf.clone(),
            schedule,
        },
    )
}
