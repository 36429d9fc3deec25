//! Billing rules that turn what Stripe reports into credits (README, Stripe, the event table):
//! which account a Stripe customer is, what a checkout grants, what each invoice line grants or
//! takes back (seats, proration, renewal), which payment paid an invoice, and money in minor
//! units. Pure. Subscription states are in [`super::subscription`], refunds and disputes in
//! [`super::refunds`].

use super::Timestamp;
use super::catalog::{Catalog, Pack, Plan};
use super::customer::CustomerId;
use super::money::{AmountError, Credits, Money, SCALE, currency_minor_units};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;

/// How a Stripe customer came to be tied to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkedBy {
    /// No link known: the Stripe customer id is the account id.
    Default,
    ClientReferenceId,
    Metadata,
}

impl LinkedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkedBy::Default => "default",
            LinkedBy::ClientReferenceId => "client_reference_id",
            LinkedBy::Metadata => "metadata",
        }
    }

    /// As stored; anything else is the default link.
    pub fn parse(text: &str) -> LinkedBy {
        match text {
            "client_reference_id" => LinkedBy::ClientReferenceId,
            "metadata" => LinkedBy::Metadata,
            _ => LinkedBy::Default,
        }
    }
}

/// What to do with a Stripe customer's link to an account, given the link known and the account
/// an event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Record this link (none was known).
    New(CustomerId, LinkedBy),
    /// Keep the known account. `ignored` is a second, different account an event named: the
    /// first explicit link wins.
    Keep {
        account: CustomerId,
        ignored: Option<CustomerId>,
    },
    /// The account was the default (the Stripe customer id); an explicit link moves what arrived
    /// before it to the named account.
    Move {
        from: CustomerId,
        to: CustomerId,
        by: LinkedBy,
    },
}

/// The account a Stripe customer belongs to (README, Stripe: Customers).
pub fn link(
    stripe_customer: &str,
    known: Option<(CustomerId, LinkedBy)>,
    named: Option<(CustomerId, LinkedBy)>,
) -> Link {
    match (known, named) {
        // Stripe's own customer id names the account until a link says otherwise.
        (None, None) => Link::New(CustomerId::known(stripe_customer), LinkedBy::Default),
        (None, Some((account, by))) => Link::New(account, by),
        (Some((account, _)), None) => Link::Keep {
            account,
            ignored: None,
        },
        (Some((account, LinkedBy::Default)), Some((to, by))) if account != to => Link::Move {
            from: account,
            to,
            by,
        },
        (Some((account, _)), Some((other, _))) => Link::Keep {
            ignored: (account != other).then_some(other),
            account,
        },
    }
}

impl Link {
    /// The account the Stripe customer belongs to after this.
    pub fn account(&self) -> &CustomerId {
        match self {
            Link::New(account, _) | Link::Keep { account, .. } | Link::Move { to: account, .. } => {
                account
            }
        }
    }
}

stripe_names! {
    /// A checkout session's mode.
    pub enum CheckoutMode {
        Payment = "payment",
        Subscription = "subscription",
        Setup = "setup",
    }
}

stripe_names! {
    /// A checkout session's payment status.
    pub enum PaymentStatus {
        Paid = "paid",
        Unpaid = "unpaid",
        NoPaymentRequired = "no_payment_required",
    }
}

impl PaymentStatus {
    /// Paid, or nothing to pay: credits may follow.
    pub fn is_settled(&self) -> bool {
        matches!(self, Self::Paid | Self::NoPaymentRequired)
    }
}

/// What a completed checkout session does beyond linking its customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutStep {
    /// Not a one-time payment (a subscription, a setup): plan credits come from paid invoices.
    LinkOnly,
    /// Not paid yet: credits follow `checkout.session.async_payment_succeeded`.
    AwaitPayment,
    /// Paid: grant the pack it bought.
    GrantPack,
}

pub fn checkout_step(mode: Option<&CheckoutMode>, payment: Option<&PaymentStatus>) -> CheckoutStep {
    if mode != Some(&CheckoutMode::Payment) {
        CheckoutStep::LinkOnly
    } else if payment.is_some_and(PaymentStatus::is_settled) {
        CheckoutStep::GrantPack
    } else {
        CheckoutStep::AwaitPayment
    }
}

