//! axum: routes, extractors, error -> problem+json. Handlers parse, call the store, answer.

mod contract;
pub mod controls;
pub mod customers;
pub mod extract;
mod gate;
mod operators;
mod ops;
mod outbox;
mod portal_links;
mod problem;
pub mod reads;
pub mod revenue;
pub mod server;
mod webhooks;

use crate::clock::{Clock, TestClock};
use crate::domain::catalog::Catalog;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::Store;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use std::sync::Arc;
use utoipa::OpenApi;

/// What every request reads, shared: a request's clone is one pointer's.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }

    /// The same state with `clock` as its real time (tests that move the wall clock).
    pub fn with_wall_clock(self, clock: Arc<dyn Clock>) -> AppState {
        let mut shared = Arc::unwrap_or_clone(self.0);
        shared.wall_clock = clock;
        AppState::new(shared)
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Clone)]
pub struct Shared {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub clock: Arc<dyn Clock>,
    /// Real time, whatever `clock` says: deliveries (Stripe's signatures) happen in real time even
    /// when a test clock moves business time.
    pub wall_clock: Arc<dyn Clock>,
    /// Present only with `--test-clock`.
    pub test_clock: Option<TestClock>,
    pub metrics: Arc<Metrics>,
    pub hold_timeout_seconds: u64,
    pub stripe: Arc<crate::config::StripeConfig>,
    /// Outbound webhook endpoints and how the outbox delivers to them.
    pub webhooks: Arc<Vec<crate::config::WebhookEndpoint>>,
    pub outbox: crate::config::OutboxSettings,
    /// The pages: where they are reached and the key their links are signed with.
    pub pages: Arc<crate::service::pages::Pages>,
    /// A request's time and how many at once (`[server]`).
    pub limits: crate::config::ServerLimits,
    /// One permit per request being answered, `limits.max_concurrent_requests` in all.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Failed sign-ins per address (`/login`).
    pub sign_ins: Arc<crate::service::sign_in::SignInThrottle>,
}

