//! Paid invoices applied together: a run of `invoice.paid` events next to each other in one
//! batch. What they decide on is read once for all of them ([`Run`]); each is decided in order by
//! [`Run::decide`], with the one decision of a paid invoice ([`super::invoice::decide`]); what
//! they write is written by the store with one statement per table and one run of the unit of
//! work for their grants.
//!
//! A run decides each event on what the events before it in the run decided: the links they
//! made, the lines they applied, the subscription states they recorded (and so the standing),
//! the grants they made (the unit of work decides its commands in order). What a run does not
//! track, it leaves to an event applied on its own ([`RunDecision::Alone`]), after the events
//! before it, as every event was before runs: a link that moves what arrived before it; a line
//! other than a plan's credits (overage paid, money a proration gives back); a renewal that
//! carries credits over (of a plan with `rollover_max`), or a period whose next one was paid
//! first; a payment Stripe told of refunds or disputes for; an invoice naming no customer.

use super::Timestamp;
use super::billing::{self, Link, LinkedBy, Outcome};
use super::catalog::Catalog;
use super::customer::CustomerId;
use super::invoice::{self, InvoiceFact, InvoicePaid, Known, LineStep, PlanGrant};
use super::money::Credits;
use super::subscription::{self, PlanStanding, SubscriptionState};
use std::collections::{HashMap, HashSet};

/// An `invoice.paid` event of the mode applied, as a run decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceEventFact {
    pub event_id: String,
    /// The event's `created` (Unix seconds): orders subscription states.
    pub event_created: i64,
    pub stripe_customer: Option<String>,
    /// The account the invoice (or its subscription) names in metadata `creditbook_customer`.
    pub named: Option<(CustomerId, LinkedBy)>,
    pub invoice: InvoiceFact,
}

/// A subscription as recorded: its id, its Stripe customer, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSubscription {
    pub id: String,
    pub stripe_customer: String,
    pub state: SubscriptionState,
}

/// What the books know that a run of paid invoices decides on, read once before the first;
/// each decision notes what it writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    /// Event ids already recorded.
    pub events: HashSet<String>,
    /// Stripe customer → the account it is linked to, and how.
    pub links: HashMap<String, (CustomerId, LinkedBy)>,
    /// Line effects applied before.
    pub applied: HashSet<String>,
    /// Invoice → the payment learnt from `invoice_payment.paid`.
    pub learnt_payments: HashMap<String, String>,
    /// The subscriptions the invoices name, and every subscription of their Stripe customers,
    /// oldest state first.
    pub subscriptions: Vec<RecordedSubscription>,
    /// Payment keys Stripe has told of a refund, a refunded charge or a dispute for.
    pub taken_back: HashSet<String>,
    /// Renewals recorded, of plans that carry credits over: `(account, the instant its period
    /// starts)`.
    pub renewals: HashSet<(CustomerId, Timestamp)>,
}

/// What a run does with one event.
#[derive(Debug, Clone, PartialEq)]
pub enum RunDecision {
    /// The event was recorded before: nothing is written.
    Duplicate,
    Apply(Box<InvoiceApplied>),
    /// Needs what a run does not decide (see the module): applied on its own, after the events
    /// before it.
    Alone,
}

/// What one paid invoice of a run writes.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceApplied {
    pub stripe_customer: String,
    /// A link to record: `(stripe customer, account, how)`.
    pub link: Option<(String, CustomerId, LinkedBy)>,
    /// A second, different account the invoice named: the first explicit link is kept.
    pub ignored_link: Option<CustomerId>,
    /// The invoice as decided; its lines only plan grants that carry nothing over, and lines
    /// worth nothing.
    pub paid: InvoicePaid,
    /// The subscription's new state, to record (its id is `paid.subscription`'s).
    pub subscription: Option<SubscriptionState>,
    /// The account's plan from its Stripe customer's subscriptions, when the invoice pays a
    /// subscription's plan line: `Some(None)` when it has none at all.
    pub standing: Option<Option<PlanStanding>>,
    pub outcome: Outcome,
}

impl InvoiceApplied {
    /// The plan grants it makes, in line order.
    pub fn grants(&self) -> impl Iterator<Item = &PlanGrant> {
        self.paid.lines.iter().filter_map(|line| match &line.step {
            LineStep::Grant(bought) => Some(&**bought),
            _ => None,
        })
    }
}

