//! Credit cycles of plans outside Stripe (README, Credit cycles): a customer on a plan set by
//! `PUT /v1/customers/{id}/plan`, or on `[customers] default_plan` when it has no other, receives
//! the plan's credits at the start of every period of the plan's `credits_interval`, counted from
//! the day the cycle started. Each period's grant has no price and expires at the period's end;
//! rollover carries unused credits from one period's grants into the next, as for any plan.
//!
//! The cycle is part of the customer's standing and moves only inside a command's decision
//! ([`advance`] after what is due is settled, [`set_plan`] when the plan changes), so the grant of
//! a period is made once, in the same transaction as whatever the customer does first in it.
//! Plans sold through Stripe are granted by their paid invoices instead: a subscription that sets
//! a plan ends the cycle.

use super::Timestamp;
use super::catalog::{Catalog, CreditsInterval, Plan};
use super::customer::CustomerId;
use super::ledger::{Book, Grant, GrantKind, GrantSource};
use super::money::Credits;
use serde::{Deserialize, Serialize};

/// Where a customer's cycle stands: the plan of its current period, and what that period gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cycle {
    /// The plan whose credits the current period gave.
    pub plan: String,
    pub interval: CreditsInterval,
    /// When the cycle started: periods are counted from here.
    pub anchor: Timestamp,
    /// The current period: its number from the anchor, start and end.
    pub period: u32,
    pub period_start: Timestamp,
    pub period_end: Timestamp,
    /// The largest allowance granted in the current period (a change of plan tops up to the
    /// higher allowance, never beyond).
    pub granted: Credits,
}

/// The plan a customer's cycle grants: its own plan set outside Stripe, or the default plan
/// when it has none. `None` when neither is in the catalog.
fn wanted<'c>(catalog: &'c Catalog, plan_id: Option<&str>) -> Option<&'c Plan> {
    plan_id
        .or(catalog.default_plan.as_deref())
        .and_then(|id| catalog.plan(id))
}

/// The cycle's grant of `credits` of `plan` for the period `[start, end)`: a plan grant with no
/// price. Its id names the customer, the plan and the period, so a period's grant of a plan can
/// only ever be made once.
fn period_grant(
    customer: &CustomerId,
    plan: &Plan,
    credits: Credits,
    (start, end): (Timestamp, Timestamp),
    now: Timestamp,
) -> Grant {
    let id = format!("cycle_{customer}_{}_{}", plan.id, start.timestamp());
    Grant::plan(
        id.clone(),
        &plan.id,
        credits,
        None,
        Some(start),
        (GrantSource::Cycle, id),
        now,
    )
    .expiring(Some(end))
    .at_priority(plan.priority)
}

/// Period `k` of a cycle of `plan` from `anchor`, `[start, end)`, with its grant of the plan's
/// whole allowance (unless that period's grant of the plan was made already).
fn open_period(
    book: &mut Book,
    plan: &Plan,
    (anchor, k): (Timestamp, u32),
    (start, end): (Timestamp, Timestamp),
    now: Timestamp,
) -> Cycle {
    let grant = period_grant(&book.customer_id, plan, plan.credits, (start, end), now);
    if plan.credits.is_positive() && !book.grants.iter().any(|g| g.id == grant.id) {
        book.add_grant(grant, now);
    }
    Cycle {
        plan: plan.id.clone(),
        interval: plan.credits_interval.outside_stripe(),
        anchor,
        period: k,
        period_start: start,
        period_end: end,
        granted: plan.credits,
    }
}

/// Starts a cycle of `plan` at `now`: its first period's whole allowance, granted now.
fn start(book: &mut Book, plan: &Plan, now: Timestamp) -> Option<Cycle> {
    let end = plan.credits_interval.outside_stripe().boundary(now, 1)?;
    Some(open_period(book, plan, (now, 0), (now, end), now))
}

