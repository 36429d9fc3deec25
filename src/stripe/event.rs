//! Tolerant Stripe event parsing (README, Stripe). Only the fields creditbook acts on are read;
//! every one is optional and unknown fields are ignored, so an event of any recent API version
//! parses. Fields that moved in API version 2025-03-31.basil are read from both places.

use crate::domain::billing::{BillingReason, CheckoutMode, InvoicePaymentStatus, PaymentStatus};
use crate::domain::refunds::{DisputeStatus, RefundStatus};
use crate::domain::subscription::SubscriptionStatus;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Largest webhook body accepted. Real events are a few KiB; an invoice with many lines reaches
/// tens of KiB. Beyond this is refused before any parsing.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;

#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// Unix seconds, from 1970 to the end of 9999.
    #[serde(deserialize_with = "unix_seconds")]
    pub created: i64,
    #[serde(default)]
    pub api_version: Option<String>,
    /// Whether the event is of Stripe's live mode; required, as Stripe always sends it.
    pub livemode: bool,
    pub data: Data,
}

/// The last second of 9999: the latest time an event may carry.
pub const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

fn unix_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    // An integer, also when written with a zero fraction (`1700000000.0` is an integer in JSON).
    let number = serde_json::Number::deserialize(d)?;
    let seconds = number
        .as_i64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= MAX_UNIX_SECONDS as f64)
                .map(|f| f as i64)
        })
        .ok_or_else(|| {
            serde::de::Error::custom(format!(
                "created: {number} is not a whole number of seconds"
            ))
        })?;
    if !(0..=MAX_UNIX_SECONDS).contains(&seconds) {
        return Err(serde::de::Error::custom(format!(
            "created: {seconds} is not a time from 1970 to 9999"
        )));
    }
    Ok(seconds)
}

#[derive(Debug, Clone, Deserialize)]
pub struct Data {
    /// The object the event is about: always a JSON object.
    #[serde(deserialize_with = "json_object")]
    pub object: serde_json::Value,
}

fn json_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<serde_json::Value, D::Error> {
    let map = serde_json::Map::deserialize(d)?;
    Ok(serde_json::Value::Object(map))
}

/// An id, whether Stripe sent it as a string or as an expanded object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id(pub String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Plain(String),
            Expanded { id: String },
        }
        match Raw::deserialize(d)? {
            Raw::Plain(id) | Raw::Expanded { id } => Ok(Id(id)),
        }
    }
}

fn id(value: &Option<Id>) -> Option<&str> {
    value.as_ref().map(|i| i.0.as_str())
}

pub type Metadata = BTreeMap<String, String>;

