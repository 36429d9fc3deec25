//! The accountants' endpoints (scope `finance`): the journal, streamed page by page; the
//! roll-forward, the waterfall and per-grant schedules, in JSON or CSV; and period close.

use super::AppState;
use super::extract::{ApiQuery, Caller, identifier};
use crate::domain::Timestamp;
use crate::domain::margin::{Group, MarginBy, MarginRow, margin_rows};
use crate::domain::money::currency_minor_units;
use crate::domain::revrec::Period;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::keys::Scope;
use crate::store::operators::{OperatorAction, OperatorActionKind};
use crate::store::overage::OverageRow;
use crate::store::reports::{
    JournalCursor, JournalRow, RollforwardRow, Schedule, WaterfallRow, csv_field, money,
};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Months one roll-forward or waterfall may span: a limit on everything.
pub const MAX_REPORT_MONTHS: u32 = 1_200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

fn format_of(text: Option<&str>) -> Result<Format> {
    match text.unwrap_or("json") {
        "json" => Ok(Format::Json),
        "csv" => Ok(Format::Csv),
        other => Err(Error::invalid(
            "format",
            format!("{other:?} is not json or csv"),
        )),
    }
}

/// A date range, `from` and `to` inclusive, as the half-open range of instants it covers.
pub fn date_range(from: &str, to: &str) -> Result<(Timestamp, Timestamp)> {
    let parse = |field: &str, text: &str| {
        let bad = || Error::invalid(field, format!("{text:?} is not a date YYYY-MM-DD"));
        if text.len() != 10 {
            return Err(bad());
        }
        NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| bad())
    };
    let (from, to) = (parse("from", from)?, parse("to", to)?);
    if from > to {
        return Err(Error::invalid("to", "is before from"));
    }
    let start = from.and_time(chrono::NaiveTime::MIN).and_utc();
    let end = (to + chrono::Days::new(1))
        .and_time(chrono::NaiveTime::MIN)
        .and_utc();
    Ok((start, end))
}

/// A month range, `from` and `to` inclusive.
pub fn month_range(from: &str, to: &str) -> Result<(Period, Period)> {
    let from: Period = from.parse().map_err(|e| Error::invalid("from", e))?;
    let to: Period = to.parse().map_err(|e| Error::invalid("to", e))?;
    if from > to {
        return Err(Error::invalid("to", "is before from"));
    }
    let months = (to.year - from.year) * 12 + to.month as i32 - from.month as i32 + 1;
    if months > MAX_REPORT_MONTHS as i32 {
        return Err(Error::invalid(
            "to",
            format!("a report spans at most {MAX_REPORT_MONTHS} months"),
        ));
    }
    Ok((from, to))
}

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

/// The journal as a stream of text chunks, one page of lines at a time: JSON
/// (`{"from", "to", "lines": [...]}`) or CSV with a header.
pub fn journal_stream(
    store: Store,
    from: Timestamp,
    to: Timestamp,
    format: Format,
) -> impl futures_util::Stream<Item = Result<String>> + Send + 'static {
    enum Step {
        Start,
        After(JournalCursor, bool),
        Done,
    }
    futures_util::stream::unfold(Step::Start, move |step| {
        let store = store.clone();
        async move {
            let (after, first) = match step {
                Step::Done => return None,
                Step::Start => {
                    let head = match format {
                        Format::Csv => format!("{}\n", JournalRow::CSV_HEADER),
                        Format::Json => format!(
                            "{{\"from\":\"{}\",\"to\":\"{}\",\"lines\":[",
                            from.date_naive(),
                            (to - chrono::Days::new(1)).date_naive()
                        ),
                    };
                    return Some((Ok(head), Step::After(JournalCursor::default(), true)));
                }
                Step::After(after, first) => (after, first),
            };
            match store.journal_page(from, to, &after).await {
                Err(e) => Some((Err(e), Step::Done)),
                Ok((rows, None)) => {
                    debug_assert!(rows.is_empty());
                    let tail = match format {
                        Format::Csv => String::new(),
                        Format::Json => "]}".to_owned(),
                    };
                    Some((Ok(tail), Step::Done))
                }
                Ok((rows, Some(last))) => {
                    let mut chunk = String::new();
                    for (index, row) in rows.iter().enumerate() {
                        match format {
                            Format::Csv => chunk.push_str(&row.to_csv()),
                            Format::Json => {
                                if !(first && index == 0) {
                                    chunk.push(',');
                                }
                                chunk.push_str(
                                    &serde_json::to_string(row).expect("a row serializes"),
                                );
                            }
                        }
                    }
                    Some((Ok(chunk), Step::After(last, false)))
                }
            }
        }
    })
}

/// The journal from `from` to `to` as a streamed body. A failure mid-stream ends the body
/// early (the status line is gone) and is logged once, here.
pub fn journal_body(store: Store, from: Timestamp, to: Timestamp, format: Format) -> Body {
    let stream = futures_util::StreamExt::map(journal_stream(store, from, to, format), |chunk| {
        chunk.map(Bytes::from).map_err(|e| {
            tracing::error!(error = %e, "journal export failed mid-stream");
            std::io::Error::other("journal export failed")
        })
    });
    Body::from_stream(stream)
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
    let format = format_of(q.format.as_deref())?;
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

pub fn rollforward_csv(rows: &[RollforwardRow]) -> String {
    let mut out = format!("{}\n", RollforwardRow::CSV_HEADER);
    rows.iter().for_each(|r| out.push_str(&r.to_csv()));
    out
}

pub fn waterfall_csv(rows: &[WaterfallRow], from: Period, to: Period) -> String {
    let mut periods = Vec::new();
    let mut period = from;
    while period <= to {
        periods.push(period.to_string());
        period = period.next();
    }
    let mut out = format!(
        "booked_period,currency,billed,{},deferred\n",
        periods.join(",")
    );
    for row in rows {
        let cells: Vec<&str> = periods
            .iter()
            .map(|p| row.recognized.get(p).map_or("0", String::as_str))
            .collect();
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            row.booked_period,
            row.currency,
            row.billed,
            cells.join(","),
            row.deferred
        ));
    }
    out
}

