//! Recomputes every customer's projection from the ledger entries and compares: the check that
//! the append-only ledger and the grants, holds and overdrafts it moved agree (DESIGN.md §2).

use super::Store;
use crate::error::Result;
use entity::{customers, grants, holds, ledger_entries};
use sea_orm::EntityTrait;
use std::collections::HashMap;

#[derive(Default)]
struct Sums {
    credits: i64,
    held: i64,
    granted: i64,
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
            if let Some(h) = &e.hold_id {
                *by_hold.entry(h.clone()).or_default() += e.held;
            }
        }
        for g in grants::Entity::find().all(db).await? {
            let sums = by_grant.remove(&g.id).unwrap_or_default();
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
        Ok(problems)
    }
}
