//! Revenue postings, written in the same transaction as the ledger entries that cause them: each
//! entry on a paid grant moves the grant's lot (`domain::revrec`), and the lot's postings become
//! journal lines, booked in their own month or, when it is closed, in the first open one.

use super::Store;
use super::rows::{ROWS_PER_STATEMENT, in_lists, micros, statement_chunks, time};
use crate::domain::Timestamp;
use crate::domain::catalog::{Breakage, Catalog};
use crate::domain::journal::{self, Effect, Moved, Revenue};
use crate::domain::money::{Credits, Money};
use crate::domain::revrec::{Lot, OverageAccrual, Period, Platform};
use crate::error::{Error, Result};
use entity::{journal_lines, overage_accruals, revenue_lots, revenue_periods};
use rust_decimal::Decimal;
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use std::collections::{BTreeMap, BTreeSet};

/// Where the postings of one command come from, copied onto its journal lines.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The usage id, or none (a hold's id and a grant's source are taken from the entry).
    pub source: Option<String>,
    /// The Stripe event being applied.
    pub event: Option<String>,
}

/// One command's movements and the Stripe event it applies, if any.
pub(crate) struct Posted<'a> {
    pub moved: Moved<'a>,
    pub event: Option<&'a str>,
}

/// A journal entry to write: a posting and where it came from.
struct JournalEntry {
    customer: String,
    effect: Effect,
    event: Option<String>,
    now: Timestamp,
}

/// Lots as read: their state, the period each was booked in, and whose they are.
#[derive(Default)]
struct ReadLots {
    lots: BTreeMap<String, Lot>,
    booked: BTreeMap<String, String>,
    owner: BTreeMap<String, String>,
}

