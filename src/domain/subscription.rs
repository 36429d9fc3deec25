//! A Stripe subscription's state as creditbook keeps it, and how each event moves it (README,
//! Stripe: `customer.subscription.*`, `invoice.paid`, `invoice.payment_failed`). Pure: times are
//! the events' `created`, in Unix seconds, passed in.

stripe_names! {
    /// A subscription's status, as Stripe names it. A status Stripe adds later is kept as it
    /// came and keeps no plan.
    pub enum SubscriptionStatus {
        Incomplete = "incomplete",
        IncompleteExpired = "incomplete_expired",
        Trialing = "trialing",
        Active = "active",
        PastDue = "past_due",
        Canceled = "canceled",
        Unpaid = "unpaid",
        Paused = "paused",
    }
}

impl SubscriptionStatus {
    /// Statuses under which the plan's features and overage rule apply (a past-due one only
    /// within its grace, which the gate judges).
    pub fn grants_plan(&self) -> bool {
        matches!(self, Self::Active | Self::Trialing | Self::PastDue)
    }

    /// A status no later event can undo.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Canceled | Self::IncompleteExpired)
    }
}

/// What creditbook knows of one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub status: SubscriptionStatus,
    /// The plan selling one of its items' prices, if any does.
    pub plan_id: Option<String>,
    pub quantity: i64,
    pub current_period_end_unix: Option<i64>,
    pub past_due_since_unix: Option<i64>,
    /// The `created` of the event this state comes from: a later event wins.
    pub as_of_unix: i64,
}

/// What a `customer.subscription.*` event reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub status: SubscriptionStatus,
    /// The plan selling an item's price, with the item's quantity (at least 1).
    pub plan: Option<(String, i64)>,
    pub current_period_end_unix: Option<i64>,
    pub at_unix: i64,
}

/// The state after a subscription event, or `None` when the event is stale: a newer state is
/// known, or the known one is final. A final status wins over a non-final one reported at the
/// same second. Past due counts from when it was first reported, however many events repeat it.
pub fn observe(known: Option<&SubscriptionState>, reported: Reported) -> Option<SubscriptionState> {
    if let Some(known) = known {
        let newer = reported.at_unix > known.as_of_unix || reported.status.is_final();
        if known.status.is_final() || !newer {
            return None;
        }
    }
    let past_due_since_unix = (reported.status == SubscriptionStatus::PastDue).then(|| {
        known
            .filter(|k| k.status == SubscriptionStatus::PastDue)
            .and_then(|k| k.past_due_since_unix)
            .unwrap_or(reported.at_unix)
    });
    let (plan_id, quantity) = match reported.plan {
        Some((plan, quantity)) => (Some(plan), quantity.max(1)),
        None => (None, 1),
    };
    Some(SubscriptionState {
        status: reported.status,
        plan_id,
        quantity,
        current_period_end_unix: reported.current_period_end_unix,
        past_due_since_unix,
        as_of_unix: reported.at_unix,
    })
}

/// The plan line of a paid invoice: what it says of the subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLine {
    pub plan_id: String,
    pub quantity: i64,
    pub period_end_unix: i64,
}

/// A paid invoice of the subscription: without a subscription event yet, the subscription is
/// active with the line's plan; a past-due one is current again, unless a newer state is known.
/// `None`: nothing changes.
pub fn invoice_paid(
    known: Option<&SubscriptionState>,
    line: PlanLine,
    at_unix: i64,
) -> Option<SubscriptionState> {
    match known {
        None => Some(SubscriptionState {
            status: SubscriptionStatus::Active,
            plan_id: Some(line.plan_id),
            quantity: line.quantity.max(1),
            current_period_end_unix: Some(line.period_end_unix),
            past_due_since_unix: None,
            as_of_unix: at_unix,
        }),
        Some(known)
            if known.status == SubscriptionStatus::PastDue && known.as_of_unix < at_unix =>
        {
            Some(SubscriptionState {
                status: SubscriptionStatus::Active,
                past_due_since_unix: None,
                as_of_unix: at_unix,
                ..known.clone()
            })
        }
        Some(_) => None,
    }
}

/// A failed payment of the subscription's invoice: past due from the event's time (or from
/// when it first became past due), unless the known state is final or newer. `plan_id` is the
/// plan the invoice's lines sell, used when nothing is known of the subscription yet.
pub fn payment_failed(
    known: Option<&SubscriptionState>,
    plan_id: Option<String>,
    at_unix: i64,
) -> Option<SubscriptionState> {
    match known {
        None => Some(SubscriptionState {
            status: SubscriptionStatus::PastDue,
            plan_id,
            quantity: 1,
            current_period_end_unix: None,
            past_due_since_unix: Some(at_unix),
            as_of_unix: at_unix,
        }),
        Some(known) if !known.status.is_final() && known.as_of_unix < at_unix => {
            Some(SubscriptionState {
                status: SubscriptionStatus::PastDue,
                past_due_since_unix: known.past_due_since_unix.or(Some(at_unix)),
                as_of_unix: at_unix,
                ..known.clone()
            })
        }
        Some(_) => None,
    }
}

