//! A paid invoice as a fact, and the event table's `invoice.paid` rows as one pure decision over
//! it and what the books know (README, Stripe, the event table): which payment its refunds will
//! name, what each line does (a plan's credits for its period, overage paid, money a proration
//! gives back), which lines were applied before, and what the subscription becomes. The store
//! reads what the decision needs first, then writes what it says, in its order.

use super::Timestamp;
use super::billing::{
    LineEffect, LineFacts, Outcome, OutcomeKind, invoice_payment_key, line_effect,
    money_from_minor, subscription_line,
};
use super::catalog::Catalog;
use super::customer::CustomerId;
use super::ledger::{Grant, GrantSource, Paid};
use super::money::{Credits, Money};
use super::subscription::{self, PlanLine, SubscriptionState};
use rust_decimal::Decimal;
use std::collections::HashSet;

/// What an `invoice.paid` event says, as read by the tolerant parser (with the lines and
/// payments read from the API when the event has not all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFact {
    pub invoice_id: String,
    pub subscription: Option<String>,
    pub currency: Option<String>,
    /// `(paid, tax)` in minor units, when the invoice says.
    pub paid_and_tax: Option<(i64, i64)>,
    /// The payment named on the invoice itself (API versions before 2025-03-31.basil).
    pub named_payment: Option<String>,
    /// The invoice's payments read from the API: whether each is paid, and its payment intent
    /// or charge.
    pub read_payments: Vec<(bool, Option<String>)>,
    /// A renewal: `billing_reason = subscription_cycle`.
    pub renewal: bool,
    /// The subscription's first invoice: `billing_reason = subscription_create`.
    pub creation: bool,
    pub lines: Vec<InvoiceLineFact>,
    /// The event carries only some of the lines, and the rest could not be read.
    pub unread_lines: bool,
}

/// One line of a paid invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLineFact {
    pub id: String,
    pub price: Option<String>,
    pub currency: Option<String>,
    /// The period the line pays for.
    pub period: Option<(Timestamp, Timestamp)>,
    /// Seats (at least 1).
    pub quantity: i64,
    /// The amount less discounts and included tax, in minor units; negative for a credit.
    pub amount_minor: i64,
    pub proration: bool,
    /// A whole period's price of one unit, in minor units.
    pub unit_amount_minor: Option<Decimal>,
    /// The line a credit line gives money back for, when it names one.
    pub credits_line: Option<String>,
}

impl InvoiceLineFact {
    /// What applies the line once.
    pub fn effect(&self) -> String {
        line_effect_key(&self.id)
    }
}

/// The effect key of an invoice line: a line is applied once, whichever event brings it.
pub fn line_effect_key(line_id: &str) -> String {
    format!("invoice_line:{line_id}")
}

impl InvoiceFact {
    /// The effects of every line, to ask the books which were applied before.
    pub fn line_effects(&self) -> Vec<String> {
        self.lines.iter().map(InvoiceLineFact::effect).collect()
    }

    /// A line's currency: its own, the invoice's, or the accounting currency; lower case.
    fn currency(&self, line: Option<&InvoiceLineFact>, catalog: &Catalog) -> String {
        line.and_then(|l| l.currency.clone())
            .or_else(|| self.currency.clone())
            .unwrap_or_else(|| catalog.currency.clone())
            .to_ascii_lowercase()
    }
}

/// What the books know that a paid invoice decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The account the invoice pays for (its Stripe customer's, resolved before).
    pub customer: CustomerId,
    /// The payment learnt before from `invoice_payment.paid`.
    pub learnt_payment: Option<String>,
    /// Line effects applied before.
    pub applied: HashSet<String>,
    /// The subscription's state, when the invoice is a subscription's and one is recorded.
    pub subscription: Option<SubscriptionState>,
    /// The sources of the Stripe promotional grants the customer was given (its trials, by
    /// [`trial_source`]).
    pub promotions: HashSet<String>,
}

impl Known {
    /// What is known of a first invoice of `customer`: nothing yet.
    pub fn of(customer: CustomerId) -> Known {
        Known {
            customer,
            learnt_payment: None,
            applied: HashSet::new(),
            subscription: None,
            promotions: HashSet::new(),
        }
    }
}

/// What one line of a paid invoice does, once.
#[derive(Debug, Clone, PartialEq)]
pub enum LineStep {
    /// The metered line that bills overage reported to a plan's meter: paid.
    OveragePaid {
        plan_id: String,
        money: Money,
        currency: String,
    },
    /// A credit line naming the line it gives money back for: recorded as a refund of that
    /// line (`refund_id`, on payment `of_payment`), so it applies whichever of the two invoices
    /// arrives first; then that payment is settled.
    RefundLine {
        refund_id: String,
        of_payment: String,
        amount_minor: i64,
        currency: String,
    },
    /// A credit line naming no line: the money given back takes back credits of the
    /// subscription's newest grant, as a refund would.
    CreditBack { money: Money },
    /// The plan's credits for the line's period.
    Grant(Box<PlanGrant>),
    /// A trial's first ($0) invoice of a plan with `trial_credits`: those credits instead,
    /// promotional, expiring when the trial ends; none when the customer had the plan's trial.
    Trial {
        plan_id: String,
        grant: Option<Box<Grant>>,
    },
    /// Worth no credits (a proration of nothing): marked applied, nothing else.
    Nothing,
}

