//! Stripe events applied together: a run of paid invoices (`invoice.paid`) and subscription
//! events (`customer.subscription.*`) next to each other in one batch. What they decide on is read
//! once for all of them ([`Run`]); each is decided in order by [`Run::decide`], a paid invoice
//! with the one decision of a paid invoice ([`super::invoice::decide`]), a subscription event with
//! [`subscription_event`]; what they write is written by the store with one statement per table
//! and one run of the unit of work for their grants.
//!
//! A run decides each event on what the events before it in the run decided: the links they
//! made, the lines they applied, the subscription states they recorded (and so the standing),
//! the grants they made (the unit of work decides its commands in order). What a run does not
//! track, it leaves to an event applied on its own ([`RunDecision::Alone`]), after the events
//! before it, as every event was before runs: a link that moves what arrived before it; a line
//! other than a plan's credits (overage paid, money a proration gives back); a renewal that
//! carries credits over (of a plan with `rollover_max`), or a period whose next one was paid
//! first; a payment Stripe told of refunds or disputes for; an event naming no customer.

use super::Timestamp;
use super::billing::{self, Link, LinkedBy, Outcome, OutcomeKind};
use super::catalog::Catalog;
use super::customer::CustomerId;
use super::invoice::{self, InvoiceFact, InvoicePaid, Known, LineStep, PlanGrant};
use super::money::Credits;
use super::subscription::{self, PlanStanding, Reported, SubscriptionState, SubscriptionStatus};
use std::collections::{HashMap, HashSet};

/// A Stripe event of the mode applied, as a run decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFact {
    pub event_id: String,
    /// The event's `created` (Unix seconds): orders subscription states.
    pub event_created: i64,
    pub stripe_customer: Option<String>,
    /// The account the object (or an invoice's subscription) names in metadata
    /// `creditbook_customer`.
    pub named: Option<(CustomerId, LinkedBy)>,
    pub kind: FactKind,
}

/// What the event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactKind {
    /// `invoice.paid`, `invoice.payment_succeeded`.
    InvoicePaid(InvoiceFact),
    /// `customer.subscription.*`.
    Subscription(SubscriptionFact),
    /// `invoice_payment.paid`.
    InvoicePayment(InvoicePaymentFact),
    /// `customer.created`, `customer.updated`: the account its metadata `creditbook_customer`
    /// names is `EventFact::named`; `invalid_name`, metadata naming no valid account id.
    Customer { invalid_name: bool },
    /// An event recorded and not acted on (of the other mode, or of a type creditbook does not
    /// act on), with what it says.
    Recorded(Outcome),
}

/// What an event of the other mode says: recorded, never applied (a test payment grants no live
/// credits, and the other way).
pub fn other_mode(event_livemode: bool, livemode: bool) -> Outcome {
    let mode = |live: bool| if live { "live-mode" } else { "test-mode" };
    Outcome::new(
        OutcomeKind::OtherMode,
        format!(
            "a {} event on a server that applies {} events ([stripe] livemode = {livemode})",
            mode(event_livemode),
            mode(livemode)
        ),
    )
}

/// What a customer event that links its Stripe customer to `account` says.
pub fn linked_to(account: &CustomerId) -> Outcome {
    Outcome::new(OutcomeKind::Applied, format!("linked to {account}"))
}

/// What a customer event naming no account says (`invalid_name`: its metadata names one that is
/// not a valid account id).
pub fn customer_unnamed(invalid_name: bool) -> Outcome {
    let why = if invalid_name {
        "creditbook_customer metadata is not a valid account id"
    } else {
        "no creditbook_customer metadata"
    };
    Outcome::new(OutcomeKind::Ignored, why)
}

/// What an event of a type creditbook does not act on says.
pub fn unknown_type() -> Outcome {
    Outcome::new(
        OutcomeKind::UnknownType,
        "creditbook does not act on this type",
    )
}

/// What an `invoice_payment.paid` event says: the payment that paid an invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePaymentFact {
    pub paid: bool,
    pub invoice: Option<String>,
    /// Its payment intent, else its charge.
    pub payment_key: Option<String>,
}

/// What settling payments did when Stripe told of nothing taken back of them (`known`: the
/// payment keys with grants).
pub fn nothing_taken_back(known: &[String]) -> Outcome {
    Outcome::new(
        OutcomeKind::Applied,
        format!("payment {known:?}: nothing taken back"),
    )
}

