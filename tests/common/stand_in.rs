//! A Stripe API stand-in: list endpoints served from fixed objects, paged as Stripe pages them
//! (two per page, `starting_after`, `has_more`), filtered by `invoice` and `customer` when asked,
//! behind the test API key; every request is recorded.

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
}

/// Query parameters that filter a list (as Stripe's list endpoints do).
const FILTERS: [&str; 2] = ["invoice", "customer"];

async fn list(
    State(stand_in): State<StandIn>,
    Path(path): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> (StatusCode, axum::Json<Value>) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {API_KEY}") {
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
        requests: Arc::default(),
        fail_after: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/v1/{*path}", axum::routing::get(list))
        .with_state(stand_in.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, stand_in)
}
