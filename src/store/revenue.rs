//! Revenue postings, written in the same transaction as the ledger entries that cause them: each
//! entry on a paid grant moves the grant's lot (`domain::revrec`), and the lot's postings become
//! journal lines, booked in their own month or, when it is closed, in the first open one.

use super::Store;
use super::rows::{micros, time};
use crate::domain::Timestamp;
use crate::domain::catalog::{Breakage, Catalog};
use crate::domain::ledger::{Entry, EntryKind, Grant, GrantKind};
use crate::domain::money::Credits;
use crate::domain::revrec::{Lot, OverageAccrual, Period, Platform, Posting};
use crate::error::{Error, Result};
use entity::{journal_lines, overage_accruals, revenue_lots, revenue_periods};
use rust_decimal::Decimal;
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use std::collections::BTreeMap;

/// Where the postings of one command come from, copied onto its journal lines.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The usage id, or none (a hold's id and a grant's source are taken from the entry).
    pub source: Option<String>,
    /// The Stripe event being applied.
    pub event: Option<String>,
}

/// A posting ready to be written, with what the journal says about it.
struct Pending {
    posting: Posting,
    grant_id: Option<String>,
    source: Option<String>,
}

/// Lots changed by one command: those loaded (as loaded) and their current state.
struct Lots {
    loaded: BTreeMap<String, Lot>,
    current: BTreeMap<String, Lot>,
    booked: BTreeMap<String, String>,
    /// `plan:ID` or `pack:ID` of lots created by this command.
    items: BTreeMap<String, String>,
}

/// The breakage method configured for a grant's plan or pack (`remote` when neither is known).
fn breakage_of(catalog: &Catalog, grant: &Grant) -> Breakage {
    let configured = match grant.kind {
        GrantKind::Plan => grant
            .plan_id
            .as_deref()
            .and_then(|id| catalog.plan(id))
            .map(|p| p.breakage.clone()),
        GrantKind::Pack => grant
            .pack_id
            .as_deref()
            .and_then(|id| catalog.pack(id))
            .map(|p| p.breakage.clone()),
        _ => None,
    };
    configured.unwrap_or(Breakage::Remote)
}

/// The catalog entry a grant's breakage estimate comes from.
fn catalog_item(grant: &Grant) -> String {
    match grant.kind {
        GrantKind::Plan => format!("plan:{}", grant.plan_id.as_deref().unwrap_or("")),
        GrantKind::Pack => format!("pack:{}", grant.pack_id.as_deref().unwrap_or("")),
        other => other.as_str().to_owned(),
    }
}

