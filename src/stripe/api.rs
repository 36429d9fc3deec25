//! The Stripe API, through async-stripe's client (authentication, retries, `api_base`). Responses
//! are read as JSON and parsed with the same tolerant structs as webhooks, so an object of any
//! API version reads the same whichever way it arrived.

use super::event::{CheckoutLineItem, InvoiceLine, InvoicePaymentObject};
use crate::config::StripeConfig;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::time::Duration;
use stripe_client_core::{RequestBuilder, RequestStrategy, StripeMethod};

/// Objects per page asked of list endpoints (Stripe's maximum).
const PAGE_SIZE: u32 = 100;
/// Pages read from one list at most: a limit on everything (10 million objects).
pub const MAX_PAGES: u32 = 100_000;

/// One page of a Stripe list.
#[derive(Debug, Clone)]
pub struct Page {
    pub data: Vec<serde_json::Value>,
    pub has_more: bool,
}

impl Page {
    /// The id of the page's last object: where the next page starts.
    pub fn last_id(&self) -> Option<String> {
        self.data
            .last()
            .and_then(|o| o.get("id"))
            .and_then(|i| i.as_str())
            .map(str::to_owned)
    }
}

#[derive(Clone)]
pub struct StripeApi {
    client: stripe::Client,
}

impl StripeApi {
    /// A client when an API key is configured.
    pub fn from_config(config: &StripeConfig) -> Result<Option<StripeApi>> {
        let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) else {
            return Ok(None);
        };
        let mut builder = stripe::ClientBuilder::new(key)
            .timeout(Duration::from_secs(30))
            .request_strategy(RequestStrategy::ExponentialBackoff(3));
        if let Some(base) = &config.api_base {
            // async-stripe appends `v1/...` to the base.
            let base = if base.ends_with('/') {
                base.clone()
            } else {
                format!("{base}/")
            };
            builder = builder.url(base);
        }
        let client = builder
            .build()
            .map_err(|e| Error::StripeUnavailable(e.to_string()))?;
        Ok(Some(StripeApi { client }))
    }

    async fn get(&self, path: &str, query: &BTreeMap<String, String>) -> Result<serde_json::Value> {
        let value: miniserde::json::Value = RequestBuilder::new(StripeMethod::Get, path)
            .query(query)
            .customize()
            .send(&self.client)
            .await
            .map_err(|e| Error::StripeUnavailable(e.to_string()))?;
        serde_json::from_str(&miniserde::json::to_string(&value))
            .map_err(|e| Error::StripeUnavailable(format!("unreadable response: {e}")))
    }

    /// One page of a list endpoint: the objects after `starting_after` (from the first when
    /// none), and whether more follow.
    pub async fn page(
        &self,
        path: &str,
        params: &BTreeMap<String, String>,
        starting_after: Option<&str>,
    ) -> Result<Page> {
        let mut query = params.clone();
        query.insert("limit".into(), PAGE_SIZE.to_string());
        if let Some(after) = starting_after {
            query.insert("starting_after".into(), after.to_owned());
        }
        let page = self.get(path, &query).await?;
        let data = page
            .get("data")
            .and_then(|d| d.as_array())
            .cloned()
            .ok_or_else(|| Error::StripeUnavailable(format!("{path}: not a list")))?;
        let has_more = page
            .get("has_more")
            .and_then(|h| h.as_bool())
            .unwrap_or(false);
        Ok(Page { data, has_more })
    }

    /// Every object of a short list endpoint (a session's items, an invoice's lines), page by
    /// page, at most [`MAX_PAGES`].
    pub async fn list_all(
        &self,
        path: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Vec<serde_json::Value>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let page = self.page(path, params, after.as_deref()).await?;
            after = page.last_id();
            let more = page.has_more;
            all.extend(page.data);
            if !more || after.is_none() {
                return Ok(all);
            }
        }
        Err(Error::StripeUnavailable(format!(
            "{path}: more than {MAX_PAGES} pages"
        )))
    }

    /// Every object of a list endpoint, read as `T`.
    async fn list_of<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        params: &BTreeMap<String, String>,
    ) -> Result<Vec<T>> {
        self.list_all(path, params)
            .await?
            .into_iter()
            .map(|object| {
                serde_json::from_value(object)
                    .map_err(|e| Error::StripeUnavailable(format!("{path}: {e}")))
            })
            .collect()
    }

    /// A checkout session's line items (price and quantity).
    pub async fn checkout_line_items(&self, session_id: &str) -> Result<Vec<(String, i64)>> {
        let path = format!("/checkout/sessions/{session_id}/line_items");
        let items: Vec<CheckoutLineItem> = self.list_of(&path, &BTreeMap::new()).await?;
        Ok(items
            .iter()
            .filter_map(|item| Some((item.price()?.to_owned(), item.quantity.unwrap_or(1))))
            .collect())
    }

    /// Every line of an invoice.
    pub async fn invoice_lines(&self, invoice_id: &str) -> Result<Vec<InvoiceLine>> {
        let path = format!("/invoices/{invoice_id}/lines");
        self.list_of(&path, &BTreeMap::new()).await
    }

    /// The payments of an invoice (`/v1/invoice_payments?invoice=`).
    pub async fn invoice_payments(&self, invoice_id: &str) -> Result<Vec<InvoicePaymentObject>> {
        let params = BTreeMap::from([("invoice".to_owned(), invoice_id.to_owned())]);
        self.list_of("/invoice_payments", &params).await
    }

    /// Sends one meter event (`POST /v1/billing/meter_events`): `fields` are its form fields
    /// (`event_name`, `identifier`, `timestamp`, `payload[...]`). The identifier is also the
    /// request's `Idempotency-Key`, so a retry within Stripe's idempotency window gets the first
    /// answer. One attempt: the outbox retries.
    pub async fn meter_event(&self, fields: &serde_json::Value) -> Result<()> {
        let identifier = fields
            .get("identifier")
            .and_then(|i| i.as_str())
            .ok_or_else(|| Error::Internal("a meter event without an identifier".into()))?;
        let key = stripe_client_core::IdempotencyKey::new(identifier)
            .map_err(|e| Error::Internal(format!("meter event identifier: {e}")))?;
        let _: miniserde::json::Value =
            RequestBuilder::new(StripeMethod::Post, "/billing/meter_events")
                .form(fields)
                .customize()
                .request_strategy(RequestStrategy::Idempotent(key))
                .send(&self.client)
                .await
                .map_err(|e| Error::StripeUnavailable(e.to_string()))?;
        Ok(())
    }
}

