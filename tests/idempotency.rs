//! Every write is idempotent: the same request retried seconds later (business time moved on, a
//! pack's expiry now computed from a later "now", real time moved on) answers what the first one
//! did and changes nothing more.

mod common;

use chrono::{Duration, TimeZone, Utc};
use common::{Engine, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// One write as a client sends it.
struct Write {
    method: Method,
    path: String,
    /// The key it is made with.
    admin: bool,
    body: Value,
}

impl Write {
    fn post(path: &str, admin: bool, body: Value) -> Write {
        Write {
            method: Method::POST,
            path: path.to_owned(),
            admin,
            body,
        }
    }

    fn put(path: &str, body: Value) -> Write {
        Write {
            method: Method::PUT,
            path: path.to_owned(),
            admin: true,
            body,
        }
    }

    async fn send(&self, app: &TestApp) -> (StatusCode, Value) {
        let key = if self.admin {
            &app.admin_key
        } else {
            &app.app_key
        };
        app.call(
            self.method.clone(),
            &self.path,
            Some(key),
            Some(self.body.clone()),
        )
        .await
    }
}

async fn a_retry_seconds_later_replays(engine: Engine) {
    let start = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
    let app = common::spawn_app_at(engine, start, |_| {}).await;
    let c = "/v1/customers/retry";
    app.promo("retry", "5000").await;
    let (status, to_capture) = app
        .post_app(
            "/v1/authorizations",
            json!({"customer": "retry", "action": "chat.request", "quantity": 3,
                   "idempotency_key": "hold-to-capture"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{to_capture}");
    let (_, to_void) = app
        .post_app(
            "/v1/authorizations",
            json!({"customer": "retry", "action": "chat.request", "quantity": 1,
                   "idempotency_key": "hold-to-void"}),
        )
        .await;
    let hold = |h: &Value| h["id"].as_str().unwrap().to_owned();
    let writes = [
        Write::post(
            "/v1/authorizations",
            false,
            json!({"customer": "retry", "action": "chat.request", "quantity": 2,
                   "idempotency_key": "auth-1"}),
        ),
        Write::post(
            &format!("/v1/authorizations/{}/capture", hold(&to_capture)),
            false,
            json!({"quantity": 2}),
        ),
        Write::post(
            &format!("/v1/authorizations/{}/void", hold(&to_void)),
            false,
            json!({}),
        ),
        Write::post(
            "/v1/usage",
            false,
            json!({"customer": "retry", "action": "chat.request", "quantity": 1,
                   "idempotency_key": "usage-1"}),
        ),
        Write::post(
            "/v1/usage/batch",
            false,
            json!({"usages": [
                {"customer": "retry", "action": "chat.request", "quantity": 1, "idempotency_key": "b-1"},
                {"customer": "other", "action": "chat.request", "quantity": 1, "idempotency_key": "b-2"}]}),
        ),
        Write::post(
            &format!("{c}/grants"),
            true,
            json!({"kind": "promotional", "credits": "10", "idempotency_key": "g-promo"}),
        ),
        // A pack's expiry runs from now: the retry's "now" is later, the request is the same.
        Write::post(
            &format!("{c}/grants"),
            true,
            json!({"kind": "pack", "pack": "topup_small", "idempotency_key": "g-pack"}),
        ),
        Write::post(
            &format!("{c}/grants"),
            true,
            json!({"kind": "plan", "plan": "pro", "price": "20", "idempotency_key": "g-plan"}),
        ),
        Write::post(
            &format!("{c}/grants"),
            true,
            json!({"kind": "adjustment", "credits": "5", "memo": "goodwill",
                   "idempotency_key": "g-adj"}),
        ),
        Write::post(
            &format!("{c}/adjustments"),
            true,
            json!({"credits": "-3", "reason": "duplicate charge", "idempotency_key": "adj-1"}),
        ),
        Write::post(
            &format!("{c}/overrides"),
            true,
            json!({"feature": "video", "enabled": true, "until": "2026-04-01T00:00:00Z",
                   "reason": "trial", "idempotency_key": "ovr-1"}),
        ),
        Write::put(&format!("{c}/plan"), json!({"plan": "pro"})),
        Write::put(
            &format!("{c}/limits"),
            json!({"limits": [{"period": "day", "credits": "500", "mode": "hard"}]}),
        ),
        Write::put(
            &format!("{c}/alert-thresholds"),
            json!({"low_balance_credits": "100"}),
        ),
    ];
    let mut first = Vec::new();
    for write in &writes {
        let (status, body) = write.send(&app).await;
        assert!(
            status.is_success(),
            "{} {}: {body}",
            write.method,
            write.path
        );
        first.push((status, body));
    }
    let books = app.ledger("retry").await.len();
    let balances = app.balances("retry").await;
    // Seconds later, in business time and in real time.
    app.advance(start + Duration::seconds(7)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    for (write, (status, body)) in writes.iter().zip(&first) {
        let (again_status, again) = write.send(&app).await;
        assert_eq!(
            (again_status, &again),
            (*status, body),
            "{} {} retried",
            write.method,
            write.path
        );
    }
    assert_eq!(
        app.ledger("retry").await.len(),
        books,
        "nothing written twice"
    );
    assert_eq!(app.balances("retry").await, balances);
    // The same key with another request is still a conflict.
    let (status, conflict) = app
        .post_admin(
            &format!("{c}/grants"),
            json!({"kind": "pack", "pack": "topup_large", "idempotency_key": "g-pack"}),
        )
        .await;
    assert_eq!(
        (status, conflict["type"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict"))
    );
    app.assert_audit_clean().await;
}

for_each_engine!(a_retry_seconds_later_replays);

/// A period closed again later answers when it was first closed.
async fn a_period_closed_again_later_is_the_same_close(engine: Engine) {
    let start = Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap();
    let app = common::spawn_app_at(engine, start, |_| {}).await;
    let close = || async {
        app.call(
            Method::POST,
            "/v1/revenue/periods/2026-03/close",
            Some(&app.finance_key),
            None,
        )
        .await
    };
    let (status, closed) = close().await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    app.advance(start + Duration::seconds(9)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(close().await, (status, closed));
}

for_each_engine!(a_period_closed_again_later_is_the_same_close);