/// What is due of the customer's cycle at `now`, after what was due is settled: a customer with
/// no plan of its own and no cycle starts the default plan's; a cycle whose period has ended
/// moves to the period holding `now` (periods nobody was there for are not granted), carries
/// what the ending period's grants may roll over, and grants the plan's allowance. A cycle whose
/// customer no longer has a plan outside Stripe ends.
pub fn advance(
    catalog: &Catalog,
    book: &mut Book,
    plan_id: Option<&str>,
    cycle: &mut Option<Cycle>,
    now: Timestamp,
) {
    match cycle {
        None => {
            if plan_id.is_none()
                && let Some(plan) = wanted(catalog, None)
            {
                *cycle = start(book, plan, now);
            }
        }
        Some(current) if current.period_end <= now => {
            *cycle = next(catalog, book, plan_id, current, now);
        }
        Some(_) => {}
    }
}

/// Credit periods of a plan paid ahead carry over as consecutive grants do: when one starts,
/// the unused credits of the plan's grants that ended at its start (and of those carried into
/// them before) roll into its period, up to the plan's `rollover_max`, once per boundary.
pub fn carry_into_started(catalog: &Catalog, book: &mut Book, started: &[String], now: Timestamp) {
    let mut boundaries = Vec::new();
    for id in started {
        let Some(grant) = book.grants.iter().find(|g| &g.id == id) else {
            continue;
        };
        if let (Some(plan), Some(start), Some(end)) =
            (grant.plan_id.clone(), grant.starts_at, grant.expires_at)
            && !boundaries.iter().any(|(p, s, _)| *p == plan && *s == start)
        {
            boundaries.push((plan, start, end));
        }
    }
    for (plan_id, start, end) in boundaries {
        let Some(plan) = catalog.plan(&plan_id) else {
            continue;
        };
        if !plan.rollover_max.is_positive() {
            continue;
        }
        let ending: Vec<(String, Credits)> = book
            .grants
            .iter()
            .filter(|g| g.source_type == GrantSource::Stripe && g.kind == GrantKind::Plan)
            .filter(|g| g.plan_id.as_deref() == Some(plan_id.as_str()))
            .filter(|g| g.expires_at == Some(start))
            .map(|g| (g.id.clone(), Credits::ZERO))
            .collect();
        book.roll_over(&ending, plan.rollover_max, end, now);
    }
}

/// The period after `current` that holds `now`, granted.
fn next(
    catalog: &Catalog,
    book: &mut Book,
    plan_id: Option<&str>,
    current: &Cycle,
    now: Timestamp,
) -> Option<Cycle> {
    let plan = wanted(catalog, plan_id)?;
    let interval = plan.credits_interval.outside_stripe();
    // The same interval keeps counting from the anchor; another starts at the ending period's end.
    let (anchor, mut k) = if interval == current.interval {
        (current.anchor, current.period + 1)
    } else {
        (current.period_end, 0)
    };
    let mut start = interval.boundary(anchor, k)?;
    let mut end = interval.boundary(anchor, k + 1)?;
    while end <= now {
        k = k.checked_add(1)?;
        start = end;
        end = interval.boundary(anchor, k + 1)?;
    }
    // Unused credits of the periods' grants that ended where this one starts carry over.
    if start == current.period_end {
        let ending: Vec<(String, Credits)> = book
            .grants
            .iter()
            .filter(|g| g.source_type == GrantSource::Cycle && g.expires_at == Some(start))
            .map(|g| (g.id.clone(), Credits::ZERO))
            .collect();
        book.roll_over(&ending, plan.rollover_max, end, now);
    }
    Some(open_period(book, plan, (anchor, k), (start, end), now))
}

