//! Recomputes every customer's projection from the ledger entries and compares: the check that
//! the append-only ledger and the grants, holds and overdrafts it moved agree (README, The ledger).

use super::Store;
use super::reports::JournalSums;
use crate::domain::ledger::EntryKind;
use crate::error::Result;
use entity::{customers, grants, holds, journal_lines, ledger_entries, revenue_lots};
use sea_orm::{EntityTrait, QuerySelect};
use std::collections::HashMap;

#[derive(Default)]
struct Sums {
    credits: i64,
    held: i64,
    granted: i64,
    /// Money of the clawbacks.
    refunded: i64,
}

impl Store {
    /// Every disagreement found, as sentences; empty when the books are consistent.
    pub async fn audit(&self) -> Result<Vec<String>> {
        let db = self.connection();
        let mut problems = Vec::new();
        let mut by_grant: HashMap<String, Sums> = HashMap::new();
        let mut by_customer: HashMap<String, Sums> = HashMap::new();
        let mut by_hold: HashMap<String, i64> = HashMap::new();
        for e in ledger_entries::Entity::find().all(db).await? {
            let bucket = match &e.grant_id {
                Some(g) => by_grant.entry(g.clone()).or_default(),
                None => by_customer.entry(e.customer_id.clone()).or_default(),
            };
            bucket.credits += e.credits;
            bucket.held += e.held;
            if e.kind == "grant" {
                bucket.granted += e.credits;
            }
            if e.kind == EntryKind::Clawback.as_str() {
                bucket.refunded += e.money.unwrap_or(0);
            }
            if e.kind == EntryKind::ClawbackReversal.as_str() {
                bucket.refunded -= e.money.unwrap_or(0);
            }
            if let Some(h) = &e.hold_id {
                *by_hold.entry(h.clone()).or_default() += e.held;
            }
        }
        let grant_rows = grants::Entity::find().all(db).await?;
        for g in &grant_rows {
            let sums = by_grant.remove(&g.id).unwrap_or_default();
            if sums.refunded != g.refunded {
                problems.push(format!(
                    "grant {}: clawbacks less their reversals carry {} of money, row says {} refunded",
                    g.id, sums.refunded, g.refunded
                ));
            }
            if sums.credits != g.remaining || sums.held != g.held || sums.granted != g.credits {
                problems.push(format!(
                    "grant {}: entries say remaining {} held {} granted {}, row says {} {} {}",
                    g.id, sums.credits, sums.held, sums.granted, g.remaining, g.held, g.credits
                ));
            }
            if g.remaining < 0 || g.held < 0 || g.held > g.remaining {
                problems.push(format!(
                    "grant {}: remaining {} held {}",
                    g.id, g.remaining, g.held
                ));
            }
        }
        for c in customers::Entity::find().all(db).await? {
            let sums = by_customer.remove(&c.id).unwrap_or_default();
            if -sums.credits != c.overdraft || sums.held != c.overdraft_held {
                problems.push(format!(
                    "customer {}: entries say overdraft {} held {}, row says {} {}",
                    c.id, -sums.credits, sums.held, c.overdraft, c.overdraft_held
                ));
            }
        }
        for h in holds::Entity::find().all(db).await? {
            let held = by_hold.remove(&h.id).unwrap_or_default();
            let expected = if h.status == "held" { h.credits } else { 0 };
            if held != expected {
                problems.push(format!(
                    "hold {} ({}): entries hold {held}, expected {expected}",
                    h.id, h.status
                ));
            }
        }
        problems.extend(
            by_grant
                .keys()
                .map(|g| format!("entries name unknown grant {g}")),
        );
        problems.extend(self.audit_revenue(&grant_rows).await?);
        problems.extend(self.audit_kept_books().await?);
        Ok(problems)
    }

    /// The books against the ledger (README, The ledger and Revenue recognition): every journal entry balances per
    /// currency; every paid grant has a lot whose credits match the grant and whose identity
    /// holds; and the journal's lines per lot add up to what the lot says it posted.
    // Long: one check per identity of the revenue books, listed as the README states them.
    async fn audit_revenue(&self, grant_rows: &[grants::Model]) -> Result<Vec<String>> {
        let db = self.connection();
        let mut problems = Vec::new();
        let unbalanced: Vec<(String, String, i64, i64)> = journal_lines::Entity::find()
            .select_only()
            .column(journal_lines::Column::EntryId)
            .column(journal_lines::Column::Currency)
            .debit_credit_sums()
            .group_by(journal_lines::Column::EntryId)
            .group_by(journal_lines::Column::Currency)
            .into_tuple()
            .all(db)
            .await?;
        for (entry, currency, debit, credit) in unbalanced {
            if debit != credit {
                problems.push(format!(
                    "journal entry {entry} ({currency}): debits {debit} != credits {credit}"
                ));
            }
        }
        let per_lot: Vec<(Option<String>, String, i64, i64)> = journal_lines::Entity::find()
            .select_only()
            .column(journal_lines::Column::GrantId)
            .column(journal_lines::Column::Account)
            .debit_credit_sums()
            .group_by(journal_lines::Column::GrantId)
            .group_by(journal_lines::Column::Account)
            .into_tuple()
            .all(db)
            .await?;
        let mut journal: HashMap<(String, String), i64> = HashMap::new();
        for (grant, account, debit, credit) in per_lot {
            if let Some(grant) = grant {
                journal.insert((grant, account), credit - debit);
            }
        }
        let net = |grant: &str, account: &str| {
            journal
                .get(&(grant.to_owned(), account.to_owned()))
                .copied()
                .unwrap_or(0)
        };
        let lots: HashMap<String, revenue_lots::Model> = revenue_lots::Entity::find()
            .all(db)
            .await?
            .into_iter()
            .map(|l| (l.grant_id.clone(), l))
            .collect();
        for g in grant_rows.iter().filter(|g| g.price.is_some()) {
            let Some(lot) = lots.get(&g.id) else {
                problems.push(format!("paid grant {} has no revenue lot", g.id));
                continue;
            };
            let remaining = lot.credits - lot.consumed - lot.lapsed - lot.removed - lot.forfeited;
            if remaining != g.remaining {
                problems.push(format!(
                    "lot {}: {remaining} credits left, the grant has {}",
                    g.id, g.remaining
                ));
            }
            let deferred = lot.price
                - lot.usage_recognized
                - lot.breakage_recognized
                - lot.refunded
                - lot.transferred;
            let platform_deferred = lot.platform_amount.unwrap_or(0)
                - lot.platform_recognized.unwrap_or(0)
                - lot.platform_refunded.unwrap_or(0);
            let checks = [
                ("contract_liability", deferred),
                ("deferred_platform", platform_deferred),
                ("usage_revenue", lot.usage_recognized),
                ("breakage_revenue", lot.breakage_recognized),
                ("subscription_revenue", lot.platform_recognized.unwrap_or(0)),
                ("refunds", -(lot.contra + lot.platform_contra.unwrap_or(0))),
            ];
            for (account, expected) in checks {
                let posted = net(&g.id, account);
                if posted != expected {
                    problems.push(format!(
                        "lot {}: {account} posted {posted}, the lot says {expected}",
                        g.id
                    ));
                }
            }
            if deferred < 0 || platform_deferred < 0 {
                problems.push(format!("lot {}: deferral below zero", g.id));
            }
            if g.remaining == 0 && !g.expired && g.held == 0 && deferred != 0 {
                problems.push(format!("lot {}: used up with {deferred} deferred", g.id));
            }
        }
        Ok(problems)
    }
}
