//! The accountants' endpoints (scope `finance`): the journal, streamed page by page; the
//! roll-forward, the waterfall and per-grant schedules, in JSON or CSV; and period close.

use super::AppState;
use super::extract::{ApiQuery, Caller, identifier};
use crate::domain::margin::MarginBy;
use crate::domain::reports::{RollforwardRow, WaterfallRow};
use crate::domain::revrec::Period;
use crate::error::{Error, Result};
use crate::service::revenue::{
    Format, MarginLine, close, date_range, journal_body, margin_csv, margin_lines, month_range,
    rollforward_csv, schedule_csv, waterfall_csv,
};
use crate::store::keys::Scope;
use crate::store::overage::OverageRow;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct JournalQuery {
    /// First booking date, `YYYY-MM-DD` (UTC).
    from: String,
    /// Last booking date, inclusive.
    to: String,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

fn content_type(format: Format) -> HeaderValue {
    HeaderValue::from_static(match format {
        Format::Json => "application/json",
        Format::Csv => "text/csv; charset=utf-8",
    })
}

#[utoipa::path(get, path = "/v1/revenue/journal", params(JournalQuery),
    responses((status = 200, description = "The journal, one row per line (JSON or CSV), streamed"),
        (status = 422)), security(("bearer" = [])))]
pub async fn journal(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<JournalQuery>,
) -> Result<Response> {
    caller.require(Scope::Finance)?;
    let format = Format::parse(q.format.as_deref())?;
    let (from, to) = date_range(&q.from, &q.to)?;
    let mut response = journal_body(state.store.clone(), from, to, format).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type(format));
    Ok(response)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MonthsQuery {
    /// First month, `YYYY-MM`.
    from: String,
    /// Last month, inclusive.
    to: String,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RollforwardReport {
    #[schema(value_type = Vec<Object>)]
    rows: Vec<RollforwardRow>,
}

fn csv_response(body: String) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type(Format::Csv));
    response
}

#[utoipa::path(get, path = "/v1/revenue/rollforward", params(MonthsQuery),
    responses((status = 200, body = RollforwardReport), (status = 422)), security(("bearer" = [])))]
pub async fn rollforward(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<MonthsQuery>,
) -> Result<Response> {
    caller.require(Scope::Finance)?;
    let format = Format::parse(q.format.as_deref())?;
    let (from, to) = month_range(&q.from, &q.to)?;
    let rows = state.store.rollforward(from, to).await?;
    Ok(match format {
        Format::Json => Json(RollforwardReport { rows }).into_response(),
        Format::Csv => csv_response(rollforward_csv(&rows)),
    })
}

#[derive(Serialize, ToSchema)]
pub struct WaterfallReport {
    #[schema(value_type = Vec<Object>)]
    rows: Vec<WaterfallRow>,
}

#[utoipa::path(get, path = "/v1/revenue/waterfall", params(MonthsQuery),
    responses((status = 200, body = WaterfallReport), (status = 422)), security(("bearer" = [])))]
pub async fn waterfall(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<MonthsQuery>,
) -> Result<Response> {
    caller.require(Scope::Finance)?;
    let format = Format::parse(q.format.as_deref())?;
    let (from, to) = month_range(&q.from, &q.to)?;
    let rows = state.store.waterfall(from, to).await?;
    Ok(match format {
        Format::Json => Json(WaterfallReport { rows }).into_response(),
        Format::Csv => csv_response(waterfall_csv(&rows, from, to)),
    })
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MarginQuery {
    /// First month, `YYYY-MM`.
    from: String,
    /// Last month, inclusive.
    to: String,
    /// `action` (default), `feature`, `plan`, `customer` or `subject` (the member that spent).
    by: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MarginReport {
    from: String,
    to: String,
    #[schema(value_type = String)]
    by: MarginBy,
    rows: Vec<MarginLine>,
}

/// Revenue recognized from the grants consumed against what the consumption cost at the vendor,
/// per month and group.
#[utoipa::path(get, path = "/v1/revenue/margin", params(MarginQuery),
    responses((status = 200, body = MarginReport), (status = 422)), security(("bearer" = [])))]
