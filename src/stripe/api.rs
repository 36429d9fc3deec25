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
