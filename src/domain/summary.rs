//! A customer as everyone is shown it: the API's customer view, the portal and the console all
//! read one [`Summary`], so they cannot disagree on its plan, its credits or its holds.

use super::Timestamp;
use super::catalog::Catalog;
use super::cycle;
use super::gate::{Policy, Standing, Terms};
use super::ledger::{Book, Grant, GrantKind, Hold, HoldStatus};
use super::limits::LimitState;
use super::money::Credits;

/// One customer's standing and credits at a time.
#[derive(Debug, Clone)]
pub struct Summary<'a> {
    /// The plan in force: none once a past-due subscription has outlived its grace.
    pub plan: Option<&'a str>,
    pub past_due_since: Option<Timestamp>,
    /// End of the current subscription period.
    pub renews_at: Option<Timestamp>,
    /// Features the customer may use, in the catalog's order.
    pub features: Vec<&'a str>,
    /// Some credits are frozen by an open dispute.
    pub frozen: bool,
    pub frozen_credits: Credits,
    /// Credits bought ahead for credit periods not started yet: in the balance, not available.
    pub scheduled: Credits,
    pub balance: Credits,
    pub held: Credits,
    pub available: Credits,
    pub overdraft: Credits,
    /// Grants with credits left, in consumption order.
    pub grants: Vec<&'a Grant>,
    /// Open holds.
    pub holds: Vec<&'a Hold>,
    /// Spend limits, and where each stands in its current window.
    pub limits: Vec<LimitState>,
    /// When the plan's next grant is due: the end of the credit cycle's period for a plan outside
    /// Stripe; for a plan sold through Stripe, the start of the next credit period bought ahead,
    /// else the end of the subscription's period (its renewal invoice).
    pub next_grant_at: Option<Timestamp>,
    /// The plan's credits each period (per seat for a per-seat plan).
    pub allowance: Option<Credits>,
    /// What would roll over into the next period were it to start now: the unused credits of the
    /// plan's grants ending then, up to its `rollover_max`.
    pub rolls_over: Credits,
}

impl<'a> Summary<'a> {
    /// The summary of `book` and `standing` (as loaded for `now`, with what was due settled).
    pub fn of(
        catalog: &'a Catalog,
        policy: Policy,
        book: &'a Book,
        standing: &'a Standing,
        now: Timestamp,
    ) -> Summary<'a> {
        let terms = Terms::of(catalog, standing, now, policy);
        let mut grants: Vec<&Grant> = book
            .grants
            .iter()
            .filter(|g| g.remaining.is_positive())
            .collect();
        grants.sort_by(|a, b| Grant::consumption_order(a, b));
        let next_grant_at = match &standing.cycle {
            Some(_) => cycle::next_grant_at(
                catalog,
                standing.plan_id.as_deref(),
                standing.cycle.as_ref(),
            ),
            None => terms.plan.and(
                book.grants
                    .iter()
                    .filter(|g| g.scheduled && !g.expired)
                    .filter_map(|g| g.starts_at)
                    .min()
                    .or(standing.renews_at),
            ),
        };
        let rolls_over = match (terms.plan, next_grant_at) {
            (Some(plan), Some(at)) => book
                .grants
                .iter()
                .filter(|g| g.kind == GrantKind::Plan && !g.expired && g.expires_at == Some(at))
                .map(Grant::free)
                .sum::<Credits>()
                .min(plan.rollover_max),
            _ => Credits::ZERO,
        };
        Summary {
            plan: terms.plan.map(|p| p.id.as_str()),
            past_due_since: standing.past_due_since,
            renews_at: standing.renews_at,
            features: terms.features().map(|f| f.id.as_str()).collect(),
            frozen: standing.frozen || book.frozen().is_positive(),
            frozen_credits: book.frozen(),
            scheduled: book.scheduled(),
            balance: book.balance(),
            held: book.held(),
            available: book.available(),
            overdraft: book.overdraft,
            grants,
            holds: book
                .holds
                .iter()
                .filter(|h| h.status == HoldStatus::Held)
                .collect(),
            limits: standing.limits.states(book, catalog, now),
            next_grant_at,
            allowance: next_grant_at.and(terms.plan).map(|p| p.credits),
            rolls_over,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Plan;
    use crate::domain::customer::CustomerId;
    use crate::domain::ledger::GrantSource;
    use chrono::{TimeZone, Utc};

    fn at(day: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 12, day, 0, 0, 0).unwrap()
    }

