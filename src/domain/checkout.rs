//! A completed checkout session as a fact, and the event table's checkout rows as one pure
//! decision over it and what the books know (README, Stripe, the event table). A batch of
//! checkout events is decided in the order received against one [`Known`], which each decision
//! updates, so the store reads once for the whole batch and writes once: two deliveries of one
//! session in a batch grant once, two sessions of one new Stripe customer link it once.

use super::Timestamp;
use super::billing::{
    CheckoutMode, CheckoutStep, Link, LinkedBy, Outcome, OutcomeKind, PackChoice, PaymentStatus,
    checkout_step, choose_pack, link, pack_terms,
};
use super::catalog::{Catalog, Pack};
use super::customer::CustomerId;
use super::ledger::{Grant, GrantSource, Paid};
use std::collections::{HashMap, HashSet};

/// What a `checkout.session.completed` or `checkout.session.async_payment_succeeded` event says,
/// as read by the tolerant parser (and the line items read from the API when the event has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutFact {
    pub event_id: String,
    /// The event's `created` (Unix seconds).
    pub event_created: i64,
    pub session_id: String,
    pub stripe_customer: Option<String>,
    /// The account the session names: `client_reference_id`, else metadata
    /// `creditbook_customer`.
    pub named: Option<(CustomerId, LinkedBy)>,
    pub mode: Option<CheckoutMode>,
    pub payment_status: Option<PaymentStatus>,
    /// Metadata `creditbook_pack`.
    pub pack_named: Option<String>,
    /// `(price, quantity)` of the line items, when known.
    pub line_items: Option<Vec<(String, i64)>>,
    /// The session's `created` (Unix seconds).
    pub created: Option<i64>,
    pub paid_net_of_tax_minor: Option<i64>,
    pub currency: Option<String>,
    /// The payment its refunds and disputes will name: the payment intent, else the session.
    pub payment_key: String,
    pub paid_minor: Option<i64>,
    pub tax_minor: i64,
}

impl CheckoutFact {
    /// What makes the grant once.
    pub fn effect(&self) -> String {
        format!("checkout:{}", self.session_id)
    }
}

/// What the books know that checkout events decide on; read once for a batch and updated by
/// each decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// Event ids already recorded.
    pub events: HashSet<String>,
    /// Stripe customer → the account it is linked to, and how.
    pub links: HashMap<String, (CustomerId, LinkedBy)>,
    /// Effects already applied (`checkout:{session}`).
    pub effects: HashSet<String>,
    /// Payments Stripe has told of a refund, a refunded charge or a dispute for.
    pub taken_back: HashSet<String>,
}

/// A pack a checkout grants.
#[derive(Debug, Clone, PartialEq)]
pub struct PackGrant {
    pub customer: CustomerId,
    pub grant: Grant,
    /// `checkout:{session}`.
    pub effect: String,
    pub payment_key: String,
    /// `(paid, tax)` in minor units of the grant's currency, when the session says.
    pub payment: Option<(i64, i64)>,
}

/// What one checkout event writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub outcome: Outcome,
    /// A link to record: `(stripe customer, account, how)`.
    pub link: Option<(String, CustomerId, LinkedBy)>,
    /// A second, different account the session named: the first explicit link is kept.
    pub ignored_link: Option<CustomerId>,
    /// The account whose books the event concerns.
    pub concerns: Option<CustomerId>,
    pub grant: Option<PackGrant>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The event was recorded before: nothing is written.
    Duplicate,
    /// Record the event with what it did.
    Apply(Box<Applied>),
    /// Refused (a quantity or a time out of range): nothing is written. `(field, why)`.
    Refused(&'static str, String),
    /// Needs what a batch does not decide: a link that moves what arrived before it, or a
    /// payment with refunds or disputes to settle. Applied on its own, after the events before it.
    Alone,
}

impl Known {
    /// Decides one checkout event, and notes what it writes. `grant_id` names the grant it makes.
    pub fn decide(
        &mut self,
        fact: &CheckoutFact,
        catalog: &Catalog,
        now: Timestamp,
        grant_id: impl FnOnce() -> String,
    ) -> Decision {
        if self.events.contains(&fact.event_id) {
            return Decision::Duplicate;
        }
        let decision = self.decide_new(fact, catalog, now, grant_id);
        if let Decision::Apply(applied) = &decision {
            self.events.insert(fact.event_id.clone());
            if let Some((stripe_customer, account, by)) = &applied.link {
                self.links
                    .insert(stripe_customer.clone(), (account.clone(), *by));
            }
            if let Some(grant) = &applied.grant {
                self.effects.insert(grant.effect.clone());
            }
        }
        decision
    }

