//! The accountants' reports, read from the journal: the journal itself (in pages, so it streams
//! in bounded memory), the roll-forward of deferred revenue, the waterfall and per-grant
//! schedules. Aggregates are computed by the database; only their small results come back.

use super::Store;
use super::rows::timestamp;
use crate::domain::Timestamp;
use crate::domain::margin::{CostSum, Group, MarginBy, RevenueSum};
use crate::domain::money::{Credits, currency_minor_units};
use crate::domain::revrec::{Account, Period, PostingKind};
use crate::error::{Error, Result};
use entity::{journal_lines, revenue_lots, revenue_periods};
use sea_orm::sea_query::{ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};
use serde::Serialize;
use std::collections::BTreeMap;

/// Journal lines per page read: the bound on what an export holds in memory at once.
pub const JOURNAL_PAGE_LINES: u64 = 2_000;

/// Money as accountants read it: to the currency's minor unit.
pub fn money(amount: Credits, currency: &str) -> String {
    let mut value = amount.value();
    value.rescale(currency_minor_units(currency));
    value.to_string()
}

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
    pub debit: String,
    pub credit: String,
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
            debit: money(Credits::from_micros(row.debit), &row.currency),
            credit: money(Credits::from_micros(row.credit), &row.currency),
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
            self.debit.clone(),
            self.credit.clone(),
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

/// One period and currency of the roll-forward: opening deferred + billings - recognized -
/// breakage - refunds = closing. `closing` is read from the deferred accounts themselves, so the
/// identity is a check, not a definition.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RollforwardRow {
    pub period: String,
    pub currency: String,
    pub opening: String,
    pub billings: String,
    pub recognized: String,
    pub breakage: String,
    pub refunds: String,
    pub closing: String,
    /// Revenue reversed by refunds beyond the deferral (contra-revenue `refunds`).
    pub revenue_reversed: String,
    /// Overage billed in arrears (`unbilled_receivable` / `usage_revenue`), outside deferral.
    pub overage: String,
    /// Of `recognized`, what credits consumed recognized (`usage_revenue`).
    pub usage_recognized: String,
    /// Of `recognized`, the platform part recognized over the period (`subscription_revenue`).
    pub platform_recognized: String,
}

impl RollforwardRow {
    pub const CSV_HEADER: &'static str = "period,currency,opening,billings,recognized,breakage,refunds,closing,revenue_reversed,overage,usage_recognized,platform_recognized";

    pub fn to_csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            self.period,
            self.currency,
            self.opening,
            self.billings,
            self.recognized,
            self.breakage,
            self.refunds,
            self.closing,
            self.revenue_reversed,
            self.overage,
            self.usage_recognized,
            self.platform_recognized
        )
    }
}

/// Revenue of lots booked in one period, by the period it was recognized in.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WaterfallRow {
    pub booked_period: String,
    pub currency: String,
    pub billed: String,
    /// Recognized (usage, platform access and breakage), per period from `from` to `to`.
    pub recognized: BTreeMap<String, String>,
    /// Still deferred at the end of `to`.
    pub deferred: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleRow {
    pub period: String,
    pub billed: String,
    pub usage_recognized: String,
    pub platform_recognized: String,
    pub breakage: String,
    pub refunded: String,
    pub revenue_reversed: String,
    pub transferred: String,
    /// Deferred (credits and platform part) at the end of the period.
    pub deferred: String,
}

/// A paid grant as the finance pages list it.
#[derive(Debug, Clone)]
pub struct Lot {
    pub grant: String,
    pub catalog_item: String,
    pub currency: String,
    /// The part paid for credits.
    pub price: String,
    pub credits: Credits,
    pub booked_period: String,
    pub created_at: Timestamp,
}

/// One grant's schedule: its price and, per period, what was billed, recognized, broken, refunded
/// and left deferred; and the lot's totals, which must equal the journal's.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub grant: String,
    pub customer: String,
    pub currency: String,
    /// What was paid for the grant, net of tax.
    pub paid: String,
    /// The part of it paid for credits.
    pub price: String,
    /// The platform part (plans with `platform_share`).
    pub platform: String,
    pub credits: String,
    pub breakage_method: String,
    pub expected_unused: Option<String>,
    pub periods: Vec<ScheduleRow>,
    pub totals: ScheduleTotals,
}