#[utoipa::path(get, path = "/v1/revenue/rollforward", params(MonthsQuery),
    responses((status = 200, body = RollforwardReport), (status = 422)), security(("bearer" = [])))]
pub async fn rollforward(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<MonthsQuery>,
) -> Result<Response> {
    caller.require(Scope::Finance)?;
    let format = format_of(q.format.as_deref())?;
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
    let format = format_of(q.format.as_deref())?;
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
    /// `action` (default), `feature`, `plan` or `customer`.
    by: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// One month and group of the margin report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MarginLine {
    pub month: String,
    pub currency: String,
    /// The action, feature, plan or customer; null for consumption under no plan, and for
    /// revenue no consumption was recorded for (`unattributed`).
    pub group: Option<String>,
    pub unattributed: bool,
    pub credits: String,
    /// Credits of actions with no `vendor_cost`: not in `vendor_cost`.
    pub uncosted_credits: String,
    /// Usage revenue recognized from the grants consumed.
    pub revenue: String,
    /// Overage billed in arrears.
    pub overage: String,
    pub vendor_cost: String,
    /// revenue + overage - vendor_cost.
    pub margin: String,
}

impl MarginLine {
    const CSV_HEADER: &'static str = "month,currency,group,unattributed,credits,uncosted_credits,revenue,overage,vendor_cost,margin";

    fn of(row: MarginRow) -> MarginLine {
        let (group, unattributed) = match row.group {
            Group::Of(id) => (Some(id), false),
            Group::Without => (None, false),
            Group::Unattributed => (None, true),
        };
        // Money to the currency's minor unit at least; costs keep their six places.
        let exact = |value: rust_decimal::Decimal| {
            let minor = currency_minor_units(&row.currency);
            let mut value = value.normalize();
            if value.scale() < minor {
                value.rescale(minor);
            }
            value.to_string()
        };
        MarginLine {
            group,
            unattributed,
            credits: row.credits.to_string(),
            uncosted_credits: row.uncosted_credits.to_string(),
            revenue: money(row.revenue, &row.currency),
            overage: money(row.overage, &row.currency),
            vendor_cost: exact(row.vendor_cost),
            margin: exact(row.margin),
            month: row.month,
            currency: row.currency,
        }
    }

    fn to_csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            self.month,
            self.currency,
            csv_field(self.group.as_deref().unwrap_or("")),
            self.unattributed,
            self.credits,
            self.uncosted_credits,
            self.revenue,
            self.overage,
            self.vendor_cost,
            self.margin
        )
    }
}

/// The margin report's lines, `from` to `to`, grouped `by`.
pub async fn margin_lines(
    state: &AppState,
    from: Period,
    to: Period,
    by: MarginBy,
) -> Result<Vec<MarginLine>> {
    let (revenue, costs) = state.store.margin_sums(from, to, by).await?;
    Ok(margin_rows(revenue, costs, &state.catalog.currency)
        .into_iter()
        .map(MarginLine::of)
        .collect())
}

pub fn margin_csv(rows: &[MarginLine]) -> String {
    let mut out = format!("{}\n", MarginLine::CSV_HEADER);
    rows.iter().for_each(|r| out.push_str(&r.to_csv()));
    out
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
    let format = format_of(q.format.as_deref())?;
    let (from, to) = month_range(&q.from, &q.to)?;
    let by = match q.by.as_deref() {
        None => MarginBy::Action,
        Some(text) => MarginBy::parse(text).ok_or_else(|| {
            Error::invalid(
                "by",
                format!("{text:?} is not one of action, feature, plan, customer"),
            )
        })?,
    };
    let rows = margin_lines(&state, from, to, by).await?;
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

pub fn schedule_csv(schedule: &Schedule) -> String {
    let mut out = String::from(
        "grant,period,billed,usage_recognized,platform_recognized,breakage,refunded,revenue_reversed,transferred,deferred\n",
    );
    for r in &schedule.periods {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            csv_field(&schedule.grant),
            r.period,
            r.billed,
            r.usage_recognized,
            r.platform_recognized,
            r.breakage,
            r.refunded,
            r.revenue_reversed,
            r.transferred,
            r.deferred
        ));
    }
    out
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
    let format = format_of(q.format.as_deref())?;
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

/// Closes `period` if it has ended, after the postings due by now; when it was closed.
pub async fn close(
    state: &AppState,
    period: Period,
    key_id: &str,
) -> Result<entity::revenue_periods::Model> {
    let now = state.clock.now();
    if period.end() > now {
        return Err(Error::PeriodNotEnded(period.to_string()));
    }
    crate::jobs::run_due(&state.store, now).await?;
    let actor = OperatorAction::new(
        key_id,
        OperatorActionKind::PeriodClose,
        serde_json::json!({"period": period.to_string()}),
    )
    .on(&period.to_string());
    state.store.close_period(period, now, &actor).await
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
    let closed = close(&state, period, caller.key_id()).await?;
    Ok(Json(Closed {
        period: period.to_string(),
        status: "closed",
        closed_at: crate::store::outbox::row_time(closed.closed_at)?,
        closed_by: closed.closed_by,
    }))
}