    // Long: one branch per row of the event table's checkout rows, in the order they apply.
    fn decide_new(
        &self,
        fact: &CheckoutFact,
        catalog: &Catalog,
        now: Timestamp,
        grant_id: impl FnOnce() -> String,
    ) -> Decision {
        let mut applied = Applied {
            outcome: Outcome::new(OutcomeKind::Applied, ""),
            link: None,
            ignored_link: None,
            concerns: None,
            grant: None,
        };
        let customer = match (&fact.stripe_customer, &fact.named) {
            (Some(stripe_customer), named) => {
                let known = self.links.get(stripe_customer).cloned();
                match link(stripe_customer, known, named.clone()) {
                    Link::Move { .. } => return Decision::Alone,
                    Link::New(account, by) => {
                        applied.link = Some((stripe_customer.clone(), account.clone(), by));
                        account
                    }
                    Link::Keep { account, ignored } => {
                        applied.ignored_link = ignored;
                        account
                    }
                }
            }
            (None, Some((account, _))) => account.clone(),
            (None, None) => {
                applied.outcome = Outcome::new(
                    OutcomeKind::Ignored,
                    "the session names no customer, client_reference_id or creditbook_customer",
                );
                return Decision::Apply(Box::new(applied));
            }
        };
        applied.concerns = Some(customer.clone());
        match checkout_step(fact.mode.as_ref(), fact.payment_status.as_ref()) {
            CheckoutStep::LinkOnly => {
                applied.outcome = Outcome::new(
                    OutcomeKind::Applied,
                    format!("customer {customer} linked; plan credits come from paid invoices"),
                );
                return Decision::Apply(Box::new(applied));
            }
            CheckoutStep::AwaitPayment => {
                applied.outcome = Outcome::new(
                    OutcomeKind::Ignored,
                    "not paid yet; credits follow checkout.session.async_payment_succeeded",
                );
                return Decision::Apply(Box::new(applied));
            }
            CheckoutStep::GrantPack => {}
        }
        let (pack, quantity) = match choose_pack(
            catalog,
            fact.pack_named.as_deref(),
            fact.line_items.as_deref(),
        ) {
            PackChoice::Bought(pack, quantity) => (pack, quantity),
            PackChoice::Unmapped(detail) => {
                applied.outcome = Outcome::new(OutcomeKind::UnmappedPrice, detail);
                return Decision::Apply(Box::new(applied));
            }
            PackChoice::LineItemsUnknown => {
                applied.outcome = Outcome::new(
                    OutcomeKind::UnmappedPrice,
                    "no creditbook_pack metadata, and no API key to read the line items",
                );
                return Decision::Apply(Box::new(applied));
            }
        };
        let effect = fact.effect();
        if self.effects.contains(&effect) {
            applied.outcome =
                Outcome::new(OutcomeKind::Applied, format!("{effect} applied before"));
            return Decision::Apply(Box::new(applied));
        }
        if self.taken_back.contains(&fact.payment_key) {
            return Decision::Alone;
        }
        let purchase = Purchase {
            effect,
            created: fact.created.unwrap_or(fact.event_created),
            quantity,
            paid_net_of_tax_minor: fact.paid_net_of_tax_minor,
            currency: fact.currency.clone(),
            payment_key: fact.payment_key.clone(),
            paid_minor: fact.paid_minor,
            tax_minor: fact.tax_minor,
        };
        match pack_grant(pack, &customer, purchase, grant_id(), now) {
            Ok((grant, outcome)) => {
                applied.outcome = outcome;
                applied.grant = Some(grant);
            }
            Err((field, why)) => return Decision::Refused(field, why),
        }
        Decision::Apply(Box::new(applied))
    }
}

/// A pack bought: from a checkout session, or an automatic top-up's payment intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    /// What makes the grant once: `checkout:{session}` or `payment_intent:{id}`.
    pub effect: String,
    /// When it was bought (Unix seconds): the purchase's creation, which webhooks and backfill
    /// both know, else the event's.
    pub created: i64,
    pub quantity: i64,
    pub paid_net_of_tax_minor: Option<i64>,
    pub currency: Option<String>,
    /// The payment its refunds and disputes name.
    pub payment_key: String,
    pub paid_minor: Option<i64>,
    pub tax_minor: i64,
}