/// What a `customer.subscription.*` event says of the subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionFact {
    pub id: String,
    /// `canceled` when the event says it was deleted.
    pub status: SubscriptionStatus,
    /// Its items' prices (when named), with their quantities (when given).
    pub items: Vec<(Option<String>, Option<i64>)>,
    pub current_period_end_unix: Option<i64>,
}

/// Decides a subscription event for `customer` (`at_unix`: the event's `created`): the state to
/// record, none when the event is stale; and what it did.
pub fn subscription_event(
    fact: &SubscriptionFact,
    known: Option<&SubscriptionState>,
    catalog: &Catalog,
    at_unix: i64,
    customer: &CustomerId,
) -> (Option<SubscriptionState>, Outcome) {
    let mapped = fact.items.iter().find_map(|(price, quantity)| {
        catalog
            .plan_for_price(price.as_deref()?)
            .map(|plan| (plan.id.clone(), quantity.unwrap_or(1)))
    });
    let reported = Reported {
        status: fact.status.clone(),
        plan: mapped.clone(),
        current_period_end_unix: fact.current_period_end_unix,
        at_unix,
    };
    let Some(state) = subscription::observe(known, reported) else {
        let stale = "stale: a newer state of this subscription is recorded";
        return (None, Outcome::new(OutcomeKind::Ignored, stale));
    };
    let status = fact.status.as_str();
    let outcome = if mapped.is_none() && !fact.items.is_empty() {
        Outcome::new(
            OutcomeKind::UnmappedPrice,
            format!("{status}; no plan sells this subscription's prices"),
        )
    } else {
        let plan = state.plan_id.as_deref().unwrap_or("none");
        Outcome::new(
            OutcomeKind::Applied,
            format!("{customer}: {status}, plan {plan}"),
        )
    };
    (Some(state), outcome)
}

/// A subscription as recorded: its id, its Stripe customer, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedSubscription {
    pub id: String,
    pub stripe_customer: String,
    pub state: SubscriptionState,
}

/// What the books know that a run decides on, read once before the first event; each decision
/// notes what it writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Run {
    /// Event ids already recorded.
    pub events: HashSet<String>,
    /// Stripe customer → the account it is linked to, and how.
    pub links: HashMap<String, (CustomerId, LinkedBy)>,
    /// Invoice line effects applied before.
    pub applied: HashSet<String>,
    /// Invoice → the payment learnt from `invoice_payment.paid`.
    pub learnt_payments: HashMap<String, String>,
    /// The subscriptions the events name, and every subscription of their Stripe customers,
    /// oldest state first.
    pub subscriptions: Vec<RecordedSubscription>,
    /// Payment keys Stripe has told of a refund, a refunded charge or a dispute for.
    pub taken_back: HashSet<String>,
    /// Renewals recorded, of plans that carry credits over: `(account, the instant its period
    /// starts)`.
    pub renewals: HashSet<(CustomerId, Timestamp)>,
    /// Payment key → the grants it paid for, with their subscription: those recorded under the
    /// invoices the run's invoice payments name, and those the run maps.
    pub paid_grants: HashMap<String, Vec<(String, Option<String>)>>,
    /// Payment key → what it paid, the tax in it, and its currency: those recorded under the
    /// invoices the run's invoice payments name, and those the run records.
    pub payments: HashMap<String, (i64, i64, String)>,
}

/// What a run does with one event.
#[derive(Debug, Clone, PartialEq)]
pub enum RunDecision {
    /// The event was recorded before: nothing is written.
    Duplicate,
    Apply(Box<Applied>),
    /// Needs what a run does not decide (see the module): applied on its own, after the events
    /// before it.
    Alone,
}