/// Stripe's answer to an automatic top-up charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeAnswer {
    /// The payment intent was made and is `succeeded` or `processing`: its event brings the
    /// credits.
    Created { payment_intent: String },
    /// Refused for good (a declined card, no saved payment method, an invalid request): not
    /// tried again until the customer acts.
    Refused {
        reason: String,
        code: Option<String>,
        payment_intent: Option<String>,
    },
}

/// Statuses of a Stripe answer that refuse for good; any other failure may pass (5xx, 429, a
/// lost answer) and is tried again with the same idempotency key.
fn refused_for_good(status: u16) -> bool {
    matches!(status, 400 | 402 | 404)
}

impl StripeApi {
    async fn send_json(
        &self,
        request: RequestBuilder,
        strategy: RequestStrategy,
    ) -> std::result::Result<serde_json::Value, stripe::StripeError> {
        let value: miniserde::json::Value = request
            .customize()
            .request_strategy(strategy)
            .send(&self.client)
            .await?;
        serde_json::from_str(&miniserde::json::to_string(&value))
            .map_err(|e| stripe::StripeError::JSONDeserialize(e.to_string()))
    }

    /// The payment method to charge a Stripe customer off-session with: its invoice default,
    /// else its default source, else the first it has saved.
    async fn saved_payment_method(
        &self,
        stripe_customer: &str,
    ) -> std::result::Result<Option<String>, stripe::StripeError> {
        let customer = self
            .send_json(
                RequestBuilder::new(StripeMethod::Get, format!("/customers/{stripe_customer}")),
                RequestStrategy::Once,
            )
            .await?;
        let id_of = |v: &serde_json::Value| {
            v.as_str()
                .or_else(|| v.get("id").and_then(|i| i.as_str()))
                .map(str::to_owned)
        };
        if let Some(id) = id_of(&customer["invoice_settings"]["default_payment_method"])
            .or_else(|| id_of(&customer["default_source"]))
        {
            return Ok(Some(id));
        }
        let query = BTreeMap::from([
            ("customer".to_owned(), stripe_customer.to_owned()),
            ("limit".to_owned(), "1".to_owned()),
        ]);
        let page = self
            .send_json(
                RequestBuilder::new(StripeMethod::Get, "/payment_methods").query(&query),
                RequestStrategy::Once,
            )
            .await?;
        Ok(page["data"]
            .as_array()
            .and_then(|d| d.first())
            .and_then(|pm| pm.get("id"))
            .and_then(|i| i.as_str())
            .map(str::to_owned))
    }