/// price + platform = deferred + recognized + breakage + refunded + transferred, where
/// recognized is net of refunds beyond the deferral.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleTotals {
    pub deferred: String,
    pub recognized: String,
    pub breakage: String,
    pub refunded: String,
    pub transferred: String,
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

/// One waterfall row while it is summed: billed, still deferred, recognized by period.
type WaterfallSums = (i64, i64, BTreeMap<String, i64>);

/// Sums of debit and credit, by the keys of a GROUP BY.
struct Sums {
    debit: i64,
    credit: i64,
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
            .await?;
        #[derive(Default, Clone, Copy)]
        struct Movement {
            deferred: i64,
            billings: i64,
            recognized: i64,
            usage: i64,
            platform: i64,
            breakage: i64,
            refunds: i64,
            reversed: i64,
            overage: i64,
        }
        let mut by_key: BTreeMap<(String, String), Movement> = BTreeMap::new();
        let mut currencies = std::collections::BTreeSet::new();
        for (keys, s) in sums {
            let [period, currency, kind, account] = &keys[..] else {
                return Err(Error::Internal("roll-forward row shape".into()));
            };
            currencies.insert(currency.clone());
            let account = Account::parse(account)
                .ok_or_else(|| Error::Internal(format!("journal account {account:?}")))?;
            let net = s.credit - s.debit;
            let m = by_key
                .entry((period.clone(), currency.clone()))
                .or_default();
            let is_billing = [PostingKind::PackPayment, PostingKind::PlanPayment]
                .iter()
                .any(|k| k.as_str() == kind);
            if account.is_deferred() {
                m.deferred += net;
                if is_billing {
                    m.billings += net;
                }
            }
            match account {
                Account::UsageRevenue | Account::SubscriptionRevenue
                    if kind == PostingKind::Overage.as_str() =>
                {
                    m.overage += net
                }
                Account::UsageRevenue => {
                    m.recognized += net;
                    m.usage += net;
                }
                Account::SubscriptionRevenue => {
                    m.recognized += net;
                    m.platform += net;
                }
                Account::BreakageRevenue => m.breakage += net,
                Account::Refunds => m.reversed += s.debit - s.credit,
                _ => {}
            }
            if kind == PostingKind::Refund.as_str() || kind == PostingKind::RefundReversal.as_str()
            {
                match account {
                    // Cash paid back, less what reversed revenue: what left the deferral.
                    Account::Cash => m.refunds += s.credit - s.debit,
                    Account::Refunds => m.refunds -= s.debit - s.credit,
                    _ => {}
                }
            }
        }
        let mut rows = Vec::new();
        for currency in currencies {
            let mut balance: i64 = by_key
                .iter()
                .filter(|((p, c), _)| c == &currency && p.as_str() < from.to_string().as_str())
                .map(|(_, m)| m.deferred)
                .sum();
            let mut period = from;
            while period <= to {
                let m = by_key
                    .get(&(period.to_string(), currency.clone()))
                    .copied()
                    .unwrap_or_default();
                let opening = balance;
                balance += m.deferred;
                let f = |v: i64| money(Credits::from_micros(v), &currency);
                rows.push(RollforwardRow {
                    period: period.to_string(),
                    currency: currency.clone(),
                    opening: f(opening),
                    billings: f(m.billings),
                    recognized: f(m.recognized),
                    breakage: f(m.breakage),
                    refunds: f(m.refunds),
                    closing: f(balance),
                    revenue_reversed: f(m.reversed),
                    overage: f(m.overage),
                    usage_recognized: f(m.usage),
                    platform_recognized: f(m.platform),
                });
                period = period.next();
            }
        }
        Ok(rows)
    }

    /// The margin report's sums, `from` to `to` (months, inclusive): the journal's usage revenue
    /// by month, currency and group (the consumption each line posted for, through its
    /// source), and the consumptions' credits and vendor costs by month and group.
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
            let net = Credits::from_micros(sums.credit - sums.debit);
            let (usage, overage) = match kind.as_str() {
                "o" => (Credits::ZERO, net),
                _ => (net, Credits::ZERO),
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
                vendor_cost: Credits::from_micros(vendor_cost).value(),
                uncosted_credits: Credits::from_micros(uncosted),
            });
        }
        Ok((revenue, costs))
    }

    /// The deferred revenue waterfall: revenue recognized per period (columns, `from` to `to`)
    /// of the lots booked in each period up to `to` (rows).
    pub async fn waterfall(&self, from: Period, to: Period) -> Result<Vec<WaterfallRow>> {
        let revenue_accounts = "'usage_revenue', 'subscription_revenue', 'breakage_revenue'";
        let deferred_accounts = "'contract_liability', 'deferred_platform'";
        let recognized = self
            .sums(
                &format!(
                    "SELECT l.booked_period, j.period, j.currency, CAST(SUM(j.debit) AS BIGINT), \
                 CAST(SUM(j.credit) AS BIGINT) FROM journal_lines j \
                 JOIN revenue_lots l ON l.grant_id = j.grant_id \
                 WHERE j.account IN ({revenue_accounts}) AND j.kind <> 'overage' \
                 AND j.period >= '{from}' AND j.period <= '{to}' \
                 GROUP BY l.booked_period, j.period, j.currency"
                ),
                3,
            )
            .await?;
        let deferred = self
            .sums(
                &format!(
                    "SELECT l.booked_period, j.kind, j.currency, CAST(SUM(j.debit) AS BIGINT), \
                 CAST(SUM(j.credit) AS BIGINT) FROM journal_lines j \
                 JOIN revenue_lots l ON l.grant_id = j.grant_id \
                 WHERE j.account IN ({deferred_accounts}) AND j.period <= '{to}' \
                 GROUP BY l.booked_period, j.kind, j.currency"
                ),
                3,
            )
            .await?;
        let mut rows: BTreeMap<(String, String), WaterfallSums> = BTreeMap::new();
        for (keys, s) in deferred {
            let [booked, kind, currency] = &keys[..] else {
                return Err(Error::Internal("waterfall row shape".into()));
            };
            let row = rows.entry((currency.clone(), booked.clone())).or_default();
            row.1 += s.credit - s.debit;
            if kind == PostingKind::PackPayment.as_str()
                || kind == PostingKind::PlanPayment.as_str()
            {
                row.0 += s.credit - s.debit;
            }
        }
        for (keys, s) in recognized {
            let [booked, period, currency] = &keys[..] else {
                return Err(Error::Internal("waterfall row shape".into()));
            };
            let row = rows.entry((currency.clone(), booked.clone())).or_default();
            *row.2.entry(period.clone()).or_default() += s.credit - s.debit;
        }
        Ok(rows
            .into_iter()
            .filter(|(_, (billed, deferred, cells))| {
                *billed != 0 || *deferred != 0 || cells.values().any(|v| *v != 0)
            })
            .map(|((currency, booked), (billed, deferred, cells))| {
                let f = |v: i64| money(Credits::from_micros(v), &currency);
                let mut recognized = BTreeMap::new();
                let mut period = from;
                while period <= to {
                    let key = period.to_string();
                    recognized.insert(key.clone(), f(cells.get(&key).copied().unwrap_or(0)));
                    period = period.next();
                }
                WaterfallRow {
                    booked_period: booked,
                    billed: f(billed),
                    recognized,
                    deferred: f(deferred),
                    currency,
                }
            })
            .collect())
    }

    /// A customer's paid grants (those with a revenue schedule), newest first, at most `limit`.
    pub async fn lots_of(&self, customer: &str, limit: u64) -> Result<Vec<Lot>> {
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
                    price: money(Credits::from_micros(l.price), &l.currency),
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
        let Some(lot) = revenue_lots::Entity::find_by_id(grant_id.to_owned())
            .one(self.connection())
            .await?
        else {
            return Ok(None);
        };
        let rows = journal_lines::Entity::find()
            .select_only()
            .column(journal_lines::Column::Period)
            .column(journal_lines::Column::Kind)
            .column(journal_lines::Column::Account)
            .debit_credit_sums()
            .filter(journal_lines::Column::GrantId.eq(grant_id))
            .group_by(journal_lines::Column::Period)
            .group_by(journal_lines::Column::Kind)
            .group_by(journal_lines::Column::Account)
            .order_by_asc(journal_lines::Column::Period)
            .into_tuple::<(String, String, String, i64, i64)>()
            .all(self.connection())
            .await?;
        let currency = lot.currency.clone();
        let f = |v: i64| money(Credits::from_micros(v), &currency);
        #[derive(Default)]
        struct Row {
            billed: i64,
            usage: i64,
            platform: i64,
            breakage: i64,
            refunded: i64,
            reversed: i64,
            transferred: i64,
            deferred: i64,
        }
        let mut periods: BTreeMap<String, Row> = BTreeMap::new();
        for (period, kind, account, debit, credit) in rows {
            let r = periods.entry(period).or_default();
            let net = credit - debit;
            let account = Account::parse(&account)
                .ok_or_else(|| Error::Internal(format!("journal account {account:?}")))?;
            if account.is_deferred() {
                r.deferred += net;
                if kind == PostingKind::PackPayment.as_str()
                    || kind == PostingKind::PlanPayment.as_str()
                {
                    r.billed += net;
                }
                if kind == PostingKind::Transfer.as_str() {
                    r.transferred -= net;
                }
            }
            match account {
                Account::UsageRevenue => r.usage += net,
                Account::SubscriptionRevenue => r.platform += net,
                Account::BreakageRevenue => r.breakage += net,
                Account::Refunds => r.reversed += debit - credit,
                Account::Cash
                    if kind == PostingKind::Refund.as_str()
                        || kind == PostingKind::RefundReversal.as_str() =>
                {
                    r.refunded += credit - debit
                }
                _ => {}
            }
        }
        let mut running = 0;
        let periods = periods
            .into_iter()
            .map(|(period, r)| {
                running += r.deferred;
                ScheduleRow {
                    period,
                    billed: f(r.billed),
                    usage_recognized: f(r.usage),
                    platform_recognized: f(r.platform),
                    breakage: f(r.breakage),
                    refunded: f(r.refunded),
                    revenue_reversed: f(r.reversed),
                    transferred: f(r.transferred),
                    deferred: f(running),
                }
            })
            .collect();
        let platform_deferred = lot.platform_amount.unwrap_or(0)
            - lot.platform_recognized.unwrap_or(0)
            - lot.platform_refunded.unwrap_or(0);
        let deferred = lot.price
            - lot.usage_recognized
            - lot.breakage_recognized
            - lot.refunded
            - lot.transferred
            + platform_deferred;
        let contra = lot.contra + lot.platform_contra.unwrap_or(0);
        Ok(Some(Schedule {
            grant: lot.grant_id.clone(),
            customer: lot.customer_id.clone(),
            paid: f(lot.price + lot.platform_amount.unwrap_or(0)),
            price: f(lot.price),
            platform: f(lot.platform_amount.unwrap_or(0)),
            credits: Credits::from_micros(lot.credits).to_string(),
            breakage_method: lot.breakage.clone(),
            expected_unused: lot
                .expected_unused
                .map(|e| rust_decimal::Decimal::new(e, 6).normalize().to_string()),
            periods,
            totals: ScheduleTotals {
                deferred: f(deferred),
                recognized: f(lot.usage_recognized + lot.platform_recognized.unwrap_or(0) - contra),
                breakage: f(lot.breakage_recognized),
                refunded: f(lot.refunded + lot.platform_refunded.unwrap_or(0) + contra),
                transferred: f(lot.transferred),
            },
            currency,
        }))
    }

    /// Closes `period`: nothing more is booked in it. Closing a closed period changes nothing.
    /// Returns when it was closed.
    pub async fn close_period(
        &self,
        period: Period,
        now: Timestamp,
        actor: &super::operators::OperatorAction,
    ) -> Result<revenue_periods::Model> {
        let (_permit, txn) = self.begin_write().await?;
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
        .exec_without_returning(&txn)
        .await?;
        // Closed now, not before: the closing is recorded with who closed it.
        if inserted == 1 {
            super::operators::record(&txn, actor, now).await?;
        }
        let row = revenue_periods::Entity::find_by_id(period.to_string())
            .one(&txn)
            .await?
            .ok_or_else(|| Error::Internal("closed period not found".into()))?;
        txn.commit().await?;
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
