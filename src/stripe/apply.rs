//! What each Stripe event does (the README's event table). Every effect is idempotent on the
//! Stripe object it comes from (an invoice line, a checkout session, a refund, a dispute), not on
//! the event id alone, so a webhook delivered twice, a backfill after webhooks, or both in any
//! order end in the same state. Facts that arrive before what they refer to (a refund before its
//! purchase) are recorded and applied when the purchase arrives.

use super::api::StripeApi;
use super::event::{
    self, CheckoutSession, Event, Invoice, InvoiceLine, InvoicePaymentObject, Parsed,
    PaymentIntent, Subscription,
};
use crate::domain::Timestamp;
use crate::domain::autotopup::Settled;
use crate::domain::billing::{self, CheckoutStep, Link, checkout_step, rollover_room};
pub use crate::domain::billing::{Outcome, OutcomeKind};
use crate::domain::catalog::{Catalog, Pack};
use crate::domain::checkout::{CheckoutFact, Purchase, pack_grant};
use crate::domain::customer::CustomerId;
use crate::domain::invoice::{self, LineStep};
use crate::domain::money::{Credits, Money};
use crate::domain::refunds::{
    self, BoughtGrant, PaidShare, PaymentFacts, PaymentRefunds, RefundStatus, Settlement,
};
use crate::domain::stripe_run::{self, EventFact, FactKind, InvoicePaymentFact, SubscriptionFact};
use crate::domain::subscription::{self, SubscriptionStatus};
use crate::error::{Error, Result};
use crate::store::revenue::Origin as JournalOrigin;
use crate::store::stripe::{
    CheckoutEvent, EventRecord, LinkedBy, PaidGrant, RunEvent, Settling, StripeTx, StripeWork,
    from_unix,
};
use crate::store::{Answer, Command, Envelope, Store, new_grant_id};
use futures_util::future::BoxFuture;

/// Metadata keys read on Stripe objects.
pub const CUSTOMER_METADATA_KEY: &str = "creditbook_customer";
pub const PACK_METADATA_KEY: &str = "creditbook_pack";
/// The automatic top-up a payment intent charges (its attempt id).
pub const AUTO_TOPUP_METADATA_KEY: &str = "creditbook_auto_topup";

/// Attempts of one event when the database reports a transient failure.
const TRANSIENT_ATTEMPTS: u32 = 5;

pub use crate::domain::billing::EventOrigin as Origin;

/// What an event needs from the Stripe API, read before its transaction starts (so no
/// transaction waits on Stripe). Without an API key nothing is read.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// A paid checkout session's line items (price, quantity), when its metadata names no pack.
    pub line_items: Option<Vec<(String, i64)>>,
    /// Every line of a paid invoice whose event carries only some (`lines.has_more`).
    pub invoice_lines: Option<Vec<InvoiceLine>>,
    /// The payments of a paid invoice that names none (API version 2025-03-31.basil and later).
    pub invoice_payments: Option<Vec<InvoicePaymentObject>>,
}

/// Reads from the Stripe API what `event` needs and does not carry.
pub async fn fetch(api: Option<&StripeApi>, event: &Event) -> Result<Fetched> {
    let mut fetched = Fetched::default();
    let Some(api) = api else {
        return Ok(fetched);
    };
    match event::parse(event) {
        Ok(Parsed::CheckoutCompleted(s) | Parsed::CheckoutAsyncPaid(s))
            if checkout_step(s.mode.as_ref(), s.payment_status.as_ref())
                == CheckoutStep::GrantPack
                && !s.metadata.contains_key(PACK_METADATA_KEY)
                && s.line_items.is_none() =>
        {
            fetched.line_items = Some(api.checkout_line_items(&s.id).await?);
        }
        Ok(Parsed::InvoicePaid(invoice)) => {
            if invoice.has_more_lines() {
                fetched.invoice_lines = Some(api.invoice_lines(&invoice.id).await?);
            }
            if !invoice.names_its_payment() {
                fetched.invoice_payments = Some(api.invoice_payments(&invoice.id).await?);
            }
        }
        _ => {}
    }
    Ok(fetched)
}

pub struct Context<'a> {
    pub store: &'a Store,
    pub now: Timestamp,
    /// The Stripe mode whose events apply (`[stripe] livemode`).
    pub livemode: bool,
}

/// An event as the store applies it ([`Store::stripe_transaction`], [`Store::stripe_batch`]);
/// refused when its object cannot be read.
pub fn received(
    ctx: &Context<'_>,
    event: &Event,
    payload: &str,
    origin: Origin,
    fetched: Fetched,
) -> Result<std::sync::Arc<dyn StripeWork>> {
    let parsed = event::parse(event).map_err(|e| {
        Error::invalid(
            "data.object",
            format!("a {} object that cannot be read: {e}", event.event_type),
        )
    })?;
    let record = EventRecord {
        id: event.id.clone(),
        event_type: event.event_type.clone(),
        api_version: event.api_version.clone(),
        created: event.created,
        origin,
        payload: payload.to_owned(),
        received_at: ctx.now,
    };
    let checkout = match &parsed {
        Parsed::CheckoutCompleted(session) | Parsed::CheckoutAsyncPaid(session)
            if event.livemode == ctx.livemode =>
        {
            Some(CheckoutEvent {
                record: record.clone(),
                objects: parsed.objects(),
                fact: checkout_fact(event, session, fetched.line_items.as_deref()),
            })
        }
        _ => None,
    };
    let run_fact = run_fact(event, &parsed, &fetched, &record, ctx.livemode);
    let received = std::sync::Arc::new(Received {
        event: event.clone(),
        record,
        checkout,
        run_fact,
        parsed,
        fetched,
        livemode: ctx.livemode,
    });
    Ok(received)
}

/// Records and applies one event in one transaction, running it again on transient failures.
pub async fn apply_event(
    ctx: &Context<'_>,
    event: &Event,
    payload: &str,
    origin: Origin,
    fetched: Fetched,
) -> Result<Outcome> {
    let received = received(ctx, event, payload, origin, fetched)?;
    let mut attempt = 1;
    loop {
        match ctx.store.stripe_transaction(received.clone()).await {
            Ok(outcome) => return Ok(outcome),
            Err(e) if e.is_transient() && attempt < TRANSIENT_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10 * u64::from(attempt))).await;
            }
            Err(e) if e.is_transient() => return Err(Error::Unavailable),
            Err(e) => return Err(e),
        }
    }
}