    /// Charges a pack off-session (`POST /v1/payment_intents`, `confirm` and `off_session`) to
    /// the Stripe customer's saved payment method, with the attempt id as the idempotency key
    /// and in the metadata (`creditbook_auto_topup`, `creditbook_customer`, `creditbook_pack`),
    /// which is how its `payment_intent.*` events are known. One attempt: the outbox retries. An
    /// error is a failure that may pass.
    // Long: the payment intent's form fields, each named as Stripe's API reads them.
    pub async fn charge(
        &self,
        charge: &crate::domain::autotopup::Charge,
        stripe_customer: &str,
    ) -> Result<ChargeAnswer> {
        let unavailable = |e: stripe::StripeError| Error::StripeUnavailable(e.to_string());
        let refused = |e: &stripe::StripeError| match e {
            stripe::StripeError::Stripe(api, status) if refused_for_good(*status) => {
                Some(ChargeAnswer::Refused {
                    reason: api
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("Stripe refused the charge ({status})")),
                    code: api
                        .decline_code
                        .clone()
                        .or_else(|| api.code.as_ref().map(|c| c.as_str().to_owned())),
                    payment_intent: api.payment_intent.as_ref().map(|p| p.id.to_string()),
                })
            }
            _ => None,
        };
        let method = match self.saved_payment_method(stripe_customer).await {
            Ok(Some(method)) => method,
            Ok(None) => {
                return Ok(ChargeAnswer::Refused {
                    reason: format!(
                        "Stripe customer {stripe_customer} has no saved payment method"
                    ),
                    code: Some("no_payment_method".into()),
                    payment_intent: None,
                });
            }
            Err(e) => return refused(&e).ok_or_else(|| unavailable(e)),
        };
        let key = stripe_client_core::IdempotencyKey::new(charge.attempt.as_str())
            .map_err(|e| Error::Internal(format!("attempt id as idempotency key: {e}")))?;
        let fields = BTreeMap::from([
            ("amount", charge.amount_minor.to_string()),
            ("currency", charge.currency.clone()),
            ("customer", stripe_customer.to_owned()),
            ("payment_method", method),
            ("off_session", "true".to_owned()),
            ("confirm", "true".to_owned()),
            (
                "description",
                format!("Automatic top-up: pack {}", charge.pack),
            ),
            ("metadata[creditbook_auto_topup]", charge.attempt.clone()),
            ("metadata[creditbook_customer]", charge.customer.to_string()),
            ("metadata[creditbook_pack]", charge.pack.clone()),
        ]);
        let answer = self
            .send_json(
                RequestBuilder::new(StripeMethod::Post, "/payment_intents").form(&fields),
                RequestStrategy::Idempotent(key),
            )
            .await;
        let intent = match answer {
            Ok(intent) => intent,
            Err(e) => return refused(&e).ok_or_else(|| unavailable(e)),
        };
        let id = intent["id"].as_str().unwrap_or_default().to_owned();
        match intent["status"].as_str() {
            Some("succeeded" | "processing") if !id.is_empty() => {
                Ok(ChargeAnswer::Created { payment_intent: id })
            }
            status => {
                let error = &intent["last_payment_error"];
                Ok(ChargeAnswer::Refused {
                    reason: error["message"].as_str().map_or_else(
                        || {
                            format!(
                                "the payment intent is {}: it needs the customer",
                                status.unwrap_or("of no status")
                            )
                        },
                        str::to_owned,
                    ),
                    code: error["decline_code"]
                        .as_str()
                        .or(error["code"].as_str())
                        .or(status)
                        .map(str::to_owned),
                    payment_intent: (!id.is_empty()).then_some(id),
                })
            }
        }
    }
}