impl AppState {
    /// The gate's rules that come from configuration.
    pub fn policy(&self) -> crate::domain::gate::Policy {
        crate::domain::gate::Policy {
            past_due_grace_seconds: self.stripe.past_due_grace_seconds,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "creditbook", description = "Credit ledger, pre-call authorization gate and ASC 606 revenue books"),
    paths(
        gate::check, gate::authorize, gate::capture, gate::void, gate::usage, gate::usage_batch,
        reads::customers, reads::usage, portal_links::create_link, customers::show, customers::ledger, customers::create_grant, customers::create_adjustment, customers::set_plan, customers::set_parent,
        controls::set_limits, controls::set_thresholds, controls::create_override, controls::override_history,
        controls::set_auto_topup, controls::auto_topup,
        ops::advance_clock, ops::healthz, webhooks::stripe,
        revenue::journal, revenue::rollforward, revenue::waterfall, revenue::schedule,
        revenue::close_period, revenue::margin, revenue::overage,
        outbox::list, outbox::replay, operators::list,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes with `pages` (the HTML pages' routes) beside them, bounded and observed.
pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    Router::new()
        .route("/v1/check", post(gate::check))
        .route("/v1/authorizations", post(gate::authorize))
        .route("/v1/authorizations/{id}/capture", post(gate::capture))
        .route("/v1/authorizations/{id}/void", post(gate::void))
        .route("/v1/usage", post(gate::usage))
        .route(
            "/v1/usage/batch",
            post(gate::usage_batch).layer(DefaultBodyLimit::max(gate::MAX_BATCH_BODY_BYTES)),
        )
        .route("/v1/customers", get(reads::customers))
        .route("/v1/customers/{id}", get(customers::show))
        .route("/v1/customers/{id}/usage", get(reads::usage))
        .route(
            "/v1/customers/{id}/portal-links",
            post(portal_links::create_link),
        )
        .merge(pages)
        .route("/v1/customers/{id}/ledger", get(customers::ledger))
        .route("/v1/customers/{id}/grants", post(customers::create_grant))
        .route(
            "/v1/customers/{id}/adjustments",
            post(customers::create_adjustment),
        )
        .route("/v1/customers/{id}/plan", put(customers::set_plan))
        .route("/v1/customers/{id}/parent", put(customers::set_parent))
        .route("/v1/customers/{id}/limits", put(controls::set_limits))
        .route(
            "/v1/customers/{id}/alert-thresholds",
            put(controls::set_thresholds),
        )
        .route(
            "/v1/customers/{id}/auto-topup",
            put(controls::set_auto_topup).get(controls::auto_topup),
        )
        .route(
            "/v1/customers/{id}/overrides",
            post(controls::create_override).get(controls::override_history),
        )
        .route("/v1/test-clock/advance", post(ops::advance_clock))
        .route("/webhooks/stripe", post(webhooks::stripe))
        .route("/v1/outbox", get(outbox::list))
        .route("/v1/outbox/{id}/replay", post(outbox::replay))
        .route("/v1/operator-actions", get(operators::list))
        .route("/v1/revenue/journal", get(revenue::journal))
        .route("/v1/revenue/rollforward", get(revenue::rollforward))
        .route("/v1/revenue/waterfall", get(revenue::waterfall))
        .route("/v1/revenue/margin", get(revenue::margin))
        .route("/v1/revenue/overage", get(revenue::overage))
        .route("/v1/revenue/grants/{id}/schedule", get(revenue::schedule))
        .route(
            "/v1/revenue/periods/{period}/close",
            post(revenue::close_period),
        )
        .route("/healthz", get(ops::healthz))
        .route("/livez", get(ops::livez))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .fallback(|| async { Error::NotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), bound))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

tokio::task_local! {
    /// Who and what the request being answered is about, for its access-log line.
    static NOTED: Arc<std::sync::Mutex<Noted>>;
}

/// What a request's access-log line names besides its route and status.
#[derive(Default)]
struct Noted {
    customer: Option<String>,
    /// The id of the API key that called (never the key).
    key_id: Option<String>,
}

fn note(f: impl FnOnce(&mut Noted)) {
    let _ = NOTED.try_with(|slot| f(&mut slot.lock().unwrap_or_else(|e| e.into_inner())));
}

/// Names the customer of the request being answered in its access-log line (answered or
/// refused). Outside a request it does nothing.
pub(crate) fn note_customer(id: &str) {
    note(|noted| noted.customer = Some(id.to_owned()));
}

/// Names the API key (its id) that made the request being answered, in its access-log line.
pub(crate) fn note_key(key_id: &str) {
    note(|noted| noted.key_id = Some(key_id.to_owned()));
}

/// Answered whatever the load: the probes and the metrics of a server at its limit.
fn unbounded(path: &str) -> bool {
    matches!(path, "/livez" | "/healthz" | "/metrics")
}

/// Bounds every request: one more than `max_concurrent_requests` at once is refused at once, and
/// one not answered within `request_timeout_seconds` (its body read, its work done) is answered
/// 503. Both carry `Retry-After`. A write cut off by the timeout may still commit; its retry under
/// the same idempotency key answers what it did.
async fn bound(State(state): State<AppState>, request: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    if unbounded(request.uri().path()) {
        return next.run(request).await;
    }
    let Ok(_permit) = state.in_flight.clone().try_acquire_owned() else {
        Metrics::add(&state.metrics.requests_refused_overloaded, 1);
        return Error::Overloaded(state.limits.max_concurrent_requests).into_response();
    };
    let timeout = state.limits.request_timeout;
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            Metrics::add(&state.metrics.requests_timed_out, 1);
            Error::TimedOut(timeout.as_secs()).into_response()
        }
    }
}

/// Counts, times and logs every request: one access-log line (method, route template, status,
/// latency, the customer and the key's id when known; never a key or a body) and its latency on `/metrics`.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    // `/v1/customers/{id}/...`: the customer is in the path.
    let path_customer = route
        .as_deref()
        .filter(|r| r.starts_with("/v1/customers/{id}"))
        .and_then(|_| request.uri().path().split('/').nth(3))
        .map(str::to_owned);
    let noted = Arc::new(std::sync::Mutex::new(Noted {
        customer: path_customer,
        key_id: None,
    }));
    let response = NOTED.scope(noted.clone(), next.run(request)).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let route = route.as_deref().unwrap_or("unmatched");
    state.metrics.count_response(status);
    state.metrics.observe(route, status, elapsed);
    let noted = std::mem::take(&mut *noted.lock().unwrap_or_else(|e| e.into_inner()));
    tracing::info!(
        target: "creditbook::access",
        method = %method,
        route = %route,
        status,
        latency_micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        customer = noted.customer.as_deref(),
        key_id = noted.key_id.as_deref(),
        "request"
    );
    response
}