/// The cycle once the customer's plan outside Stripe is `plan_id` (none: the default plan, if
/// any). The same plan changes nothing. A plan of the same interval takes over the current
/// period and tops it up to the higher allowance (a downgrade gives nothing now, and what the
/// period's grants gave stays live until they expire); the next period grants the new plan.
/// A plan of another interval starts its own cycle now, with its whole allowance. No plan at
/// all leaves the current period as it is and grants nothing after it.
pub fn set_plan(
    catalog: &Catalog,
    book: &mut Book,
    plan_id: Option<&str>,
    cycle: &mut Option<Cycle>,
    now: Timestamp,
) {
    let Some(plan) = wanted(catalog, plan_id) else {
        return;
    };
    let Some(current) = cycle.as_mut().filter(|c| c.period_end > now) else {
        // No cycle, or one whose period ended: the new plan's starts now.
        *cycle = start(book, plan, now);
        return;
    };
    if current.plan == plan.id {
        return;
    }
    if plan.credits_interval.outside_stripe() != current.interval {
        *cycle = start(book, plan, now);
        return;
    }
    let more = plan.credits - current.granted;
    if more.is_positive() {
        let period = (current.period_start, current.period_end);
        book.add_grant(
            period_grant(&book.customer_id, plan, more, period, now),
            now,
        );
        current.granted = plan.credits;
    }
    current.plan = plan.id.clone();
}

/// Does the cycle go on once a Stripe subscription sets the customer's plan to `plan`? A plan
/// sold through Stripe is granted by its paid invoices: the cycle ends. A subscription naming
/// no plan of the catalog (or none left) leaves it.
pub fn survives_subscription(plan: Option<&str>) -> bool {
    plan.is_none()
}