/// What one event of a run writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The Stripe customer it names (none for an invoice payment).
    pub stripe_customer: Option<String>,
    /// The account it concerns (none for an invoice payment).
    pub customer: Option<CustomerId>,
    /// A link to record: `(stripe customer, account, how)`.
    pub link: Option<(String, CustomerId, LinkedBy)>,
    /// A second, different account the event named: the first explicit link is kept.
    pub ignored_link: Option<CustomerId>,
    /// A paid invoice as decided; its lines only plan grants that carry nothing over, and lines
    /// worth nothing.
    pub paid: Option<InvoicePaid>,
    /// A subscription's new state, to record: `(id, state)`.
    pub subscription: Option<(String, SubscriptionState)>,
    /// The account's plan from its Stripe customer's subscriptions, when the event changes what
    /// they say: `Some(None)` when it has none at all.
    pub standing: Option<Option<PlanStanding>>,
    /// An invoice payment: `(invoice, payment key)`, and what becomes known under the payment:
    /// the grants the invoice paid for (grant, subscription), and what it paid.
    pub invoice_payment: Option<(String, String)>,
    pub also_paid: Vec<(String, Option<String>)>,
    pub also_payment: Option<(i64, i64, String)>,
    pub outcome: Outcome,
}

impl Applied {
    /// An event that writes nothing but its record.
    fn nothing(outcome: Outcome) -> Applied {
        Applied {
            stripe_customer: None,
            customer: None,
            link: None,
            ignored_link: None,
            paid: None,
            subscription: None,
            standing: None,
            invoice_payment: None,
            also_paid: Vec::new(),
            also_payment: None,
            outcome,
        }
    }

    /// Its Stripe customer and account, when it names them.
    fn account(&self) -> Option<(String, CustomerId)> {
        Some((self.stripe_customer.clone()?, self.customer.clone()?))
    }

    /// The plan grants it makes, in line order.
    pub fn grants(&self) -> impl Iterator<Item = &PlanGrant> {
        self.paid
            .iter()
            .flat_map(|paid| &paid.lines)
            .filter_map(|line| match &line.step {
                LineStep::Grant(bought) => Some(&**bought),
                _ => None,
            })
    }
}

impl Run {
    /// Decides one event, and notes what it writes. `grant_id` names each grant it makes.
    pub fn decide(
        &mut self,
        fact: &EventFact,
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
        if let Some(paid) = &applied.paid {
            self.applied
                .extend(paid.lines.iter().map(|l| l.effect.clone()));
        }
        RunDecision::Apply(Box::new(applied))
    }

    /// `None` when the event is left alone.
    fn decide_new(
        &mut self,
        fact: &EventFact,
        catalog: &Catalog,
        now: Timestamp,
        grant_id: impl FnMut() -> String,
    ) -> Option<Applied> {
        match &fact.kind {
            FactKind::Recorded(outcome) => Some(Applied::nothing(outcome.clone())),
            FactKind::Customer { invalid_name } => match &fact.named {
                Some(_) => {
                    let mut applied = self.linked(fact)?;
                    let (_, account) = applied.account()?;
                    applied.outcome = linked_to(&account);
                    Some(applied)
                }
                None => Some(Applied::nothing(customer_unnamed(*invalid_name))),
            },
            FactKind::InvoicePayment(payment) => self.invoice_payment(payment),
            FactKind::InvoicePaid(invoice) => {
                let mut applied = self.linked(fact)?;
                self.invoice_paid(&mut applied, invoice, fact, catalog, now, grant_id)?;
                Some(applied)
            }
            FactKind::Subscription(observed) => {
                let mut applied = self.linked(fact)?;
                let (stripe_customer, customer) = applied.account()?;
                let known = self.subscription(&observed.id).map(|s| &s.state);
                let (state, outcome) =
                    subscription_event(observed, known, catalog, fact.event_created, &customer);
                applied.outcome = outcome;
                if let Some(state) = state {
                    self.record(&mut applied, &stripe_customer, &observed.id, state);
                }
                Some(applied)
            }
        }
    }

    /// The account of an event naming a Stripe customer, its link resolved (its outcome is the
    /// caller's to decide); `None` when it names none, or when the link moves earlier credits.
    fn linked(&self, fact: &EventFact) -> Option<Applied> {
        let stripe_customer = fact.stripe_customer.as_ref()?;
        let known_link = self.links.get(stripe_customer).cloned();
        let (customer, link, ignored_link) =
            match billing::link(stripe_customer, known_link, fact.named.clone()) {
                Link::Move { .. } => return None,
                Link::New(account, by) => (
                    account.clone(),
                    Some((stripe_customer.clone(), account, by)),
                    None,
                ),
                Link::Keep { account, ignored } => (account, None, ignored),
            };
        let undecided = Outcome::new(OutcomeKind::Applied, "");
        Some(Applied {
            stripe_customer: Some(stripe_customer.clone()),
            customer: Some(customer),
            link,
            ignored_link,
            ..Applied::nothing(undecided)
        })
    }