pub async fn margin(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<MarginQuery>,
) -> Result<Response> {
    caller.require(Scope::Finance)?;
    let format = Format::parse(q.format.as_deref())?;
    let (from, to) = month_range(&q.from, &q.to)?;
    let by = match q.by.as_deref() {
        None => MarginBy::Action,
        Some(text) => MarginBy::parse(text).ok_or_else(|| {
            Error::invalid(
                "by",
                format!("{text:?} is not one of action, feature, plan, customer, subject"),
            )
        })?,
    };
    let rows = margin_lines(&state.store, &state.catalog.currency, (from, to), by).await?;
    Ok(match format {
        Format::Json => Json(MarginReport {
            from: from.to_string(),
            to: to.to_string(),
            by,
            rows,
        })
        .into_response(),
        Format::Csv => csv_response(margin_csv(&rows)),
    })
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OverageQuery {
    /// 1 to 200 (default 50).
    limit: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OverageList {
    customers: Vec<OverageRow>,
    next_cursor: Option<String>,
}

/// Billed overage per customer: accrued, reported to Stripe, and waiting; customers not linked
/// to Stripe (or on a plan with no meter) keep theirs here.
#[utoipa::path(get, path = "/v1/revenue/overage", params(OverageQuery),
    responses((status = 200, body = OverageList), (status = 422)), security(("bearer" = [])))]
pub async fn overage(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<OverageQuery>,
) -> Result<Json<OverageList>> {
    caller.require(Scope::Finance)?;
    let limit = super::extract::page_limit(q.limit)?;
    let after = q
        .cursor
        .as_deref()
        .map(|c| identifier("cursor", c))
        .transpose()?;
    let customers = state.store.overage(after.as_deref(), limit).await?;
    let next_cursor = (customers.len() as u64 == limit)
        .then(|| customers.last().map(|c| c.customer.clone()))
        .flatten();
    Ok(Json(OverageList {
        customers,
        next_cursor,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FormatQuery {
    /// `json` (default) or `csv` (the periods).
    format: Option<String>,
}

#[utoipa::path(get, path = "/v1/revenue/grants/{id}/schedule", params(("id" = String, Path), FormatQuery),
    responses((status = 200, description = "The grant's revenue schedule"), (status = 404)),
    security(("bearer" = [])))]
pub async fn schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FormatQuery>,
) -> Result<Response> {
    caller.require(Scope::Finance)?;
    let format = Format::parse(q.format.as_deref())?;
    let id = identifier("id", &id)?;
    let schedule = state
        .store
        .schedule(&id)
        .await?
        .ok_or(Error::GrantNotFound(id))?;
    Ok(match format {
        Format::Json => Json(schedule).into_response(),
        Format::Csv => csv_response(schedule_csv(&schedule)),
    })
}

#[derive(Serialize, ToSchema)]
pub struct Closed {
    period: String,
    status: &'static str,
    closed_at: chrono::DateTime<chrono::Utc>,
    /// The id of the key that closed it (none for a period closed before this was kept).
    closed_by: Option<String>,
}

/// Locks a period that has ended. Time-driven postings due by now (expiries, the platform
/// part's days) are made first, so the period closes with them. Closing again changes nothing.
#[utoipa::path(post, path = "/v1/revenue/periods/{period}/close", params(("period" = String, Path)),
    responses((status = 200, body = Closed), (status = 409), (status = 422)), security(("bearer" = [])))]
pub async fn close_period(
    State(state): State<AppState>,
    caller: Caller,
    Path(period): Path<String>,
) -> Result<Json<Closed>> {
    caller.require(Scope::Finance)?;
    let period: Period = period.parse().map_err(|e| Error::invalid("period", e))?;
    let closed = close(&state.store, period, caller.key_id(), state.clock.now()).await?;
    Ok(Json(Closed {
        period: period.to_string(),
        status: "closed",
        closed_at: crate::store::outbox::row_time(closed.closed_at)?,
        closed_by: closed.closed_by,
    }))
}