/// An event as it is applied: read, and parsed once.
pub(crate) struct Received {
    event: Event,
    /// The event as it is recorded (its payload, where it came from, when it was received).
    record: EventRecord,
    /// A checkout's fact, when the event is one of the mode applied: decided with its neighbours.
    checkout: Option<CheckoutEvent>,
    /// A paid invoice's fact (when its lines can be read) or a subscription's, when the event is
    /// one of the mode applied: decided with its neighbours.
    run_fact: Option<RunEvent>,
    parsed: Parsed,
    fetched: Fetched,
    livemode: bool,
}

impl StripeWork for Received {
    fn apply(self: std::sync::Arc<Self>, tx: StripeTx) -> BoxFuture<'static, Result<Outcome>> {
        Box::pin(async move {
            match &self.checkout {
                Some(checkout) => checkout_alone(tx, checkout).await,
                None => apply_once(tx, &self).await,
            }
        })
    }

    fn checkout(&self) -> Option<&CheckoutEvent> {
        self.checkout.as_ref()
    }

    fn run_fact(&self) -> Option<&RunEvent> {
        self.run_fact.as_ref()
    }

    /// A checkout's: its Stripe customer's, or the account it names, or its session's; any
    /// other event's: what it is mostly about (`Parsed::shard_key`), or its own id.
    fn shard(&self) -> &str {
        match &self.checkout {
            Some(checkout) => checkout
                .fact
                .stripe_customer
                .as_deref()
                .or(checkout.fact.named.as_ref().map(|(a, _)| a.as_str()))
                .unwrap_or(&checkout.fact.session_id),
            None => self.parsed.shard_key().unwrap_or(&self.event.id),
        }
    }
}

/// A completed checkout session as the event table reads it.
/// The account a Stripe object names (`client_reference_id`, metadata `creditbook_customer`),
/// when it is an account id the API would accept (README, Customer ids). One that is not
/// (empty, too long, with control characters) is ignored, as if none were named, and logged:
/// the Stripe customer's link, or its own id, decides instead.
fn named_account(value: Option<&String>, how: LinkedBy) -> Option<(CustomerId, LinkedBy)> {
    let value = value?;
    match CustomerId::parse(value) {
        Ok(id) => Some((id, how)),
        Err(e) => {
            tracing::warn!(
                named = %value.escape_debug(),
                how = how.as_str(),
                error = %e,
                "a Stripe object names an account that is not a valid id; ignored"
            );
            None
        }
    }
}

fn checkout_fact(
    event: &Event,
    session: &CheckoutSession,
    fetched_line_items: Option<&[(String, i64)]>,
) -> CheckoutFact {
    let named = named_account(
        session.client_reference_id.as_ref(),
        LinkedBy::ClientReferenceId,
    )
    .or_else(|| {
        named_account(
            session.metadata.get(CUSTOMER_METADATA_KEY),
            LinkedBy::Metadata,
        )
    });
    let carried: Option<Vec<(String, i64)>> = session.line_items.as_ref().map(|list| {
        list.data
            .iter()
            .filter_map(|i| Some((i.price()?.to_owned(), i.quantity.unwrap_or(1))))
            .collect()
    });
    CheckoutFact {
        event_id: event.id.clone(),
        event_created: event.created,
        session_id: session.id.clone(),
        stripe_customer: session.customer().map(str::to_owned),
        named,
        mode: session.mode.clone(),
        payment_status: session.payment_status.clone(),
        pack_named: session.metadata.get(PACK_METADATA_KEY).cloned(),
        line_items: carried.or_else(|| fetched_line_items.map(<[_]>::to_vec)),
        created: session.created,
        paid_net_of_tax_minor: session.amount_net_of_tax(),
        currency: session.currency.clone(),
        payment_key: session.payment_intent().unwrap_or(&session.id).to_owned(),
        paid_minor: session.amount_total,
        tax_minor: session.tax_minor(),
    }
}

/// A checkout event its batch left alone (a link that moves what arrived before it, a payment
/// Stripe told of refunds or disputes for before), or one on PostgreSQL that a batch of its own
/// left alone: the link is resolved first (moving what it must), then the event is decided as in
/// a batch, then its payment settled.
/// A paid invoice (its lines read), a subscription event or an invoice payment as the fact a
/// run decides on; `None` for any other event.
fn run_fact(
    event: &Event,
    parsed: &Parsed,
    fetched: &Fetched,
    record: &EventRecord,
    livemode: bool,
) -> Option<RunEvent> {
    match parsed {
        _ if event.livemode != livemode => Some((
            None,
            None,
            FactKind::Recorded(stripe_run::other_mode(event.livemode, livemode)),
        )),
        // A checkout of the mode applied is decided with the checkouts next to it.
        Parsed::CheckoutCompleted(_) | Parsed::CheckoutAsyncPaid(_) => None,
        Parsed::Unhandled => Some((None, None, FactKind::Recorded(stripe_run::unknown_type()))),
        Parsed::Customer(customer) => {
            let (named, invalid_name) = customer_named(customer);
            Some((
                Some(customer.id.as_str()),
                named,
                FactKind::Customer { invalid_name },
            ))
        }
        Parsed::InvoicePaid(invoice) => invoice_fact(invoice, fetched).ok().map(|fact| {
            (
                invoice.customer(),
                invoice_named(invoice),
                FactKind::InvoicePaid(fact),
            )
        }),
        Parsed::Subscription {
            deleted,
            subscription,
        } => Some((
            subscription.customer(),
            named_account(
                subscription.metadata.get(CUSTOMER_METADATA_KEY),
                LinkedBy::Metadata,
            ),
            FactKind::Subscription(subscription_fact(subscription, *deleted)),
        )),
        Parsed::InvoicePayment(payment) => Some((
            None,
            None,
            FactKind::InvoicePayment(InvoicePaymentFact {
                paid: payment.is_paid(),
                invoice: payment.invoice().map(str::to_owned),
                payment_key: payment
                    .payment_intent()
                    .or(payment.charge())
                    .map(str::to_owned),
            }),
        )),
        _ => None,
    }
    .map(|(stripe_customer, named, kind)| RunEvent {
        record: record.clone(),
        objects: parsed.objects(),
        fact: EventFact {
            event_id: event.id.clone(),
            event_created: event.created,
            stripe_customer: stripe_customer.map(str::to_owned),
            named,
            kind,
        },
    })
}

/// The account a Stripe customer's metadata names, and whether it names one that is not a valid
/// account id.
fn customer_named(customer: &event::Customer) -> (Option<(CustomerId, LinkedBy)>, bool) {
    let value = customer.metadata.get(CUSTOMER_METADATA_KEY);
    let named = named_account(value, LinkedBy::Metadata);
    let invalid_name = value.is_some() && named.is_none();
    (named, invalid_name)
}

