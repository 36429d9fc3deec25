//! A Stripe API stand-in: list endpoints served from fixed objects, paged as Stripe pages them
//! (two per page, `starting_after`, `has_more`), filtered by `invoice` and `customer` when asked,
//! behind the test API key; every request is recorded. And Stripe's meter events and off-session
//! payment intents, with failures to inject.

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
    /// Saved payment methods by Stripe customer (its invoice default).
    pub payment_methods: Arc<Mutex<BTreeMap<String, String>>>,
    /// Payment intents made, in order.
    pub payment_intents: Arc<Mutex<Vec<Value>>>,
    /// Payment intent requests, made or not: their `Idempotency-Key`s.
    pub charge_requests: Arc<Mutex<Vec<String>>>,
    /// Payment intent requests to refuse with 500 before looking at them (Stripe down).
    pub charge_down: Arc<Mutex<u32>>,
    /// Payment intents to make whose answer is lost (a 500 after it is made).
    pub charge_answers_lost: Arc<Mutex<u32>>,
    /// Stripe customers whose card is declined.
    pub declining: Arc<Mutex<Vec<String>>>,
    /// First payment intent answers by idempotency key (status, body), as Stripe replays them.
    charged: Arc<Mutex<BTreeMap<String, (StatusCode, Value)>>>,
}

fn unauthorized() -> (StatusCode, axum::Json<Value>) {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": {"type": "invalid_request_error"}})),
    )
}

/// Takes one from an injected failure count; true when there was one.
fn take_one(count: &Mutex<u32>) -> bool {
    let mut left = count.lock().unwrap();
    let some = *left > 0;
    if some {
        *left -= 1;
    }
    some
}

fn idempotency_key(headers: &HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
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
    let key = idempotency_key(&headers);
    stand_in.meter_requests.lock().unwrap().push(key.clone());
    if take_one(&stand_in.meter_down) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "injected: down");
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
    drop(events);
    if take_one(&stand_in.meter_answers_lost) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "injected: answer lost");
    }
    (StatusCode::OK, axum::Json(answer))
}

/// `GET /v1/customers/{id}`: the customer with its invoice default payment method, if any.
async fn customer(
    State(stand_in): State<StandIn>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&headers) {
        return unauthorized();
    }
    stand_in
        .requests
        .lock()
        .unwrap()
        .push(format!("customers/{id}"));
    let method = stand_in.payment_methods.lock().unwrap().get(&id).cloned();
    (
        StatusCode::OK,
        axum::Json(
            json!({"id": id, "object": "customer", "default_source": null,
            "invoice_settings": {"default_payment_method": method}}),
        ),
    )
}

/// `POST /v1/payment_intents` with `confirm` and `off_session`, as Stripe answers it: a repeated
/// idempotency key gets the first answer (a decline included); a declining customer's card is
/// refused with 402 `card_error`; otherwise the intent succeeds at once.
async fn payment_intent(
    State(stand_in): State<StandIn>,
    headers: HeaderMap,
    axum::Form(fields): axum::Form<BTreeMap<String, String>>,
) -> (StatusCode, axum::Json<Value>) {
    let error = |status: StatusCode, kind: &str, message: &str| {
        (
            status,
            axum::Json(json!({"error": {"type": kind, "message": message}})),
        )
    };
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, "invalid_request_error", "bad key");
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    stand_in.charge_requests.lock().unwrap().push(key.clone());
    {
        let mut down = stand_in.charge_down.lock().unwrap();
        if *down > 0 {
            *down -= 1;
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "injected: down",
            );
        }
    }
    if let Some((status, first)) = stand_in.charged.lock().unwrap().get(&key) {
        return (*status, axum::Json(first.clone()));
    }
    for required in ["amount", "currency", "customer", "payment_method"] {
        if !fields.contains_key(required) {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("missing {required}"),
            );
        }
    }
    if fields.get("confirm").map(String::as_str) != Some("true")
        || fields.get("off_session").map(String::as_str) != Some("true")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "expected confirm and off_session",
        );
    }
    let customer = fields["customer"].clone();
    let answer = if stand_in.declining.lock().unwrap().contains(&customer) {
        (
            StatusCode::PAYMENT_REQUIRED,
            json!({"error": {"type": "card_error", "code": "card_declined",
                "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds."}}),
        )
    } else {
        let mut intents = stand_in.payment_intents.lock().unwrap();
        let metadata: serde_json::Map<String, Value> = fields
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("metadata[")?.strip_suffix(']')?;
                Some((name.to_owned(), Value::from(v.clone())))
            })
            .collect();
        let amount: i64 = fields["amount"].parse().unwrap();
        let intent = json!({"id": format!("pi_auto_{}", intents.len() + 1),
            "object": "payment_intent", "amount": amount, "amount_received": amount,
            "currency": fields["currency"], "customer": customer, "status": "succeeded",
            "payment_method": fields["payment_method"], "metadata": metadata,
            "created": chrono::Utc::now().timestamp(), "last_payment_error": null});
        intents.push(intent.clone());
        (StatusCode::OK, intent)
    };
    if !key.is_empty() {
        stand_in.charged.lock().unwrap().insert(key, answer.clone());
    }
    if take_one(&stand_in.charge_answers_lost) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "injected: answer lost",
        );
    }
    (answer.0, axum::Json(answer.1))
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
        return unauthorized();
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
        .route("/v1/payment_intents", axum::routing::post(payment_intent))
        .route("/v1/customers/{id}", axum::routing::get(customer))
        .route("/v1/{*path}", axum::routing::get(list))
        .with_state(stand_in.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, stand_in)
}
