//! The accountants' reports, read from the journal: the journal itself (in pages, so it streams
//! in bounded memory), the roll-forward of deferred revenue, the waterfall and per-grant
//! schedules. Aggregates are computed by the database; only their small results come back.

use super::Store;
use super::rows::ByKey;
use super::rows::timestamp;
use super::unit::Write;
use crate::domain::Timestamp;
use crate::domain::customer::CustomerId;
use crate::domain::margin::{CostSum, Group, MarginBy, RevenueSum};
use crate::domain::money::{Credits, Money};
use crate::domain::reports::{self, JournalSum, RollforwardRow, Schedule, WaterfallRow};
use crate::domain::revrec::{Account, Period, PostingKind};
use crate::error::{Error, Result};
use entity::{journal_lines, revenue_lots, revenue_periods};
use sea_orm::sea_query::{ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement,
};
use serde::Serialize;

/// Journal lines per page read: the bound on what an export holds in memory at once.
pub const JOURNAL_PAGE_LINES: u64 = 2_000;

/// Where a journal page ends: the booking time, entry and line of its last line.
#[derive(Debug, Clone, Default)]
pub struct JournalCursor {
    booked_at: Option<i64>,
    entry_id: String,
    line: i32,
}

/// One journal line, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct JournalRow {
    pub entry_id: String,
    pub line: i32,
    /// The booking date (UTC): the effective date, or the first day of the period an
    /// adjustment was booked in.
    pub date: String,
    pub effective_at: Timestamp,
    pub period: String,
    pub adjustment: bool,
    pub kind: String,
    pub account: String,
    pub debit: Money,
    pub credit: Money,
    pub currency: String,
    pub customer: String,
    pub grant: Option<String>,
    pub source: Option<String>,
    pub event: Option<String>,
    pub memo: String,
}

impl JournalRow {
    pub const CSV_HEADER: &'static str = "entry_id,line,date,effective_at,period,adjustment,kind,account,debit,credit,currency,customer,grant,source,event,memo";

    fn from_model(row: journal_lines::Model) -> Result<JournalRow> {
        let booked = timestamp(row.booked_at)?;
        Ok(JournalRow {
            debit: Money::from_micros(row.debit).shown(&row.currency),
            credit: Money::from_micros(row.credit).shown(&row.currency),
            entry_id: row.entry_id,
            line: row.line,
            date: booked.date_naive().to_string(),
            effective_at: timestamp(row.effective_at)?,
            period: row.period,
            adjustment: row.adjustment,
            kind: row.kind,
            account: row.account,
            currency: row.currency,
            customer: row.customer_id,
            grant: row.grant_id,
            source: row.source,
            event: row.event,
            memo: row.memo,
        })
    }

    pub fn to_csv(&self) -> String {
        let fields = [
            csv_field(&self.entry_id),
            self.line.to_string(),
            self.date.clone(),
            self.effective_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            self.period.clone(),
            self.adjustment.to_string(),
            self.kind.clone(),
            self.account.clone(),
            self.debit.to_string(),
            self.credit.to_string(),
            self.currency.clone(),
            csv_field(&self.customer),
            csv_field(self.grant.as_deref().unwrap_or("")),
            csv_field(self.source.as_deref().unwrap_or("")),
            csv_field(self.event.as_deref().unwrap_or("")),
            csv_field(&self.memo),
        ];
        let mut line = fields.join(",");
        line.push('\n');
        line
    }
}

/// RFC 4180: quoted when it holds a comma, quote or line break. A leading `=`, `+`, `-`, `@`,
/// tab or carriage return is prefixed with `'` so that a spreadsheet never runs a customer id as
/// a formula.
pub fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

/// A paid grant as the finance pages list it.
#[derive(Debug, Clone)]
pub struct Lot {
    pub grant: String,
    pub catalog_item: String,
    pub currency: String,
    /// The part paid for credits.
    pub price: Money,
    pub credits: Credits,
    pub booked_period: String,
    pub created_at: Timestamp,
}

