//! Delivers the outbox (README, Outbound webhooks): each message is POSTed to its endpoint signed
//! per the Standard Webhooks specification (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`), at least once; the id is the same on every retry, so a receiver that
//! keeps the ids it has seen processes each message once.

use crate::clock::Clock;
use crate::config::{OutboxSettings, WebhookEndpoint};
use crate::domain::outbound::AfterFailure;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::outbox::{Attempt, OutboxKind};
use entity::outbox;
use std::sync::Arc;
use std::time::Duration;

/// Rows claimed per pass, and delivered concurrently.
const CLAIM_BATCH: u64 = 32;

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<hyper::body::Bytes>,
>;

/// An HTTP/1.1 client for http:// and https:// endpoints (TLS with the Mozilla roots).
fn http_client() -> HttpClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

/// The `webhook-signature` header of a message: `v1,` and the base64 of the HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` under the endpoint's key.
pub fn sign(key: &[u8], message_id: &str, timestamp: i64, body: &str) -> String {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{message_id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// What a failed attempt says.
#[derive(Debug)]
struct Failure {
    error: String,
    retry_after_ms: Option<u64>,
}

/// The worker: delivers what is due, then waits for the next poll (or for `wake`), until `stop`.
pub struct Worker {
    pub store: Store,
    pub endpoints: Arc<Vec<WebhookEndpoint>>,
    pub settings: OutboxSettings,
    /// Real time: deliveries and their retries happen in real time whatever a test clock says.
    pub wall_clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// Stripe's API, for meter events; none without `[stripe] api_key`.
    pub stripe: Option<crate::stripe::api::StripeApi>,
}

impl Worker {
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let client = http_client();
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        loop {
            let pass = self.pass(&client);
            let claimed = match self
                .store
                .workers()
                .round(crate::supervise::OUTBOX, pass)
                .await
            {
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "outbox pass failed; it runs again");
                    0
                }
                // Logged and counted by the supervision; it runs again after the poll interval.
                None => 0,
            };
            if *stop.borrow() {
                return;
            }
            // A full batch: more may be due at once.
            if claimed as u64 == CLAIM_BATCH {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One pass: claims what is due and delivers it; returns how many rows it claimed.
    // Long: one delivery pass: claim, deliver or charge, record each attempt.
    pub async fn pass(&self, client: &HttpClient) -> crate::error::Result<usize> {
        let now = self.wall_clock.now();
        let lease_ms = i64::try_from(self.settings.timeout_seconds * 1_000 + 30_000)
            .expect("a bounded timeout");
        let rows = self.store.outbox_claim(now, CLAIM_BATCH, lease_ms).await?;
        let claimed = rows.len();
        let results =
            futures_util::future::join_all(rows.iter().map(|row| self.deliver(client, row))).await;
        for (row, result) in rows.iter().zip(results) {
            let now = self.wall_clock.now();
            match result {
                Ok(()) => {
                    Metrics::bump(&self.metrics.webhooks_delivered);
                    self.store
                        .outbox_attempted(&row.id, now, Attempt::Delivered)
                        .await?;
                }
                Err(failure) => {
                    Metrics::bump(&self.metrics.webhooks_failed);
                    let age_ms = u64::try_from((now.timestamp_micros() - row.created_at) / 1_000)
                        .unwrap_or(0);
                    let failures = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
                    let jitter = rand::random::<u16>() % 1_001;
                    let stripe_write =
                        OutboxKind::parse(&row.kind).is_some_and(OutboxKind::is_stripe_write);
                    let next = if stripe_write {
                        // Tried again only while Stripe honours the idempotency key: from the
                        // first attempt, however often the row was replayed since.
                        let since_first_ms = row.first_attempt_at.map_or(0, |first| {
                            u64::try_from((now.timestamp_micros() - first) / 1_000).unwrap_or(0)
                        });
                        crate::domain::outbound::after_stripe_failure(
                            &self.settings.retry,
                            failures,
                            age_ms,
                            since_first_ms,
                            failure.retry_after_ms,
                            jitter,
                        )
                    } else {
                        self.settings.retry.after_failure(
                            failures,
                            age_ms,
                            failure.retry_after_ms,
                            jitter,
                        )
                    };
                    if next == AfterFailure::Dead {
                        tracing::warn!(id = %row.id, message = %row.message_id, destination = %row.destination,
                            error = %failure.error, "outbox message given up after its retry window");
                        if OutboxKind::parse(&row.kind) == Some(OutboxKind::PaymentIntent) {
                            // A charge Stripe could not be asked for in time has failed.
                            self.store
                                .auto_topup_failed(
                                    &row.message_id,
                                    &format!(
                                        "Stripe could not be reached within the retry window: {}",
                                        failure.error
                                    ),
                                    Some("stripe_unreachable"),
                                    None,
                                    now,
                                )
                                .await?;
                        }
                    }
                    self.store
                        .outbox_attempted(
                            &row.id,
                            now,
                            Attempt::Failed {
                                next,
                                error: &failure.error,
                            },
                        )
                        .await?;
                }
            }
        }
        Ok(claimed)
    }

    async fn deliver(&self, client: &HttpClient, row: &outbox::Model) -> Result<(), Failure> {
        match OutboxKind::parse(&row.kind) {
            Some(OutboxKind::Webhook) => {}
            Some(OutboxKind::MeterEvent) => return self.send_meter_event(row).await,
            Some(OutboxKind::PaymentIntent) => return self.send_charge(row).await,
            None => {
                return Err(Failure {
                    error: format!("unknown kind {:?}", row.kind),
                    retry_after_ms: None,
                });
            }
        }
        let Some(endpoint) = self.endpoints.iter().find(|e| e.url == row.destination) else {
            return Err(Failure {
                error: "the endpoint is no longer configured".into(),
                retry_after_ms: None,
            });
        };
        let timestamp = self.wall_clock.now().timestamp();
        let failed = |error: String| Failure {
            error,
            retry_after_ms: None,
        };
        let request = hyper::Request::post(&endpoint.url)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("creditbook/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", &row.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                sign(&endpoint.key, &row.message_id, timestamp, &row.body),
            )
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                row.body.clone(),
            )))
            .map_err(|e| failed(format!("the request could not be made: {e}")))?;
        let timeout = Duration::from_secs(self.settings.timeout_seconds);
        let response = tokio::time::timeout(timeout, client.request(request))
            .await
            .map_err(|_| failed(format!("no answer within {} s", timeout.as_secs())))?
            .map_err(|e| failed(format!("request failed: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after_ms = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|seconds| seconds.min(86_400) * 1_000);
        Err(Failure {
            error: format!("the endpoint answered {}", status.as_u16()),
            retry_after_ms,
        })
    }
}

impl Worker {
    /// A meter event to Stripe, its timestamp moved into Stripe's window at the time it is sent.
    async fn send_meter_event(&self, row: &outbox::Model) -> Result<(), Failure> {
        let failed = |error: String| Failure {
            error,
            retry_after_ms: None,
        };
        let Some(stripe) = &self.stripe else {
            return Err(failed(
                "no Stripe API key is configured ([stripe] api_key)".into(),
            ));
        };
        let mut fields: serde_json::Value = serde_json::from_str(&row.body)
            .map_err(|e| failed(format!("unreadable meter event: {e}")))?;
        let timestamp = fields["timestamp"].as_i64().unwrap_or_default();
        fields["timestamp"] =
            crate::domain::overage::within_stripe_window(timestamp, self.wall_clock.now()).into();
        let timeout = Duration::from_secs(self.settings.timeout_seconds);
        tokio::time::timeout(timeout, stripe.meter_event(&fields))
            .await
            .map_err(|_| failed(format!("no answer within {} s", timeout.as_secs())))?
            .map_err(|e| failed(e.to_string()))
    }
}

impl Worker {
    /// An automatic top-up: asked of Stripe unless already settled; Stripe's refusal settles it
    /// as failed, a failure that may pass is tried again under the same idempotency key.
    async fn send_charge(&self, row: &outbox::Model) -> Result<(), Failure> {
        let failed = |error: String| Failure {
            error,
            retry_after_ms: None,
        };
        let charge: crate::domain::autotopup::Charge = serde_json::from_str(&row.body)
            .map_err(|e| failed(format!("unreadable charge: {e}")))?;
        let attempt = self
            .store
            .auto_topup_attempt(&charge.attempt)
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Settled already (by its event, or before a replay): nothing to ask.
        if attempt
            .is_none_or(|a| a.status != crate::store::autotopup::AttemptStatus::Pending.as_str())
        {
            return Ok(());
        }
        let Some(stripe) = &self.stripe else {
            return Err(failed(
                "no Stripe API key is configured ([stripe] api_key)".into(),
            ));
        };
        let now = || self.wall_clock.now();
        let attempt = charge.attempt.as_str();
        let settle_failed = |reason: String, code: Option<String>, pi: Option<String>| async move {
            self.store
                .auto_topup_failed(attempt, &reason, code.as_deref(), pi.as_deref(), now())
                .await
                .map(|_| ())
                .map_err(|e| failed(e.to_string()))
        };
        let stripe_customer = self
            .store
            .stripe_customer_of(charge.customer.as_str())
            .await
            .map_err(|e| failed(e.to_string()))?;
        let Some(stripe_customer) = stripe_customer else {
            return settle_failed(
                format!("{} is not linked to a Stripe customer", charge.customer),
                Some("not_linked".into()),
                None,
            )
            .await;
        };
        let timeout = Duration::from_secs(self.settings.timeout_seconds);
        let answer = tokio::time::timeout(timeout, stripe.charge(&charge, &stripe_customer))
            .await
            .map_err(|_| failed(format!("no answer within {} s", timeout.as_secs())))?
            .map_err(|e| failed(e.to_string()))?;
        match answer {
            crate::stripe::api::ChargeAnswer::Created { payment_intent } => self
                .store
                .auto_topup_charged(&charge.attempt, &payment_intent)
                .await
                .map_err(|e| failed(e.to_string())),
            crate::stripe::api::ChargeAnswer::Refused {
                reason,
                code,
                payment_intent,
            } => settle_failed(reason, code, payment_intent).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signs_as_the_specification_does() {
        use base64::Engine as _;
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        assert_eq!(
            sign(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