/// The plan credits a paid line buys.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanGrant {
    /// The credits of the line's first credit period, spendable at once.
    pub grant: Grant,
    /// The credits of its later credit periods (a price billed for several), each bought now,
    /// scheduled to start with its period, carrying its share of the price.
    pub later: Vec<Grant>,
    pub plan_id: String,
    pub period: (Timestamp, Timestamp),
    /// A renewal carries unused credits of the period ending at its start into it.
    pub renewal: bool,
    /// A proration (a plan change mid-period): its credits are capped by what the period
    /// already gave ([`cap_change`]).
    pub proration: bool,
    /// A whole period's credits of its plan for its seats.
    pub allowance: Credits,
    /// The keys its refunds will name: the payment, the invoice, the line.
    pub payment_keys: [String; 3],
}

impl PlanGrant {
    /// Every grant the line buys: its first credit period's, then the later ones'.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        std::iter::once(&self.grant).chain(&self.later)
    }
}

/// A line to apply: its effect key (claimed once) and what it does.
#[derive(Debug, Clone, PartialEq)]
pub struct LineApplied {
    pub effect: String,
    pub step: LineStep,
}

/// What a paid invoice writes, in order: its payment, its lines, the subscription's state, then
/// the payment settled against what Stripe told of refunds and disputes.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoicePaid {
    /// The account it pays for.
    pub customer: CustomerId,
    /// The payment its refunds will name: the payment, or the invoice until it is learnt.
    pub payment_key: String,
    /// The payment is known (named, read or learnt).
    pub payment_known: bool,
    /// The subscription the invoice is for.
    pub subscription_id: Option<String>,
    /// `(key, paid, tax, currency)` of the payment, recorded under the payment and the invoice.
    pub payments: Vec<(String, i64, i64, String)>,
    pub lines: Vec<LineApplied>,
    /// Lines no plan sells, or that cannot be applied (no price, no period).
    pub unmapped: Vec<String>,
    /// The subscription's plan line was seen: its state is refreshed, and set to `state` when
    /// that changes.
    pub subscription: Option<SubscriptionChange>,
}

/// A subscription a paid invoice keeps current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChange {
    pub id: String,
    pub state: Option<SubscriptionState>,
}