/// The pack a paid checkout bought, and how many.
#[derive(Debug, Clone)]
pub enum PackChoice<'a> {
    Bought(&'a Pack, i64),
    /// The metadata names a pack the catalog does not have, or no pack sells the line items'
    /// prices (said in the detail).
    Unmapped(String),
    /// No `creditbook_pack` metadata and the line items are not known (no API key to read them).
    LineItemsUnknown,
}

/// The pack named by metadata `creditbook_pack`, or else the pack selling the first line item
/// price a pack sells, times the line's quantity (at least 1).
pub fn choose_pack<'a>(
    catalog: &'a Catalog,
    named: Option<&str>,
    line_items: Option<&[(String, i64)]>,
) -> PackChoice<'a> {
    if let Some(id) = named {
        return match catalog.pack(id) {
            Some(pack) => PackChoice::Bought(pack, 1),
            None => PackChoice::Unmapped(format!("pack {id:?} is not in the catalog")),
        };
    }
    let Some(items) = line_items else {
        return PackChoice::LineItemsUnknown;
    };
    let found = items.iter().find_map(|(price, quantity)| {
        catalog
            .pack_for_price(price)
            .map(|p| PackChoice::Bought(p, (*quantity).max(1)))
    });
    found.unwrap_or_else(|| {
        let prices: Vec<&str> = items.iter().map(|(p, _)| p.as_str()).collect();
        PackChoice::Unmapped(format!("no pack sells prices {prices:?}"))
    })
}

/// What a bought pack grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackTerms {
    pub credits: Credits,
    /// What was paid for it, tax excluded, in major units of `currency`.
    pub price: Money,
    pub currency: String,
    pub expires_at: Option<Timestamp>,
}

/// The pack's credits × quantity; the price paid net of tax (the catalog's price × quantity when
/// the session does not say) in the session's currency; expiring `expires_after_days` after the
/// purchase.
pub fn pack_terms(
    pack: &Pack,
    quantity: i64,
    paid_net_of_tax_minor: Option<i64>,
    currency: Option<&str>,
    bought_at: Timestamp,
) -> Result<PackTerms, AmountError> {
    let currency = currency
        .unwrap_or(&pack.price.currency)
        .to_ascii_lowercase();
    let price = match paid_net_of_tax_minor {
        Some(minor) => money_from_minor(minor.max(0), &currency),
        None => Money::new(pack.price.amount * Decimal::from(quantity))?,
    };
    Ok(PackTerms {
        credits: Credits::new(pack.credits.value() * Decimal::from(quantity))?,
        price,
        currency,
        expires_at: pack
            .expires_after_days
            .map(|d| bought_at + chrono::Duration::days(i64::from(d))),
    })
}

stripe_names! {
    /// Why an invoice was made.
    pub enum BillingReason {
        /// A renewal: the first invoice of a new period.
        SubscriptionCycle = "subscription_cycle",
        SubscriptionCreate = "subscription_create",
        SubscriptionUpdate = "subscription_update",
    }
}

/// An invoice line of a plan's price, as the rules need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineFacts {
    /// Seats (at least 1).
    pub quantity: i64,
    /// The line's amount less discounts and included tax, in minor units; negative for a credit.
    pub amount_minor: i64,
    pub proration: bool,
    /// A whole period's price of one unit, in minor units (fractional for `unit_amount_decimal`).
    pub unit_amount_minor: Option<Decimal>,
    /// The line a credit (negative) line gives money back for, when it names one.
    pub credits_line: Option<String>,
    /// The invoice is a renewal (`billing_reason = subscription_cycle`).
    pub renewal_invoice: bool,
}

/// What one invoice line does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEffect {
    /// Grant the plan's credits for the line's period, for what the line charged.
    Grant {
        credits: Credits,
        price_minor: i64,
        /// A renewal carries unused credits of the period before into this one (the plan has a
        /// `rollover_max`).
        renewal: bool,
    },
    /// A credit line gives money back: a refund of the line it names, or else of the
    /// subscription's newest grant.
    GiveBack {
        of_line: Option<String>,
        amount_minor: i64,
    },
    /// Nothing to grant (a proration worth no credits).
    Nothing,
}

