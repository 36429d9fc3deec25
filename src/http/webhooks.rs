//! `POST /webhooks/stripe`: verify the signature on the raw body, parse tolerantly, apply.

use super::AppState;
use crate::error::{Error, Result};
use crate::stripe::api::StripeApi;
use crate::stripe::apply::{self, Context, Origin, Outcome};
use crate::stripe::event::{Event, MAX_EVENT_BYTES};
use crate::stripe::signature::{self, SignatureError};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;

#[utoipa::path(post, path = "/webhooks/stripe",
    responses((status = 200, description = "recorded (applied, duplicate, ignored, unknown type, unmapped price or pending)"),
        (status = 400, description = "invalid signature or not an event"),
        (status = 503, description = "temporary failure; Stripe retries")))]
pub async fn stripe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Outcome>> {
    let header = headers
        .get("stripe-signature")
        .map(|v| v.to_str().map_err(|_| SignatureError::Malformed))
        .transpose()
        .map_err(Error::InvalidSignature)?
        .unwrap_or("");
    // Before the body is read: secrets configured, the header's shape, its timestamp (measured
    // in real time; the event applies at business time). A forged or stale request costs no read
    // and no hashing.
    let checked = signature::check_header(
        header,
        &state.stripe.webhook_secrets,
        state.stripe.webhook_tolerance_seconds,
        state.wall_clock.now().timestamp(),
    )
    .map_err(|e| match e {
        SignatureError::NoSecret => Error::WebhookNotConfigured,
        other => Error::InvalidSignature(other),
    })?;
    let body = axum::body::to_bytes(body, MAX_EVENT_BYTES)
        .await
        .map_err(|_| Error::PayloadTooLarge(MAX_EVENT_BYTES))?;
    // Hashing up to 512 KiB per secret, off the threads that serve requests.
    let stripe = state.stripe.clone();
    let hashed = body.clone();
    tokio::task::spawn_blocking(move || checked.verify_body(&hashed, &stripe.webhook_secrets))
        .await
        .map_err(|e| Error::Internal(format!("signature check: {e}")))?
        .map_err(Error::InvalidSignature)?;
    let event: Event =
        serde_json::from_slice(&body).map_err(|e| Error::MalformedEvent(e.to_string()))?;
    let payload = String::from_utf8_lossy(&body);
    let api = StripeApi::from_config(&state.stripe)?;
    let fetched = apply::fetch(api.as_ref(), &event).await?;
    let context = Context {
        store: &state.store,
        now: state.clock.now(),
        livemode: state.stripe.livemode,
    };
    let outcome = apply::apply_event(&context, &event, &payload, Origin::Webhook, fetched).await?;
    tracing::info!(event = %event.id, kind = %event.event_type, outcome = outcome.outcome.as_str(), detail = %outcome.detail, "stripe event");
    Ok(Json(outcome))
}