/// The plan an account holds from its subscriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanStanding {
    pub plan_id: Option<String>,
    pub past_due_since_unix: Option<i64>,
    pub period_end_unix: Option<i64>,
}

/// The account's plan from its Stripe customer's subscriptions (oldest state first): of those
/// that grant a plan, the newest in good standing (active or trialing) that names its plan, else
/// the newest past due that names its plan, else the newest that grants one; none otherwise. A
/// subscription going past due (or one known only from a failed invoice, whose plan is unknown)
/// does not take away the plan another subscription pays for. `None` when there are no
/// subscriptions at all, so a plan set otherwise is left alone.
pub fn standing(subscriptions: &[SubscriptionState]) -> Option<PlanStanding> {
    if subscriptions.is_empty() {
        return None;
    }
    let newest = |wanted: &dyn Fn(&SubscriptionState) -> bool| {
        subscriptions
            .iter()
            .rev()
            .find(|s| s.status.grants_plan() && wanted(s))
    };
    let current = newest(&|s| s.status != SubscriptionStatus::PastDue && s.plan_id.is_some())
        .or_else(|| newest(&|s| s.plan_id.is_some()))
        .or_else(|| newest(&|_| true));
    Some(match current {
        Some(s) => PlanStanding {
            plan_id: s.plan_id.clone(),
            past_due_since_unix: s.past_due_since_unix,
            period_end_unix: s.current_period_end_unix,
        },
        None => PlanStanding::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::SubscriptionStatus::*;
    use super::*;

    fn state(status: SubscriptionStatus, as_of: i64) -> SubscriptionState {
        SubscriptionState {
            status,
            plan_id: Some("pro".into()),
            quantity: 2,
            current_period_end_unix: Some(2_000),
            past_due_since_unix: None,
            as_of_unix: as_of,
        }
    }

    fn reported(status: SubscriptionStatus, at: i64) -> Reported {
        Reported {
            status,
            plan: Some(("team".into(), 3)),
            current_period_end_unix: Some(3_000),
            at_unix: at,
        }
    }

    #[test]
    fn statuses_round_trip_and_keep_what_stripe_adds() {
        for s in [
            "incomplete",
            "incomplete_expired",
            "trialing",
            "active",
            "past_due",
            "canceled",
            "unpaid",
            "paused",
            "suspended_someday",
        ] {
            assert_eq!(SubscriptionStatus::parse(s).as_str(), s);
        }
        assert!(!SubscriptionStatus::parse("suspended_someday").grants_plan());
        assert!(Active.grants_plan() && Trialing.grants_plan() && PastDue.grants_plan());
        assert!(!Unpaid.grants_plan() && !Paused.grants_plan() && !Canceled.grants_plan());
        assert!(Canceled.is_final() && IncompleteExpired.is_final() && !Unpaid.is_final());
    }

    /// Row `customer.subscription.created` / `.updated` / `.deleted`: the newest event wins, an
    /// older one arriving late is ignored, `canceled` is final.
    #[test]
    fn the_newest_subscription_event_wins_and_canceled_is_final() {
        let first = observe(None, reported(Active, 100)).unwrap();
        assert_eq!(first.plan_id.as_deref(), Some("team"));
        assert_eq!(first.quantity, 3);
        assert_eq!(first.current_period_end_unix, Some(3_000));
        // Older, or at the same second and not final: stale.
        assert_eq!(observe(Some(&first), reported(PastDue, 99)), None);
        assert_eq!(observe(Some(&first), reported(PastDue, 100)), None);
        // Canceled at the same second wins, and nothing after it does.
        let canceled = observe(Some(&first), reported(Canceled, 100)).unwrap();
        assert_eq!(canceled.status, Canceled);
        assert_eq!(observe(Some(&canceled), reported(Active, 500)), None);
        // Unmapped items: no plan, one seat.
        let unmapped = observe(
            None,
            Reported {
                plan: None,
                ..reported(Active, 1)
            },
        )
        .unwrap();
        assert_eq!((unmapped.plan_id, unmapped.quantity), (None, 1));
    }

    #[test]
    fn past_due_counts_from_when_it_was_first_reported() {
        let due = observe(Some(&state(Active, 10)), reported(PastDue, 20)).unwrap();
        assert_eq!(due.past_due_since_unix, Some(20));
        let again = observe(Some(&due), reported(PastDue, 30)).unwrap();
        assert_eq!(again.past_due_since_unix, Some(20));
        let paid = observe(Some(&again), reported(Active, 40)).unwrap();
        assert_eq!(paid.past_due_since_unix, None);
    }

    /// Row `invoice.paid`: without a subscription event yet, active with the line's plan; a
    /// past-due subscription becomes active again unless a newer state is known.
    #[test]
    fn a_paid_invoice_records_or_revives_the_subscription() {
        let line = PlanLine {
            plan_id: "pro".into(),
            quantity: 4,
            period_end_unix: 5_000,
        };
        let new = invoice_paid(None, line.clone(), 50).unwrap();
        assert_eq!(new.status, Active);
        assert_eq!(
            (new.quantity, new.current_period_end_unix),
            (4, Some(5_000))
        );
        let mut due = state(PastDue, 40);
        due.past_due_since_unix = Some(40);
        let revived = invoice_paid(Some(&due), line.clone(), 50).unwrap();
        assert_eq!(
            (
                revived.status,
                revived.past_due_since_unix,
                revived.as_of_unix
            ),
            (Active, None, 50)
        );
        // A newer past-due state, or any other known state: unchanged.
        assert_eq!(
            invoice_paid(Some(&state(PastDue, 60)), line.clone(), 50),
            None
        );
        assert_eq!(invoice_paid(Some(&state(Trialing, 10)), line, 50), None);
    }

    /// Row `invoice.payment_failed`: past due from the event's time.
    #[test]
    fn a_failed_payment_makes_the_subscription_past_due() {
        let unknown = payment_failed(None, Some("pro".into()), 70).unwrap();
        assert_eq!(
            (unknown.status, unknown.past_due_since_unix),
            (PastDue, Some(70))
        );
        assert_eq!(unknown.plan_id.as_deref(), Some("pro"));
        let due = payment_failed(Some(&state(Active, 60)), None, 70).unwrap();
        assert_eq!(due.past_due_since_unix, Some(70));
        assert_eq!(due.plan_id.as_deref(), Some("pro"));
        // Already past due: since the first time.
        let mut earlier = state(PastDue, 60);
        earlier.past_due_since_unix = Some(55);
        let still = payment_failed(Some(&earlier), None, 70).unwrap();
        assert_eq!(still.past_due_since_unix, Some(55));
        // Final, or newer: unchanged.
        assert_eq!(payment_failed(Some(&state(Canceled, 10)), None, 70), None);
        assert_eq!(payment_failed(Some(&state(Active, 80)), None, 70), None);
    }

    #[test]
    fn the_newest_subscription_granting_a_plan_is_the_accounts() {
        assert_eq!(standing(&[]), None);
        let old = state(Active, 10);
        let mut newer = state(Trialing, 20);
        newer.plan_id = Some("team".into());
        let canceled = state(Canceled, 30);
        let s = standing(&[old, newer, canceled.clone()]).unwrap();
        assert_eq!(s.plan_id.as_deref(), Some("team"));
        assert_eq!(s.period_end_unix, Some(2_000));
        // Only canceled ones: no plan, written as none.
        assert_eq!(standing(&[canceled]), Some(PlanStanding::default()));
    }

    #[test]
    fn a_subscription_in_good_standing_keeps_its_plan_when_another_goes_past_due() {
        let paid = state(Active, 10);
        let mut failing = state(PastDue, 20);
        failing.plan_id = Some("team".into());
        failing.past_due_since_unix = Some(20);
        let s = standing(&[paid.clone(), failing.clone()]).unwrap();
        assert_eq!(
            (s.plan_id.as_deref(), s.past_due_since_unix),
            (Some("pro"), None)
        );
        // Known only from a failed invoice: past due, plan unknown.
        let mut unknown = state(PastDue, 30);
        unknown.plan_id = None;
        unknown.past_due_since_unix = Some(30);
        let s = standing(&[paid, unknown.clone()]).unwrap();
        assert_eq!(s.plan_id.as_deref(), Some("pro"));
        // With no subscription in good standing, the past-due one naming its plan, then any.
        let s = standing(&[failing, unknown.clone()]).unwrap();
        assert_eq!(
            (s.plan_id.as_deref(), s.past_due_since_unix),
            (Some("team"), Some(20))
        );
        let s = standing(&[unknown]).unwrap();
        assert_eq!((s.plan_id, s.past_due_since_unix), (None, Some(30)));
    }
}