    /// `invoice_payment.paid`: what the invoice paid for becomes known under the payment too, so
    /// its refunds (which name only the payment) find their credits. `None` when Stripe told of
    /// something taken back of the payment.
    fn invoice_payment(&mut self, payment: &InvoicePaymentFact) -> Option<Applied> {
        if !payment.paid {
            let not_paid = "the invoice payment is not paid";
            return Some(Applied::nothing(Outcome::new(
                OutcomeKind::Ignored,
                not_paid,
            )));
        }
        let (Some(invoice), Some(key)) = (&payment.invoice, &payment.payment_key) else {
            let unnamed = "the invoice payment names no invoice or no payment";
            return Some(Applied::nothing(Outcome::new(
                OutcomeKind::Ignored,
                unnamed,
            )));
        };
        if self.taken_back.contains(key) {
            return None;
        }
        self.learnt_payments
            .entry(invoice.clone())
            .or_insert_with(|| key.clone());
        let also_paid = self.paid_grants.get(invoice).cloned().unwrap_or_default();
        let under_key = self.paid_grants.entry(key.clone()).or_default();
        for grant in &also_paid {
            if !under_key.contains(grant) {
                under_key.push(grant.clone());
            }
        }
        let also_payment = self.payments.get(invoice).cloned();
        if let Some(amounts) = &also_payment {
            self.payments
                .entry(key.clone())
                .or_insert_with(|| amounts.clone());
        }
        let outcome = if also_paid.is_empty() {
            Outcome::new(
                OutcomeKind::Applied,
                format!("{invoice} paid by {key}; its credits follow when the invoice arrives"),
            )
        } else {
            let settled = nothing_taken_back(std::slice::from_ref(key));
            Outcome::new(
                OutcomeKind::Applied,
                format!("{invoice} paid by {key}: {}", settled.detail),
            )
        };
        Some(Applied {
            invoice_payment: Some((invoice.clone(), key.clone())),
            also_paid,
            also_payment,
            ..Applied::nothing(outcome)
        })
    }

    /// A paid invoice: `None` when it is left alone.
    fn invoice_paid(
        &mut self,
        applied: &mut Applied,
        invoice: &InvoiceFact,
        fact: &EventFact,
        catalog: &Catalog,
        now: Timestamp,
        grant_id: impl FnMut() -> String,
    ) -> Option<()> {
        let (stripe_customer, customer) = applied.account()?;
        let stripe_customer = stripe_customer.as_str();
        let known = Known {
            customer,
            learnt_payment: match invoice.named_payment {
                Some(_) => None,
                None => self.learnt_payments.get(&invoice.invoice_id).cloned(),
            },
            applied: invoice
                .line_effects()
                .into_iter()
                .filter(|e| self.applied.contains(e))
                .collect(),
            // A trial is applied on its own, which reads the customer's trials.
            promotions: HashSet::new(),
            subscription: invoice
                .subscription
                .as_ref()
                .and_then(|id| self.subscription(id))
                .map(|s| s.state.clone()),
        };
        let paid = invoice::decide(invoice, &known, catalog, now, fact.event_created, grant_id);
        let done = self.lines_done(&paid)?;
        applied.outcome = invoice::outcome(&paid, &done, invoice.unread_lines);
        if let Some(change) = &paid.subscription {
            match &change.state {
                Some(state) => self.record(applied, stripe_customer, &change.id, state.clone()),
                None => applied.standing = Some(self.standing_of(stripe_customer)),
            }
        }
        for (key, paid_minor, tax_minor, currency) in &paid.payments {
            self.payments
                .entry(key.clone())
                .or_insert_with(|| (*paid_minor, *tax_minor, currency.clone()));
        }
        applied.paid = Some(paid);
        for bought in applied.grants() {
            let subscription = applied
                .paid
                .as_ref()
                .and_then(|p| p.subscription_id.clone());
            for key in &bought.payment_keys {
                // Once per key, as the store keeps it (the invoice may stand for its payment).
                let grant = (bought.grant.id.clone(), subscription.clone());
                let known = self.paid_grants.entry(key.clone()).or_default();
                if !known.contains(&grant) {
                    known.push(grant);
                }
            }
        }
        Some(())
    }

