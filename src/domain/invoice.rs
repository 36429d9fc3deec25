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
}

impl Known {
    /// What is known of a first invoice of `customer`: nothing yet.
    pub fn of(customer: CustomerId) -> Known {
        Known {
            customer,
            learnt_payment: None,
            applied: HashSet::new(),
            subscription: None,
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
    /// Worth no credits (a proration of nothing): marked applied, nothing else.
    Nothing,
}

/// The plan credits a paid line buys.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanGrant {
    pub grant: Grant,
    pub plan_id: String,
    pub period: (Timestamp, Timestamp),
    /// A renewal carries unused credits of the period ending at its start into it.
    pub renewal: bool,
    /// The keys its refunds will name: the payment, the invoice, the line.
    pub payment_keys: [String; 3],
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
        let step = step.finish(fact, line, &paid.payment_key, now, &mut grant_id);
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
            period: (start, end),
            credits,
            paid: Paid {
                price: money_from_minor(price_minor, &currency),
                currency,
            },
            renewal,
        },
    })
}

/// A line's step, its grant not yet made (a line applied before makes none).
enum Pending {
    Ready(LineStep),
    Grant {
        plan_id: String,
        priority: i32,
        period: (Timestamp, Timestamp),
        credits: Credits,
        paid: Paid,
        renewal: bool,
    },
}

impl Pending {
    fn finish(
        self,
        fact: &InvoiceFact,
        line: &InvoiceLineFact,
        payment_key: &str,
        now: Timestamp,
        grant_id: &mut impl FnMut() -> String,
    ) -> LineStep {
        let (plan_id, priority, period, credits, paid, renewal) = match self {
            Pending::Ready(step) => return step,
            Pending::Grant {
                plan_id,
                priority,
                period,
                credits,
                paid,
                renewal,
            } => (plan_id, priority, period, credits, paid, renewal),
        };
        let effect = line.effect();
        let grant = Grant::plan(
            grant_id(),
            &plan_id,
            credits,
            Some(paid),
            Some(period.0),
            (GrantSource::Stripe, effect.clone()),
            now,
        )
        .expiring(Some(period.1))
        .at_priority(priority);
        LineStep::Grant(Box::new(PlanGrant {
            grant,
            plan_id,
            period,
            renewal,
            payment_keys: [payment_key.to_owned(), fact.invoice_id.clone(), effect],
        }))
    }
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