/// A plan line's effect: the plan's credits for the period (× seats for per-seat plans); a
/// proration that charges, in the proportion its amount bears to a whole period's; a credit
/// (negative) line, money given back.
pub fn line_effect(plan: &Plan, line: &LineFacts) -> LineEffect {
    if line.amount_minor < 0 {
        return LineEffect::GiveBack {
            of_line: line.credits_line.clone(),
            amount_minor: -line.amount_minor,
        };
    }
    let credits = match (line.proration, line.unit_amount_minor) {
        (true, Some(unit)) => prorated_credits(plan, line.quantity, line.amount_minor, unit),
        _ => period_credits(plan, line.quantity),
    };
    if !credits.is_positive() {
        return LineEffect::Nothing;
    }
    LineEffect::Grant {
        credits,
        price_minor: line.amount_minor,
        renewal: line.renewal_invoice && !line.proration && plan.rollover_max.is_positive(),
    }
}

/// Of an invoice's plan lines (each with whether it is a proration), the one that says what the
/// subscription is: the last that is not a proration, else the first.
pub fn subscription_line<T>(lines: impl IntoIterator<Item = (T, bool)>) -> Option<T> {
    let mut chosen: Option<T> = None;
    for (line, proration) in lines {
        if !proration || chosen.is_none() {
            chosen = Some(line);
        }
    }
    chosen
}

stripe_names! {
    /// An invoice payment's status (API version 2025-03-31.basil and later).
    pub enum InvoicePaymentStatus {
        Paid = "paid",
        Open = "open",
        Canceled = "canceled",
    }
}

/// The payment that paid an invoice: named on the invoice (before API version
/// 2025-03-31.basil), else the first paid one read from `/v1/invoice_payments` (each given as
/// whether it is paid, and its payment intent or charge), else one learnt before from
/// `invoice_payment.paid`. `None`: not known yet.
pub fn invoice_payment_key(
    named: Option<&str>,
    read: &[(bool, Option<String>)],
    learnt: Option<String>,
) -> Option<String> {
    named
        .map(str::to_owned)
        .or_else(|| {
            read.iter()
                .filter(|(paid, _)| *paid)
                .find_map(|(_, key)| key.clone())
        })
        .or(learnt)
}

/// An amount Stripe sends in the currency's minor units, as money in major units (exact).
pub fn money_from_minor(amount_minor: i64, currency: &str) -> Money {
    let value = Decimal::new(amount_minor, currency_minor_units(currency));
    Money::new(value).expect("a currency has at most 3 minor digits, within the credit scale")
}

/// Money in major units, as the currency's minor units (exact for amounts of that currency).
pub fn money_to_minor(money: Money, currency: &str) -> i64 {
    let scaled = money.value() * Decimal::from(10_i64.pow(currency_minor_units(currency)));
    i64::try_from(scaled.round()).unwrap_or(i64::MAX)
}

/// Credits to a per-credit scale, rounded down: a customer is never granted a fraction of a
/// micro-credit that was not paid for.
fn round_down(value: Decimal) -> Credits {
    Credits::new(value.round_dp_with_strategy(SCALE, RoundingStrategy::ToZero))
        .expect("rounded to the credit scale")
}

/// Credits a whole period of `plan` gives for `quantity` (seats count only for per-seat plans).
pub fn period_credits(plan: &Plan, quantity: i64) -> Credits {
    let seats = if plan.per_seat { quantity.max(1) } else { 1 };
    Credits::new(plan.credits.value() * Decimal::from(seats)).expect("credits times seats")
}

/// Credits for a proration line that charges for part of a period: the period's credits in the
/// proportion the line's amount bears to a whole period's (unit amount x quantity). This is the
/// proration rule: credits follow money, as on the customer's invoice. Capped at a whole period.
pub fn prorated_credits(
    plan: &Plan,
    quantity: i64,
    amount_minor: i64,
    unit_amount_minor: Decimal,
) -> Credits {
    let whole = period_credits(plan, quantity);
    let period_amount = unit_amount_minor * Decimal::from(quantity.max(1));
    if period_amount <= Decimal::ZERO || amount_minor <= 0 {
        return Credits::ZERO;
    }
    let share = (Decimal::from(amount_minor) / period_amount).min(Decimal::ONE);
    round_down(whole.value() * share)
}

