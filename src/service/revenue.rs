//! The accountants' reports as the API, the finance pages and `creditbook revenue export` all
//! give them: ranges of dates and months, the journal streamed page by page, the roll-forward,
//! waterfall, margin and schedule rows and their CSV files, and period close. Each edge parses
//! its input and calls these; none calls another edge.

use crate::domain::Timestamp;
use crate::domain::margin::{Group, MarginBy, MarginRow, margin_rows};
use crate::domain::money::{Credits, Money};
use crate::domain::reports::{RollforwardRow, Schedule, WaterfallRow, months};
use crate::domain::revrec::Period;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::operators::{OperatorAction, OperatorActionKind};
use crate::store::reports::{JournalCursor, JournalRow, csv_field};
use axum::body::{Body, Bytes};
use chrono::NaiveDate;
use serde::Serialize;
use utoipa::ToSchema;

/// Months one roll-forward or waterfall may span: a limit on everything.
pub const MAX_REPORT_MONTHS: u32 = 1_200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// `json` (the default) or `csv`, as a `format` parameter names it.
    pub fn parse(text: Option<&str>) -> Result<Format> {
        match text.unwrap_or("json") {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            other => Err(Error::invalid(
                "format",
                format!("{other:?} is not json or csv"),
            )),
        }
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

/// The journal as a stream of text chunks, one page of lines at a time: JSON
/// (`{"from", "to", "lines": [...]}`) or CSV with a header.
// Long: one stream whose state (the page cursor, the format's opening, separators and close)
// lives in the closure that unfolds it.
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

/// The roll-forward's columns, in the order of its CSV file.
const ROLLFORWARD_HEADER: &str = "period,currency,opening,billings,recognized,breakage,refunds,closing,revenue_reversed,overage,usage_recognized,platform_recognized";

pub fn rollforward_csv(rows: &[RollforwardRow]) -> String {
    let mut out = format!("{ROLLFORWARD_HEADER}\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.period,
            r.currency,
            r.opening,
            r.billings,
            r.recognized,
            r.breakage,
            r.refunds,
            r.closing,
            r.revenue_reversed,
            r.overage,
            r.usage_recognized,
            r.platform_recognized
        ));
    }
    out
}

pub fn waterfall_csv(rows: &[WaterfallRow], from: Period, to: Period) -> String {
    let periods: Vec<String> = months(from, to).iter().map(Period::to_string).collect();
    let mut out = format!(
        "booked_period,currency,billed,{},deferred\n",
        periods.join(",")
    );
    for row in rows {
        let cells: Vec<String> = periods
            .iter()
            .map(|p| row.recognized.get(p).map_or("0".into(), Money::to_string))
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

/// One month and group of the margin report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MarginLine {
    pub month: String,
    pub currency: String,
    /// The action, feature, plan or customer; null for consumption under no plan, and for
    /// revenue no consumption was recorded for (`unattributed`).
    pub group: Option<String>,
    pub unattributed: bool,
    #[schema(value_type = String)]
    pub credits: Credits,
    /// Credits of actions with no `vendor_cost`: not in `vendor_cost`.
    #[schema(value_type = String)]
    pub uncosted_credits: Credits,
    /// Usage revenue recognized from the grants consumed.
    #[schema(value_type = String)]
    pub revenue: Money,
    /// Overage billed in arrears.
    #[schema(value_type = String)]
    pub overage: Money,
    /// To the currency's minor unit at least; costs keep their six places.
    #[schema(value_type = String)]
    pub vendor_cost: Money,
    /// revenue + overage - vendor_cost.
    #[schema(value_type = String)]
    pub margin: Money,
}

impl MarginLine {
    const CSV_HEADER: &'static str = "month,currency,group,unattributed,credits,uncosted_credits,revenue,overage,vendor_cost,margin";

    fn of(row: MarginRow) -> MarginLine {
        let (group, unattributed) = match row.group {
            Group::Of(id) => (Some(id), false),
            Group::Without => (None, false),
            Group::Unattributed => (None, true),
        };
        let currency = row.currency.as_str();
        MarginLine {
            group,
            unattributed,
            credits: row.credits,
            uncosted_credits: row.uncosted_credits,
            revenue: row.revenue.shown(currency),
            overage: row.overage.shown(currency),
            vendor_cost: row.vendor_cost.exact(currency),
            margin: row.margin.exact(currency),
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

/// The margin report's lines, `from` to `to`, grouped `by`, in the accounting `currency`.
pub async fn margin_lines(
    store: &Store,
    currency: &str,
    (from, to): (Period, Period),
    by: MarginBy,
) -> Result<Vec<MarginLine>> {
    let (revenue, costs) = store.margin_sums(from, to, by).await?;
    Ok(margin_rows(revenue, costs, currency)
        .into_iter()
        .map(MarginLine::of)
        .collect())
}

pub fn margin_csv(rows: &[MarginLine]) -> String {
    let mut out = format!("{}\n", MarginLine::CSV_HEADER);
    rows.iter().for_each(|r| out.push_str(&r.to_csv()));
    out
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

/// Closes `period` if it has ended, after the postings due by now; when it was closed.
pub async fn close(
    store: &Store,
    period: Period,
    key_id: &str,
    now: Timestamp,
) -> Result<entity::revenue_periods::Model> {
    if period.end() > now {
        return Err(Error::PeriodNotEnded(period.to_string()));
    }
    crate::jobs::run_due(store, now).await?;
    let actor = OperatorAction::new(
        key_id,
        OperatorActionKind::PeriodClose,
        serde_json::json!({"period": period.to_string()}),
    )
    .on(&period.to_string());
    store.close_period(period, now, &actor).await
}