/// What a bought pack grants `customer` (README, the event table): the pack's credits ×
/// quantity, the price paid net of tax, expiring from the purchase; and what the event says
/// of it. Refused, `(field, why)`, when the purchase time is out of range.
pub fn pack_grant(
    pack: &Pack,
    customer: &CustomerId,
    purchase: Purchase,
    grant_id: String,
    now: Timestamp,
) -> Result<(PackGrant, Outcome), (&'static str, String)> {
    let created = purchase.created;
    let bought_at = chrono::DateTime::from_timestamp(created, 0)
        .ok_or_else(|| ("created", format!("{created} is not a valid time")))?;
    let terms = pack_terms(
        pack,
        purchase.quantity,
        purchase.paid_net_of_tax_minor,
        purchase.currency.as_deref(),
        bought_at,
    )
    .map_err(|e| ("quantity", e.to_string()))?;
    let credits = terms.credits;
    let effect = purchase.effect;
    let grant = Grant::pack(
        grant_id,
        &pack.id,
        credits,
        Paid {
            price: terms.price,
            currency: terms.currency,
        },
        (GrantSource::Stripe, effect.clone()),
        now,
    )
    .expiring(terms.expires_at)
    .at_priority(pack.priority);
    let outcome = Outcome::new(
        OutcomeKind::Applied,
        format!(
            "{credits} credits of pack {} to {customer} ({effect})",
            pack.id
        ),
    );
    Ok((
        PackGrant {
            customer: customer.to_owned(),
            grant,
            effect,
            payment_key: purchase.payment_key,
            payment: purchase.paid_minor.map(|paid| (paid, purchase.tax_minor)),
        },
        outcome,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::{Breakage, Pack};
    use crate::domain::money::{Credits, Price};
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn catalog() -> Catalog {
        let small = Pack {
            id: "small".into(),
            stripe_prices: vec!["price_s".into()],
            credits: Credits::new(Decimal::from(500)).unwrap(),
            price: Price::new(Decimal::from_str("5").unwrap(), "usd").unwrap(),
            expires_after_days: Some(30),
            breakage: Breakage::Remote,
            priority: 20,
            low_balance: None,
            top_up_url: None,
        };
        Catalog {
            currency: "usd".into(),
            packs: [("small".to_string(), small)].into(),
            ..Default::default()
        }
    }

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap()
    }

    /// A paid checkout of pack `small` by Stripe customer `cus_1`, event `evt_{n}` of session
    /// `cs_{n}`.
    fn paid(n: u32) -> CheckoutFact {
        CheckoutFact {
            event_id: format!("evt_{n}"),
            event_created: 1_767_225_000,
            session_id: format!("cs_{n}"),
            stripe_customer: Some("cus_1".into()),
            named: None,
            mode: Some(CheckoutMode::Payment),
            payment_status: Some(PaymentStatus::Paid),
            pack_named: Some("small".into()),
            line_items: None,
            created: Some(1_767_224_000),
            paid_net_of_tax_minor: Some(500),
            currency: Some("USD".into()),
            payment_key: format!("pi_{n}"),
            paid_minor: Some(550),
            tax_minor: 50,
        }
    }

    fn decide(known: &mut Known, fact: &CheckoutFact) -> Decision {
        known.decide(fact, &catalog(), now(), || "grant_new".into())
    }

    fn applied(decision: Decision) -> Applied {
        match decision {
            Decision::Apply(applied) => *applied,
            other => panic!("not applied: {other:?}"),
        }
    }

    /// Row `checkout.session.completed`, paid: the pack's credits, its price net of tax in the
    /// session's currency, expiring from the purchase; the Stripe customer is linked to itself.
    #[test]
    fn a_paid_checkout_grants_its_pack_once() {
        let mut known = Known::default();
        let a = applied(decide(&mut known, &paid(1)));
        assert_eq!(
            a.link,
            Some((
                "cus_1".into(),
                CustomerId::known("cus_1"),
                LinkedBy::Default
            ))
        );
        assert_eq!(a.concerns.as_ref().map(CustomerId::as_str), Some("cus_1"));
        let grant = a.grant.expect("a grant");
        assert_eq!(grant.customer, "cus_1");
        assert_eq!(grant.effect, "checkout:cs_1");
        assert_eq!(grant.payment_key, "pi_1");
        assert_eq!(grant.payment, Some((550, 50)));
        assert_eq!(grant.grant.credits.to_string(), "500");
        assert_eq!(grant.grant.price.unwrap().to_string(), "5");
        assert_eq!(grant.grant.currency.as_deref(), Some("usd"));
        assert_eq!(
            grant.grant.expires_at,
            chrono::DateTime::from_timestamp(1_767_224_000 + 30 * 86_400, 0)
        );
        assert_eq!(a.outcome.outcome, OutcomeKind::Applied);
        assert_eq!(
            a.outcome.detail,
            "500 credits of pack small to cus_1 (checkout:cs_1)"
        );
        // The same event again, and another event of the same session: nothing more.
        assert_eq!(decide(&mut known, &paid(1)), Decision::Duplicate);
        let again = CheckoutFact {
            event_id: "evt_again".into(),
            ..paid(1)
        };
        let a = applied(decide(&mut known, &again));
        assert_eq!(a.grant, None);
        assert_eq!(a.link, None, "linked by the first");
        assert_eq!(a.outcome.detail, "checkout:cs_1 applied before");
    }

    /// The first explicit link wins; a later one is ignored; a link to the default account
    /// moves what arrived before it, which the batch does not decide.
    #[test]
    fn links_are_decided_as_the_batch_goes() {
        let mut known = Known::default();
        let named = |n, account: &str| CheckoutFact {
            named: Some((CustomerId::known(account), LinkedBy::ClientReferenceId)),
            ..paid(n)
        };
        let a = applied(decide(&mut known, &named(1, "acme")));
        assert_eq!(
            a.link,
            Some((
                "cus_1".into(),
                CustomerId::known("acme"),
                LinkedBy::ClientReferenceId
            ))
        );
        assert_eq!(a.grant.unwrap().customer, "acme");
        let b = applied(decide(&mut known, &named(2, "globex")));
        assert_eq!(b.link, None);
        assert_eq!(
            b.ignored_link.as_ref().map(CustomerId::as_str),
            Some("globex")
        );
        assert_eq!(b.grant.unwrap().customer, "acme");

        let mut known = Known::default();
        applied(decide(&mut known, &paid(1)));
        assert_eq!(decide(&mut known, &named(2, "acme")), Decision::Alone);
        assert!(
            !known.events.contains("evt_2"),
            "an event left alone is not noted"
        );
    }

    /// A session with no Stripe customer grants to the account it names; naming none, nothing.
    #[test]
    fn a_session_without_a_stripe_customer() {
        let mut known = Known::default();
        let fact = CheckoutFact {
            stripe_customer: None,
            named: Some((CustomerId::known("acme"), LinkedBy::Metadata)),
            ..paid(1)
        };
        let a = applied(decide(&mut known, &fact));
        assert_eq!(a.link, None);
        assert_eq!(a.grant.unwrap().customer, "acme");
        let fact = CheckoutFact {
            stripe_customer: None,
            ..paid(2)
        };
        let a = applied(decide(&mut known, &fact));
        assert_eq!(a.outcome.outcome, OutcomeKind::Ignored);
        assert_eq!(a.concerns, None);
        assert_eq!(a.grant, None);
    }

    /// Rows: a subscription's checkout only links; an unpaid one waits; a price no pack sells,
    /// or no way to know the line items, is `unmapped_price`.
    #[test]
    fn checkouts_that_grant_nothing() {
        let mut known = Known::default();
        let cases = [
            (
                CheckoutFact {
                    mode: Some(CheckoutMode::Subscription),
                    ..paid(1)
                },
                OutcomeKind::Applied,
                "customer cus_1 linked; plan credits come from paid invoices",
            ),
            (
                CheckoutFact {
                    payment_status: Some(PaymentStatus::Unpaid),
                    ..paid(2)
                },
                OutcomeKind::Ignored,
                "not paid yet; credits follow checkout.session.async_payment_succeeded",
            ),
            (
                CheckoutFact {
                    pack_named: None,
                    line_items: Some(vec![("price_other".into(), 1)]),
                    ..paid(3)
                },
                OutcomeKind::UnmappedPrice,
                "no pack sells prices [\"price_other\"]",
            ),
            (
                CheckoutFact {
                    pack_named: None,
                    ..paid(4)
                },
                OutcomeKind::UnmappedPrice,
                "no creditbook_pack metadata, and no API key to read the line items",
            ),
        ];
        for (fact, kind, detail) in cases {
            let a = applied(decide(&mut known, &fact));
            assert_eq!(
                (a.outcome.outcome, a.outcome.detail.as_str()),
                (kind, detail)
            );
            assert_eq!(a.grant, None);
            assert_eq!(a.concerns.as_ref().map(CustomerId::as_str), Some("cus_1"));
        }
    }

    /// Line items choose the pack and its quantity; no price paid means the catalog's.
    #[test]
    fn line_items_and_the_catalog_price() {
        let mut known = Known::default();
        let fact = CheckoutFact {
            pack_named: None,
            line_items: Some(vec![("price_s".into(), 3)]),
            paid_net_of_tax_minor: None,
            currency: None,
            ..paid(1)
        };
        let grant = applied(decide(&mut known, &fact)).grant.unwrap().grant;
        assert_eq!(grant.credits.to_string(), "1500");
        assert_eq!(grant.price.unwrap().to_string(), "15");
    }

    /// A payment Stripe already told of a refund or dispute for is settled on its own; a
    /// purchase time out of range is refused; neither is noted as seen.
    #[test]
    fn what_a_batch_leaves_alone_or_refuses() {
        let mut known = Known {
            taken_back: ["pi_1".to_string()].into(),
            ..Known::default()
        };
        assert_eq!(decide(&mut known, &paid(1)), Decision::Alone);
        let never = CheckoutFact {
            created: Some(i64::MAX),
            ..paid(3)
        };
        assert!(matches!(
            decide(&mut known, &never),
            Decision::Refused("created", _)
        ));
        assert!(known.events.is_empty() && known.effects.is_empty() && known.links.is_empty());
    }
}
