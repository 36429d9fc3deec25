//! A Stripe API stand-in: list endpoints served from fixed objects, paged as Stripe pages them
//! (two per page, `starting_after`, `has_more`), filtered by `invoice` and `customer` when asked,
//! behind the test API key; every request is recorded. And Stripe's meter events, with failures
//! to inject.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The API key the stand-in accepts.
pub const API_KEY: &str = "sk_test_standin";

#[derive(Clone, Default)]
pub struct StandIn {
    lists: Arc<BTreeMap<String, Vec<Value>>>,
    pub requests: Arc<Mutex<Vec<String>>>,
    /// A page that fails: requests starting after this object id are refused (400).
    pub fail_after: Arc<Mutex<Option<String>>>,
    /// Meter events accepted, each identifier once, in order.
    pub meter_events: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    /// Meter event requests, accepted or not: their `Idempotency-Key`s.
    pub meter_requests: Arc<Mutex<Vec<String>>>,
    /// Meter event requests to refuse with 500 before looking at them (Stripe down).
    pub meter_down: Arc<Mutex<u32>>,
    /// Meter event requests to accept whose answer is lost (a 500 after the event is kept).
    pub meter_answers_lost: Arc<Mutex<u32>>,
    /// First answers by idempotency key, as Stripe replays them.
    answered: Arc<Mutex<BTreeMap<String, Value>>>,
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|auth| auth == format!("Bearer {API_KEY}"))
}

/// `POST /v1/billing/meter_events`, as Stripe answers it: a repeated idempotency key gets the
/// first answer; an identifier seen before under another key is refused.
async fn meter_event(
    State(stand_in): State<StandIn>,
    headers: HeaderMap,
    axum::Form(fields): axum::Form<BTreeMap<String, String>>,
) -> (StatusCode, axum::Json<Value>) {
    let error = |status: StatusCode, message: &str| {
        (
            status,
            axum::Json(json!({"error": {"type": "invalid_request_error", "message": message}})),
        )
    };
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "bad key");
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    stand_in.meter_requests.lock().unwrap().push(key.clone());
    {
        let mut down = stand_in.meter_down.lock().unwrap();
        if *down > 0 {
            *down -= 1;
            return error(StatusCode::INTERNAL_SERVER_ERROR, "injected: down");
        }
    }
    if let Some(first) = stand_in.answered.lock().unwrap().get(&key) {
        return (StatusCode::OK, axum::Json(first.clone()));
    }
    let identifier = fields.get("identifier").cloned().unwrap_or_default();
    let mut events = stand_in.meter_events.lock().unwrap();
    if events
        .iter()
        .any(|e| e.get("identifier") == Some(&identifier))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "an event with this identifier exists",
        );
    }
    for required in [
        "event_name",
        "payload[stripe_customer_id]",
        "payload[value]",
        "timestamp",
    ] {
        if !fields.contains_key(required) {
            return error(StatusCode::BAD_REQUEST, &format!("missing {required}"));
        }
    }
    events.push(fields.clone());
    let answer = json!({"object": "billing.meter_event", "identifier": identifier,
        "event_name": fields["event_name"], "payload": {"value": fields["payload[value]"]}});
    if !key.is_empty() {
        stand_in
            .answered
            .lock()
            .unwrap()
            .insert(key, answer.clone());
    }
    let mut lost = stand_in.meter_answers_lost.lock().unwrap();
    if *lost > 0 {
        *lost -= 1;
        return error(StatusCode::INTERNAL_SERVER_ERROR, "injected: answer lost");
    }
    (StatusCode::OK, axum::Json(answer))
}

/// Query parameters that filter a list (as Stripe's list endpoints do).
const FILTERS: [&str; 2] = ["invoice", "customer"];

async fn list(
    State(stand_in): State<StandIn>,
    Path(path): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"type": "invalid_request_error"}})),
        );
    }
    stand_in
        .requests
        .lock()
        .unwrap()
        .push(format!("{path}?{query:?}"));
    let failing = stand_in.fail_after.lock().unwrap().clone();
    if failing.is_some() && query.get("starting_after") == failing.as_ref() {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"type": "invalid_request_error", "message": "injected"}})),
        );
    }
    let Some(all) = stand_in.lists.get(&path) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"type": "invalid_request_error"}})),
        );
    };
    let all: Vec<&Value> = all
        .iter()
        .filter(|o| {
            FILTERS
                .iter()
                .all(|f| query.get(*f).is_none_or(|want| o[*f] == *want.as_str()))
        })
        .collect();
    let start = match query.get("starting_after") {
        Some(after) => all
            .iter()
            .position(|o| o["id"] == *after)
            .map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10)
        .min(2);
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|o| (*o).clone())
        .collect();
    let has_more = start + page.len() < all.len();
    (
        StatusCode::OK,
        axum::Json(
            json!({"object": "list", "url": format!("/v1/{path}"), "has_more": has_more, "data": page}),
        ),
    )
}

/// Serves `lists` (path under `/v1/` → its objects, newest first) on a free port; returns the
/// base URL to configure as `[stripe] api_base`.
pub async fn spawn(lists: BTreeMap<String, Vec<Value>>) -> (String, StandIn) {
    let stand_in = StandIn {
        lists: Arc::new(lists),
        ..StandIn::default()
    };
    let app = axum::Router::new()
        .route("/v1/billing/meter_events", axum::routing::post(meter_event))
        .route("/v1/{*path}", axum::routing::get(list))
        .with_state(stand_in.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, stand_in)
}