    fn catalog() -> Catalog {
        let plan = Plan::bare("pro");
        Catalog {
            plans: [("pro".to_owned(), plan)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_past_due_plan_is_shown_until_its_grace_runs_out_and_then_none() {
        let catalog = catalog();
        let policy = Policy {
            past_due_grace_seconds: 86_400,
        };
        let standing = Standing {
            plan_id: Some("pro".into()),
            past_due_since: Some(at(1)),
            ..Standing::default()
        };
        let book = Book::new(CustomerId::known("c"));
        let within = Summary::of(&catalog, policy, &book, &standing, at(1));
        assert_eq!(within.plan, Some("pro"));
        let after = Summary::of(&catalog, policy, &book, &standing, at(2));
        assert_eq!(after.plan, None);
        assert_eq!(after.past_due_since, Some(at(1)));
    }

    #[test]
    fn the_next_grant_is_the_cycles_period_end_or_the_subscriptions_renewal_with_what_rolls_over() {
        let mut catalog = catalog();
        let pro = catalog.plans.get_mut("pro").unwrap();
        pro.credits = Credits::from_micros(100_000_000);
        pro.rollover_max = Credits::from_micros(30_000_000);
        let mut book = Book::new(CustomerId::known("c"));
        let mut standing = Standing {
            plan_id: Some("pro".into()),
            ..Standing::default()
        };
        crate::domain::cycle::set_plan(
            &catalog,
            &mut book,
            Some("pro"),
            &mut standing.cycle,
            at(1),
        );
        let summary = Summary::of(&catalog, Policy::default(), &book, &standing, at(2));
        let period_end = standing.cycle.as_ref().unwrap().period_end;
        assert_eq!(summary.next_grant_at, Some(period_end));
        assert_eq!(summary.allowance, Some(Credits::from_micros(100_000_000)));
        assert_eq!(
            summary.rolls_over,
            Credits::from_micros(30_000_000),
            "capped"
        );
        // A plan sold through Stripe: its renewal; no plan at all: nothing due.
        let stripe = Standing {
            plan_id: Some("pro".into()),
            renews_at: Some(at(20)),
            ..Standing::default()
        };
        let empty = Book::new(CustomerId::known("s"));
        let summary = Summary::of(&catalog, Policy::default(), &empty, &stripe, at(2));
        assert_eq!(
            (summary.next_grant_at, summary.rolls_over),
            (Some(at(20)), Credits::ZERO)
        );
        let none = Standing::default();
        let summary = Summary::of(&catalog, Policy::default(), &empty, &none, at(2));
        assert_eq!((summary.next_grant_at, summary.allowance), (None, None));
    }

    #[test]
    fn spent_grants_and_resolved_holds_are_left_out() {
        let catalog = catalog();
        let mut book = Book::new(CustomerId::known("c"));
        let source = || (GrantSource::Test, "t".to_owned());
        let one = Credits::from_micros(1_000_000);
        book.add_grant(Grant::promotional("live", one, source(), at(1)), at(1));
        book.add_grant(
            Grant::promotional("gone", one, source(), at(1)).expiring(Some(at(2))),
            at(1),
        );
        book.settle_due(at(3));
        let standing = Standing::default();
        let summary = Summary::of(&catalog, Policy::default(), &book, &standing, at(3));
        let ids: Vec<&str> = summary.grants.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["live"]);
        assert_eq!(summary.balance, one);
        assert!(summary.holds.is_empty());
    }
}
