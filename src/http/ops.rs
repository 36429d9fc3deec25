//! Operations: health, metrics, the OpenAPI document and the test clock.

use super::AppState;
use super::extract::{ApiJson, Caller};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::store::keys::Scope;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Health {
    status: &'static str,
}

#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health), (status = 503)))]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>> {
    state.store.ping().await.map_err(|_| Error::Unavailable)?;
    let failing = state.store.workers().failing(std::time::Instant::now());
    if !failing.is_empty() {
        return Err(Error::WorkersFailing(failing.join(", ")));
    }
    Ok(Json(Health { status: "ok" }))
}

/// Liveness: the process answers. Touches nothing (`/healthz` also asks the database); the
/// gate benchmark measures the server's ceiling on it.
pub async fn livez() -> &'static str {
    "ok"
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render(state.store.runner_stats());
    text.push_str(
        "# HELP creditbook_worker_panics_total Panics of background workers (each one logged; \
         the worker went on).\n# TYPE creditbook_worker_panics_total counter\n",
    );
    for (worker, panics) in state.store.workers().panics() {
        text.push_str(&format!(
            "creditbook_worker_panics_total{{worker=\"{worker}\"}} {panics}\n"
        ));
    }
    // Gauges as the job loop last read them (a scrape reads no table); left out until then.
    let gauges = state
        .metrics
        .gauges
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(gauges) = gauges {
        if let Some(pending) = gauges.stripe_refunds_pending {
            text.push_str(&format!(
                "# HELP creditbook_stripe_refunds_pending Refunds recorded whose payment is not \
                 known yet (applied when it is).\n# TYPE creditbook_stripe_refunds_pending gauge\n\
                 creditbook_stripe_refunds_pending {pending}\n"
            ));
        }
        if !gauges.outbox.is_empty() {
            text.push_str(
                "# HELP creditbook_outbox_messages Outbox rows (one message to one destination) \
                 by status.\n# TYPE creditbook_outbox_messages gauge\n",
            );
            for (status, n) in gauges.outbox {
                text.push_str(&format!(
                    "creditbook_outbox_messages{{status=\"{status}\"}} {n}\n"
                ));
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    Json(super::contract::document(&state.catalog))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceRequest {
    to: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct AdvanceResponse {
    now: DateTime<Utc>,
    /// Customers whose due holds or grants were settled.
    customers_settled: usize,
}

/// Moves the test clock forward to `to` and runs every time-driven job up to it.
#[utoipa::path(post, path = "/v1/test-clock/advance", request_body = AdvanceRequest,
    responses((status = 200, body = AdvanceResponse), (status = 404), (status = 422)), security(("bearer" = [])))]
pub async fn advance_clock(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<AdvanceRequest>,
) -> Result<Json<AdvanceResponse>> {
    caller.require(Scope::Admin)?;
    let clock = state.test_clock.as_ref().ok_or(Error::TestClockDisabled)?;
    let now = clock
        .advance_to(request.to)
        .map_err(|now| Error::ClockBackwards(now.to_rfc3339()))?;
    let (settled, _) = crate::jobs::run_due(&state.store, now).await?;
    Metrics::add(&state.metrics.customers_settled_by_jobs, settled);
    // As a job run does: the gauges `/metrics` shows.
    crate::metrics::refresh_gauges(&state.store, &state.metrics).await;
    Ok(Json(AdvanceResponse {
        now,
        customers_settled: settled,
    }))
}