/// Posts what a batch's commands did to paid grants and billed overage, in command order: the
/// lots and accruals they need are read once for the batch, moved in memory by
/// `domain::journal`, and written back with multi-row statements. A batch that posts nothing
/// reads nothing.
pub(crate) async fn post_all(
    txn: &DatabaseTransaction,
    catalog: &Catalog,
    commands: &[Posted<'_>],
) -> Result<()> {
    let mut lot_ids = BTreeSet::new();
    let mut overage = BTreeSet::new();
    let mut posting = Vec::new();
    for command in commands {
        if let Some(needs) = journal::needs(&command.moved) {
            lot_ids.extend(needs.lots);
            if needs.overage {
                overage.insert(command.moved.customer.to_string());
            }
            posting.push(command);
        }
    }
    if posting.is_empty() {
        return Ok(());
    }
    let read = read_lots(txn, &lot_ids).await?;
    let accruals = read_accruals(txn, &overage, &catalog.currency).await?;
    let mut revenue = Revenue {
        lots: read.lots.clone(),
        opened: BTreeMap::new(),
        accruals: accruals.clone(),
    };
    let mut entries = Vec::new();
    for command in posting {
        let moved = &command.moved;
        let outcome = journal::post(catalog, moved, &mut revenue).map_err(Error::Internal)?;
        for grant in outcome.unposted {
            tracing::warn!(%grant, "paid grant without a revenue lot; nothing posted");
        }
        entries.extend(outcome.effects.into_iter().map(|effect| JournalEntry {
            customer: moved.customer.to_string(),
            effect,
            event: command.event.map(str::to_owned),
            now: moved.now,
        }));
    }
    let closed = closed_periods(txn).await?;
    save_lots(txn, &read, &revenue, &closed).await?;
    let changed: Vec<overage_accruals::ActiveModel> = revenue
        .accruals
        .iter()
        .filter(|(customer, accrual)| accruals.get(*customer) != Some(*accrual))
        .map(|(customer, accrual)| {
            Ok(overage_accruals::ActiveModel {
                customer_id: Set(customer.clone()),
                currency: Set(accrual.currency.clone()),
                exact: Set(micros(accrual.exact)?),
                posted: Set(micros(accrual.posted)?),
                credits: Set(micros(accrual.credits)?),
                // The reports job's; left as it is on update.
                reported: Set(0),
            })
        })
        .collect::<Result<_>>()?;
    for chunk in statement_chunks(&changed, ROWS_PER_STATEMENT) {
        overage_accruals::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([
                    overage_accruals::Column::CustomerId,
                    overage_accruals::Column::Currency,
                ])
                .update_columns([
                    overage_accruals::Column::Exact,
                    overage_accruals::Column::Posted,
                    overage_accruals::Column::Credits,
                ])
                .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    write_journal(txn, entries, &closed).await
}

/// Writes one posting that moves no lot or accrual (money received for billed overage), for
/// `customer`, booked like any other.
pub(crate) async fn post_direct(
    txn: &DatabaseTransaction,
    customer: &str,
    posting: crate::domain::revrec::Posting,
    source: &str,
    event: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    let closed = closed_periods(txn).await?;
    let entry = JournalEntry {
        customer: customer.to_owned(),
        effect: Effect {
            posting,
            grant_id: None,
            source: Some(source.to_owned()),
        },
        event: event.map(str::to_owned),
        now,
    };
    write_journal(txn, vec![entry], &closed).await
}

async fn read_lots(txn: &DatabaseTransaction, ids: &BTreeSet<String>) -> Result<ReadLots> {
    let mut read = ReadLots::default();
    let ids: Vec<&String> = ids.iter().collect();
    for chunk in in_lists(&ids, ROWS_PER_STATEMENT) {
        let rows = revenue_lots::Entity::find()
            .filter(revenue_lots::Column::GrantId.is_in(chunk.iter().map(|id| id.as_str())))
            .all(txn)
            .await?;
        for row in rows {
            read.booked
                .insert(row.grant_id.clone(), row.booked_period.clone());
            read.owner
                .insert(row.grant_id.clone(), row.customer_id.clone());
            let lot = lot_from_row(row)?;
            read.lots.insert(lot.grant_id.clone(), lot);
        }
    }
    Ok(read)
}

/// The overage accruals of `customers` in the catalog's currency; zero where none was written.
async fn read_accruals(
    txn: &DatabaseTransaction,
    customers: &BTreeSet<String>,
    currency: &str,
) -> Result<BTreeMap<String, OverageAccrual>> {
    let currency = if currency.is_empty() { "usd" } else { currency };
    let mut accruals: BTreeMap<String, OverageAccrual> = customers
        .iter()
        .map(|c| (c.clone(), OverageAccrual::new(currency)))
        .collect();
    let ids: Vec<&String> = customers.iter().collect();
    for chunk in in_lists(&ids, ROWS_PER_STATEMENT) {
        let rows = overage_accruals::Entity::find()
            .filter(overage_accruals::Column::Currency.eq(currency))
            .filter(overage_accruals::Column::CustomerId.is_in(chunk.iter().map(|id| id.as_str())))
            .all(txn)
            .await?;
        for row in rows {
            if let Some(accrual) = accruals.get_mut(&row.customer_id) {
                accrual.exact = Money::from_micros(row.exact);
                accrual.posted = Money::from_micros(row.posted);
                accrual.credits = Credits::from_micros(row.credits);
            }
        }
    }
    Ok(accruals)
}

/// Writes the lots `revenue` changed from what was `read`, new ones booked in the period their
/// command's time falls in (or the first open one).
async fn save_lots(
    txn: &DatabaseTransaction,
    read: &ReadLots,
    revenue: &Revenue,
    closed: &[Period],
) -> Result<()> {
    let mut rows = Vec::new();
    for (id, lot) in &revenue.lots {
        if read.lots.get(id) == Some(lot) {
            continue;
        }
        let row = match (read.owner.get(id), revenue.opened.get(id)) {
            (_, Some(opened)) => {
                let booked = Period::booking(opened.at, closed).0.to_string();
                lot_to_row(
                    opened.customer.as_str(),
                    lot,
                    &opened.catalog_item,
                    &booked,
                    opened.at,
                )?
            }
            (Some(owner), None) => {
                // An existing row: only the counters are updated, so the rest is as read.
                let booked = read.booked.get(id).cloned().unwrap_or_default();
                lot_to_row(owner, lot, "", &booked, Timestamp::UNIX_EPOCH)?
            }
            (None, None) => {
                return Err(Error::Internal(format!("lot {id} neither read nor opened")));
            }
        };
        rows.push(row);
    }
    for chunk in statement_chunks(&rows, ROWS_PER_STATEMENT / 2) {
        revenue_lots::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::column(revenue_lots::Column::GrantId)
                    .update_columns(LOT_COUNTERS)
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// What moves on a lot after it is opened.
const LOT_COUNTERS: [revenue_lots::Column; 16] = [
    revenue_lots::Column::Breakage,
    revenue_lots::Column::ExpectedUnused,
    revenue_lots::Column::Consumed,
    revenue_lots::Column::Lapsed,
    revenue_lots::Column::Removed,
    revenue_lots::Column::Forfeited,
    revenue_lots::Column::UsageRecognized,
    revenue_lots::Column::BreakageRecognized,
    revenue_lots::Column::Refunded,
    revenue_lots::Column::Contra,
    revenue_lots::Column::Transferred,
    revenue_lots::Column::PlatformDaysDone,
    revenue_lots::Column::PlatformRecognized,
    revenue_lots::Column::PlatformRefunded,
    revenue_lots::Column::PlatformContra,
    revenue_lots::Column::PlatformNextAt,
];

/// Closed periods, sorted. On PostgreSQL a shared advisory lock is taken first, so a period
/// cannot be closed between this read and the commit of the postings booked by it (closing takes
/// the same lock exclusively). SQLite has one writer at a time: its transactions begin with the
/// write lock, which closing needs too.
pub(crate) async fn closed_periods(txn: &DatabaseTransaction) -> Result<Vec<Period>> {
    if txn.get_database_backend() == DbBackend::Postgres {
        txn.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT pg_advisory_xact_lock_shared({PERIOD_LOCK})"),
        ))
        .await?;
    }
    let rows = revenue_periods::Entity::find()
        .order_by_asc(revenue_periods::Column::Period)
        .all(txn)
        .await?;
    let mut periods = rows
        .iter()
        .map(|r| r.period.parse::<Period>().map_err(Error::Internal))
        .collect::<Result<Vec<_>>>()?;
    periods.sort();
    Ok(periods)
}

/// The advisory lock key that orders period closes after the postings booked before them.
pub(crate) const PERIOD_LOCK: i64 = 0x6372_6564_6974_0001;

async fn write_journal(
    txn: &DatabaseTransaction,
    entries: Vec<JournalEntry>,
    closed: &[Period],
) -> Result<()> {
    let mut rows = Vec::new();
    for e in entries {
        let posting = &e.effect.posting;
        // Cala's rule: nothing unbalanced is written.
        posting.check().map_err(Error::Internal)?;
        let (period, adjustment) = Period::booking(posting.effective_at, closed);
        let booked_at = if adjustment {
            period.start()
        } else {
            posting.effective_at
        };
        let entry_id = format!("je_{}", uuid::Uuid::now_v7().simple());
        for (index, line) in posting.lines.iter().enumerate() {
            rows.push(journal_lines::ActiveModel {
                id: NotSet,
                entry_id: Set(entry_id.clone()),
                line: Set(i32::try_from(index + 1).expect("a few lines per entry")),
                kind: Set(posting.kind.as_str().to_owned()),
                effective_at: Set(time(posting.effective_at)),
                booked_at: Set(time(booked_at)),
                period: Set(period.to_string()),
                adjustment: Set(adjustment),
                account: Set(line.account.as_str().to_owned()),
                debit: Set(micros(line.debit)?),
                credit: Set(micros(line.credit)?),
                currency: Set(posting.currency.clone()),
                customer_id: Set(e.customer.clone()),
                grant_id: Set(line.grant_id.clone().or_else(|| {
                    // Cash and transit lines name the lot the entry is about, when there is one.
                    (line.account == crate::domain::revrec::Account::Cash)
                        .then(|| e.effect.grant_id.clone())
                        .flatten()
                })),
                source: Set(e.effect.source.clone()),
                event: Set(e.event.clone()),
                memo: Set(posting.memo.clone()),
                posted_at: Set(time(e.now)),
            });
        }
    }
    for chunk in statement_chunks(&rows, ROWS_PER_STATEMENT) {
        journal_lines::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

pub(crate) fn lot_from_row(row: revenue_lots::Model) -> Result<Lot> {
    let c = Credits::from_micros;
    let m = Money::from_micros;
    let breakage = match (row.breakage.as_str(), row.expected_unused) {
        ("proportional", Some(e)) => Breakage::Proportional {
            expected_unused: Decimal::new(e, 6),
        },
        _ => Breakage::Remote,
    };
    let platform = match (row.platform_amount, row.platform_first_day.as_deref()) {
        (Some(amount), Some(day)) => Some(Platform {
            amount: m(amount),
            first_day: chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .map_err(|e| Error::Internal(format!("lot platform day {day:?}: {e}")))?,
            days: u32::try_from(row.platform_days.unwrap_or(1)).unwrap_or(1),
            days_done: u32::try_from(row.platform_days_done.unwrap_or(0)).unwrap_or(0),
            recognized: m(row.platform_recognized.unwrap_or(0)),
            refunded: m(row.platform_refunded.unwrap_or(0)),
            contra: m(row.platform_contra.unwrap_or(0)),
        }),
        _ => None,
    };
    Ok(Lot {
        grant_id: row.grant_id,
        currency: row.currency,
        price: m(row.price),
        credits: c(row.credits),
        breakage,
        consumed: c(row.consumed),
        lapsed: c(row.lapsed),
        removed: c(row.removed),
        forfeited: c(row.forfeited),
        usage: m(row.usage_recognized),
        breakage_recognized: m(row.breakage_recognized),
        refunded: m(row.refunded),
        contra: m(row.contra),
        transferred: m(row.transferred),
        platform,
    })
}

fn expected_unused_micros(breakage: &Breakage) -> Result<Option<i64>> {
    match breakage {
        Breakage::Remote => Ok(None),
        Breakage::Proportional { expected_unused } => {
            let scaled = (*expected_unused * Decimal::from(1_000_000)).trunc();
            Ok(Some(
                i64::try_from(scaled).map_err(|e| Error::Internal(e.to_string()))?,
            ))
        }
    }
}

fn lot_to_row(
    customer: &str,
    lot: &Lot,
    catalog_item: &str,
    booked_period: &str,
    now: Timestamp,
) -> Result<revenue_lots::ActiveModel> {
    let p = lot.platform.as_ref();
    let opt = |f: fn(&Platform) -> Money| p.map(|p| micros(f(p))).transpose();
    Ok(revenue_lots::ActiveModel {
        grant_id: Set(lot.grant_id.clone()),
        customer_id: Set(customer.to_owned()),
        catalog_item: Set(catalog_item.to_owned()),
        currency: Set(lot.currency.clone()),
        price: Set(micros(lot.price)?),
        credits: Set(micros(lot.credits)?),
        breakage: Set(match lot.breakage {
            Breakage::Remote => "remote".into(),
            Breakage::Proportional { .. } => "proportional".into(),
        }),
        expected_unused: Set(expected_unused_micros(&lot.breakage)?),
        consumed: Set(micros(lot.consumed)?),
        lapsed: Set(micros(lot.lapsed)?),
        removed: Set(micros(lot.removed)?),
        forfeited: Set(micros(lot.forfeited)?),
        usage_recognized: Set(micros(lot.usage)?),
        breakage_recognized: Set(micros(lot.breakage_recognized)?),
        refunded: Set(micros(lot.refunded)?),
        contra: Set(micros(lot.contra)?),
        transferred: Set(micros(lot.transferred)?),
        platform_amount: Set(opt(|p| p.amount)?),
        platform_first_day: Set(p.map(|p| p.first_day.format("%Y-%m-%d").to_string())),
        platform_days: Set(p.map(|p| i32::try_from(p.days).unwrap_or(i32::MAX))),
        platform_days_done: Set(p.map(|p| i32::try_from(p.days_done).unwrap_or(i32::MAX))),
        platform_recognized: Set(opt(|p| p.recognized)?),
        platform_refunded: Set(opt(|p| p.refunded)?),
        platform_contra: Set(opt(|p| p.contra)?),
        platform_next_at: Set(p.and_then(Platform::next_due).map(time)),
        booked_period: Set(booked_period.to_owned()),
        created_at: Set(time(now)),
    })
}

impl Store {
    /// The lots whose time-driven revenue is due at `now` (the platform part's days ended by
    /// then; a breakage estimate the catalog now configures differently), at most about `limit`
    /// of each, by customer: what the revenue job's `Command::Recognize` names.
    pub async fn due_for_recognition(
        &self,
        now: Timestamp,
        limit: u64,
    ) -> Result<BTreeMap<String, Vec<String>>> {
        let due: Vec<(String, String)> = revenue_lots::Entity::find()
            .select_only()
            .column(revenue_lots::Column::CustomerId)
            .column(revenue_lots::Column::GrantId)
            .filter(revenue_lots::Column::PlatformNextAt.lte(time(now)))
            .order_by_asc(revenue_lots::Column::CustomerId)
            .limit(limit)
            .into_tuple()
            .all(self.connection())
            .await?;
        let stale = self.stale_estimates(limit).await?;
        let mut per_customer: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (customer, grant) in due.into_iter().chain(stale) {
            per_customer.entry(customer).or_default().insert(grant);
        }
        Ok(per_customer
            .into_iter()
            .map(|(customer, grants)| (customer, grants.into_iter().collect()))
            .collect())
    }

    /// Lots still holding credits whose breakage differs from what the catalog now configures.
    async fn stale_estimates(&self, limit: u64) -> Result<Vec<(String, String)>> {
        use sea_orm::sea_query::{Expr, ExprTrait};
        let catalog = self.catalog();
        let items = catalog
            .plans
            .values()
            .map(|p| (format!("plan:{}", p.id), p.breakage.clone()))
            .chain(
                catalog
                    .packs
                    .values()
                    .map(|p| (format!("pack:{}", p.id), p.breakage.clone())),
            );
        let mut stale = Vec::new();
        for (item, breakage) in items {
            let method = match breakage {
                Breakage::Remote => "remote",
                Breakage::Proportional { .. } => "proportional",
            };
            let differs = match expected_unused_micros(&breakage)? {
                Some(e) => sea_orm::Condition::any()
                    .add(revenue_lots::Column::Breakage.ne(method))
                    .add(revenue_lots::Column::ExpectedUnused.ne(e)),
                None => sea_orm::Condition::any().add(revenue_lots::Column::Breakage.ne(method)),
            };
            // Credits left: consumed + lapsed + removed + forfeited < credits.
            let holds_credits = Expr::col(revenue_lots::Column::Consumed)
                .add(Expr::col(revenue_lots::Column::Lapsed))
                .add(Expr::col(revenue_lots::Column::Removed))
                .add(Expr::col(revenue_lots::Column::Forfeited))
                .lt(Expr::col(revenue_lots::Column::Credits));
            let found: Vec<(String, String)> = revenue_lots::Entity::find()
                .select_only()
                .column(revenue_lots::Column::CustomerId)
                .column(revenue_lots::Column::GrantId)
                .filter(revenue_lots::Column::CatalogItem.eq(item))
                .filter(differs)
                .filter(holds_credits)
                .limit(limit)
                .into_tuple()
                .all(self.connection())
                .await?;
            stale.extend(found);
        }
        Ok(stale)
    }
}