/// Posts what the entries of one command did to paid grants. `grants` are the book's grants after
/// the command (new grants included); `entries` the command's new entries, in order.
pub(crate) async fn post(
    txn: &DatabaseTransaction,
    catalog: &Catalog,
    customer: &str,
    grants: &[Grant],
    entries: &[Entry],
    origin: &Origin,
    now: Timestamp,
) -> Result<()> {
    let by_id: BTreeMap<&str, &Grant> = grants.iter().map(|g| (g.id.as_str(), g)).collect();
    let paid = |id: &Option<String>| {
        id.as_deref()
            .and_then(|id| by_id.get(id))
            .filter(|g| g.price.is_some() && g.currency.is_some())
            .copied()
    };
    let touched: Vec<String> = entries
        .iter()
        .filter(|e| e.kind != EntryKind::Grant)
        .filter_map(|e| paid(&e.grant_id).map(|g| g.id.clone()))
        .collect();
    let posts_anything = entries.iter().any(|e| {
        paid(&e.grant_id).is_some() || (e.kind == EntryKind::Overage && e.money.is_some())
    });
    if !posts_anything {
        return Ok(());
    }
    let mut lots = load_lots(txn, &touched).await?;
    let mut pending: Vec<Pending> = Vec::new();
    let mut overage: Option<OverageAccrual> = None;
    for entry in entries {
        if entry.kind == EntryKind::Overage {
            let Some(money) = entry.money else { continue };
            if overage.is_none() {
                overage = Some(load_overage(txn, customer, &catalog.currency).await?);
            }
            let accrual = overage.as_mut().expect("loaded above");
            if let Some(posting) = accrual.accrue(money, entry.effective_at) {
                pending.push(Pending {
                    posting,
                    grant_id: None,
                    source: entry.hold_id.clone().or(origin.source.clone()),
                });
            }
            continue;
        }
        let Some(grant) = paid(&entry.grant_id) else {
            continue;
        };
        let source = entry
            .hold_id
            .clone()
            .or(origin.source.clone())
            .unwrap_or_else(|| grant.source_id.clone());
        let price = grant.price.expect("paid");
        let currency = grant.currency.clone().expect("paid");
        let at = entry.effective_at;
        if entry.kind != EntryKind::Grant && !lots.current.contains_key(&grant.id) {
            // A grant paid before revenue recognition was installed has no lot: its history is
            // not in the journal, so nothing can be posted for it. Spending must not fail on
            // that; the audit lists such grants.
            tracing::warn!(grant = %grant.id, "paid grant without a revenue lot; nothing posted");
            continue;
        }
        let postings: Vec<Posting> = match entry.kind {
            EntryKind::Grant => {
                let breakage = breakage_of(catalog, grant);
                let (lot, posting) = if grant.source_type == "transfer" {
                    let from = load_lots(txn, std::slice::from_ref(&grant.source_id)).await?;
                    let Some(old) = from.current.get(&grant.source_id) else {
                        // Moved from a grant paid before revenue recognition was installed:
                        // outside the journal like the grant it came from.
                        tracing::warn!(grant = %grant.id, "moved from a grant without a lot");
                        continue;
                    };
                    let money = crate::domain::revrec::share(
                        old.price,
                        grant.credits,
                        old.credits,
                        &currency,
                    );
                    Lot::transferred_in(&grant.id, &currency, money, grant.credits, breakage, at)
                } else if grant.kind == GrantKind::Plan {
                    let share = grant
                        .plan_id
                        .as_deref()
                        .and_then(|id| catalog.plan(id))
                        .map_or(Decimal::ZERO, |p| p.platform_share);
                    let end = grant.expires_at.unwrap_or(at);
                    let start = grant.period_start.unwrap_or(grant.created_at).min(end);
                    Lot::plan(
                        &grant.id,
                        &currency,
                        price,
                        grant.credits,
                        breakage,
                        share,
                        (start, end),
                        at,
                    )
                } else {
                    Lot::pack(&grant.id, &currency, price, grant.credits, breakage, at)
                };
                lots.items.insert(grant.id.clone(), catalog_item(grant));
                lots.current.insert(grant.id.clone(), lot);
                vec![posting]
            }
            EntryKind::Consume | EntryKind::Settle => {
                let lot = lots.get(&grant.id)?;
                lot.consume(-entry.credits, at).into_iter().collect()
            }
            EntryKind::Expire => lots
                .get(&grant.id)?
                .lapse(-entry.credits, at)
                .into_iter()
                .collect(),
            EntryKind::Rollover if entry.credits.is_positive() => lots
                .get(&grant.id)?
                .revive(entry.credits, at)
                .into_iter()
                .collect(),
            EntryKind::Clawback => {
                let money = entry.money.unwrap_or(Credits::ZERO);
                if money.is_positive() {
                    vec![lots.get(&grant.id)?.refund(money, -entry.credits, at)]
                } else {
                    Vec::new()
                }
            }
            EntryKind::Transfer => vec![lots.get(&grant.id)?.transfer_out(-entry.credits, at).0],
            _ => Vec::new(),
        };
        pending.extend(postings.into_iter().map(|posting| Pending {
            posting,
            grant_id: Some(grant.id.clone()),
            source: Some(source.clone()),
        }));
    }
    for lot in lots.current.values() {
        lot.check().map_err(Error::Internal)?;
    }
    save_lots(txn, customer, &lots, now).await?;
    if let Some(accrual) = overage {
        overage_accruals::Entity::insert(overage_accruals::ActiveModel {
            customer_id: Set(customer.to_owned()),
            currency: Set(accrual.currency.clone()),
            exact: Set(micros(accrual.exact)?),
            posted: Set(micros(accrual.posted)?),
        })
        .on_conflict(
            OnConflict::columns([
                overage_accruals::Column::CustomerId,
                overage_accruals::Column::Currency,
            ])
            .update_columns([
                overage_accruals::Column::Exact,
                overage_accruals::Column::Posted,
            ])
            .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    }
    write_postings(txn, customer, pending, origin.event.as_deref(), now).await
}

impl Lots {
    fn get(&mut self, grant_id: &str) -> Result<&mut Lot> {
        self.current
            .get_mut(grant_id)
            .ok_or_else(|| Error::Internal(format!("paid grant {grant_id} has no lot")))
    }
}

async fn load_lots(txn: &DatabaseTransaction, ids: &[String]) -> Result<Lots> {
    let mut lots = Lots {
        loaded: BTreeMap::new(),
        current: BTreeMap::new(),
        booked: BTreeMap::new(),
        items: BTreeMap::new(),
    };
    if ids.is_empty() {
        return Ok(lots);
    }
    let rows = revenue_lots::Entity::find()
        .filter(revenue_lots::Column::GrantId.is_in(ids.iter().cloned()))
        .all(txn)
        .await?;
    for row in rows {
        lots.booked
            .insert(row.grant_id.clone(), row.booked_period.clone());
        let lot = lot_from_row(row)?;
        lots.loaded.insert(lot.grant_id.clone(), lot.clone());
        lots.current.insert(lot.grant_id.clone(), lot);
    }
    Ok(lots)
}

async fn save_lots(
    txn: &DatabaseTransaction,
    customer: &str,
    lots: &Lots,
    now: Timestamp,
) -> Result<()> {
    let closed = closed_periods(txn).await?;
    for (id, lot) in &lots.current {
        if lots.loaded.get(id) == Some(lot) {
            continue;
        }
        let booked = match lots.booked.get(id) {
            Some(period) => period.clone(),
            None => Period::booking(now, &closed).0.to_string(),
        };
        let item = lots.items.get(id).cloned().unwrap_or_default();
        save_lot(txn, customer, lot, &item, &booked, now).await?;
    }
    Ok(())
}

pub(crate) async fn save_lot(
    txn: &DatabaseTransaction,
    customer: &str,
    lot: &Lot,
    catalog_item: &str,
    booked_period: &str,
    now: Timestamp,
) -> Result<()> {
    let row = lot_to_row(customer, lot, catalog_item, booked_period, now)?;
    revenue_lots::Entity::insert(row)
        .on_conflict(
            OnConflict::column(revenue_lots::Column::GrantId)
                .update_columns([
                    revenue_lots::Column::Breakage,
                    revenue_lots::Column::ExpectedUnused,
                    revenue_lots::Column::Consumed,
                    revenue_lots::Column::Lapsed,
                    revenue_lots::Column::Removed,
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
                ])
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

async fn load_overage(
    txn: &DatabaseTransaction,
    customer: &str,
    currency: &str,
) -> Result<OverageAccrual> {
    let currency = if currency.is_empty() { "usd" } else { currency };
    let row = overage_accruals::Entity::find_by_id((customer.to_owned(), currency.to_owned()))
        .one(txn)
        .await?;
    Ok(OverageAccrual {
        currency: currency.to_owned(),
        exact: row
            .as_ref()
            .map_or(Credits::ZERO, |r| Credits::from_micros(r.exact)),
        posted: row
            .as_ref()
            .map_or(Credits::ZERO, |r| Credits::from_micros(r.posted)),
    })
}

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

async fn write_postings(
    txn: &DatabaseTransaction,
    customer: &str,
    pending: Vec<Pending>,
    event: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let closed = closed_periods(txn).await?;
    let mut rows = Vec::new();
    for p in pending {
        // Cala's rule: nothing unbalanced is written.
        p.posting.check().map_err(Error::Internal)?;
        let (period, adjustment) = Period::booking(p.posting.effective_at, &closed);
        let booked_at = if adjustment {
            period.start()
        } else {
            p.posting.effective_at
        };
        let entry_id = format!("je_{}", uuid::Uuid::now_v7().simple());
        for (index, line) in p.posting.lines.iter().enumerate() {
            rows.push(journal_lines::ActiveModel {
                id: NotSet,
                entry_id: Set(entry_id.clone()),
                line: Set(i32::try_from(index + 1).expect("a few lines per entry")),
                kind: Set(p.posting.kind.as_str().to_owned()),
                effective_at: Set(time(p.posting.effective_at)),
                booked_at: Set(time(booked_at)),
                period: Set(period.to_string()),
                adjustment: Set(adjustment),
                account: Set(line.account.as_str().to_owned()),
                debit: Set(micros(line.debit)?),
                credit: Set(micros(line.credit)?),
                currency: Set(p.posting.currency.clone()),
                customer_id: Set(customer.to_owned()),
                grant_id: Set(line.grant_id.clone().or_else(|| {
                    // Cash and transit lines name the lot the entry is about, when there is one.
                    (line.account == crate::domain::revrec::Account::Cash)
                        .then(|| p.grant_id.clone())
                        .flatten()
                })),
                source: Set(p.source.clone()),
                event: Set(event.map(str::to_owned)),
                memo: Set(p.posting.memo.clone()),
                posted_at: Set(time(now)),
            });
        }
    }
    // Bounded batches: SQLite limits the variables of one statement.
    for chunk in rows.chunks(500) {
        journal_lines::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

fn lot_from_row(row: revenue_lots::Model) -> Result<Lot> {
    let c = Credits::from_micros;
    let breakage = match (row.breakage.as_str(), row.expected_unused) {
        ("proportional", Some(e)) => Breakage::Proportional {
            expected_unused: Decimal::new(e, 6),
        },
        _ => Breakage::Remote,
    };
    let platform = match (row.platform_amount, row.platform_first_day.as_deref()) {
        (Some(amount), Some(day)) => Some(Platform {
            amount: c(amount),
            first_day: chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .map_err(|e| Error::Internal(format!("lot platform day {day:?}: {e}")))?,
            days: u32::try_from(row.platform_days.unwrap_or(1)).unwrap_or(1),
            days_done: u32::try_from(row.platform_days_done.unwrap_or(0)).unwrap_or(0),
            recognized: c(row.platform_recognized.unwrap_or(0)),
            refunded: c(row.platform_refunded.unwrap_or(0)),
            contra: c(row.platform_contra.unwrap_or(0)),
        }),
        _ => None,
    };
    Ok(Lot {
        grant_id: row.grant_id,
        currency: row.currency,
        price: c(row.price),
        credits: c(row.credits),
        breakage,
        consumed: c(row.consumed),
        lapsed: c(row.lapsed),
        removed: c(row.removed),
        usage: c(row.usage_recognized),
        breakage_recognized: c(row.breakage_recognized),
        refunded: c(row.refunded),
        contra: c(row.contra),
        transferred: c(row.transferred),
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
    let opt = |f: fn(&Platform) -> Credits| p.map(|p| micros(f(p))).transpose();
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
    /// Time-driven revenue: the platform parts of plan lines recognized for the days that ended
    /// by `now`, and lots whose configured `expected_unused` changed caught up to the new
    /// estimate. Each customer's lots move under the customer's row lock, like any command.
    /// Returns the lots moved.
    pub async fn recognize_due(&self, now: Timestamp, limit: u64) -> Result<usize> {
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
        let mut per_customer: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (customer, grant) in due.into_iter().chain(stale) {
            per_customer.entry(customer).or_default().push(grant);
        }
        let mut moved = 0;
        for (customer, grants) in per_customer {
            let (_permit, txn) = self.begin_write().await?;
            if !super::book::lock_customer(&txn, &customer).await? {
                continue;
            }
            let items: BTreeMap<String, String> = revenue_lots::Entity::find()
                .select_only()
                .column(revenue_lots::Column::GrantId)
                .column(revenue_lots::Column::CatalogItem)
                .filter(revenue_lots::Column::GrantId.is_in(grants.iter().cloned()))
                .into_tuple::<(String, String)>()
                .all(&txn)
                .await?
                .into_iter()
                .collect();
            let mut lots = load_lots(&txn, &grants).await?;
            let mut pending = Vec::new();
            for (id, lot) in lots.current.iter_mut() {
                let mut postings = lot.recognize_platform(now);
                let configured = items
                    .get(id)
                    .and_then(|item| self.configured_breakage(item));
                if let Some(breakage) = configured
                    && breakage != lot.breakage
                    && lot.remaining().is_positive()
                {
                    postings.extend(lot.reestimate(breakage, now));
                }
                lot.check().map_err(Error::Internal)?;
                pending.extend(postings.into_iter().map(|posting| Pending {
                    posting,
                    grant_id: Some(id.clone()),
                    source: Some(id.clone()),
                }));
            }
            moved += grants.len();
            save_lots(&txn, &customer, &lots, now).await?;
            write_postings(&txn, &customer, pending, None, now).await?;
            txn.commit().await?;
        }
        Ok(moved)
    }

    /// The breakage the catalog now sets for `plan:ID` or `pack:ID`; none when it is gone.
    fn configured_breakage(&self, item: &str) -> Option<Breakage> {
        let catalog = self.catalog();
        match item.split_once(':')? {
            ("plan", id) => catalog.plan(id).map(|p| p.breakage.clone()),
            ("pack", id) => catalog.pack(id).map(|p| p.breakage.clone()),
            _ => None,
        }
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
            // Credits left: consumed + lapsed + removed < credits.
            let holds_credits = Expr::col(revenue_lots::Column::Consumed)
                .add(Expr::col(revenue_lots::Column::Lapsed))
                .add(Expr::col(revenue_lots::Column::Removed))
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