/// What a renewal may still carry over of the period before it: the plan's `rollover_max` less
/// what was carried already, by however many events the period's grants arrived in. A renewal
/// whose carried total is not known (`None`) has none left.
pub fn rollover_room(rollover_max: Credits, carried: Option<Credits>) -> Credits {
    match carried {
        Some(carried) => (rollover_max - carried).max(Credits::ZERO),
        None => Credits::ZERO,
    }
}

/// The part of money taken back from a payment (a refund or a lost dispute, which Stripe counts
/// tax included) that was price: the same share as the price is of what was paid, rounded to
/// the minor unit, half away from zero, never above the price. Tax is the tax authority's, not
/// revenue, so it is never taken back as if it were price. Without a known tax, all of it.
pub fn price_share_of_refund(refunded_minor: i64, paid_minor: i64, tax_minor: i64) -> i64 {
    if refunded_minor <= 0 || paid_minor <= 0 || tax_minor <= 0 {
        return refunded_minor.max(0);
    }
    let price = (paid_minor - tax_minor).max(0);
    let share = Decimal::from(refunded_minor) * Decimal::from(price) / Decimal::from(paid_minor);
    let rounded = share.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(rounded.mantissa()).map_or(price, |v| v.min(price))
}

/// What an event did (README, Stripe), as recorded beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    Applied,
    Duplicate,
    Ignored,
    Pending,
    UnknownType,
    UnmappedPrice,
    /// Of the Stripe mode this server does not apply (`[stripe] livemode`).
    OtherMode,
}

impl OutcomeKind {
    pub const ALL: [OutcomeKind; 7] = [
        OutcomeKind::Applied,
        OutcomeKind::Duplicate,
        OutcomeKind::Ignored,
        OutcomeKind::Pending,
        OutcomeKind::UnknownType,
        OutcomeKind::UnmappedPrice,
        OutcomeKind::OtherMode,
    ];

    pub fn parse(text: &str) -> Option<OutcomeKind> {
        OutcomeKind::ALL.into_iter().find(|o| o.as_str() == text)
    }

    /// What an operator does about an event with this outcome.
    pub fn advice(self) -> &'static str {
        match self {
            OutcomeKind::Applied | OutcomeKind::Duplicate => "Nothing: it is in the books.",
            OutcomeKind::Ignored => {
                "Nothing, unless the detail names something that should concern creditbook."
            }
            OutcomeKind::Pending => {
                "Something it needs has not arrived (the detail says what). It applies when that \
                 arrives; with [stripe] api_key set, `creditbook stripe sync --since DATE` reads \
                 it now."
            }
            OutcomeKind::UnknownType => {
                "creditbook does not act on this type: stop sending it in the Stripe \
                 endpoint's events."
            }
            OutcomeKind::UnmappedPrice => {
                "Add the price to a plan's or a pack's stripe_prices, restart, then resend the \
                 event from the Stripe dashboard or run `creditbook stripe sync --since DATE`."
            }
            OutcomeKind::OtherMode => {
                "Nothing was applied: the event is of the other Stripe mode than [stripe] \
                 livemode. Point the Stripe endpoint of that mode at the server of that mode."
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Applied => "applied",
            OutcomeKind::Duplicate => "duplicate",
            OutcomeKind::Ignored => "ignored",
            OutcomeKind::Pending => "pending",
            OutcomeKind::UnknownType => "unknown_type",
            OutcomeKind::UnmappedPrice => "unmapped_price",
            OutcomeKind::OtherMode => "other_mode",
        }
    }
}