/// `SUM(debit)` and `SUM(credit)` of a grouped journal query, as BIGINT on both engines
/// (PostgreSQL sums BIGINT to NUMERIC).
pub(crate) trait JournalSums {
    fn debit_credit_sums(self) -> Self;
}

impl JournalSums for sea_orm::Select<journal_lines::Entity> {
    fn debit_credit_sums(self) -> Self {
        self.column_as(
            journal_lines::Column::Debit.sum().cast_as("BIGINT"),
            "debit",
        )
        .column_as(
            journal_lines::Column::Credit.sum().cast_as("BIGINT"),
            "credit",
        )
    }
}

/// Sums of debit and credit, by the keys of a GROUP BY.
struct Sums {
    debit: i64,
    credit: i64,
}

impl Sums {
    /// As the reports' rules read them: the kind of posting and the account, parsed.
    fn of(&self, kind: &str, account: &str) -> Result<JournalSum> {
        Ok(JournalSum {
            kind: PostingKind::parse(kind)
                .ok_or_else(|| Error::Internal(format!("journal kind {kind:?}")))?,
            account: Account::parse(account)
                .ok_or_else(|| Error::Internal(format!("journal account {account:?}")))?,
            debit: Money::from_micros(self.debit),
            credit: Money::from_micros(self.credit),
        })
    }
}

fn parse_period(text: &str) -> Result<Period> {
    text.parse()
        .map_err(|e| Error::Internal(format!("journal period {text:?}: {e}")))
}

impl Store {
    /// Journal lines booked from `from` (inclusive) to `to` (exclusive), after `after`, in
    /// booking order (date, then entry, then line: an entry's lines stay together). Returns the
    /// cursor of the last line, none when there are no more.
    pub async fn journal_page(
        &self,
        from: Timestamp,
        to: Timestamp,
        after: &JournalCursor,
    ) -> Result<(Vec<JournalRow>, Option<JournalCursor>)> {
        use journal_lines::Column as C;
        // `booked_at >= a` first, so the index on (booked_at, entry_id, line) bounds the scan;
        // the rest of the row-value comparison (booked_at, entry_id, line) > cursor follows.
        let lower = match after.booked_at {
            None => Condition::all().add(C::BookedAt.gte(from.timestamp_micros())),
            Some(at) => Condition::all().add(C::BookedAt.gte(at)).add(
                Condition::any()
                    .add(C::BookedAt.gt(at))
                    .add(C::EntryId.gt(after.entry_id.clone()))
                    .add(
                        Condition::all()
                            .add(C::EntryId.eq(after.entry_id.clone()))
                            .add(C::Line.gt(after.line)),
                    ),
            ),
        };
        let rows = journal_lines::Entity::find()
            .filter(lower)
            .filter(C::BookedAt.lt(to.timestamp_micros()))
            .order_by_asc(C::BookedAt)
            .order_by_asc(C::EntryId)
            .order_by_asc(C::Line)
            .limit(JOURNAL_PAGE_LINES)
            .all(self.connection())
            .await?;
        let last = rows.last().map(|r| JournalCursor {
            booked_at: Some(r.booked_at),
            entry_id: r.entry_id.clone(),
            line: r.line,
        });
        let rows = rows
            .into_iter()
            .map(JournalRow::from_model)
            .collect::<Result<Vec<_>>>()?;
        Ok((rows, last))
    }

    /// Lines booked in the range: the export's denominator for its progress bar.
    pub async fn journal_count(&self, from: Timestamp, to: Timestamp) -> Result<u64> {
        use sea_orm::PaginatorTrait;
        Ok(journal_lines::Entity::find()
            .filter(journal_lines::Column::BookedAt.gte(from.timestamp_micros()))
            .filter(journal_lines::Column::BookedAt.lt(to.timestamp_micros()))
            .count(self.connection())
            .await?)
    }