/// When the customer's next cycle grant is due: the end of the current period, while a plan
/// outside Stripe (its own or the default) will grant it.
pub fn next_grant_at(
    catalog: &Catalog,
    plan_id: Option<&str>,
    cycle: Option<&Cycle>,
) -> Option<Timestamp> {
    let cycle = cycle?;
    wanted(catalog, plan_id).map(|_| cycle.period_end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn at(month: u32, day: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2027, month, day, 12, 0, 0).unwrap()
    }

    fn credits(n: i64) -> Credits {
        Credits::from_micros(n * 1_000_000)
    }

    fn plan(id: &str, n: i64, interval: CreditsInterval) -> Plan {
        Plan {
            credits: credits(n),
            credits_interval: interval,
            ..Plan::bare(id)
        }
    }

    fn catalog(default: Option<&str>) -> Catalog {
        let plans = [
            plan("free", 50, CreditsInterval::Month),
            plan("pro", 2000, CreditsInterval::Month),
            plan("daily", 10, CreditsInterval::Day),
            Plan {
                rollover_max: credits(30),
                ..plan("saver", 100, CreditsInterval::Month)
            },
        ];
        Catalog {
            plans: plans.into_iter().map(|p| (p.id.clone(), p)).collect(),
            default_plan: default.map(str::to_owned),
            ..Default::default()
        }
    }

    fn book() -> Book {
        Book::new(CustomerId::known("acme"))
    }

    /// The customer's grants as (plan, credits left, expiry).
    fn grants(book: &Book) -> Vec<(String, Credits, Option<Timestamp>)> {
        book.grants
            .iter()
            .filter(|g| !g.expired)
            .map(|g| (g.plan_id.clone().unwrap(), g.remaining, g.expires_at))
            .collect()
    }

    /// One command's decision at `now`: what is due settled, then the cycle advanced.
    fn due(
        catalog: &Catalog,
        book: &mut Book,
        plan: Option<&str>,
        cycle: &mut Option<Cycle>,
        now: Timestamp,
    ) {
        book.settle_due(now);
        advance(catalog, book, plan, cycle, now);
    }

    #[test]
    fn a_customer_without_a_plan_starts_on_the_default_plan_at_first_sight() {
        let catalog = catalog(Some("free"));
        let (mut book, mut cycle) = (book(), None);
        due(&catalog, &mut book, None, &mut cycle, at(1, 31));
        assert_eq!(
            grants(&book),
            [("free".into(), credits(50), Some(at(2, 28)))]
        );
        let cycle = cycle.unwrap();
        assert_eq!(
            (cycle.period_start, cycle.period_end),
            (at(1, 31), at(2, 28))
        );
        assert_eq!(
            book.grants[0].id,
            format!("cycle_acme_free_{}", at(1, 31).timestamp())
        );
        assert_eq!(book.grants[0].price, None);
    }

    #[test]
    fn no_default_plan_and_no_plan_grants_nothing_and_a_stripe_plan_is_left_to_its_invoices() {
        let (mut book, mut cycle) = (book(), None);
        due(&catalog(None), &mut book, None, &mut cycle, at(1, 1));
        assert_eq!((book.grants.len(), cycle.is_none()), (0, true));
        // A plan Stripe set has no cycle: advancing starts none.
        due(
            &catalog(Some("free")),
            &mut book,
            Some("pro"),
            &mut cycle,
            at(1, 1),
        );
        assert_eq!((book.grants.len(), cycle.is_none()), (0, true));
    }

    #[test]
    fn each_period_grants_once_from_the_anchor_and_unused_credits_expire_without_rollover() {
        let catalog = catalog(Some("free"));
        let (mut book, mut cycle) = (book(), None);
        due(&catalog, &mut book, None, &mut cycle, at(1, 31));
        book.grants[0].remaining -= credits(20);
        // Still the first period: nothing more.
        due(&catalog, &mut book, None, &mut cycle, at(2, 27));
        assert_eq!(book.grants.len(), 1);
        // March 31st, not March 28th: months count from the anchor, not from the last period.
        due(&catalog, &mut book, None, &mut cycle, at(3, 1));
        assert_eq!(
            grants(&book),
            [("free".into(), credits(50), Some(at(3, 31)))]
        );
        let c = cycle.clone().unwrap();
        assert_eq!(
            (c.period, c.period_start, c.period_end),
            (1, at(2, 28), at(3, 31))
        );
        // Asked again in the same period (a replay, another command): the same single grant.
        due(&catalog, &mut book, None, &mut cycle, at(3, 2));
        assert_eq!(book.grants.iter().filter(|g| !g.expired).count(), 1);
    }

    #[test]
    fn periods_nobody_was_there_for_are_not_granted() {
        let catalog = catalog(None);
        let (mut book, mut cycle) = (book(), None);
        set_plan(&catalog, &mut book, Some("daily"), &mut cycle, at(1, 1));
        due(&catalog, &mut book, Some("daily"), &mut cycle, at(1, 10));
        assert_eq!(
            grants(&book),
            [("daily".into(), credits(10), Some(at(1, 11)))]
        );
        assert_eq!(cycle.unwrap().period, 9);
    }

    #[test]
    fn rollover_carries_up_to_the_plans_maximum_into_the_next_period() {
        let catalog = catalog(None);
        let (mut book, mut cycle) = (book(), None);
        set_plan(&catalog, &mut book, Some("saver"), &mut cycle, at(1, 1));
        book.grants[0].remaining -= credits(40); // 60 unused: 30 carried
        due(&catalog, &mut book, Some("saver"), &mut cycle, at(2, 1));
        let live = grants(&book);
        assert_eq!(live.len(), 2);
        assert_eq!(live[0], ("saver".into(), credits(30), Some(at(3, 1))));
        assert_eq!(live[1], ("saver".into(), credits(100), Some(at(3, 1))));
        book.check_invariants().unwrap();
    }

    #[test]
    fn an_upgrade_tops_up_to_the_higher_allowance_and_a_downgrade_then_upgrade_gives_nothing_twice()
    {
        let catalog = catalog(None);
        let (mut book, mut cycle) = (book(), None);
        set_plan(&catalog, &mut book, Some("free"), &mut cycle, at(1, 1));
        set_plan(&catalog, &mut book, Some("pro"), &mut cycle, at(1, 10));
        let total = |b: &Book| b.grants.iter().map(|g| g.credits).sum::<Credits>();
        assert_eq!(
            total(&book),
            credits(2000),
            "50, then the 1,950 more pro allows"
        );
        set_plan(&catalog, &mut book, Some("free"), &mut cycle, at(1, 11));
        set_plan(&catalog, &mut book, Some("pro"), &mut cycle, at(1, 12));
        set_plan(&catalog, &mut book, Some("pro"), &mut cycle, at(1, 13));
        assert_eq!(
            total(&book),
            credits(2000),
            "never more than the highest allowance"
        );
        // The next period grants the plan in force, whole.
        due(&catalog, &mut book, Some("pro"), &mut cycle, at(2, 1));
        assert_eq!(grants(&book).last().unwrap().1, credits(2000));
        book.check_invariants().unwrap();
    }

    #[test]
    fn removing_the_plan_keeps_what_is_live_and_stops_the_next_periods() {
        let catalog = catalog(None);
        let (mut book, mut cycle) = (book(), None);
        set_plan(&catalog, &mut book, Some("pro"), &mut cycle, at(1, 1));
        set_plan(&catalog, &mut book, None, &mut cycle, at(1, 5));
        assert_eq!(next_grant_at(&catalog, None, cycle.as_ref()), None);
        assert_eq!(grants(&book).len(), 1, "the period's grant stays");
        // Set again within the period: no second allowance.
        set_plan(&catalog, &mut book, Some("pro"), &mut cycle, at(1, 6));
        assert_eq!(book.grants.len(), 1);
        set_plan(&catalog, &mut book, None, &mut cycle, at(1, 7));
        due(&catalog, &mut book, None, &mut cycle, at(2, 2));
        assert_eq!((grants(&book).len(), cycle.is_none()), (0, true));
    }

    #[test]
    fn removing_the_plan_falls_back_to_the_default_from_the_next_period() {
        let catalog = catalog(Some("free"));
        let (mut book, mut cycle) = (book(), None);
        set_plan(&catalog, &mut book, Some("pro"), &mut cycle, at(1, 1));
        set_plan(&catalog, &mut book, None, &mut cycle, at(1, 5));
        assert_eq!(
            book.grants.len(),
            1,
            "free is below pro's allowance: nothing now"
        );
        assert_eq!(
            next_grant_at(&catalog, None, cycle.as_ref()),
            Some(at(2, 1))
        );
        due(&catalog, &mut book, None, &mut cycle, at(2, 1));
        assert_eq!(
            grants(&book),
            [("free".into(), credits(50), Some(at(3, 1)))]
        );
    }

    #[test]
    fn a_plan_of_another_interval_starts_its_own_cycle() {
        let catalog = catalog(None);
        let (mut book, mut cycle) = (book(), None);
        set_plan(&catalog, &mut book, Some("free"), &mut cycle, at(1, 1));
        set_plan(&catalog, &mut book, Some("daily"), &mut cycle, at(1, 15));
        let c = cycle.clone().unwrap();
        assert_eq!((c.anchor, c.period_end), (at(1, 15), at(1, 16)));
        assert_eq!(
            grants(&book).len(),
            2,
            "free's period grant stays until it expires"
        );
        due(&catalog, &mut book, Some("daily"), &mut cycle, at(1, 16));
        assert_eq!(grants(&book).last().unwrap().2, Some(at(1, 17)));
    }

    #[test]
    fn intervals_count_calendar_months_days_and_weeks_from_the_anchor() {
        let anchor = at(1, 31);
        assert_eq!(CreditsInterval::Month.boundary(anchor, 1), Some(at(2, 28)));
        assert_eq!(CreditsInterval::Month.boundary(anchor, 2), Some(at(3, 31)));
        assert_eq!(
            CreditsInterval::BillingPeriod.boundary(anchor, 2),
            Some(at(3, 31))
        );
        assert_eq!(CreditsInterval::Week.boundary(anchor, 1), Some(at(2, 7)));
        assert_eq!(CreditsInterval::Day.boundary(anchor, 1), Some(at(2, 1)));
        assert_eq!(
            CreditsInterval::Year.boundary(anchor, 1),
            Some(Utc.with_ymd_and_hms(2028, 1, 31, 12, 0, 0).unwrap())
        );
        for i in CreditsInterval::ALL {
            assert_eq!(CreditsInterval::parse(i.as_str()), Some(i));
        }
        assert_eq!(CreditsInterval::parse("monthly"), None);
    }
}