impl std::fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a Stripe event came from: delivered to the webhook, or read back by `stripe sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOrigin {
    Webhook,
    Sync,
}

impl EventOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            EventOrigin::Webhook => "webhook",
            EventOrigin::Sync => "sync",
        }
    }
}

/// What an event did, and how, as recorded beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub outcome: OutcomeKind,
    pub detail: String,
}

impl Outcome {
    pub fn new(outcome: OutcomeKind, detail: impl Into<String>) -> Self {
        Outcome {
            outcome,
            detail: detail.into(),
        }
    }

    /// An event received before: applied once, recorded once.
    pub fn duplicate() -> Self {
        Outcome::new(OutcomeKind::Duplicate, "event already received")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Breakage;
    use std::str::FromStr;

    fn plan(credits: &str, per_seat: bool) -> Plan {
        Plan {
            credits: Credits::new(Decimal::from_str(credits).unwrap()).unwrap(),
            per_seat,
            ..Plan::bare("p")
        }
    }

    fn pack(id: &str, prices: &[&str], credits: i64, price: &str, days: Option<u32>) -> Pack {
        Pack {
            id: id.into(),
            stripe_prices: prices.iter().map(|p| p.to_string()).collect(),
            credits: Credits::new(Decimal::from(credits)).unwrap(),
            price: crate::domain::money::Price::new(Decimal::from_str(price).unwrap(), "usd")
                .unwrap(),
            expires_after_days: days,
            breakage: Breakage::Remote,
            priority: 20,
            low_balance: None,
            top_up_url: None,
        }
    }

    fn catalog() -> Catalog {
        let mut pro = plan("1000", true);
        pro.id = "pro".into();
        pro.stripe_prices = vec!["price_pro".into()];
        Catalog {
            currency: "usd".into(),
            features: Default::default(),
            actions: Default::default(),
            plans: [("pro".to_string(), pro)].into(),
            packs: [
                (
                    "small".to_string(),
                    pack("small", &["price_s"], 500, "5", Some(30)),
                ),
                (
                    "large".to_string(),
                    pack("large", &["price_l"], 6000, "50", None),
                ),
            ]
            .into(),
            ..Default::default()
        }
    }

    fn at(unix: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(unix, 0).unwrap()
    }

    /// Rows `checkout.session.completed` (paid, unpaid, `mode=subscription`): what a session
    /// does beyond linking its customer.
    #[test]
    fn a_checkout_grants_only_when_paid_for_a_payment() {
        use CheckoutMode::*;
        let paid = PaymentStatus::Paid;
        let free = PaymentStatus::NoPaymentRequired;
        let unpaid = PaymentStatus::Unpaid;
        assert_eq!(
            checkout_step(Some(&Payment), Some(&paid)),
            CheckoutStep::GrantPack
        );
        assert_eq!(
            checkout_step(Some(&Payment), Some(&free)),
            CheckoutStep::GrantPack
        );
        assert_eq!(
            checkout_step(Some(&Payment), Some(&unpaid)),
            CheckoutStep::AwaitPayment
        );
        assert_eq!(
            checkout_step(Some(&Payment), None),
            CheckoutStep::AwaitPayment
        );
        assert_eq!(
            checkout_step(Some(&Subscription), Some(&paid)),
            CheckoutStep::LinkOnly
        );
        assert_eq!(checkout_step(Some(&Setup), None), CheckoutStep::LinkOnly);
        assert_eq!(checkout_step(None, Some(&paid)), CheckoutStep::LinkOnly);
    }

    /// Row `checkout.session.completed`, paid: the pack named by metadata, else the pack of a
    /// line item's price × its quantity; the price paid net of tax; expiry from the purchase.
    #[test]
    fn a_paid_checkout_grants_the_pack_it_bought() {
        let catalog = catalog();
        let choice = choose_pack(&catalog, Some("small"), None);
        assert!(matches!(choice, PackChoice::Bought(p, 1) if p.id == "small"));
        assert!(matches!(
            choose_pack(&catalog, Some("huge"), None),
            PackChoice::Unmapped(d) if d.contains("huge")
        ));
        assert!(matches!(
            choose_pack(&catalog, None, None),
            PackChoice::LineItemsUnknown
        ));
        let items = [("price_other".to_string(), 9), ("price_l".to_string(), 2)];
        assert!(matches!(
            choose_pack(&catalog, None, Some(&items)),
            PackChoice::Bought(p, 2) if p.id == "large"
        ));
        let zero = [("price_s".to_string(), 0)];
        assert!(matches!(
            choose_pack(&catalog, None, Some(&zero)),
            PackChoice::Bought(_, 1)
        ));
        let unknown = [("price_x".to_string(), 1)];
        assert!(matches!(
            choose_pack(&catalog, None, Some(&unknown)),
            PackChoice::Unmapped(d) if d.contains("price_x")
        ));

        let small = catalog.pack("small").unwrap();
        let terms = pack_terms(small, 3, Some(1_350), Some("EUR"), at(0)).unwrap();
        assert_eq!(terms.credits.to_string(), "1500");
        assert_eq!(terms.price.to_string(), "13.5");
        assert_eq!(terms.currency, "eur");
        assert_eq!(terms.expires_at, Some(at(30 * 86_400)));
        // The session does not say what was paid: the catalog's price × quantity.
        let terms = pack_terms(small, 2, None, None, at(0)).unwrap();
        assert_eq!(
            (terms.price.to_string(), terms.currency),
            ("10".into(), "usd".into())
        );
        let large = catalog.pack("large").unwrap();
        assert_eq!(
            pack_terms(large, 1, Some(5_000), None, at(0))
                .unwrap()
                .expires_at,
            None
        );
    }

    fn line(amount: i64, quantity: i64) -> LineFacts {
        LineFacts {
            quantity,
            amount_minor: amount,
            proration: false,
            unit_amount_minor: Some(Decimal::from(3_000)),
            credits_line: None,
            renewal_invoice: false,
        }
    }

    /// Row `invoice.paid`: per plan line, the plan's credits × seats; a charging proration in
    /// proportion; a crediting one gives money back; a renewal line carries over.
    #[test]
    fn each_invoice_line_grants_or_gives_back() {
        let mut pro = plan("1000", true);
        assert_eq!(
            line_effect(&pro, &line(9_000, 3)),
            LineEffect::Grant {
                credits: Credits::new(Decimal::from(3_000)).unwrap(),
                price_minor: 9_000,
                renewal: false,
            }
        );
        let half = LineFacts {
            proration: true,
            ..line(4_500, 3)
        };
        assert!(matches!(
            line_effect(&pro, &half),
            LineEffect::Grant { credits, renewal: false, .. } if credits.to_string() == "1500"
        ));
        let nothing = LineFacts {
            proration: true,
            ..line(0, 1)
        };
        assert_eq!(line_effect(&pro, &nothing), LineEffect::Nothing);
        let credit = LineFacts {
            proration: true,
            credits_line: Some("il_1".into()),
            ..line(-1_500, 1)
        };
        assert_eq!(
            line_effect(&pro, &credit),
            LineEffect::GiveBack {
                of_line: Some("il_1".into()),
                amount_minor: 1_500
            }
        );
        // A renewal carries over only when the plan allows it, and never on a proration.
        let renewal = LineFacts {
            renewal_invoice: true,
            ..line(3_000, 1)
        };
        assert!(matches!(
            line_effect(&pro, &renewal),
            LineEffect::Grant { renewal: false, .. }
        ));
        pro.rollover_max = Credits::new(Decimal::from(500)).unwrap();
        assert!(matches!(
            line_effect(&pro, &renewal),
            LineEffect::Grant { renewal: true, .. }
        ));
        let prorated_renewal = LineFacts {
            proration: true,
            ..renewal
        };
        assert!(matches!(
            line_effect(&pro, &prorated_renewal),
            LineEffect::Grant { renewal: false, .. }
        ));
        // The subscription's line: the last that is not a proration, else the first.
        assert_eq!(
            subscription_line([("a", true), ("b", false), ("c", false)]),
            Some("c")
        );
        assert_eq!(subscription_line([("a", true), ("b", true)]), Some("a"));
        assert_eq!(subscription_line(Vec::<(&str, bool)>::new()), None);
    }

    /// Row `invoice_payment.paid` (and `invoice.paid` since basil): which payment paid the
    /// invoice.
    #[test]
    fn the_invoices_payment_is_named_read_or_learnt() {
        let read = [
            (false, Some("pi_open".to_string())),
            (true, None),
            (true, Some("pi_paid".to_string())),
        ];
        let learnt = Some("pi_learnt".to_string());
        assert_eq!(
            invoice_payment_key(Some("pi_named"), &read, learnt.clone()).as_deref(),
            Some("pi_named")
        );
        assert_eq!(
            invoice_payment_key(None, &read, learnt.clone()).as_deref(),
            Some("pi_paid")
        );
        assert_eq!(
            invoice_payment_key(None, &read[..2], learnt).as_deref(),
            Some("pi_learnt")
        );
        assert_eq!(invoice_payment_key(None, &[], None), None);
    }

    /// Rows `customer.created` / `.updated` and the Customers rule: a link learnt later moves
    /// what arrived before it; the first explicit link wins.
    #[test]
    fn the_first_explicit_link_wins() {
        use LinkedBy::*;
        let id = |a: &str| CustomerId::known(a);
        let named = |a: &str, by| Some((id(a), by));
        assert_eq!(link("cus_1", None, None), Link::New(id("cus_1"), Default));
        assert_eq!(
            link("cus_1", None, named("acme", Metadata)),
            Link::New(id("acme"), Metadata)
        );
        assert_eq!(
            link(
                "cus_1",
                named("cus_1", Default),
                named("acme", ClientReferenceId)
            ),
            Link::Move {
                from: id("cus_1"),
                to: id("acme"),
                by: ClientReferenceId
            }
        );
        let kept = link("cus_1", named("acme", Metadata), named("other", Metadata));
        assert_eq!(
            kept,
            Link::Keep {
                account: id("acme"),
                ignored: Some(id("other"))
            }
        );
        assert_eq!(kept.account(), "acme");
        assert_eq!(
            link("cus_1", named("acme", Metadata), named("acme", Metadata)),
            Link::Keep {
                account: id("acme"),
                ignored: None
            }
        );
        assert_eq!(
            link("cus_1", named("cus_1", Default), None).account(),
            "cus_1"
        );
    }

    #[test]
    fn minor_units_follow_the_currency() {
        assert_eq!(money_from_minor(4999, "cad").to_string(), "49.99");
        assert_eq!(money_from_minor(500, "jpy").to_string(), "500");
        assert_eq!(money_from_minor(1234, "kwd").to_string(), "1.234");
        assert_eq!(money_to_minor(money_from_minor(2990, "brl"), "brl"), 2990);
    }

    #[test]
    fn seats_multiply_only_per_seat_plans() {
        assert_eq!(period_credits(&plan("5000", true), 3).to_string(), "15000");
        assert_eq!(period_credits(&plan("2000", false), 3).to_string(), "2000");
    }

    #[test]
    fn proration_follows_money_and_rounds_down() {
        // Half a period of 3 seats at 30.00 a seat: 45.00 of 90.00.
        let p = plan("5000", true);
        let unit = Decimal::from(3000);
        assert_eq!(prorated_credits(&p, 3, 4500, unit).to_string(), "7500");
        // A third of a period: 10000/3 credits, rounded down at the sixth place.
        let p = plan("10000", false);
        assert_eq!(
            prorated_credits(&p, 1, 1000, unit).to_string(),
            "3333.333333"
        );
        // Never more than a whole period, never negative.
        assert_eq!(prorated_credits(&p, 1, 9000, unit).to_string(), "10000");
        assert_eq!(prorated_credits(&p, 1, -1000, unit), Credits::ZERO);
    }

    #[test]
    fn rollover_room_is_shared_by_the_grants_of_one_boundary() {
        let max = Credits::new(Decimal::from(1000)).unwrap();
        let c = |n: i64| Credits::new(Decimal::from(n)).unwrap();
        assert_eq!(rollover_room(max, Some(Credits::ZERO)), c(1000));
        assert_eq!(rollover_room(max, Some(c(600))), c(400));
        assert_eq!(rollover_room(max, Some(c(1000))), Credits::ZERO);
        // A smaller maximum configured since: nothing more, never negative.
        assert_eq!(rollover_room(c(500), Some(c(600))), Credits::ZERO);
        // Rolled over before the carried total was kept: its room counts as used.
        assert_eq!(rollover_room(max, None), Credits::ZERO);
    }

    #[test]
    fn a_refunds_tax_share_is_not_price() {
        // 11.00 paid, 1.00 of it tax: a refund of 5.50 gives back 5.00 of price.
        assert_eq!(price_share_of_refund(550, 1100, 100), 500);
        assert_eq!(price_share_of_refund(1100, 1100, 100), 1000);
        // Half away from zero: 1 of 3 paid (tax 1) is 0.67 of price, rounded to 1.
        assert_eq!(price_share_of_refund(1, 3, 1), 1);
        // No tax, or not known: all of it is price.
        assert_eq!(price_share_of_refund(550, 1100, 0), 550);
        assert_eq!(price_share_of_refund(550, 0, 0), 550);
        // Never above the price, never negative.
        assert_eq!(price_share_of_refund(5_000, 1100, 100), 1000);
        assert_eq!(price_share_of_refund(-5, 1100, 100), 0);
    }
}