/// Decides a paid invoice for `known.customer`. `grant_id` names each grant it makes;
/// `event_created` (Unix seconds) orders subscription states.
pub fn decide(
    fact: &InvoiceFact,
    known: &Known,
    catalog: &Catalog,
    now: Timestamp,
    event_created: i64,
    mut grant_id: impl FnMut() -> String,
) -> InvoicePaid {
    let read_key = invoice_payment_key(
        fact.named_payment.as_deref(),
        &fact.read_payments,
        known.learnt_payment.clone(),
    );
    let payment_key = read_key.clone().unwrap_or_else(|| fact.invoice_id.clone());
    let payments = fact
        .paid_and_tax
        .map(|(paid, tax)| {
            let currency = fact.currency(None, catalog);
            [payment_key.clone(), fact.invoice_id.clone()]
                .into_iter()
                .map(|key| (key, paid, tax, currency.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut paid = InvoicePaid {
        customer: known.customer.clone(),
        payment_key,
        payment_known: read_key.is_some(),
        subscription_id: fact.subscription.clone(),
        payments,
        lines: Vec::new(),
        unmapped: Vec::new(),
        subscription: None,
    };
    let mut plan_lines = Vec::new();
    for line in &fact.lines {
        let step = line_step(fact, line, catalog, &mut plan_lines, &mut paid.unmapped);
        let effect = line.effect();
        let Some(step) = step else { continue };
        if known.applied.contains(&effect) {
            continue;
        }
        let step = step.finish((fact, line), known, &paid.payment_key, now, &mut grant_id);
        paid.lines.push(LineApplied { effect, step });
    }
    if let (Some(id), Some(line)) = (&fact.subscription, subscription_line(plan_lines)) {
        paid.subscription = Some(SubscriptionChange {
            id: id.clone(),
            state: subscription::invoice_paid(known.subscription.as_ref(), line, event_created),
        });
    }
    paid
}

/// What a line does before its grant is made: `None` when it does nothing (noted in `unmapped`
/// when it cannot be applied). A plan line is noted in `plan_lines` whether applied before or not.
// Long: one arm per kind of plan line (overage paid, money given back, a trial, a grant).
fn line_step(
    fact: &InvoiceFact,
    line: &InvoiceLineFact,
    catalog: &Catalog,
    plan_lines: &mut Vec<(PlanLine, bool)>,
    unmapped: &mut Vec<String>,
) -> Option<Pending> {
    let Some(price) = &line.price else {
        unmapped.push(format!("{} (no price)", line.id));
        return None;
    };
    let currency = fact.currency(Some(line), catalog);
    if let Some(plan) = catalog.plan_for_overage_price(price) {
        return Some(Pending::Ready(LineStep::OveragePaid {
            plan_id: plan.id.clone(),
            money: money_from_minor(line.amount_minor, &currency),
            currency,
        }));
    }
    let Some(plan) = catalog.plan_for_price(price) else {
        unmapped.push(price.clone());
        return None;
    };
    let Some((start, end)) = line.period else {
        unmapped.push(format!("{} (no period)", line.id));
        return None;
    };
    plan_lines.push((
        PlanLine {
            plan_id: plan.id.clone(),
            quantity: line.quantity.max(1),
            period_end_unix: end.timestamp(),
        },
        line.proration,
    ));
    if let Some(trial) = trial(fact, line, plan, end) {
        return Some(trial);
    }
    let facts = LineFacts {
        quantity: line.quantity.max(1),
        amount_minor: line.amount_minor,
        proration: line.proration,
        unit_amount_minor: line.unit_amount_minor,
        credits_line: line.credits_line.clone(),
        renewal_invoice: fact.renewal,
    };
    Some(match line_effect(plan, &facts) {
        LineEffect::Nothing => Pending::Ready(LineStep::Nothing),
        LineEffect::GiveBack {
            of_line: Some(credited),
            amount_minor,
        } => Pending::Ready(LineStep::RefundLine {
            refund_id: format!("proration:{}", line.id),
            of_payment: line_effect_key(&credited),
            amount_minor,
            currency,
        }),
        LineEffect::GiveBack {
            of_line: None,
            amount_minor,
        } => Pending::Ready(LineStep::CreditBack {
            money: money_from_minor(amount_minor, &currency),
        }),
        LineEffect::Grant {
            credits,
            price_minor,
            renewal,
        } => Pending::Grant {
            plan_id: plan.id.clone(),
            priority: plan.priority,
            periods: plan.credits_interval.periods_within(start, end),
            allowance: super::billing::period_credits(plan, line.quantity.max(1)),
            credits: PieceCredits::of(credits, line.proration),
            paid: Paid {
                price: money_from_minor(price_minor, &currency),
                currency,
            },
            renewal,
        },
    })
}

/// A trial's first invoice: the subscription's creation, a whole period's line charging
/// nothing, of a plan with `trial_credits`.
fn trial(
    fact: &InvoiceFact,
    line: &InvoiceLineFact,
    plan: &super::catalog::Plan,
    ends_at: Timestamp,
) -> Option<Pending> {
    let credits = plan.trial_credits?;
    (fact.creation && !line.proration && line.amount_minor == 0).then(|| Pending::Trial {
        plan_id: plan.id.clone(),
        credits,
        ends_at,
    })
}

/// A line's step, its grant not yet made (a line applied before makes none).
enum Pending {
    Ready(LineStep),
    Trial {
        plan_id: String,
        credits: Credits,
        ends_at: Timestamp,
    },
    Grant {
        plan_id: String,
        priority: i32,
        /// The credit periods the line's period holds (README, Credit cycles).
        periods: Vec<(Timestamp, Timestamp)>,
        allowance: Credits,
        credits: PieceCredits,
        paid: Paid,
        renewal: bool,
    },
}

/// The credits of each credit period of a paid line.
enum PieceCredits {
    /// A whole period's line: the plan's allowance every credit period.
    Each(Credits),
    /// A proration: the credits its money buys, shared evenly (the last takes the rounding).
    Spread(Credits),
}

impl PieceCredits {
    fn of(credits: Credits, proration: bool) -> PieceCredits {
        if proration {
            PieceCredits::Spread(credits)
        } else {
            PieceCredits::Each(credits)
        }
    }
}

/// The source of a plan's trial credits for a customer: one per customer and plan, whatever
/// the number of subscriptions (the store keeps Stripe sources unique).
pub fn trial_source(customer: &CustomerId, plan_id: &str) -> String {
    format!("trial:{customer}:{plan_id}")
}

/// The source of credit period `k` (from 0) of a line: the line's effect, numbered after the
/// first, so each period's grant is made once.
fn piece_source(effect: &str, k: usize) -> String {
    if k == 0 {
        effect.to_owned()
    } else {
        format!("{effect}:{}", k + 1)
    }
}

/// The fewest credits `n` pieces can share with each getting some.
fn share_floor(n: usize) -> Decimal {
    Decimal::new(i64::try_from(n).unwrap_or(i64::MAX), super::money::SCALE)
}

/// `whole` split into `n` even parts rounded down to `places`, the last taking the rest.
fn split_evenly(whole: Decimal, n: usize, places: u32) -> Vec<Decimal> {
    assert!(n > 0, "split into at least one part");
    let count = Decimal::from(n as u64);
    let part =
        (whole / count).round_dp_with_strategy(places, rust_decimal::RoundingStrategy::ToZero);
    let mut parts = vec![part; n];
    parts[n - 1] = whole - part * Decimal::from(n as u64 - 1);
    parts
}

impl Pending {
    fn finish(
        self,
        (fact, line): (&InvoiceFact, &InvoiceLineFact),
        known: &Known,
        payment_key: &str,
        now: Timestamp,
        grant_id: &mut impl FnMut() -> String,
    ) -> LineStep {
        let (plan_id, priority, periods, credits, paid, renewal, allowance) = match self {
            Pending::Ready(step) => return step,
            Pending::Trial {
                plan_id,
                credits,
                ends_at,
            } => return trial_step(known, plan_id, (credits, ends_at), now, grant_id),
            Pending::Grant {
                plan_id,
                priority,
                periods,
                allowance,
                credits,
                paid,
                renewal,
            } => (
                plan_id, priority, periods, credits, paid, renewal, allowance,
            ),
        };
        let proration = matches!(credits, PieceCredits::Spread(_));
        let effect = line.effect();
        // A proration too small to share keeps one period: no piece is granted nothing.
        let periods = match credits {
            PieceCredits::Spread(c) if c.value() < share_floor(periods.len()) => {
                vec![(periods[0].0, periods[periods.len() - 1].1)]
            }
            _ => periods,
        };
        let pieces = pieces(&periods, credits, &paid);
        let mut grants =
            periods
                .iter()
                .zip(pieces)
                .enumerate()
                .map(|(k, (&(start, end), (credits, paid)))| {
                    Grant::plan(
                        grant_id(),
                        &plan_id,
                        credits,
                        Some(paid),
                        Some(start),
                        (GrantSource::Stripe, piece_source(&effect, k)),
                        now,
                    )
                    .expiring(Some(end))
                    .starting((k > 0).then_some(start))
                    .at_priority(priority)
                });
        let grant = grants
            .next()
            .expect("a line holds at least one credit period");
        let later = grants.collect();
        let period = (periods[0].0, periods[periods.len() - 1].1);
        LineStep::Grant(Box::new(PlanGrant {
            grant,
            later,
            plan_id,
            period,
            renewal,
            proration,
            allowance,
            payment_keys: [payment_key.to_owned(), fact.invoice_id.clone(), effect],
        }))
    }
}

/// A trial's credits, once per customer and plan, whatever the number of subscriptions.
fn trial_step(
    known: &Known,
    plan_id: String,
    (credits, ends_at): (Credits, Timestamp),
    now: Timestamp,
    grant_id: &mut impl FnMut() -> String,
) -> LineStep {
    let source = trial_source(&known.customer, &plan_id);
    let grant = (!known.promotions.contains(&source)).then(|| {
        let grant = Grant::promotional(grant_id(), credits, (GrantSource::Stripe, source), now);
        Box::new(grant.expiring(Some(ends_at)))
    });
    LineStep::Trial { plan_id, grant }
}

/// The credits and the price of each credit period of a paid line: the price split evenly to
/// the currency's minor unit, the last period taking the rest.
fn pieces(
    periods: &[(Timestamp, Timestamp)],
    credits: PieceCredits,
    paid: &Paid,
) -> Vec<(Credits, Paid)> {
    let n = periods.len();
    let places = super::money::currency_minor_units(&paid.currency);
    let prices = split_evenly(paid.price.value(), n, places);
    let credits: Vec<Credits> = match credits {
        PieceCredits::Each(c) => vec![c; n],
        PieceCredits::Spread(c) => split_evenly(c.value(), n, super::money::SCALE)
            .into_iter()
            .map(|c| Credits::new(c).expect("a share of credits"))
            .collect(),
    };
    credits
        .into_iter()
        .zip(prices)
        .map(|(credits, price)| {
            let price = Money::new(price).expect("a share of a price");
            (
                credits,
                Paid {
                    price,
                    currency: paid.currency.clone(),
                },
            )
        })
        .collect()
}

/// A plan grant of a subscription live in a period, as a plan change's cap counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldInPeriod {
    pub plan_id: Option<String>,
    /// Credits granted, less those refunds and credit lines took back.
    pub net: Credits,
}

/// The credits a plan change may give (README, Credit cycles, plan changes): within one period,
/// a subscription's plan grants never give more than the highest allowance of the plans held in
/// it (the new plan's for its seats, or any earlier grant's plan, or an earlier grant itself),
/// whatever was used before the change and could not be taken back. `held`: the subscription's
/// grants for the period (credits carried over from the period before aside). A change that may
/// give nothing more keeps its money in the books on one millionth of a credit, which breaks at
/// the period's end. Applies only to prorations of one credit period; whole periods grant
/// their allowance, and a proration over several months shares what its money buys.
pub fn cap_change(bought: &mut PlanGrant, held: &[HeldInPeriod], catalog: &Catalog) {
    if !bought.proration || !bought.later.is_empty() {
        return;
    }
    let highest = held
        .iter()
        .flat_map(|h| {
            let plan = h.plan_id.as_deref().and_then(|p| catalog.plan(p));
            [plan.map_or(Credits::ZERO, |p| p.credits), h.net]
        })
        .fold(bought.allowance, Credits::max);
    let given: Credits = held.iter().map(|h| h.net).sum();
    let room = (highest - given).max(Credits::from_micros(1));
    let credits = bought.grant.credits.min(room);
    bought.grant.credits = credits;
    bought.grant.remaining = credits;
}

/// What a plan line's grant did, for its invoice's outcome: the credits granted and those
/// `carried` out of its period into a later one paid before it.
pub fn grant_detail(bought: &PlanGrant, carried: Credits) -> String {
    format!(
        "{}: {} credits of plan {} ({carried} rolled over into a later period)",
        bought.grant.source_id, bought.grant.credits, bought.plan_id
    )
}

/// What a paid invoice did, from what its lines did (`done`, one detail each).
pub fn outcome(paid: &InvoicePaid, done: &[String], unread_lines: bool) -> Outcome {
    let unmapped = &paid.unmapped;
    if done.is_empty() && !unmapped.is_empty() {
        return Outcome::new(
            OutcomeKind::UnmappedPrice,
            format!("no plan sells prices {unmapped:?}"),
        );
    }
    let mut detail = done.join("; ");
    if !unmapped.is_empty() {
        detail.push_str(&format!("; unmapped: {unmapped:?}"));
    }
    if detail.is_empty() {
        detail = "every line applied before".into();
    }
    if unread_lines {
        return Outcome::new(
            OutcomeKind::Pending,
            format!(
                "{detail}; the invoice has more lines than the event carries: set [stripe] \
                 api_key to read them, or run `creditbook stripe sync`"
            ),
        );
    }
    if !paid.payment_known {
        detail.push_str(
            "; the invoice names no payment (API version 2025-03-31.basil): its refunds \
             apply once the payment is learnt from invoice_payment.paid or, with [stripe] \
             api_key, from the API",
        );
    }
    Outcome::new(OutcomeKind::Applied, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::{OverageMeter, Plan};
    use crate::domain::subscription::SubscriptionStatus;

    /// Credits or money, whichever the place asks for.
    fn credits<T: std::str::FromStr>(text: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        text.parse().unwrap()
    }

    /// Plan `pro`: 1,000 credits a month for `price_pro` at 20.00, rolling over up to 500; its
    /// overage billed through `price_pro_overage`.
    fn catalog() -> Catalog {
        let pro = Plan {
            stripe_prices: vec!["price_pro".into()],
            credits: credits("1000"),
            rollover_max: credits("500"),
            overage_meter: Some(OverageMeter {
                event_name: "pro_overage".into(),
                stripe_price: Some("price_pro_overage".into()),
            }),
            ..Plan::bare("pro")
        };
        Catalog {
            currency: "usd".into(),
            plans: [("pro".to_string(), pro)].into(),
            ..Default::default()
        }
    }

    fn at(seconds: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(seconds, 0).unwrap()
    }

    const JAN: i64 = 1_767_225_600;
    const FEB: i64 = 1_769_904_000;

    fn line(id: &str, price: &str, amount_minor: i64) -> InvoiceLineFact {
        InvoiceLineFact {
            id: id.into(),
            price: Some(price.into()),
            currency: None,
            period: Some((at(JAN), at(FEB))),
            quantity: 1,
            amount_minor,
            proration: false,
            unit_amount_minor: Some(Decimal::from(2000)),
            credits_line: None,
        }
    }

    /// Invoice `in_1` of subscription `sub_1`, paid 20.00 by `pi_1`, with `lines`.
    fn invoice(lines: Vec<InvoiceLineFact>) -> InvoiceFact {
        InvoiceFact {
            invoice_id: "in_1".into(),
            subscription: Some("sub_1".into()),
            currency: Some("USD".into()),
            paid_and_tax: Some((2000, 0)),
            named_payment: Some("pi_1".into()),
            read_payments: vec![],
            renewal: false,
            creation: false,
            lines,
            unread_lines: false,
        }
    }

    fn known() -> Known {
        Known::of(CustomerId::known("acme"))
    }

    fn decided(fact: &InvoiceFact, known: &Known) -> InvoicePaid {
        let mut n = 0;
        decide(fact, known, &catalog(), at(JAN + 60), JAN + 30, || {
            n += 1;
            format!("grant_{n}")
        })
    }

    fn the_grant(paid: &InvoicePaid) -> &PlanGrant {
        match &paid.lines[..] {
            [
                LineApplied {
                    step: LineStep::Grant(grant),
                    ..
                },
            ] => grant,
            other => panic!("not one grant: {other:?}"),
        }
    }

    #[test]
    fn a_plan_line_grants_the_plan_for_its_period_at_its_price() {
        let paid = decided(&invoice(vec![line("il_1", "price_pro", 2000)]), &known());
        assert_eq!(paid.customer, "acme");
        assert_eq!(paid.payment_key, "pi_1");
        assert!(paid.payment_known);
        assert_eq!(
            paid.payments,
            vec![
                ("pi_1".to_string(), 2000, 0, "usd".to_string()),
                ("in_1".to_string(), 2000, 0, "usd".to_string())
            ]
        );
        let grant = the_grant(&paid);
        assert_eq!(grant.grant.id, "grant_1");
        assert_eq!(grant.grant.credits, credits("1000"));
        assert_eq!(grant.grant.price, Some(credits("20")));
        assert_eq!(grant.grant.currency.as_deref(), Some("usd"));
        assert_eq!(grant.grant.expires_at, Some(at(FEB)));
        assert_eq!(grant.grant.period_start, Some(at(JAN)));
        assert_eq!(grant.grant.source_id, "invoice_line:il_1");
        assert_eq!(grant.period, (at(JAN), at(FEB)));
        assert!(!grant.renewal, "the first invoice carries nothing over");
        assert_eq!(
            grant.payment_keys,
            [
                "pi_1".to_string(),
                "in_1".into(),
                "invoice_line:il_1".into()
            ]
        );
        let subscription = paid.subscription.as_ref().expect("a subscription's line");
        assert_eq!(subscription.id, "sub_1");
        let state = subscription.state.as_ref().expect("first seen: active");
        assert_eq!(state.status, SubscriptionStatus::Active);
        assert_eq!(state.plan_id.as_deref(), Some("pro"));
        assert_eq!(state.current_period_end_unix, Some(FEB));
        assert!(paid.unmapped.is_empty());
    }

    #[test]
    fn a_year_paid_buys_twelve_monthly_grants_each_a_twelfth_of_the_price() {
        let year_end = at(JAN) + chrono::Months::new(12);
        let mut annual = line("il_1", "price_pro", 20_005);
        annual.period = Some((at(JAN), year_end));
        let paid = decided(&invoice(vec![annual]), &known());
        let bought = the_grant(&paid);
        let grants: Vec<&Grant> = bought.grants().collect();
        assert_eq!(grants.len(), 12);
        // 200.05 / 12 = 16.670833…: each 16.67 (rounded down), the last 16.68 takes the rest.
        let prices: Vec<Money> = grants.iter().map(|g| g.price.unwrap()).collect();
        assert!(prices[..11].iter().all(|p| *p == credits::<Money>("16.67")));
        assert_eq!(prices[11], credits("16.68"));
        assert_eq!(prices.iter().copied().sum::<Money>(), credits("200.05"));
        for (k, grant) in grants.iter().enumerate() {
            let start = at(JAN) + chrono::Months::new(k as u32);
            assert_eq!(grant.credits, credits("1000"), "the allowance every month");
            assert_eq!(grant.period_start, Some(start));
            assert_eq!(grant.expires_at, Some(start + chrono::Months::new(1)));
            // The first month is spendable at once; the others from their start.
            assert_eq!(grant.starts_at, (k > 0).then_some(start));
            assert_eq!(grant.scheduled, k > 0);
            let source = if k == 0 {
                "invoice_line:il_1".to_owned()
            } else {
                format!("invoice_line:il_1:{}", k + 1)
            };
            assert_eq!(grant.source_id, source);
        }
        assert_eq!(bought.period, (at(JAN), year_end));
        // A proration over several months shares the credits its money buys.
        let mut upgrade = line("il_2", "price_pro", 1000);
        upgrade.period = Some((at(JAN), at(JAN) + chrono::Months::new(3)));
        upgrade.proration = true;
        let paid = decided(&invoice(vec![upgrade]), &known());
        let spread: Vec<Credits> = the_grant(&paid).grants().map(|g| g.credits).collect();
        assert_eq!(spread.iter().copied().sum::<Credits>(), credits("500"));
        assert_eq!(spread[0], credits("166.666666"));
        assert_eq!(spread[2], credits("166.666668"));
    }

    #[test]
    fn a_trials_free_first_invoice_gives_the_trial_credits_instead_of_the_allowance() {
        let mut catalog = catalog();
        catalog.plans.get_mut("pro").unwrap().trial_credits = Some(credits("100"));
        let decide_with = |fact: &InvoiceFact| {
            let mut n = 0;
            decide(fact, &known(), &catalog, at(JAN + 60), JAN + 30, || {
                n += 1;
                format!("grant_{n}")
            })
        };
        let mut trial = invoice(vec![line("il_1", "price_pro", 0)]);
        trial.creation = true;
        let paid = decide_with(&trial);
        let LineStep::Trial {
            plan_id,
            grant: Some(grant),
        } = &paid.lines[0].step
        else {
            panic!("not a trial: {paid:?}");
        };
        assert_eq!(plan_id, "pro");
        assert_eq!(grant.kind, crate::domain::ledger::GrantKind::Promotional);
        assert_eq!((grant.credits, grant.price), (credits("100"), None));
        assert_eq!(grant.expires_at, Some(at(FEB)), "ends with the trial");
        assert_eq!(grant.source_id, "trial:acme:pro");
        assert!(paid.subscription.is_some(), "the trial still says the plan");
        // A customer who had the plan's trial (another subscription) gets none again.
        let had = Known {
            promotions: ["trial:acme:pro".to_string()].into(),
            ..known()
        };
        let mut n = 0;
        let again = decide(&trial, &had, &catalog, at(JAN + 60), JAN + 30, || {
            n += 1;
            format!("grant_{n}")
        });
        assert!(matches!(
            &again.lines[0].step,
            LineStep::Trial { grant: None, .. }
        ));
        // The first paid invoice (the trial converted) grants as usual.
        let mut paid_first = invoice(vec![line("il_2", "price_pro", 2000)]);
        paid_first.creation = true;
        assert!(matches!(
            decide_with(&paid_first).lines[0].step,
            LineStep::Grant(_)
        ));
        // Without trial_credits, the $0 invoice grants the allowance at no price, as before.
        let without = decided(&trial, &known());
        assert_eq!(the_grant(&without).grant.credits, credits("1000"));
    }

    #[test]
    fn a_change_never_gives_more_in_a_period_than_the_highest_allowance_held_in_it() {
        let catalog = catalog();
        let mut change = invoice(vec![line("il_2", "price_pro", 1500)]);
        change.lines[0].proration = true;
        let paid = decided(&change, &known());
        let mut bought = the_grant(&paid).clone();
        assert_eq!(
            bought.grant.credits,
            credits("750"),
            "money-proportional first"
        );
        // 600 held from this period's earlier grants: 750 fits under pro's 1,000? No: 400 left.
        let held = [HeldInPeriod {
            plan_id: Some("pro".into()),
            net: credits("600"),
        }];
        cap_change(&mut bought, &held, &catalog);
        assert_eq!(bought.grant.credits, credits("400"));
        // Nothing left: the money stays on one millionth of a credit.
        let mut full = the_grant(&paid).clone();
        let all = [HeldInPeriod {
            plan_id: Some("pro".into()),
            net: credits("1000"),
        }];
        cap_change(&mut full, &all, &catalog);
        assert_eq!(full.grant.credits, Credits::from_micros(1));
        assert_eq!(full.grant.price, Some(credits("15")));
        // A whole period is never capped.
        let mut whole = the_grant(&decided(
            &invoice(vec![line("il_3", "price_pro", 2000)]),
            &known(),
        ))
        .clone();
        cap_change(&mut whole, &all, &catalog);
        assert_eq!(whole.grant.credits, credits("1000"));
    }

    #[test]
    fn a_renewal_line_carries_the_period_before_into_it() {
        let mut fact = invoice(vec![line("il_1", "price_pro", 2000)]);
        fact.renewal = true;
        assert!(the_grant(&decided(&fact, &known())).renewal);
        // A proration on a renewal invoice is not the renewal.
        fact.lines[0].proration = true;
        assert!(!the_grant(&decided(&fact, &known())).renewal);
    }

    #[test]
    fn a_line_applied_before_does_nothing_again_but_still_says_the_plan() {
        let fact = invoice(vec![line("il_1", "price_pro", 2000)]);
        let known = Known {
            applied: ["invoice_line:il_1".to_string()].into(),
            ..known()
        };
        let mut made = 0;
        let paid = decide(&fact, &known, &catalog(), at(JAN), JAN, || {
            made += 1;
            "grant".into()
        });
        assert!(paid.lines.is_empty());
        assert_eq!(made, 0, "no grant is made for a line applied before");
        assert!(paid.subscription.is_some());
        let outcome = outcome(&paid, &[], false);
        assert_eq!(outcome.outcome, OutcomeKind::Applied);
        assert_eq!(outcome.detail, "every line applied before");
    }

    #[test]
    fn an_overage_line_is_paid_overage_of_its_plan() {
        let paid = decided(
            &invoice(vec![line("il_o", "price_pro_overage", 1234)]),
            &known(),
        );
        assert_eq!(
            paid.lines,
            vec![LineApplied {
                effect: "invoice_line:il_o".into(),
                step: LineStep::OveragePaid {
                    plan_id: "pro".into(),
                    money: credits("12.34"),
                    currency: "usd".into(),
                },
            }]
        );
        assert!(paid.subscription.is_none(), "not a plan line");
    }

    #[test]
    fn a_credit_line_naming_its_line_is_a_refund_of_that_line() {
        let mut credit = line("il_c", "price_pro", -500);
        credit.proration = true;
        credit.credits_line = Some("il_0".into());
        let paid = decided(&invoice(vec![credit]), &known());
        assert_eq!(
            paid.lines[0].step,
            LineStep::RefundLine {
                refund_id: "proration:il_c".into(),
                of_payment: "invoice_line:il_0".into(),
                amount_minor: 500,
                currency: "usd".into(),
            }
        );
    }

    #[test]
    fn a_credit_line_naming_no_line_takes_back_from_the_newest_grant() {
        let mut credit = line("il_c", "price_pro", -500);
        credit.proration = true;
        let paid = decided(&invoice(vec![credit]), &known());
        assert_eq!(
            paid.lines[0].step,
            LineStep::CreditBack {
                money: credits("5")
            }
        );
    }

    #[test]
    fn a_proration_charging_half_a_period_grants_half_the_credits() {
        let mut half = line("il_p", "price_pro", 1000);
        half.proration = true;
        let paid = decided(&invoice(vec![half]), &known());
        assert_eq!(the_grant(&paid).grant.credits, credits("500"));
        let mut nothing = line("il_z", "price_pro", 0);
        nothing.proration = true;
        let paid = decided(&invoice(vec![nothing]), &known());
        assert_eq!(paid.lines[0].step, LineStep::Nothing);
    }

    #[test]
    fn lines_no_plan_sells_or_without_a_price_or_period_are_unmapped() {
        let mut no_price = line("il_np", "x", 100);
        no_price.price = None;
        let mut no_period = line("il_nd", "price_pro", 2000);
        no_period.period = None;
        let fact = invoice(vec![line("il_u", "price_other", 100), no_price, no_period]);
        let paid = decided(&fact, &known());
        assert!(paid.lines.is_empty());
        assert_eq!(
            paid.unmapped,
            vec!["price_other", "il_np (no price)", "il_nd (no period)"]
        );
        assert!(paid.subscription.is_none());
        let unmapped = outcome(&paid, &[], false);
        assert_eq!(unmapped.outcome, OutcomeKind::UnmappedPrice);
        // Beside an applied line, an unmapped one is noted in the detail.
        let mut fact = fact;
        fact.lines.push(line("il_1", "price_pro", 2000));
        let paid = decided(&fact, &known());
        let beside = outcome(&paid, &["granted".into()], false);
        assert_eq!(beside.outcome, OutcomeKind::Applied);
        assert!(beside.detail.starts_with("granted; unmapped: "));
    }

    #[test]
    fn the_payment_is_named_read_or_learnt_and_else_the_invoice_stands_for_it() {
        let mut fact = invoice(vec![line("il_1", "price_pro", 2000)]);
        fact.named_payment = None;
        let paid = decided(&fact, &known());
        assert_eq!(paid.payment_key, "in_1");
        assert!(!paid.payment_known);
        assert_eq!(the_grant(&paid).payment_keys[0], "in_1");
        let outcome = outcome(&paid, &["granted".into()], false);
        assert!(outcome.detail.contains("names no payment"), "{outcome:?}");
        fact.read_payments = vec![
            (false, Some("pi_failed".into())),
            (true, Some("pi_read".into())),
        ];
        assert_eq!(decided(&fact, &known()).payment_key, "pi_read");
        fact.read_payments.clear();
        let learnt = Known {
            learnt_payment: Some("pi_learnt".into()),
            ..known()
        };
        assert_eq!(decided(&fact, &learnt).payment_key, "pi_learnt");
        // An invoice that says nothing of what was paid records no payment.
        fact.paid_and_tax = None;
        assert!(decided(&fact, &known()).payments.is_empty());
    }

    #[test]
    fn an_invoice_with_lines_unread_is_pending() {
        let mut fact = invoice(vec![line("il_1", "price_pro", 2000)]);
        fact.unread_lines = true;
        let paid = decided(&fact, &known());
        let outcome = outcome(&paid, &["granted".into()], fact.unread_lines);
        assert_eq!(outcome.outcome, OutcomeKind::Pending);
    }

    #[test]
    fn a_newer_subscription_state_is_kept_and_the_last_full_line_says_the_plan() {
        let mut proration = line("il_p", "price_pro", 1000);
        proration.proration = true;
        proration.quantity = 3;
        let mut full = line("il_f", "price_pro", 2000);
        full.quantity = 2;
        let paid = decided(&invoice(vec![proration, full]), &known());
        let state = paid.subscription.unwrap().state.unwrap();
        assert_eq!(state.quantity, 2, "the full line, not the proration");
        let newer = Known {
            subscription: Some(SubscriptionState {
                status: SubscriptionStatus::Canceled,
                plan_id: Some("pro".into()),
                quantity: 1,
                current_period_end_unix: Some(FEB),
                past_due_since_unix: None,
                as_of_unix: JAN + 3600,
            }),
            ..known()
        };
        let paid = decided(&invoice(vec![line("il_1", "price_pro", 2000)]), &newer);
        assert_eq!(paid.subscription.unwrap().state, None);
    }
}