    /// A subscription's new state, and the standing it makes.
    fn record(
        &mut self,
        applied: &mut Applied,
        stripe_customer: &str,
        id: &str,
        state: SubscriptionState,
    ) {
        self.put_subscription(id, stripe_customer, state.clone());
        applied.subscription = Some((id.to_owned(), state));
        applied.standing = Some(self.standing_of(stripe_customer));
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
                    // A plan change is capped by what its period gave before, read on its own.
                    if bought.renewal || bought.proration || self.renewals.contains(&end) {
                        return None;
                    }
                    payment_keys.extend(&bought.payment_keys);
                    done.push(invoice::grant_detail(bought, Credits::ZERO));
                }
                LineStep::OveragePaid { .. }
                | LineStep::Trial { .. }
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
    fn paid(n: u32, price: &str, renewal: bool) -> EventFact {
        EventFact {
            event_id: format!("evt_{n}"),
            event_created: JAN + 10,
            stripe_customer: Some(format!("cus_{n}")),
            named: None,
            kind: FactKind::InvoicePaid(InvoiceFact {
                invoice_id: format!("in_{n}"),
                subscription: Some(format!("sub_{n}")),
                currency: Some("usd".into()),
                paid_and_tax: Some((2000, 0)),
                named_payment: Some(format!("pi_{n}")),
                read_payments: vec![],
                renewal,
                creation: false,
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
            }),
        }
    }

    /// The invoice a paid invoice's event says.
    fn invoice(fact: &mut EventFact) -> &mut InvoiceFact {
        match &mut fact.kind {
            FactKind::InvoicePaid(invoice) => invoice,
            other => panic!("not an invoice: {other:?}"),
        }
    }

    fn decide(run: &mut Run, fact: &EventFact) -> RunDecision {
        let mut n = 0;
        run.decide(fact, &catalog(), at(JAN + 60), || {
            n += 1;
            format!("grant_{}_{n}", fact.event_id)
        })
    }