impl Run {
    /// Decides one paid invoice, and notes what it writes. `grant_id` names each grant it makes.
    pub fn decide(
        &mut self,
        fact: &InvoiceEventFact,
        catalog: &Catalog,
        now: Timestamp,
        grant_id: impl FnMut() -> String,
    ) -> RunDecision {
        if self.events.contains(&fact.event_id) {
            return RunDecision::Duplicate;
        }
        let Some(applied) = self.decide_new(fact, catalog, now, grant_id) else {
            return RunDecision::Alone;
        };
        self.events.insert(fact.event_id.clone());
        if let Some((stripe_customer, account, by)) = &applied.link {
            self.links
                .insert(stripe_customer.clone(), (account.clone(), *by));
        }
        self.applied
            .extend(applied.paid.lines.iter().map(|l| l.effect.clone()));
        RunDecision::Apply(Box::new(applied))
    }

    /// `None` when the event is left alone.
    fn decide_new(
        &mut self,
        fact: &InvoiceEventFact,
        catalog: &Catalog,
        now: Timestamp,
        grant_id: impl FnMut() -> String,
    ) -> Option<InvoiceApplied> {
        let stripe_customer = fact.stripe_customer.as_ref()?;
        let known_link = self.links.get(stripe_customer).cloned();
        let (account, link, ignored_link) =
            match billing::link(stripe_customer, known_link, fact.named.clone()) {
                Link::Move { .. } => return None,
                Link::New(account, by) => (
                    account.clone(),
                    Some((stripe_customer.clone(), account, by)),
                    None,
                ),
                Link::Keep { account, ignored } => (account, None, ignored),
            };
        let invoice = &fact.invoice;
        let known = Known {
            customer: account.clone(),
            learnt_payment: match invoice.named_payment {
                Some(_) => None,
                None => self.learnt_payments.get(&invoice.invoice_id).cloned(),
            },
            applied: invoice
                .line_effects()
                .into_iter()
                .filter(|e| self.applied.contains(e))
                .collect(),
            subscription: invoice
                .subscription
                .as_ref()
                .and_then(|id| self.subscription(id))
                .map(|s| s.state.clone()),
        };
        let paid = invoice::decide(invoice, &known, catalog, now, fact.event_created, grant_id);
        let done = self.lines_done(&paid)?;
        let (subscription, standing) = match &paid.subscription {
            Some(change) => {
                if let Some(state) = &change.state {
                    self.put_subscription(&change.id, stripe_customer, state.clone());
                }
                (
                    change.state.clone(),
                    Some(self.standing_of(stripe_customer)),
                )
            }
            None => (None, None),
        };
        let outcome = invoice::outcome(&paid, &done, invoice.unread_lines);
        Some(InvoiceApplied {
            stripe_customer: stripe_customer.clone(),
            link,
            ignored_link,
            paid,
            subscription,
            standing,
            outcome,
        })
    }

    /// What a decided invoice's lines did, one detail per grant; `None` when a line needs what
    /// a run does not decide.
    fn lines_done(&self, paid: &InvoicePaid) -> Option<Vec<String>> {
        let mut payment_keys = vec![&paid.payment_key];
        let mut done = Vec::new();
        for line in &paid.lines {
            match &line.step {
                LineStep::Nothing => {}
                LineStep::Grant(bought) => {
                    // Credits carried into it, or out of it into a renewal paid before.
                    let end = (paid.customer.clone(), bought.period.1);
                    if bought.renewal || self.renewals.contains(&end) {
                        return None;
                    }
                    payment_keys.extend(&bought.payment_keys);
                    done.push(invoice::grant_detail(bought, Credits::ZERO));
                }
                LineStep::OveragePaid { .. }
                | LineStep::RefundLine { .. }
                | LineStep::CreditBack { .. } => return None,
            }
        }
        if payment_keys.iter().any(|k| self.taken_back.contains(*k)) {
            return None;
        }
        Some(done)
    }

    fn subscription(&self, id: &str) -> Option<&RecordedSubscription> {
        self.subscriptions.iter().find(|s| s.id == id)
    }

    /// Records a subscription's state as the store does: the row keeps its place, and a new one
    /// comes last; then oldest state first.
    fn put_subscription(&mut self, id: &str, stripe_customer: &str, state: SubscriptionState) {
        let recorded = RecordedSubscription {
            id: id.to_owned(),
            stripe_customer: stripe_customer.to_owned(),
            state,
        };
        match self.subscriptions.iter_mut().find(|s| s.id == id) {
            Some(known) => *known = recorded,
            None => self.subscriptions.push(recorded),
        }
        self.subscriptions.sort_by_key(|s| s.state.as_of_unix);
    }