/// The account an invoice names: its subscription's metadata `creditbook_customer`, else its
/// own.
fn invoice_named(invoice: &Invoice) -> Option<(CustomerId, LinkedBy)> {
    let metadata = invoice
        .subscription_metadata()
        .filter(|m| m.contains_key(CUSTOMER_METADATA_KEY))
        .unwrap_or(&invoice.metadata);
    named_account(metadata.get(CUSTOMER_METADATA_KEY), LinkedBy::Metadata)
}

/// What a subscription event says of the subscription (`deleted`: its `.deleted` event).
fn subscription_fact(subscription: &Subscription, deleted: bool) -> SubscriptionFact {
    let status = if deleted {
        SubscriptionStatus::Canceled
    } else {
        subscription
            .status
            .clone()
            .unwrap_or(SubscriptionStatus::Active)
    };
    SubscriptionFact {
        id: subscription.id.clone(),
        status,
        items: subscription
            .items()
            .iter()
            .map(|item| (item.price().map(str::to_owned), item.quantity))
            .collect(),
        current_period_end_unix: subscription.current_period_end(),
    }
}

/// A paid invoice as a fact: its lines the ones read from the API when the event carries only
/// some of them. Fails on a line period that is not a time.
fn invoice_fact(invoice: &Invoice, fetched: &Fetched) -> Result<invoice::InvoiceFact> {
    let read_payments = fetched
        .invoice_payments
        .iter()
        .flatten()
        .map(|p| {
            let key = p.payment_intent().or(p.charge()).map(str::to_owned);
            (p.is_paid(), key)
        })
        .collect();
    let lines = fetched
        .invoice_lines
        .as_deref()
        .unwrap_or(invoice.lines())
        .iter()
        .map(|line| {
            let period = match &line.period {
                Some(p) => Some((from_unix(p.start)?, from_unix(p.end)?)),
                None => None,
            };
            Ok(invoice::InvoiceLineFact {
                id: line.id.clone(),
                price: line.price().map(str::to_owned),
                currency: line.currency.clone(),
                period,
                quantity: line.quantity.unwrap_or(1).max(1),
                amount_minor: line.amount_net_of_tax(),
                proration: line.is_proration(),
                unit_amount_minor: line.unit_amount(),
                credits_line: line.credited_lines().into_iter().next(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(invoice::InvoiceFact {
        invoice_id: invoice.id.clone(),
        subscription: invoice.subscription().map(str::to_owned),
        currency: invoice.currency.clone(),
        paid_and_tax: invoice.paid_and_tax(),
        named_payment: invoice
            .payment_intent()
            .or(invoice.charge())
            .map(str::to_owned),
        read_payments,
        renewal: invoice.billing_reason == Some(billing::BillingReason::SubscriptionCycle),
        creation: invoice.billing_reason == Some(billing::BillingReason::SubscriptionCreate),
        lines,
        unread_lines: invoice.has_more_lines() && fetched.invoice_lines.is_none(),
    })
}

async fn checkout_alone(tx: StripeTx, checkout: &CheckoutEvent) -> Result<Outcome> {
    tx.lock(&checkout.objects).await?;
    if tx.is_recorded(&checkout.record.id).await? {
        return Ok(Outcome::duplicate());
    }
    let catalog = tx.catalog();
    let apply = Apply {
        tx: &tx,
        catalog: &catalog,
        now: checkout.record.received_at,
        event_created: checkout.record.created,
        event_id: &checkout.record.id,
    };
    let fact = &checkout.fact;
    if let Some(stripe_customer) = &fact.stripe_customer {
        apply
            .resolve_customer(stripe_customer, fact.named.clone())
            .await?;
    }
    let checked = tx
        .apply_checkouts(&[checkout], Settling::ByCaller)
        .await?
        .pop()
        .ok_or_else(|| Error::Internal("a checkout was left alone twice".into()))??;
    if let Some(payment) = &checked.granted_payment {
        apply.settle_payment(&[Some(payment.as_str())]).await?;
    }
    tx.commit().await?;
    Ok(checked.outcome)
}

// Long: one arm per Stripe event type (the README's event table).
async fn apply_once(tx: StripeTx, received: &Received) -> Result<Outcome> {
    let Received {
        event,
        record,
        checkout: _,
        run_fact: _,
        parsed,
        fetched,
        livemode,
    } = received;
    let now = &record.received_at;
    tx.lock(&parsed.objects()).await?;
    let new = tx.record_event(record).await?;
    if !new {
        return Ok(Outcome::duplicate());
    }
    let catalog = tx.catalog();
    let apply = Apply {
        tx: &tx,
        catalog: &catalog,
        now: *now,
        event_created: event.created,
        event_id: &event.id,
    };
    let outcome = match parsed {
        // Recorded, never applied: a test payment grants no live credits, and the other way.
        _ if event.livemode != *livemode => stripe_run::other_mode(event.livemode, *livemode),
        // Applied as facts (`checkout_alone`) unless of the other mode.
        Parsed::CheckoutCompleted(_) | Parsed::CheckoutAsyncPaid(_) => {
            return Err(Error::Internal(
                "a checkout of the mode applied as an event".into(),
            ));
        }
        Parsed::InvoicePaid(invoice) => apply.invoice_paid(invoice, fetched).await?,
        Parsed::InvoicePayment(payment) => apply.invoice_payment(payment).await?,
        Parsed::InvoicePaymentFailed(invoice) => apply.invoice_payment_failed(invoice).await?,
        Parsed::Subscription {
            deleted,
            subscription,
        } => apply.subscription(subscription, *deleted).await?,
        Parsed::ChargeRefunded(charge) => {
            let currency = charge.currency.clone().unwrap_or_default();
            tx.put_charge(entity::stripe_charges::Model {
                id: charge.id.clone(),
                payment_intent: charge.payment_intent().map(str::to_owned),
                amount_refunded: charge.amount_refunded.unwrap_or(0),
                currency,
            })
            .await?;
            apply
                .settle_payment(&[charge.payment_intent(), Some(charge.id.as_str())])
                .await?
        }
        Parsed::Refund(refund) => {
            tx.put_refund(entity::stripe_refunds::Model {
                id: refund.id.clone(),
                payment_intent: refund.payment_intent().map(str::to_owned),
                charge: refund.charge().map(str::to_owned),
                amount: refund.amount.unwrap_or(0),
                currency: refund.currency.clone().unwrap_or_default(),
                status: refund
                    .status
                    .unwrap_or(RefundStatus::Pending)
                    .as_str()
                    .to_owned(),
            })
            .await?;
            apply
                .settle_payment(&[refund.payment_intent(), refund.charge()])
                .await?
        }
        Parsed::Dispute(dispute) => {
            tx.put_dispute(entity::stripe_disputes::Model {
                id: dispute.id.clone(),
                payment_intent: dispute.payment_intent().map(str::to_owned),
                charge: dispute.charge().map(str::to_owned),
                amount: dispute.amount.unwrap_or(0),
                currency: dispute.currency.clone().unwrap_or_default(),
                status: dispute
                    .status
                    .as_ref()
                    .map_or("needs_response", |s| s.as_str())
                    .to_owned(),
                as_of: event.created,
            })
            .await?;
            apply
                .settle_payment(&[dispute.payment_intent(), dispute.charge()])
                .await?
        }
        Parsed::Customer(customer) => match customer_named(customer) {
            (Some(named), _) => {
                let linked = apply.resolve_customer(&customer.id, Some(named)).await?;
                stripe_run::linked_to(&linked)
            }
            (None, invalid_name) => stripe_run::customer_unnamed(invalid_name),
        },
        Parsed::PaymentIntentSucceeded(intent) => apply.payment_intent_succeeded(intent).await?,
        Parsed::PaymentIntentFailed(intent) => apply.payment_intent_failed(intent).await?,
        Parsed::Unhandled => stripe_run::unknown_type(),
    };
    tx.set_outcome(&event.id, outcome.outcome.as_str(), &outcome.detail, *now)
        .await?;
    tx.commit().await?;
    Ok(outcome)
}

fn not_auto_topup() -> Outcome {
    Outcome::new(
        OutcomeKind::Ignored,
        "not an automatic top-up: a checkout's or an invoice's own event grants its credits",
    )
}

/// The credits a command moved.
fn moved(answer: Answer) -> Result<Credits> {
    match answer {
        Answer::Moved(credits) => Ok(credits),
        other => Err(Error::unexpected(&other)),
    }
}

struct Apply<'a> {
    tx: &'a StripeTx,
    catalog: &'a Catalog,
    now: Timestamp,
    /// The event's `created` (Unix seconds): orders subscription states.
    event_created: i64,
    /// The event's id, for the journal lines its postings write.
    event_id: &'a str,
}

fn command(customer_id: &CustomerId, now: Timestamp, event_id: &str, command: Command) -> Envelope {
    Envelope::new(customer_id.clone(), command, now).from_origin(JournalOrigin {
        source: None,
        event: Some(event_id.to_owned()),
    })
}

impl Apply<'_> {
    /// The account a Stripe customer belongs to (README, The ledger): a link learnt now (checkout
    /// `client_reference_id`, metadata `creditbook_customer`) or before; without one, the Stripe
    /// customer id itself. A link learnt later moves what arrived before it; the first explicit
    /// link wins over a later, different one.
    async fn resolve_customer(
        &self,
        stripe_customer: &str,
        hint: Option<(CustomerId, LinkedBy)>,
    ) -> Result<CustomerId> {
        let known = self.tx.link(stripe_customer).await?;
        // Every account this may write, before it writes: the linked one, the one named now,
        // the default (the Stripe customer id).
        let mut accounts = vec![stripe_customer];
        accounts.extend(known.as_ref().map(|(a, _)| a.as_str()));
        accounts.extend(hint.as_ref().map(|(a, _)| a.as_str()));
        self.tx.lock_accounts(accounts).await?;
        let decided = billing::link(stripe_customer, known, hint);
        match &decided {
            Link::New(account, by) => self.tx.set_link(stripe_customer, account, *by).await?,
            Link::Keep {
                account,
                ignored: Some(ignored),
            } => tracing::warn!(
                stripe_customer,
                linked = %account,
                ignored = %ignored,
                "a Stripe customer names a second account; the first link is kept"
            ),
            Link::Keep { .. } => {}
            Link::Move { from, to, by } => {
                self.tx.set_link(stripe_customer, to, *by).await?;
                self.move_customer(stripe_customer, from, to).await?;
                self.tx.concerns(from.as_str());
            }
        }
        self.tx.concerns(decided.account().as_str());
        Ok(decided.account().clone())
    }

    /// Moves the free credits of Stripe grants from the account named by the Stripe customer id
    /// to the account it is now linked to, with their share of the price
    /// (`Command::MoveGrants`, one command on both books); and the standing.
    async fn move_customer(
        &self,
        stripe_customer: &str,
        from: &CustomerId,
        to: &CustomerId,
    ) -> Result<()> {
        let ids = self.tx.movable_grants(from).await?;
        if !ids.is_empty() {
            let moves = ids.into_iter().map(|id| (id, new_grant_id())).collect();
            let move_grants = Command::MoveGrants {
                to: to.clone(),
                moves,
            };
            let moved = match self
                .tx
                .run(command(from, self.now, self.event_id, move_grants))
                .await?
            {
                Answer::Transferred(moved) => moved,
                other => return Err(Error::unexpected(&other)),
            };
            for m in &moved {
                self.tx.remap_grant(&m.from_grant, &m.to_grant).await?;
            }
        }
        self.tx
            .set_standing(from, Some((None, None, None)), self.now)
            .await?;
        self.refresh_standing(stripe_customer, to).await
    }

    /// Writes the account's plan, period end and past-due start from what is known of the Stripe
    /// customer's subscriptions.
    async fn refresh_standing(&self, stripe_customer: &str, customer: &CustomerId) -> Result<()> {
        let subscriptions = self.tx.subscriptions_of(stripe_customer).await?;
        let standing = subscription::standing(&subscriptions);
        self.tx
            .set_plan_standing(customer, standing, self.now)
            .await
    }

    /// Grants a bought pack once per purchase (`domain::checkout::pack_grant`), and settles its
    /// payment against refunds or disputes Stripe told of before.
    async fn grant_pack(
        &self,
        customer: &CustomerId,
        bought: Purchase,
        pack: &Pack,
    ) -> Result<Outcome> {
        let effect = bought.effect.clone();
        if !self.tx.claim_effect(&effect, customer, self.now).await? {
            return Ok(Outcome::new(
                OutcomeKind::Applied,
                format!("{effect} applied before"),
            ));
        }
        let (bought, outcome) = pack_grant(pack, customer, bought, new_grant_id(), self.now)
            .map_err(|(field, why)| Error::invalid(field, why))?;
        let add = Command::AddGrants {
            grants: vec![bought.grant.clone()],
        };
        self.tx
            .run(command(customer, self.now, self.event_id, add))
            .await?;
        self.tx.record_pack_payment(&bought).await?;
        self.settle_payment(&[Some(bought.payment_key.as_str())])
            .await?;
        Ok(outcome)
    }

    /// `payment_intent.succeeded` of an automatic top-up (its metadata names the attempt): the
    /// pack is granted as a checkout's is, and the attempt settles. Other payment intents are a
    /// checkout's or an invoice's, whose own events grant.
    async fn payment_intent_succeeded(&self, intent: &PaymentIntent) -> Result<Outcome> {
        let Some((customer, attempt)) = self.auto_topup_of(intent).await? else {
            return Ok(not_auto_topup());
        };
        let named = intent.metadata.get(PACK_METADATA_KEY);
        let Some(pack) = named.and_then(|p| self.catalog.packs.get(p)) else {
            return Ok(Outcome::new(
                OutcomeKind::UnmappedPrice,
                format!("pack {named:?} of auto top-up {attempt} is not in the catalog"),
            ));
        };
        let paid = intent.amount_received.or(intent.amount);
        let outcome = self
            .grant_pack(
                &customer,
                Purchase {
                    effect: format!("payment_intent:{}", intent.id),
                    created: intent.created.unwrap_or(self.event_created),
                    quantity: 1,
                    paid_net_of_tax_minor: paid,
                    currency: intent.currency.clone(),
                    payment_key: intent.id.clone(),
                    paid_minor: paid,
                    tax_minor: 0,
                },
                pack,
            )
            .await?;
        self.tx
            .settle_auto_topup(&attempt, &Settled::Succeeded, Some(&intent.id), self.now)
            .await?;
        Ok(outcome)
    }

    /// `payment_intent.payment_failed` of an automatic top-up: the attempt fails (once), which
    /// stops auto top-up until the customer sets it again and says `auto_topup.failed`.
    async fn payment_intent_failed(&self, intent: &PaymentIntent) -> Result<Outcome> {
        let Some((customer, attempt)) = self.auto_topup_of(intent).await? else {
            return Ok(not_auto_topup());
        };
        let error = intent.last_payment_error.clone().unwrap_or_default();
        let settled = Settled::Failed {
            reason: error
                .message
                .unwrap_or_else(|| "the payment failed".to_owned()),
            code: error.decline_code.or(error.code),
        };
        let changed = self
            .tx
            .settle_auto_topup(&attempt, &settled, Some(&intent.id), self.now)
            .await?;
        Ok(Outcome::new(
            OutcomeKind::Applied,
            if changed {
                format!("auto top-up {attempt} of {customer} failed; stopped until set again")
            } else {
                format!("auto top-up {attempt} was settled before")
            },
        ))
    }

    /// The account and attempt of an automatic top-up's payment intent; none for any other.
    async fn auto_topup_of(&self, intent: &PaymentIntent) -> Result<Option<(CustomerId, String)>> {
        let Some(attempt) = intent.metadata.get(AUTO_TOPUP_METADATA_KEY) else {
            return Ok(None);
        };
        let hint = named_account(
            intent.metadata.get(CUSTOMER_METADATA_KEY),
            LinkedBy::Metadata,
        );
        let customer = match (intent.customer(), hint) {
            (Some(stripe_customer), hint) => self.resolve_customer(stripe_customer, hint).await?,
            (None, Some((account, _))) => {
                self.tx.lock_accounts([account.as_str()]).await?;
                self.tx.concerns(account.as_str());
                account
            }
            (None, None) => return Ok(None),
        };
        Ok(Some((customer, attempt.clone())))
    }

    /// The account an invoice or subscription is for.
    async fn account_for(
        &self,
        stripe_customer: &str,
        metadata: Option<&event::Metadata>,
    ) -> Result<CustomerId> {
        let hint = named_account(
            metadata.and_then(|m| m.get(CUSTOMER_METADATA_KEY)),
            LinkedBy::Metadata,
        );
        self.resolve_customer(stripe_customer, hint).await
    }

    /// `invoice.paid`: read what the invoice decides on, decide (`domain::invoice`), write what
    /// it says in its order, then settle its payment.
    async fn invoice_paid(&self, invoice: &Invoice, fetched: &Fetched) -> Result<Outcome> {
        let Some(stripe_customer) = invoice.customer() else {
            return Ok(Outcome::new(
                OutcomeKind::Ignored,
                "the invoice names no customer",
            ));
        };
        let customer = self
            .resolve_customer(stripe_customer, invoice_named(invoice))
            .await?;
        let fact = invoice_fact(invoice, fetched)?;
        let promotions = self.tx.stripe_promotions(&customer).await?;
        let known = invoice::Known {
            customer,
            learnt_payment: match fact.named_payment {
                Some(_) => None,
                None => self.tx.invoice_payment(&fact.invoice_id).await?,
            },
            applied: self.tx.applied_effects(&fact.line_effects()).await?,
            subscription: match &fact.subscription {
                Some(id) => self.tx.subscription(id).await?,
                None => None,
            },
            promotions,
        };
        let paid = invoice::decide(
            &fact,
            &known,
            self.catalog,
            self.now,
            self.event_created,
            new_grant_id,
        );
        for (key, paid_minor, tax_minor, currency) in &paid.payments {
            self.tx
                .put_payment(entity::stripe_payments::Model {
                    payment_key: key.clone(),
                    paid_minor: *paid_minor,
                    tax_minor: *tax_minor,
                    currency: currency.clone(),
                })
                .await?;
        }
        let mut done = Vec::new();
        for line in &paid.lines {
            if self
                .tx
                .claim_effect(&line.effect, &paid.customer, self.now)
                .await?
            {
                done.extend(self.invoice_line(&paid, line).await?);
            }
        }
        if let Some(change) = &paid.subscription {
            if let Some(state) = &change.state {
                self.tx
                    .put_subscription(&change.id, stripe_customer, state.clone())
                    .await?;
            }
            self.refresh_standing(stripe_customer, &paid.customer)
                .await?;
        }
        self.settle_payment(&[Some(paid.payment_key.as_str())])
            .await?;
        Ok(invoice::outcome(&paid, &done, fact.unread_lines))
    }

    /// What one line of a paid invoice writes, as decided; its detail for the outcome.
    async fn invoice_line(
        &self,
        paid: &invoice::InvoicePaid,
        line: &invoice::LineApplied,
    ) -> Result<Option<String>> {
        let (customer, effect) = (&paid.customer, &line.effect);
        Ok(Some(match &line.step {
            LineStep::Nothing => return Ok(None),
            LineStep::OveragePaid {
                plan_id,
                money,
                currency,
            } => {
                self.tx
                    .post_overage_paid(
                        customer,
                        *money,
                        currency,
                        effect,
                        Some(self.event_id),
                        self.now,
                    )
                    .await?;
                format!("{effect}: {money} {currency} of plan {plan_id}'s billed overage paid")
            }
            LineStep::RefundLine {
                refund_id,
                of_payment,
                amount_minor,
                currency,
            } => {
                self.tx
                    .put_refund(entity::stripe_refunds::Model {
                        id: refund_id.clone(),
                        payment_intent: None,
                        charge: Some(of_payment.clone()),
                        amount: *amount_minor,
                        currency: currency.clone(),
                        status: RefundStatus::Succeeded.as_str().into(),
                    })
                    .await?;
                let settled = self.settle_payment(&[Some(of_payment.as_str())]).await?;
                format!("{effect}: {}", settled.detail)
            }
            LineStep::CreditBack { money } => {
                let taken = self
                    .credit_back(customer, paid.subscription_id.as_deref(), *money)
                    .await?;
                format!("{effect}: {taken} credits taken back")
            }
            LineStep::Grant(bought) => self.grant_plan_line(paid, bought).await?,
            LineStep::Trial {
                plan_id,
                grant: None,
            } => format!("{effect}: the trial of plan {plan_id} was given before"),
            LineStep::Trial {
                plan_id,
                grant: Some(grant),
            } => {
                let add = Command::AddGrants {
                    grants: vec![(**grant).clone()],
                };
                self.tx
                    .run(command(customer, self.now, self.event_id, add))
                    .await?;
                format!(
                    "{effect}: {} trial credits of plan {plan_id}, until the trial ends",
                    grant.credits
                )
            }
        }))
    }

    /// The plan credits a paid line buys: its grant, the rollover into and out of its period,
    /// and the payment keys its refunds will name.
    async fn grant_plan_line(
        &self,
        paid: &invoice::InvoicePaid,
        bought: &invoice::PlanGrant,
    ) -> Result<String> {
        let customer = &paid.customer;
        let (start, end) = bought.period;
        let capped = match (bought.proration, paid.subscription_id.as_deref()) {
            (true, Some(subscription)) => {
                let held = self.tx.held_in_period(customer, subscription, end).await?;
                let mut capped = bought.clone();
                invoice::cap_change(&mut capped, &held, self.catalog);
                Some(capped)
            }
            _ => None,
        };
        let bought = capped.as_ref().unwrap_or(bought);
        let grant = &bought.grant;
        let add = Command::AddGrants {
            grants: bought.grants().cloned().collect(),
        };
        self.tx
            .run(command(customer, self.now, self.event_id, add))
            .await?;
        // Rollover happens once both periods are known, whichever was paid first; what the
        // period before carries lasts as long as the first credit period of this one.
        if bought.renewal {
            let first_end = grant.expires_at.unwrap_or(end);
            self.tx
                .put_renewal(customer, start, &bought.plan_id, first_end)
                .await?;
            self.roll_over(customer, start).await?;
        }
        let carried = self.roll_over(customer, end).await?;
        for bought_grant in bought.grants() {
            self.tx
                .map_payments(
                    &bought.payment_keys,
                    &bought_grant.id,
                    paid.subscription_id.as_deref(),
                )
                .await?;
        }
        self.settle_payment(&[Some(grant.source_id.as_str())])
            .await?;
        Ok(invoice::grant_detail(bought, carried))
    }

    /// `invoice_payment.paid`: the payment that paid an invoice. What the invoice granted
    /// becomes known under the payment too, so its refunds (which name only the payment) find
    /// their credits, whichever of the invoice, the refund and this arrives first.
    async fn invoice_payment(&self, payment: &InvoicePaymentObject) -> Result<Outcome> {
        if !payment.is_paid() {
            return Ok(Outcome::new(
                OutcomeKind::Ignored,
                "the invoice payment is not paid",
            ));
        }
        let (Some(invoice), Some(key)) = (
            payment.invoice(),
            payment.payment_intent().or(payment.charge()),
        ) else {
            return Ok(Outcome::new(
                OutcomeKind::Ignored,
                "the invoice payment names no invoice or no payment",
            ));
        };
        self.tx.put_invoice_payment(invoice, key).await?;
        let grants = self.tx.also_paid_by(invoice, key).await?;
        if grants == 0 {
            return Ok(Outcome::new(
                OutcomeKind::Applied,
                format!("{invoice} paid by {key}; its credits follow when the invoice arrives"),
            ));
        }
        let settled = self.settle_payment(&[Some(key)]).await?;
        Ok(Outcome::new(
            OutcomeKind::Applied,
            format!("{invoice} paid by {key}: {}", settled.detail),
        ))
    }

    /// Carries unused plan credits of the period ending at `boundary` into the renewal starting
    /// there, once both are known; returns the credits carried.
    async fn roll_over(&self, customer: &CustomerId, boundary: Timestamp) -> Result<Credits> {
        let Some(renewal) = self.tx.renewal(customer, boundary).await? else {
            return Ok(Credits::ZERO);
        };
        let max = self
            .catalog
            .plan(&renewal.plan_id)
            .map(|p| p.rollover_max)
            .unwrap_or(Credits::ZERO);
        let room = rollover_room(max, renewal.carried);
        if !room.is_positive() {
            return Ok(Credits::ZERO);
        }
        // Grants that ended here and were not carried yet (those carried moved their expiry on).
        let lapsed = self.tx.plan_grants_ending_at(customer, boundary).await?;
        if lapsed.is_empty() {
            return Ok(Credits::ZERO);
        }
        let now = self.now;
        let roll = Command::RollOver {
            lapsed,
            room,
            period_end: renewal.period_end,
        };
        let carried = moved(
            self.tx
                .run(command(customer, now, self.event_id, roll))
                .await?,
        )?;
        self.tx
            .add_carried(customer, boundary, carried, now)
            .await?;
        Ok(carried)
    }

    /// A negative (credit) proration line that names no credited line: the money given back
    /// takes back credits of the subscription's newest grant, as a refund would (README, Revenue recognition).
    async fn credit_back(
        &self,
        customer: &CustomerId,
        subscription: Option<&str>,
        money: Money,
    ) -> Result<Credits> {
        let mut targets: Vec<PaidGrant> = Vec::new();
        if let Some(subscription) = subscription {
            targets.extend(
                self.tx
                    .latest_subscription_grant(customer, subscription)
                    .await?,
            );
        }
        let shares: Vec<PaidShare> = targets.iter().map(PaidGrant::share).collect();
        let Settlement::TakeBack(plan) = refunds::settle(&shares, money) else {
            return Ok(Credits::ZERO);
        };
        let now = self.now;
        let claw = Command::ClawBack { money: plan };
        let taken = moved(
            self.tx
                .run(command(customer, now, self.event_id, claw))
                .await?,
        )?;
        Ok(taken)
    }

    async fn invoice_payment_failed(&self, invoice: &Invoice) -> Result<Outcome> {
        let Some(stripe_customer) = invoice.customer() else {
            return Ok(Outcome::new(
                OutcomeKind::Ignored,
                "the invoice names no customer",
            ));
        };
        let Some(id) = invoice.subscription() else {
            return Ok(Outcome::new(
                OutcomeKind::Ignored,
                "not a subscription invoice",
            ));
        };
        let customer = self
            .account_for(stripe_customer, invoice.subscription_metadata())
            .await?;
        let since = self.event_created;
        let plan = invoice
            .lines()
            .iter()
            .filter_map(|l| l.price())
            .find_map(|p| self.catalog.plan_for_price(p))
            .map(|p| p.id.clone());
        let known = self.tx.subscription(id).await?;
        let Some(state) = subscription::payment_failed(known.as_ref(), plan, since) else {
            return Ok(Outcome::new(
                OutcomeKind::Ignored,
                "a newer subscription state is known",
            ));
        };
        self.tx.put_subscription(id, stripe_customer, state).await?;
        self.refresh_standing(stripe_customer, &customer).await?;
        Ok(Outcome::new(
            OutcomeKind::Applied,
            format!("{id} past due since {since}"),
        ))
    }

    /// `customer.subscription.*` on its own (a run leaves alone one whose link moves earlier
    /// credits): decided as in a run ([`stripe_run::subscription_event`]).
    async fn subscription(&self, subscription: &Subscription, deleted: bool) -> Result<Outcome> {
        let Some(stripe_customer) = subscription.customer() else {
            return Ok(Outcome::new(
                OutcomeKind::Ignored,
                "the subscription names no customer",
            ));
        };
        let customer = self
            .account_for(stripe_customer, Some(&subscription.metadata))
            .await?;
        let known = self.tx.subscription(&subscription.id).await?;
        let fact = subscription_fact(subscription, deleted);
        let (state, outcome) = stripe_run::subscription_event(
            &fact,
            known.as_ref(),
            self.catalog,
            self.event_created,
            &customer,
        );
        if let Some(state) = state {
            self.tx
                .put_subscription(&subscription.id, stripe_customer, state)
                .await?;
            self.refresh_standing(stripe_customer, &customer).await?;
        }
        Ok(outcome)
    }

    /// Brings a payment's grants in line with what Stripe says of it: what was refunded or lost
    /// in disputes is taken back (or given back, when a refund failed), and what it bought is
    /// frozen while a dispute on it is open, thawed when none is (README, Disputes). Only the
    /// disputed payment's grants: the owners' other credits keep working. A payment not yet known
    /// is left pending: the purchase, when it arrives, settles it.
    // Long: a payment's facts read, decided by `refunds::settle_payment` (pure), and each owner's
    // settlement run as its command, for every payment key the event names.
    async fn settle_payment(&self, keys: &[Option<&str>]) -> Result<Outcome> {
        let keys: Vec<String> = keys.iter().flatten().map(|k| k.to_string()).collect();
        let known = self.tx.known_payment_keys(&keys).await?;
        if known.is_empty() {
            return Ok(Outcome::new(
                OutcomeKind::Pending,
                format!("payment {keys:?} not known yet; applied when its purchase arrives"),
            ));
        }
        if !self.tx.anything_taken_back(&known).await? {
            return Ok(stripe_run::nothing_taken_back(&known));
        }
        let mut taken_total = Credits::ZERO;
        let mut given_total = Credits::ZERO;
        let mut frozen_now = false;
        for key in &known {
            let taken_back = self.tx.money_taken_back(key).await?;
            if taken_back.facts == PaymentRefunds::default() && !taken_back.disputed {
                // Nothing refunded or disputed: nothing to take, nothing to freeze.
                continue;
            }
            let grants = self.tx.paid_grants(key).await?;
            self.tx
                .lock_accounts(grants.iter().map(|g| g.customer_id.as_str()))
                .await?;
            grants.iter().for_each(|g| self.tx.concerns(&g.customer_id));
            if grants.is_empty() {
                continue;
            }
            frozen_now |= taken_back.dispute_open;
            let ids: Vec<String> = grants.iter().map(|g| g.grant_id.clone()).collect();
            let clawed = self.tx.clawed_credits(&ids).await?.into_iter().collect();
            let bought: Vec<BoughtGrant> = grants
                .iter()
                .map(|g| BoughtGrant {
                    customer: CustomerId::known(g.customer_id.clone()),
                    currency: g.currency.clone(),
                    share: g.share(),
                })
                .collect();
            let paid = self.tx.payment(key).await?;
            let (owners, same_currency) = refunds::settle_payment(&PaymentFacts {
                refunds: &taken_back.facts,
                refund_currency: taken_back.currency.as_deref(),
                dispute_open: taken_back.dispute_open,
                paid_and_tax: paid.map(|p| (p.paid_minor, p.tax_minor)),
                grants: &bought,
                clawed: &clawed,
            });
            if !same_currency {
                tracing::warn!(payment = %key, "refund currency differs from the payment's");
            }
            for owner in owners {
                // Thawed before anything is taken back (a lost dispute takes what it froze),
                // frozen after anything given back (an open dispute keeps it out of reach).
                let settle = Command::SettlePayment {
                    grant_ids: owner.grant_ids,
                    money: owner.money.clone(),
                    clawed: owner.clawed,
                    giving_back: owner.giving_back,
                    freeze: owner.freeze,
                };
                let moved = moved(
                    self.tx
                        .run(command(&owner.customer, self.now, self.event_id, settle))
                        .await?,
                )?;
                if owner.giving_back {
                    given_total += moved;
                } else {
                    taken_total += moved;
                }
                for (id, money) in &owner.money {
                    let money = if owner.giving_back { -*money } else { *money };
                    self.tx.add_clawed_back(key, id, money).await?;
                }
            }
        }
        let frozen = if frozen_now {
            "; what it bought is frozen while the dispute is open"
        } else {
            ""
        };
        Ok(Outcome::new(
            OutcomeKind::Applied,
            if given_total.is_zero() {
                format!("payment {known:?}: {taken_total} credits taken back{frozen}")
            } else {
                format!(
                    "payment {known:?}: {given_total} credits given back (a refund failed or \
                     was canceled){frozen}"
                )
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::checkout::{Decision, Known};

    fn catalog() -> Catalog {
        crate::config::Config::parse(
            include_str!("../../examples/creditbook.toml"),
            "examples/creditbook.toml",
            |_| None,
        )
        .expect("example config")
        .catalog
    }

    /// A fixture's event, its session as a fact, and what the checkout rows decide on empty books.
    fn decided(fixture: &str) -> (CheckoutFact, Decision) {
        let event: Event = serde_json::from_str(fixture).unwrap();
        let session = match event::parse(&event).unwrap() {
            Parsed::CheckoutCompleted(session) => session,
            other => panic!("not a completed checkout: {other:?}"),
        };
        let fact = checkout_fact(&event, &session, None);
        let now = chrono::DateTime::from_timestamp(event.created, 0).unwrap();
        let decision =
            Known::default().decide(&fact, &catalog(), now, || "grant_fixture".to_owned());
        (fact, decision)
    }

    fn applied(decision: Decision) -> crate::domain::checkout::Applied {
        match decision {
            Decision::Apply(applied) => *applied,
            other => panic!("not applied: {other:?}"),
        }
    }

    /// Stripe's own payload of a subscription's checkout (API 2025-03-31.basil): it links its
    /// Stripe customer to itself; plan credits come from the paid invoice.
    #[test]
    fn a_real_subscription_checkout_only_links() {
        let (fact, decision) = decided(include_str!(
            "../../tests/fixtures/stripe/real/checkout_session_completed_subscription_2025-03-31.basil.json"
        ));
        let stripe_customer = fact.stripe_customer.clone().expect("a Stripe customer");
        let applied = applied(decision);
        assert_eq!(applied.outcome.outcome, OutcomeKind::Applied);
        assert_eq!(
            applied.outcome.detail,
            format!("customer {stripe_customer} linked; plan credits come from paid invoices")
        );
        assert_eq!(
            applied.link,
            Some((
                stripe_customer.clone(),
                CustomerId::known(stripe_customer),
                LinkedBy::Default
            ))
        );
        assert_eq!(applied.grant, None);
    }

    /// A paid checkout naming its account by `client_reference_id`, with no `creditbook_pack`
    /// and no line items: `unmapped_price`, concerning the named account, granting nothing.
    #[test]
    fn a_payment_checkout_without_a_pack_is_unmapped() {
        let (fact, decision) = decided(include_str!(
            "../../tests/fixtures/stripe/synthetic/checkout_session_completed_payment.json"
        ));
        assert_eq!(
            fact.named,
            Some((CustomerId::known("user_42"), LinkedBy::ClientReferenceId))
        );
        assert_eq!(fact.payment_key, "pi_1PgafyB7WZ01zgkWSjxsAJo3");
        let applied = applied(decision);
        assert_eq!(applied.outcome.outcome, OutcomeKind::UnmappedPrice);
        assert_eq!(
            applied.outcome.detail,
            "no creditbook_pack metadata, and no API key to read the line items"
        );
        assert_eq!(
            applied.concerns.as_ref().map(CustomerId::as_str),
            Some("user_42")
        );
        assert_eq!(applied.grant, None);
    }

    /// A fixture's paid invoice as a fact, and what it decides for account `acme` on empty
    /// books, with the real fixture's price sold by plan `pro`.
    fn invoice_decided(fixture: &str) -> (invoice::InvoiceFact, invoice::InvoicePaid) {
        let event: Event = serde_json::from_str(fixture).unwrap();
        let invoice = match event::parse(&event).unwrap() {
            Parsed::InvoicePaid(invoice) => invoice,
            other => panic!("not a paid invoice: {other:?}"),
        };
        let fact = invoice_fact(&invoice, &Fetched::default()).unwrap();
        let mut catalog = catalog();
        let pro = catalog.plans.get_mut("pro").unwrap();
        pro.stripe_prices
            .push("price_1RCV6tCMHTTliF5iuMgrQbyE".into());
        let known = invoice::Known::of(CustomerId::known("acme"));
        let now = chrono::DateTime::from_timestamp(event.created, 0).unwrap();
        let paid = invoice::decide(&fact, &known, &catalog, now, event.created, || {
            "grant_fixture".to_owned()
        });
        (fact, paid)
    }

    /// Stripe's own payload of a subscription's first invoice (API 2025-03-31.basil, CAD): the
    /// plan's credits for the line's period at the line's price; the invoice names no payment,
    /// so it stands for its payment until that is learnt; the subscription becomes active.
    #[test]
    fn a_real_first_invoice_grants_its_plan_for_the_period() {
        let (fact, paid) = invoice_decided(include_str!(
            "../../tests/fixtures/stripe/real/invoice_payment_succeeded_2025-03-31.basil_signed.json"
        ));
        assert_eq!(fact.invoice_id, "in_1RMgafCMHTTliF5ilpBkRLZf");
        assert!(!fact.renewal);
        assert_eq!(fact.named_payment, None);
        assert_eq!(paid.payment_key, "in_1RMgafCMHTTliF5ilpBkRLZf");
        assert!(!paid.payment_known);
        assert!(paid.unmapped.is_empty());
        let [line] = &paid.lines[..] else {
            panic!("one line: {:?}", paid.lines)
        };
        assert_eq!(line.effect, "invoice_line:il_1RMgafCMHTTliF5iQYZRgR73");
        let LineStep::Grant(bought) = &line.step else {
            panic!("a grant: {:?}", line.step)
        };
        assert_eq!(bought.plan_id, "pro");
        assert_eq!(bought.grant.credits.to_string(), "2000");
        assert_eq!(
            bought.grant.price.map(|p| p.to_string()).as_deref(),
            Some("49.99")
        );
        assert_eq!(bought.grant.currency.as_deref(), Some("cad"));
        assert_eq!(
            (bought.period.0.timestamp(), bought.period.1.timestamp()),
            (1_746_757_387, 1_749_435_787)
        );
        assert_eq!(bought.grant.expires_at, Some(bought.period.1));
        let state = paid.subscription.as_ref().and_then(|c| c.state.as_ref());
        assert_eq!(
            state.map(|s| (s.status.as_str(), s.plan_id.as_deref())),
            Some(("active", Some("pro")))
        );
        let outcome = invoice::outcome(&paid, &["granted".into()], fact.unread_lines);
        assert_eq!(outcome.outcome, OutcomeKind::Applied);
        assert!(outcome.detail.contains("names no payment"), "{outcome:?}");
    }

    /// A renewal invoice whose line names no price: `unmapped_price`, nothing written.
    #[test]
    fn a_renewal_whose_line_names_no_price_is_unmapped() {
        let (fact, paid) = invoice_decided(include_str!(
            "../../tests/fixtures/stripe/synthetic/invoice_paid.json"
        ));
        assert!(fact.renewal);
        assert!(paid.lines.is_empty());
        assert_eq!(
            paid.unmapped,
            vec!["il_1Pgc6sB7WZ01zgkWFnxLrLCq (no price)"]
        );
        assert_eq!(paid.subscription, None);
        let outcome = invoice::outcome(&paid, &[], fact.unread_lines);
        assert_eq!(outcome.outcome, OutcomeKind::UnmappedPrice);
    }
}