    fn applied(decision: RunDecision) -> Applied {
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
        assert_eq!(first.customer.clone().unwrap(), "cus_1");
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
        let (_, state) = first.subscription.as_ref().expect("first seen");
        assert_eq!(state.status, SubscriptionStatus::Active);
        let standing = first.standing.clone().flatten().expect("a plan");
        assert_eq!(standing.plan_id.as_deref(), Some("pro"));
        assert_eq!(standing.period_end_unix, Some(FEB));
        assert_eq!(second.customer.clone().unwrap(), "cus_2");
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
        invoice(&mut next).subscription = Some("sub_1".into());
        next.event_created += 60;
        let (start, end) = invoice(&mut next).lines[0].period.unwrap();
        invoice(&mut next).lines[0].period = Some((end, end + (end - start)));
        let next = applied(decide(&mut run, &next));
        assert_eq!(
            next.customer.clone().unwrap(),
            "acme",
            "the link the first made"
        );
        assert_eq!(next.link, None);
        assert_eq!(
            next.subscription, None,
            "the state the first recorded stands: a paid invoice does not move an active one"
        );
        let standing = next.standing.flatten().expect("a plan");
        assert_eq!(standing.period_end_unix, Some(FEB));
        let mut again = paid(3, "price_pro", false);
        again.stripe_customer = Some("cus_1".into());
        invoice(&mut again).lines[0].id = "il_1".into();
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
        assert_eq!(kept.customer.clone().unwrap(), "globex");
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
        invoice(&mut credit).lines[0].amount_minor = -500;
        invoice(&mut credit).lines[0].proration = true;
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

    /// `customer.subscription.updated` of `cus_{n}`'s `sub_{n}` at `at`: `status`, on `price`.
    fn updated(n: u32, status: SubscriptionStatus, price: &str, at: i64) -> EventFact {
        EventFact {
            event_id: format!("evt_sub_{n}_{at}"),
            event_created: at,
            stripe_customer: Some(format!("cus_{n}")),
            named: None,
            kind: FactKind::Subscription(SubscriptionFact {
                id: format!("sub_{n}"),
                status,
                items: vec![(Some(price.into()), Some(2))],
                current_period_end_unix: Some(FEB),
            }),
        }
    }

    #[test]
    fn a_subscription_event_records_its_state_and_the_invoice_after_it_sees_it() {
        let mut run = Run::default();
        let past_due = applied(decide(
            &mut run,
            &updated(1, SubscriptionStatus::PastDue, "price_team", JAN),
        ));
        assert_eq!(past_due.outcome.outcome, OutcomeKind::Applied);
        assert_eq!(past_due.outcome.detail, "cus_1: past_due, plan team");
        let (id, state) = past_due.subscription.expect("recorded");
        assert_eq!((id.as_str(), state.quantity), ("sub_1", 2));
        assert_eq!(state.past_due_since_unix, Some(JAN));
        assert_eq!(
            past_due
                .standing
                .flatten()
                .and_then(|s| s.past_due_since_unix),
            Some(JAN)
        );
        // Its invoice, paid after: current again, on the plan the subscription event recorded.
        let paid = applied(decide(&mut run, &paid(1, "price_team", false)));
        let (_, state) = paid.subscription.expect("current again");
        assert_eq!(state.status, SubscriptionStatus::Active);
        assert_eq!(state.plan_id.as_deref(), Some("team"));
        let standing = paid.standing.flatten().expect("a plan");
        assert_eq!(standing.past_due_since_unix, None);
    }

    #[test]
    fn a_stale_or_unmapped_subscription_event_says_so() {
        let mut run = Run::default();
        applied(decide(
            &mut run,
            &updated(1, SubscriptionStatus::Active, "price_pro", JAN + 100),
        ));
        let stale = applied(decide(
            &mut run,
            &updated(1, SubscriptionStatus::PastDue, "price_pro", JAN),
        ));
        assert_eq!(stale.outcome.outcome, OutcomeKind::Ignored);
        assert_eq!((stale.subscription, stale.standing), (None, None));
        let unmapped = applied(decide(
            &mut run,
            &updated(2, SubscriptionStatus::Active, "price_other", JAN),
        ));
        assert_eq!(unmapped.outcome.outcome, OutcomeKind::UnmappedPrice);
        let (_, state) = unmapped.subscription.expect("recorded all the same");
        assert_eq!(state.plan_id, None);
    }

    /// `invoice_payment.paid`: invoice `in_{n}` paid by `key`.
    fn invoice_paid_by(n: u32, key: &str) -> EventFact {
        EventFact {
            event_id: format!("evt_inpay_{n}_{key}"),
            event_created: JAN + 20,
            stripe_customer: None,
            named: None,
            kind: FactKind::InvoicePayment(InvoicePaymentFact {
                paid: true,
                invoice: Some(format!("in_{n}")),
                payment_key: Some(key.into()),
            }),
        }
    }

    #[test]
    fn an_invoice_payment_makes_what_the_invoice_paid_for_known_under_the_payment() {
        let mut run = Run::default();
        let early = applied(decide(&mut run, &invoice_paid_by(2, "py_2")));
        assert_eq!(
            early.outcome.detail,
            "in_2 paid by py_2; its credits follow when the invoice arrives"
        );
        let mut unnamed = paid(1, "price_pro", false);
        invoice(&mut unnamed).named_payment = None;
        let granted = applied(decide(&mut run, &unnamed));
        let grant_id = granted.grants().next().expect("a grant").grant.id.clone();
        let later = applied(decide(&mut run, &invoice_paid_by(1, "py_1")));
        assert_eq!(
            later.invoice_payment,
            Some(("in_1".to_string(), "py_1".to_string()))
        );
        assert_eq!(later.also_paid, vec![(grant_id, Some("sub_1".to_string()))]);
        assert_eq!(later.also_payment, Some((2000, 0, "usd".to_string())));
        assert_eq!(
            later.outcome.detail,
            "in_1 paid by py_1: payment [\"py_1\"]: nothing taken back"
        );
        assert_eq!(run.learnt_payments["in_1"], "py_1");
        // Stripe told of a refund of the payment: settled on its own.
        run.taken_back.insert("py_3".into());
        assert_eq!(
            decide(&mut run, &invoice_paid_by(3, "py_3")),
            RunDecision::Alone
        );
    }
}