    /// Runs a GROUP BY whose first `keys` columns are text and last two the debit and credit sums.
    async fn sums(&self, sql: &str, keys: usize) -> Result<Vec<(Vec<String>, Sums)>> {
        let backend = self.backend();
        let rows = self
            .connection()
            .query_all_raw(Statement::from_string(backend, sql.to_owned()))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let names = (0..keys)
                .map(|index| row.try_get_by_index::<String>(index))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let debit: i64 = row.try_get_by_index(keys)?;
            let credit: i64 = row.try_get_by_index(keys + 1)?;
            out.push((names, Sums { debit, credit }));
        }
        Ok(out)
    }

    /// The roll-forward per period and currency, `from` to `to` (months, inclusive).
    pub async fn rollforward(&self, from: Period, to: Period) -> Result<Vec<RollforwardRow>> {
        let sums = self
            .sums(
                &format!(
                    "SELECT period, currency, kind, account, CAST(SUM(debit) AS BIGINT), \
                 CAST(SUM(credit) AS BIGINT) FROM journal_lines WHERE period <= '{to}' \
                 GROUP BY period, currency, kind, account"
                ),
                4,
            )
            .await?
            .into_iter()
            .map(|(keys, s)| match &keys[..] {
                [period, currency, kind, account] => Ok((
                    parse_period(period)?,
                    currency.clone(),
                    s.of(kind, account)?,
                )),
                _ => Err(Error::Internal("roll-forward row shape".into())),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(reports::rollforward(sums, from, to))
    }

    /// The margin report's sums, `from` to `to` (months, inclusive): the journal's usage revenue
    /// by month, currency and group (the consumption each line posted for, through its
    /// source), and the consumptions' credits and vendor costs by month and group.
    // Long: the margin report's two grouped queries and the mapping of their keys.
    pub async fn margin_sums(
        &self,
        from: Period,
        to: Period,
        by: MarginBy,
    ) -> Result<(Vec<RevenueSum>, Vec<CostSum>)> {
        // Column names come from the enum and months from parsed periods: nothing here is user
        // text.
        let (revenue_key, cost_key) = match by {
            MarginBy::Action => ("c.action", "action"),
            MarginBy::Feature => ("c.feature", "feature"),
            MarginBy::Plan => ("c.plan_id", "plan_id"),
            MarginBy::Customer => ("j.customer_id", "customer_id"),
            MarginBy::Subject => ("c.subject", "subject"),
        };
        let attributed = match by {
            // Every line is some customer's (PostgreSQL groups by no bare constant).
            MarginBy::Customer => "CASE WHEN j.customer_id IS NULL THEN 'u' ELSE 'a' END",
            _ => "CASE WHEN c.source IS NULL THEN 'u' ELSE 'a' END",
        };
        let overage = PostingKind::Overage.as_str();
        let account = Account::UsageRevenue.as_str();
        let revenue_sql = format!(
            "SELECT j.period, j.currency, {attributed}, COALESCE({revenue_key}, ''), \
             CASE WHEN j.kind = '{overage}' THEN 'o' ELSE 'r' END, \
             CAST(SUM(j.debit) AS BIGINT), CAST(SUM(j.credit) AS BIGINT) \
             FROM journal_lines j LEFT JOIN consumptions c \
             ON c.customer_id = j.customer_id AND c.source = j.source \
             WHERE j.account = '{account}' AND j.period >= '{from}' AND j.period <= '{to}' \
             GROUP BY j.period, j.currency, {attributed}, COALESCE({revenue_key}, ''), \
             CASE WHEN j.kind = '{overage}' THEN 'o' ELSE 'r' END"
        );
        let group = |attributed: &str, key: String| match (attributed, key.is_empty()) {
            ("u", _) => Group::Unattributed,
            (_, true) => Group::Without,
            (_, false) => Group::Of(key),
        };
        let mut revenue = Vec::new();
        for (keys, sums) in self.sums(&revenue_sql, 5).await? {
            let [month, currency, attributed, key, kind] = &keys[..] else {
                return Err(Error::Internal("margin revenue row shape".into()));
            };
            let net = Money::from_micros(sums.credit - sums.debit);
            let (usage, overage) = match kind.as_str() {
                "o" => (Money::ZERO, net),
                _ => (net, Money::ZERO),
            };
            revenue.push(RevenueSum {
                month: month.clone(),
                currency: currency.clone(),
                group: group(attributed, key.clone()),
                usage,
                overage,
            });
        }
        let cost_sql = format!(
            "SELECT period, COALESCE({cost_key}, ''), CAST(SUM(credits) AS BIGINT), \
             CAST(SUM(COALESCE(vendor_cost, 0)) AS BIGINT), \
             CAST(SUM(CASE WHEN vendor_cost IS NULL THEN credits ELSE 0 END) AS BIGINT) \
             FROM consumptions WHERE period >= '{from}' AND period <= '{to}' \
             GROUP BY period, COALESCE({cost_key}, '')"
        );
        let rows = self
            .connection()
            .query_all_raw(Statement::from_string(self.backend(), cost_sql))
            .await?;
        let mut costs = Vec::with_capacity(rows.len());
        for row in rows {
            let month: String = row.try_get_by_index(0)?;
            let key: String = row.try_get_by_index(1)?;
            let credits: i64 = row.try_get_by_index(2)?;
            let vendor_cost: i64 = row.try_get_by_index(3)?;
            let uncosted: i64 = row.try_get_by_index(4)?;
            costs.push(CostSum {
                month,
                group: group("a", key),
                credits: Credits::from_micros(credits),
                vendor_cost: Money::from_micros(vendor_cost),
                uncosted_credits: Credits::from_micros(uncosted),
            });
        }
        Ok((revenue, costs))
    }

    /// The deferred revenue waterfall: revenue recognized per period (columns, `from` to `to`)
    /// of the lots booked in each period up to `to` (rows).
    pub async fn waterfall(&self, from: Period, to: Period) -> Result<Vec<WaterfallRow>> {
        let accounts = [
            Account::ContractLiability,
            Account::DeferredPlatform,
            Account::UsageRevenue,
            Account::SubscriptionRevenue,
            Account::BreakageRevenue,
        ]
        .map(|a| format!("'{}'", a.as_str()))
        .join(", ");
        let sums = self
            .sums(
                &format!(
                    "SELECT l.booked_period, j.period, j.currency, j.kind, j.account, \
                 CAST(SUM(j.debit) AS BIGINT), CAST(SUM(j.credit) AS BIGINT) \
                 FROM journal_lines j JOIN revenue_lots l ON l.grant_id = j.grant_id \
                 WHERE j.account IN ({accounts}) AND j.period <= '{to}' \
                 GROUP BY l.booked_period, j.period, j.currency, j.kind, j.account"
                ),
                5,
            )
            .await?
            .into_iter()
            .map(|(keys, s)| match &keys[..] {
                [booked, period, currency, kind, account] => Ok((
                    parse_period(booked)?,
                    parse_period(period)?,
                    currency.clone(),
                    s.of(kind, account)?,
                )),
                _ => Err(Error::Internal("waterfall row shape".into())),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(reports::waterfall(sums, from, to))
    }

    /// A customer's paid grants (those with a revenue schedule), newest first, at most `limit`.
    pub async fn lots_of(&self, customer: &CustomerId, limit: u64) -> Result<Vec<Lot>> {
        let customer = customer.as_str();
        let lots = revenue_lots::Entity::find()
            .filter(revenue_lots::Column::CustomerId.eq(customer))
            .order_by_desc(revenue_lots::Column::CreatedAt)
            .order_by_desc(revenue_lots::Column::GrantId)
            .limit(limit)
            .all(self.connection())
            .await?;
        lots.into_iter()
            .map(|l| {
                Ok(Lot {
                    price: Money::from_micros(l.price).shown(&l.currency),
                    credits: Credits::from_micros(l.credits),
                    grant: l.grant_id,
                    catalog_item: l.catalog_item,
                    currency: l.currency,
                    booked_period: l.booked_period,
                    created_at: timestamp(l.created_at)?,
                })
            })
            .collect()
    }

    /// One grant's schedule; none when the grant has no lot (unknown, or not paid).
    pub async fn schedule(&self, grant_id: &str) -> Result<Option<Schedule>> {
        let Some(row) = revenue_lots::Entity::find_by_id(grant_id.to_owned())
            .by_key(self.connection())
            .await?
        else {
            return Ok(None);
        };
        let sums = journal_lines::Entity::find()
            .select_only()
            .column(journal_lines::Column::Period)
            .column(journal_lines::Column::Kind)
            .column(journal_lines::Column::Account)
            .debit_credit_sums()
            .filter(journal_lines::Column::GrantId.eq(grant_id))
            .group_by(journal_lines::Column::Period)
            .group_by(journal_lines::Column::Kind)
            .group_by(journal_lines::Column::Account)
            .into_tuple::<(String, String, String, i64, i64)>()
            .all(self.connection())
            .await?
            .into_iter()
            .map(|(period, kind, account, debit, credit)| {
                Ok((
                    parse_period(&period)?,
                    Sums { debit, credit }.of(&kind, &account)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let customer = row.customer_id.clone();
        let described = (
            row.breakage.clone(),
            row.expected_unused
                .map(|e| rust_decimal::Decimal::new(e, 6).normalize().to_string()),
        );
        let lot = super::revenue::lot_from_row(row)?;
        Ok(Some(Schedule::of(&lot, &customer, described, sums)))
    }

    /// Closes `period`: nothing more is booked in it. Closing a closed period changes nothing.
    /// Returns when it was closed.
    pub async fn close_period(
        &self,
        period: Period,
        now: Timestamp,
        actor: &super::operators::OperatorAction,
    ) -> Result<revenue_periods::Model> {
        self.write(&ClosePeriod { period, now, actor }).await
    }
}

/// A month closed: nothing more is booked in it (`Store::close_period`).
struct ClosePeriod<'a> {
    period: Period,
    now: Timestamp,
    actor: &'a super::operators::OperatorAction,
}

impl Write for ClosePeriod<'_> {
    type Written = revenue_periods::Model;

    async fn carry_out(&self, txn: &DatabaseTransaction, _: &Store) -> Result<Self::Written> {
        let ClosePeriod { period, now, actor } = *self;
        if txn.get_database_backend() == DbBackend::Postgres {
            // Waits for postings that read the periods before this commit (they hold the lock
            // shared), and makes later ones read the period as closed.
            txn.execute_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT pg_advisory_xact_lock({})",
                    super::revenue::PERIOD_LOCK
                ),
            ))
            .await?;
        }
        let inserted = revenue_periods::Entity::insert(revenue_periods::ActiveModel {
            period: sea_orm::ActiveValue::Set(period.to_string()),
            closed_at: sea_orm::ActiveValue::Set(now.timestamp_micros()),
            closed_by: sea_orm::ActiveValue::Set(Some(actor.key_id.clone())),
        })
        .on_conflict(
            OnConflict::column(revenue_periods::Column::Period)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
        // Closed now, not before: the closing is recorded with who closed it.
        if inserted == 1 {
            super::operators::record(txn, actor, now).await?;
        }
        let row = revenue_periods::Entity::find_by_id(period.to_string())
            .by_key(txn)
            .await?
            .ok_or_else(|| Error::Internal("closed period not found".into()))?;
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn a_cell_never_starts_a_formula() {
        for (value, cell) in [
            ("acme", "acme"),
            ("=1+1", "'=1+1"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1+1", "'\t=1+1"),
            ("\r=1+1", "\"'\r=1+1\""),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
        ] {
            assert_eq!(csv_field(value), cell, "{value:?}");
        }
    }
}