/// A list Stripe may send as `null`.
fn nullable<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Metadata values may in principle be anything; keep only strings.
fn metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Metadata, D::Error> {
    let raw: Option<BTreeMap<String, serde_json::Value>> = Option::deserialize(d)?;
    Ok(raw
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
        .collect())
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TotalDetails {
    #[serde(default)]
    pub amount_tax: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    #[serde(default)]
    pub mode: Option<CheckoutMode>,
    #[serde(default)]
    pub payment_status: Option<PaymentStatus>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub customer: Option<Id>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
    #[serde(default)]
    pub amount_total: Option<i64>,
    #[serde(default)]
    pub total_details: Option<TotalDetails>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<Id>,
    #[serde(default)]
    pub subscription: Option<Id>,
    /// Unix seconds.
    #[serde(default)]
    pub created: Option<i64>,
    /// Present only when expanded (the API's `expand[]=line_items`).
    #[serde(default)]
    pub line_items: Option<List<CheckoutLineItem>>,
}

impl CheckoutSession {
    pub fn customer(&self) -> Option<&str> {
        id(&self.customer)
    }
    pub fn payment_intent(&self) -> Option<&str> {
        id(&self.payment_intent)
    }
    pub fn subscription(&self) -> Option<&str> {
        id(&self.subscription)
    }
    /// The tax in what was paid, in minor units.
    pub fn tax_minor(&self) -> i64 {
        self.total_details
            .as_ref()
            .and_then(|t| t.amount_tax)
            .unwrap_or(0)
    }
    /// What was paid, net of tax, in minor units.
    pub fn amount_net_of_tax(&self) -> Option<i64> {
        self.amount_total.map(|total| total - self.tax_minor())
    }
    pub fn is_paid(&self) -> bool {
        self.payment_status
            .as_ref()
            .is_some_and(PaymentStatus::is_settled)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct List<T> {
    #[serde(default = "Vec::new", deserialize_with = "nullable")]
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutLineItem {
    #[serde(default)]
    pub price: Option<Id>,
    #[serde(default)]
    pub quantity: Option<i64>,
}

impl CheckoutLineItem {
    pub fn price(&self) -> Option<&str> {
        id(&self.price)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PriceDetails {
    #[serde(default)]
    pub price: Option<Id>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Pricing {
    #[serde(default)]
    pub price_details: Option<PriceDetails>,
    #[serde(default)]
    pub unit_amount_decimal: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LinePrice {
    pub id: String,
    #[serde(default)]
    pub unit_amount_decimal: Option<String>,
    #[serde(default)]
    pub unit_amount: Option<i64>,
}

/// A legacy plan (API versions before prices, and Stripe emulators): its id is a price id.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LegacyPlan {
    pub id: String,
    #[serde(default)]
    pub amount_decimal: Option<String>,
    #[serde(default)]
    pub amount: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreditedItems {
    #[serde(default, deserialize_with = "nullable")]
    pub invoice_line_items: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProrationDetails {
    #[serde(default)]
    pub credited_items: Option<CreditedItems>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubscriptionItemDetails {
    #[serde(default)]
    pub proration: Option<bool>,
    #[serde(default)]
    pub proration_details: Option<ProrationDetails>,
    #[serde(default)]
    pub subscription: Option<Id>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct LineParent {
    #[serde(default)]
    pub subscription_item_details: Option<SubscriptionItemDetails>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Amount {
    #[serde(default)]
    pub amount: i64,
    /// Pre-basil tax amounts say whether they are included in the line amount.
    #[serde(default)]
    pub inclusive: Option<bool>,
    /// Basil `taxes[]` say it as `tax_behavior`.
    #[serde(default)]
    pub tax_behavior: Option<String>,
}

impl Amount {
    fn is_inclusive(&self) -> bool {
        self.inclusive == Some(true) || self.tax_behavior.as_deref() == Some("inclusive")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceLine {
    pub id: String,
    #[serde(default)]
    pub amount: i64,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub quantity: Option<i64>,
    #[serde(default)]
    pub period: Option<Period>,
    /// Basil: `pricing.price_details.price`.
    #[serde(default)]
    pub pricing: Option<Pricing>,
    /// Before basil: `price` (an object).
    #[serde(default)]
    pub price: Option<LinePrice>,
    /// Legacy: `plan` and no `price`.
    #[serde(default)]
    pub plan: Option<LegacyPlan>,
    /// Before basil: `proration` and `proration_details` on the line itself.
    #[serde(default)]
    pub proration: Option<bool>,
    #[serde(default)]
    pub proration_details: Option<ProrationDetails>,
    #[serde(default)]
    pub subscription: Option<Id>,
    #[serde(default)]
    pub parent: Option<LineParent>,
    #[serde(default, deserialize_with = "nullable")]
    pub discount_amounts: Vec<Amount>,
    #[serde(default, deserialize_with = "nullable")]
    pub taxes: Vec<Amount>,
    #[serde(default, deserialize_with = "nullable")]
    pub tax_amounts: Vec<Amount>,
}

impl InvoiceLine {
    fn item_details(&self) -> Option<&SubscriptionItemDetails> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_item_details.as_ref())
    }

    pub fn price(&self) -> Option<&str> {
        self.pricing
            .as_ref()
            .and_then(|p| p.price_details.as_ref())
            .and_then(|d| id(&d.price))
            .or_else(|| self.price.as_ref().map(|p| p.id.as_str()))
            .or_else(|| self.plan.as_ref().map(|p| p.id.as_str()))
    }

    /// Unit amount in minor units (may be fractional).
    pub fn unit_amount(&self) -> Option<rust_decimal::Decimal> {
        let text = self
            .pricing
            .as_ref()
            .and_then(|p| p.unit_amount_decimal.clone())
            .or_else(|| {
                self.price
                    .as_ref()
                    .and_then(|p| p.unit_amount_decimal.clone())
            })
            .or_else(|| {
                self.price
                    .as_ref()
                    .and_then(|p| p.unit_amount)
                    .map(|a| a.to_string())
            })
            .or_else(|| {
                let plan = self.plan.as_ref()?;
                plan.amount_decimal
                    .clone()
                    .or_else(|| plan.amount.map(|a| a.to_string()))
            })?;
        text.parse().ok()
    }

    pub fn is_proration(&self) -> bool {
        self.item_details()
            .and_then(|d| d.proration)
            .or(self.proration)
            .unwrap_or(false)
    }

    /// Lines this proration credits back (the original lines of the period).
    pub fn credited_lines(&self) -> Vec<String> {
        self.item_details()
            .and_then(|d| d.proration_details.as_ref())
            .or(self.proration_details.as_ref())
            .and_then(|p| p.credited_items.as_ref())
            .map(|c| c.invoice_line_items.clone())
            .unwrap_or_default()
    }

    pub fn subscription(&self) -> Option<&str> {
        self.item_details()
            .and_then(|d| id(&d.subscription))
            .or_else(|| id(&self.subscription))
    }

    /// The line's amount net of discounts and of tax included in it, in minor units.
    pub fn amount_net_of_tax(&self) -> i64 {
        let discounts: i64 = self.discount_amounts.iter().map(|d| d.amount).sum();
        let inclusive_tax: i64 = self
            .taxes
            .iter()
            .chain(&self.tax_amounts)
            .filter(|t| t.is_inclusive())
            .map(|t| t.amount)
            .sum();
        self.amount - discounts - inclusive_tax
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubscriptionDetails {
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
    #[serde(default)]
    pub subscription: Option<Id>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InvoiceParent {
    #[serde(default)]
    pub subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InvoicePaymentRef {
    #[serde(default)]
    pub payment_intent: Option<Id>,
    #[serde(default)]
    pub charge: Option<Id>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct InvoicePayment {
    #[serde(default)]
    pub payment: Option<InvoicePaymentRef>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Id>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub billing_reason: Option<BillingReason>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub lines: Option<List<InvoiceLine>>,
    /// Basil: `parent.subscription_details`.
    #[serde(default)]
    pub parent: Option<InvoiceParent>,
    /// Before basil: `subscription` and `subscription_details`.
    #[serde(default)]
    pub subscription: Option<Id>,
    #[serde(default)]
    pub subscription_details: Option<SubscriptionDetails>,
    /// Before basil; removed in basil (see `payments`).
    #[serde(default)]
    pub payment_intent: Option<Id>,
    #[serde(default)]
    pub charge: Option<Id>,
    /// Basil, when expanded: the invoice's payments.
    #[serde(default)]
    pub payments: Option<List<InvoicePayment>>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
    /// What the customer paid, tax included, in minor units.
    #[serde(default)]
    pub amount_paid: Option<i64>,
    #[serde(default)]
    pub total: Option<i64>,
    /// Before basil: the invoice's tax.
    #[serde(default)]
    pub tax: Option<i64>,
    /// Basil: `total_taxes[].amount`.
    #[serde(default, deserialize_with = "nullable")]
    pub total_taxes: Vec<Amount>,
}

/// An invoice payment (basil): which payment paid which invoice.
#[derive(Debug, Clone, Deserialize)]
pub struct InvoicePaymentObject {
    pub id: String,
    #[serde(default)]
    pub invoice: Option<Id>,
    #[serde(default)]
    pub payment: Option<InvoicePaymentRef>,
    #[serde(default)]
    pub status: Option<InvoicePaymentStatus>,
}

impl InvoicePaymentObject {
    /// Paid (or not said): it names the invoice's payment.
    pub fn is_paid(&self) -> bool {
        self.status
            .as_ref()
            .is_none_or(|s| *s == InvoicePaymentStatus::Paid)
    }
    pub fn invoice(&self) -> Option<&str> {
        id(&self.invoice)
    }
    pub fn payment_intent(&self) -> Option<&str> {
        self.payment.as_ref().and_then(|p| id(&p.payment_intent))
    }
    pub fn charge(&self) -> Option<&str> {
        self.payment.as_ref().and_then(|p| id(&p.charge))
    }
}

impl Invoice {
    pub fn customer(&self) -> Option<&str> {
        id(&self.customer)
    }

    fn details(&self) -> Option<&SubscriptionDetails> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .or(self.subscription_details.as_ref())
    }

    pub fn subscription(&self) -> Option<&str> {
        self.details()
            .and_then(|d| id(&d.subscription))
            .or_else(|| id(&self.subscription))
    }

    /// The subscription's metadata as copied onto the invoice.
    pub fn subscription_metadata(&self) -> Option<&Metadata> {
        self.details().map(|d| &d.metadata)
    }

    pub fn payment_intent(&self) -> Option<&str> {
        id(&self.payment_intent).or_else(|| {
            self.payments.as_ref().and_then(|list| {
                list.data
                    .iter()
                    .find_map(|p| p.payment.as_ref().and_then(|p| id(&p.payment_intent)))
            })
        })
    }

    pub fn charge(&self) -> Option<&str> {
        id(&self.charge).or_else(|| {
            self.payments.as_ref().and_then(|list| {
                list.data
                    .iter()
                    .find_map(|p| p.payment.as_ref().and_then(|p| id(&p.charge)))
            })
        })
    }

    pub fn lines(&self) -> &[InvoiceLine] {
        self.lines
            .as_ref()
            .map(|l| l.data.as_slice())
            .unwrap_or(&[])
    }

    /// Has the invoice more lines than the event carries (`lines.has_more`)?
    pub fn has_more_lines(&self) -> bool {
        self.lines.as_ref().is_some_and(|l| l.has_more)
    }

    /// Does the invoice name the payment that paid it (before basil, or with `payments`)?
    pub fn names_its_payment(&self) -> bool {
        self.payment_intent().is_some() || self.charge().is_some()
    }

    /// What was paid, tax included, and the tax in it, in minor units.
    pub fn paid_and_tax(&self) -> Option<(i64, i64)> {
        let paid = self.amount_paid.or(self.total)?;
        let tax = self
            .tax
            .unwrap_or_else(|| self.total_taxes.iter().map(|t| t.amount).sum());
        Some((paid, tax))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    #[serde(default)]
    pub price: Option<LinePrice>,
    /// Legacy: `plan` and no `price`.
    #[serde(default)]
    pub plan: Option<LegacyPlan>,
    #[serde(default)]
    pub quantity: Option<i64>,
    /// Basil: the period lives on the item.
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

impl SubscriptionItem {
    /// The item's price id (a legacy plan's id is one).
    pub fn price(&self) -> Option<&str> {
        self.price
            .as_ref()
            .map(|p| p.id.as_str())
            .or_else(|| self.plan.as_ref().map(|p| p.id.as_str()))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Id>,
    #[serde(default)]
    pub status: Option<SubscriptionStatus>,
    #[serde(default)]
    pub items: Option<List<SubscriptionItem>>,
    /// Before basil: the period lives on the subscription.
    #[serde(default)]
    pub current_period_end: Option<i64>,
    #[serde(default)]
    pub cancel_at_period_end: Option<bool>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
}

impl Subscription {
    pub fn customer(&self) -> Option<&str> {
        id(&self.customer)
    }

    pub fn items(&self) -> &[SubscriptionItem] {
        self.items
            .as_ref()
            .map(|l| l.data.as_slice())
            .unwrap_or(&[])
    }

    pub fn current_period_end(&self) -> Option<i64> {
        self.items()
            .iter()
            .filter_map(|i| i.current_period_end)
            .max()
            .or(self.current_period_end)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Charge {
    pub id: String,
    #[serde(default)]
    pub payment_intent: Option<Id>,
    #[serde(default)]
    pub amount_refunded: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub customer: Option<Id>,
}

impl Charge {
    pub fn payment_intent(&self) -> Option<&str> {
        id(&self.payment_intent)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    pub id: String,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub status: Option<RefundStatus>,
    #[serde(default)]
    pub charge: Option<Id>,
    #[serde(default)]
    pub payment_intent: Option<Id>,
}

impl Refund {
    pub fn charge(&self) -> Option<&str> {
        id(&self.charge)
    }
    pub fn payment_intent(&self) -> Option<&str> {
        id(&self.payment_intent)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Dispute {
    pub id: String,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub status: Option<DisputeStatus>,
    #[serde(default)]
    pub charge: Option<Id>,
    #[serde(default)]
    pub payment_intent: Option<Id>,
}

impl Dispute {
    pub fn charge(&self) -> Option<&str> {
        id(&self.charge)
    }
    pub fn payment_intent(&self) -> Option<&str> {
        id(&self.payment_intent)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
}

/// Why a payment intent's last attempt failed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PaymentError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    #[serde(default)]
    pub amount: Option<i64>,
    #[serde(default)]
    pub amount_received: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub customer: Option<Id>,
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Metadata,
    #[serde(default)]
    pub created: Option<i64>,
    #[serde(default)]
    pub last_payment_error: Option<PaymentError>,
}

impl PaymentIntent {
    pub fn customer(&self) -> Option<&str> {
        id(&self.customer)
    }
}

/// What an event is about, once its object is parsed for its type.
#[derive(Debug, Clone)]
pub enum Parsed {
    CheckoutCompleted(CheckoutSession),
    CheckoutAsyncPaid(CheckoutSession),
    InvoicePaid(Invoice),
    InvoicePaymentFailed(Invoice),
    Subscription {
        deleted: bool,
        subscription: Subscription,
    },
    ChargeRefunded(Charge),
    Refund(Refund),
    Dispute(Dispute),
    Customer(Customer),
    /// `invoice_payment.paid`: the payment of an invoice (basil no longer names it on the invoice).
    InvoicePayment(InvoicePaymentObject),
    /// `payment_intent.succeeded`: the money of an automatic top-up is taken.
    PaymentIntentSucceeded(PaymentIntent),
    /// `payment_intent.payment_failed`.
    PaymentIntentFailed(PaymentIntent),
    /// A type creditbook does not act on.
    Unhandled,
}

impl Parsed {
    /// The Stripe objects this event reads or changes state about, by id: the customer, the
    /// payment (intent and charge), the subscription, the session or invoice and the object
    /// itself. Two events that share none touch no common Stripe state (the accounts they share
    /// are locked as they are found).
    pub fn objects(&self) -> Vec<String> {
        let ids: Vec<Option<&str>> = match self {
            Parsed::CheckoutCompleted(s) | Parsed::CheckoutAsyncPaid(s) => vec![
                Some(&s.id),
                s.customer(),
                s.payment_intent(),
                s.subscription(),
            ],
            Parsed::InvoicePaid(i) | Parsed::InvoicePaymentFailed(i) => vec![
                Some(&i.id),
                i.customer(),
                i.payment_intent(),
                i.charge(),
                i.subscription(),
            ],
            Parsed::Subscription { subscription, .. } => {
                vec![Some(&subscription.id), subscription.customer()]
            }
            Parsed::ChargeRefunded(c) => vec![Some(&c.id), c.payment_intent(), id(&c.customer)],
            Parsed::Refund(r) => vec![Some(&r.id), r.payment_intent(), r.charge()],
            Parsed::Dispute(d) => vec![Some(&d.id), d.payment_intent(), d.charge()],
            Parsed::Customer(c) => vec![Some(&c.id)],
            Parsed::InvoicePayment(p) => {
                vec![Some(&p.id), p.invoice(), p.payment_intent(), p.charge()]
            }
            Parsed::PaymentIntentSucceeded(p) | Parsed::PaymentIntentFailed(p) => {
                vec![Some(&p.id), p.customer()]
            }
            Parsed::Unhandled => vec![],
        };
        ids.into_iter().flatten().map(str::to_owned).collect()
    }

    /// What the event is mostly about, to spread events over the batch workers: the Stripe
    /// customer its object names, else its payment, else the object itself. The events of one
    /// Stripe customer go to one worker, in the order they arrive. `None` for a type creditbook
    /// does not act on.
    pub fn shard_key(&self) -> Option<&str> {
        let ids: [Option<&str>; 3] = match self {
            Parsed::CheckoutCompleted(s) | Parsed::CheckoutAsyncPaid(s) => {
                [s.customer(), s.payment_intent(), Some(&s.id)]
            }
            Parsed::InvoicePaid(i) | Parsed::InvoicePaymentFailed(i) => {
                [i.customer(), i.subscription(), Some(&i.id)]
            }
            Parsed::Subscription { subscription, .. } => {
                [subscription.customer(), Some(&subscription.id), None]
            }
            Parsed::ChargeRefunded(c) => [id(&c.customer), c.payment_intent(), Some(&c.id)],
            Parsed::Refund(r) => [r.payment_intent(), r.charge(), Some(&r.id)],
            Parsed::Dispute(d) => [d.payment_intent(), d.charge(), Some(&d.id)],
            Parsed::Customer(c) => [Some(&c.id), None, None],
            Parsed::InvoicePayment(p) => [p.payment_intent(), p.invoice(), Some(&p.id)],
            Parsed::PaymentIntentSucceeded(p) | Parsed::PaymentIntentFailed(p) => {
                [p.customer(), Some(&p.id), None]
            }
            Parsed::Unhandled => [None, None, None],
        };
        ids.into_iter().flatten().next()
    }
}

/// Parses the event's object for its type. An object of a handled type that lacks what is
/// needed is an error: the event is recorded as malformed.
pub fn parse(event: &Event) -> Result<Parsed, serde_json::Error> {
    let object = event.data.object.clone();
    let parsed = match event.event_type.as_str() {
        "checkout.session.completed" => Parsed::CheckoutCompleted(serde_json::from_value(object)?),
        "checkout.session.async_payment_succeeded" => {
            Parsed::CheckoutAsyncPaid(serde_json::from_value(object)?)
        }
        "invoice.paid" | "invoice.payment_succeeded" => {
            Parsed::InvoicePaid(serde_json::from_value(object)?)
        }
        "invoice.payment_failed" => Parsed::InvoicePaymentFailed(serde_json::from_value(object)?),
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "customer.subscription.paused"
        | "customer.subscription.resumed" => Parsed::Subscription {
            deleted: event.event_type == "customer.subscription.deleted",
            subscription: serde_json::from_value(object)?,
        },
        "charge.refunded" => Parsed::ChargeRefunded(serde_json::from_value(object)?),
        "refund.created" | "refund.updated" | "refund.failed" | "charge.refund.updated" => {
            Parsed::Refund(serde_json::from_value(object)?)
        }
        "charge.dispute.created" | "charge.dispute.updated" | "charge.dispute.closed" => {
            Parsed::Dispute(serde_json::from_value(object)?)
        }
        "customer.created" | "customer.updated" => {
            Parsed::Customer(serde_json::from_value(object)?)
        }
        "invoice_payment.paid" => Parsed::InvoicePayment(serde_json::from_value(object)?),
        "payment_intent.succeeded" => {
            Parsed::PaymentIntentSucceeded(serde_json::from_value(object)?)
        }
        "payment_intent.payment_failed" => {
            Parsed::PaymentIntentFailed(serde_json::from_value(object)?)
        }
        _ => Parsed::Unhandled,
    };
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, object: serde_json::Value) -> Event {
        serde_json::from_value(json!({
            "id": "evt_1", "type": event_type, "created": 1, "livemode": false, "data": {"object": object}
        }))
        .unwrap()
    }

    #[test]
    fn an_event_goes_by_its_stripe_customer_else_its_payment_else_itself() {
        let key = |event_type: &str, object: serde_json::Value| {
            parse(&event(event_type, object))
                .unwrap()
                .shard_key()
                .map(str::to_owned)
        };
        let invoice = json!({"id": "in_1", "object": "invoice", "customer": "cus_1"});
        assert_eq!(key("invoice.paid", invoice).as_deref(), Some("cus_1"));
        let subscription = json!({"id": "sub_1", "customer": {"id": "cus_2"}});
        assert_eq!(
            key("customer.subscription.updated", subscription).as_deref(),
            Some("cus_2")
        );
        let refund = json!({"id": "re_1", "payment_intent": "pi_1", "charge": "ch_1"});
        assert_eq!(key("refund.created", refund).as_deref(), Some("pi_1"));
        let dispute = json!({"id": "dp_1", "charge": "ch_1"});
        assert_eq!(
            key("charge.dispute.created", dispute).as_deref(),
            Some("ch_1")
        );
        let charge = json!({"id": "ch_1", "payment_intent": "pi_1", "customer": "cus_3"});
        assert_eq!(key("charge.refunded", charge).as_deref(), Some("cus_3"));
        let customer = json!({"id": "cus_4", "object": "customer"});
        assert_eq!(key("customer.updated", customer).as_deref(), Some("cus_4"));
        let session = json!({"id": "cs_1", "object": "checkout.session"});
        assert_eq!(
            key("checkout.session.completed", session).as_deref(),
            Some("cs_1")
        );
        assert_eq!(key("product.created", json!({"id": "prod_1"})), None);
    }

    #[test]
    fn statuses_are_read_as_enums_and_new_ones_are_kept() {
        let Parsed::Subscription { subscription, .. } = parse(&event(
            "customer.subscription.updated",
            json!({"id": "sub_1", "status": "past_due"}),
        ))
        .unwrap() else {
            panic!("a subscription")
        };
        assert_eq!(subscription.status, Some(SubscriptionStatus::PastDue));
        let Parsed::Dispute(dispute) = parse(&event(
            "charge.dispute.updated",
            json!({"id": "dp_1", "status": "a_future_status"}),
        ))
        .unwrap() else {
            panic!("a dispute")
        };
        assert_eq!(
            dispute.status,
            Some(DisputeStatus::Other("a_future_status".into()))
        );
        let Parsed::Refund(refund) = parse(&event(
            "refund.updated",
            json!({"id": "re_1", "status": null}),
        ))
        .unwrap() else {
            panic!("a refund")
        };
        assert_eq!(refund.status, None);
        let Parsed::CheckoutCompleted(session) = parse(&event(
            "checkout.session.completed",
            json!({"id": "cs_1", "mode": "payment", "payment_status": "no_payment_required"}),
        ))
        .unwrap() else {
            panic!("a session")
        };
        assert_eq!(session.mode, Some(CheckoutMode::Payment));
        assert!(session.is_paid());
        // A status of the wrong type is an object that cannot be read.
        assert!(parse(&event("refund.updated", json!({"id": "re_1", "status": 5}))).is_err());
    }

    #[test]
    fn an_event_has_an_object_and_a_time() {
        let read = |value: serde_json::Value| serde_json::from_value::<Event>(value).is_ok();
        let event = |created: serde_json::Value, object: serde_json::Value| json!({"id": "evt_1", "type": "x", "created": created, "livemode": false, "data": {"object": object}});
        assert!(read(event(json!(0), json!({}))));
        assert!(read(event(json!(MAX_UNIX_SECONDS), json!({}))));
        assert!(!read(event(json!(-1), json!({}))));
        assert!(
            read(event(json!(1_700_000_000.0), json!({}))),
            "a whole number"
        );
        assert!(!read(event(json!(1_700_000_000.5), json!({}))));
        assert!(!read(event(json!(MAX_UNIX_SECONDS + 1), json!({}))));
        assert!(!read(event(json!(1), json!([]))));
        assert!(!read(event(json!(1), json!("cs_1"))));
        assert!(!read(
            json!({"id": "evt_1", "type": "x", "livemode": false, "data": {"object": {}}})
        ));
        // Its mode is required: Stripe always says it.
        assert!(!read(
            json!({"id": "evt_1", "type": "x", "created": 1, "data": {"object": {}}})
        ));
        assert!(!read(
            json!({"id": "evt_1", "type": "x", "created": 1, "livemode": "no", "data": {"object": {}}})
        ));
    }

    /// Row "anything else": recorded as `unknown_type`, whatever its object.
    #[test]
    fn any_other_type_is_unhandled() {
        let parsed = parse(&event("price.created", json!({"not": "read"}))).unwrap();
        assert!(matches!(parsed, Parsed::Unhandled));
    }
}