    /// [`subscription::standing`] of a Stripe customer's subscriptions.
    fn standing_of(&self, stripe_customer: &str) -> Option<PlanStanding> {
        let states: Vec<SubscriptionState> = self
            .subscriptions
            .iter()
            .filter(|s| s.stripe_customer == stripe_customer)
            .map(|s| s.state.clone())
            .collect();
        subscription::standing(&states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::billing::OutcomeKind;
    use crate::domain::catalog::Plan;
    use crate::domain::invoice::InvoiceLineFact;
    use crate::domain::subscription::SubscriptionStatus;

    fn credits(text: &str) -> Credits {
        text.parse().unwrap()
    }

    /// `pro` (1,000 credits for `price_pro`, nothing carried over) and `team` (5,000 for
    /// `price_team`, up to 500 carried over).
    fn catalog() -> Catalog {
        let pro = Plan {
            stripe_prices: vec!["price_pro".into()],
            credits: credits("1000"),
            ..Plan::bare("pro")
        };
        let team = Plan {
            stripe_prices: vec!["price_team".into()],
            credits: credits("5000"),
            rollover_max: credits("500"),
            ..Plan::bare("team")
        };
        Catalog {
            currency: "usd".into(),
            plans: [("pro".to_string(), pro), ("team".to_string(), team)].into(),
            ..Default::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(seconds, 0).unwrap()
    }

    const JAN: i64 = 1_767_225_600;
    const FEB: i64 = 1_769_904_000;

    /// Event `evt_{n}`: the paid invoice `in_{n}` of Stripe customer `cus_{n}`'s subscription
    /// `sub_{n}`, one line of `price` for January, paid by `pi_{n}`.
    fn paid(n: u32, price: &str, renewal: bool) -> InvoiceEventFact {
        InvoiceEventFact {
            event_id: format!("evt_{n}"),
            event_created: JAN + 10,
            stripe_customer: Some(format!("cus_{n}")),
            named: None,
            invoice: InvoiceFact {
                invoice_id: format!("in_{n}"),
                subscription: Some(format!("sub_{n}")),
                currency: Some("usd".into()),
                paid_and_tax: Some((2000, 0)),
                named_payment: Some(format!("pi_{n}")),
                read_payments: vec![],
                renewal,
                lines: vec![InvoiceLineFact {
                    id: format!("il_{n}"),
                    price: Some(price.into()),
                    currency: None,
                    period: Some((at(JAN), at(FEB))),
                    quantity: 1,
                    amount_minor: 2000,
                    proration: false,
                    unit_amount_minor: None,
                    credits_line: None,
                }],
                unread_lines: false,
            },
        }
    }

    fn decide(run: &mut Run, fact: &InvoiceEventFact) -> RunDecision {
        let mut n = 0;
        run.decide(fact, &catalog(), at(JAN + 60), || {
            n += 1;
            format!("grant_{}_{n}", fact.event_id)
        })
    }

    fn applied(decision: RunDecision) -> InvoiceApplied {
        match decision {
            RunDecision::Apply(applied) => *applied,
            other => panic!("not applied: {other:?}"),
        }
    }

    #[test]
    fn invoices_of_different_customers_are_decided_together() {
        let mut run = Run::default();
        let first = applied(decide(&mut run, &paid(1, "price_pro", false)));
        let second = applied(decide(&mut run, &paid(2, "price_pro", true)));
        assert_eq!(first.paid.customer, "cus_1");
        assert_eq!(
            first.link,
            Some((
                "cus_1".to_string(),
                CustomerId::known("cus_1"),
                LinkedBy::Default
            ))
        );
        let grants: Vec<&PlanGrant> = first.grants().collect();
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].grant.credits, credits("1000"));
        assert_eq!(first.outcome.outcome, OutcomeKind::Applied);
        assert_eq!(
            first.outcome.detail,
            "invoice_line:il_1: 1000 credits of plan pro (0 rolled over into a later period)"
        );
        let state = first.subscription.as_ref().expect("first seen");
        assert_eq!(state.status, SubscriptionStatus::Active);
        let standing = first.standing.clone().flatten().expect("a plan");
        assert_eq!(standing.plan_id.as_deref(), Some("pro"));
        assert_eq!(standing.period_end_unix, Some(FEB));
        assert_eq!(second.paid.customer, "cus_2");
        assert!(
            second.grants().all(|g| !g.renewal),
            "a renewal of a plan carrying nothing over is a grant like the first"
        );
        assert!(run.applied.contains("invoice_line:il_2"));
    }

    #[test]
    fn an_event_recorded_before_or_earlier_in_the_run_is_a_duplicate() {
        let mut run = Run::default();
        run.events.insert("evt_1".into());
        assert_eq!(
            decide(&mut run, &paid(1, "price_pro", false)),
            RunDecision::Duplicate
        );
        applied(decide(&mut run, &paid(2, "price_pro", false)));
        assert_eq!(
            decide(&mut run, &paid(2, "price_pro", false)),
            RunDecision::Duplicate
        );
    }

    #[test]
    fn a_second_invoice_of_a_customer_sees_what_the_first_decided() {
        let mut run = Run::default();
        let mut first = paid(1, "price_pro", false);
        first.named = Some((CustomerId::known("acme"), LinkedBy::Metadata));
        let first = applied(decide(&mut run, &first));
        assert!(first.link.is_some());
        // The next period of the same subscription, and the same line again by another event.
        let mut next = paid(2, "price_pro", true);
        next.stripe_customer = Some("cus_1".into());
        next.invoice.subscription = Some("sub_1".into());
        next.event_created += 60;
        let (start, end) = next.invoice.lines[0].period.unwrap();
        next.invoice.lines[0].period = Some((end, end + (end - start)));
        let next = applied(decide(&mut run, &next));
        assert_eq!(next.paid.customer, "acme", "the link the first made");
        assert_eq!(next.link, None);
        assert_eq!(
            next.subscription, None,
            "the state the first recorded stands: a paid invoice does not move an active one"
        );
        let standing = next.standing.flatten().expect("a plan");
        assert_eq!(standing.period_end_unix, Some(FEB));
        let mut again = paid(3, "price_pro", false);
        again.stripe_customer = Some("cus_1".into());
        again.invoice.lines[0].id = "il_1".into();
        let again = applied(decide(&mut run, &again));
        assert_eq!(again.grants().count(), 0, "a line applies once");
        assert_eq!(again.outcome.detail, "every line applied before");
    }

    #[test]
    fn a_link_that_moves_earlier_credits_is_left_alone_and_a_kept_one_says_what_it_ignored() {
        let mut run = Run::default();
        run.links.insert(
            "cus_1".into(),
            (CustomerId::known("cus_1"), LinkedBy::Default),
        );
        let mut moving = paid(1, "price_pro", false);
        moving.named = Some((CustomerId::known("acme"), LinkedBy::Metadata));
        assert_eq!(decide(&mut run, &moving), RunDecision::Alone);
        run.links.insert(
            "cus_2".into(),
            (CustomerId::known("globex"), LinkedBy::Metadata),
        );
        let mut second = paid(2, "price_pro", false);
        second.named = Some((CustomerId::known("initech"), LinkedBy::Metadata));
        let kept = applied(decide(&mut run, &second));
        assert_eq!(kept.paid.customer, "globex");
        assert_eq!(kept.link, None);
        assert_eq!(kept.ignored_link, Some(CustomerId::known("initech")));
    }

    #[test]
    fn a_renewal_that_carries_credits_or_a_period_renewed_first_is_left_alone() {
        let mut run = Run::default();
        assert_eq!(
            decide(&mut run, &paid(1, "price_team", true)),
            RunDecision::Alone,
            "team carries up to 500 credits over"
        );
        applied(decide(&mut run, &paid(2, "price_team", false)));
        // A period whose end is a renewal recorded before (paid out of order).
        run.renewals.insert((CustomerId::known("cus_3"), at(FEB)));
        assert_eq!(
            decide(&mut run, &paid(3, "price_pro", false)),
            RunDecision::Alone
        );
        applied(decide(&mut run, &paid(4, "price_pro", true)));
    }

    #[test]
    fn a_payment_with_something_taken_back_or_a_line_giving_money_back_is_left_alone() {
        let mut run = Run::default();
        run.taken_back.insert("in_1".into());
        assert_eq!(
            decide(&mut run, &paid(1, "price_pro", false)),
            RunDecision::Alone
        );
        let mut credit = paid(2, "price_pro", false);
        credit.invoice.lines[0].amount_minor = -500;
        credit.invoice.lines[0].proration = true;
        assert_eq!(decide(&mut run, &credit), RunDecision::Alone);
        let mut no_customer = paid(3, "price_pro", false);
        no_customer.stripe_customer = None;
        assert_eq!(decide(&mut run, &no_customer), RunDecision::Alone);
    }

    #[test]
    fn the_standing_is_decided_on_every_subscription_of_the_stripe_customer() {
        let mut run = Run::default();
        let past_due = SubscriptionState {
            status: SubscriptionStatus::PastDue,
            plan_id: Some("team".into()),
            quantity: 1,
            current_period_end_unix: Some(JAN),
            past_due_since_unix: Some(JAN - 5),
            as_of_unix: JAN - 5,
        };
        run.subscriptions.push(RecordedSubscription {
            id: "sub_old".into(),
            stripe_customer: "cus_1".into(),
            state: past_due,
        });
        let done = applied(decide(&mut run, &paid(1, "price_pro", false)));
        let standing = done.standing.flatten().expect("a plan");
        assert_eq!(
            standing.plan_id.as_deref(),
            Some("pro"),
            "the one in good standing"
        );
        assert_eq!(run.subscriptions.len(), 2);
        assert_eq!(run.subscriptions[1].id, "sub_1", "newest state last");
    }
}
