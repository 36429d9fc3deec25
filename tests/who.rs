//! Who did it: every operator's write records the id of the key that made it, shown on the
//! ledger entries it wrote, on the period it closed, and in `GET /v1/operator-actions`.

mod common;

use chrono::{TimeZone, Utc};
use common::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn every_operator_write_names_its_key(engine: Engine) {
    let start = Utc.with_ymd_and_hms(2026, 4, 2, 12, 0, 0).unwrap();
    let app = common::spawn_app_at(engine, start, |_| {}).await;
    let admin_id = app.key_id(creditbook::store::keys::Scope::Admin).await;
    let finance_id = app.key_id(creditbook::store::keys::Scope::Finance).await;
    let c = "/v1/customers/acme";
    let (status, grant) = app
        .post_admin(
            &format!("{c}/grants"),
            json!({"kind": "promotional", "credits": "100", "memo": "welcome",
                   "idempotency_key": "g1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    let (status, _) = app
        .post_admin(
            &format!("{c}/adjustments"),
            json!({"credits": "-10", "reason": "duplicate", "idempotency_key": "a1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    app.set_plan("acme", "pro").await;
    let (status, _) = app
        .call(
            Method::PUT,
            &format!("{c}/limits"),
            Some(&app.admin_key),
            Some(json!({"limits": [{"period": "day", "credits": "50", "mode": "hard"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call(
            Method::PUT,
            &format!("{c}/alert-thresholds"),
            Some(&app.admin_key),
            Some(json!({"low_balance_credits": "5"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .post_admin(
            &format!("{c}/overrides"),
            json!({"feature": "video", "enabled": true, "reason": "trial",
                   "idempotency_key": "o1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, closed) = app
        .call(
            Method::POST,
            "/v1/revenue/periods/2026-03/close",
            Some(&app.finance_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["closed_by"], finance_id.as_str());
    // A replay of the same requests records nothing more.
    let (status, _) = app
        .post_admin(
            &format!("{c}/grants"),
            json!({"kind": "promotional", "credits": "100", "memo": "welcome",
                   "idempotency_key": "g1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // The ledger says who granted and who adjusted; the gate's entries name nobody.
    let (status, _) = app.usage("acme", "chat.request", json!(1), "u1").await;
    assert_eq!(status, StatusCode::CREATED);
    let ledger = app.ledger("acme").await;
    let by_kind =
        |kind: &str| -> Vec<&Value> { ledger.iter().filter(|e| e["kind"] == kind).collect() };
    assert_eq!(by_kind("grant")[0]["actor"], admin_id.as_str());
    assert!(
        ledger
            .iter()
            .filter(|e| e["kind"] == "consume")
            .all(|e| e.get("actor").is_none()),
        "{ledger:?}"
    );
    assert!(
        ledger
            .iter()
            .any(|e| e["reason"] == "duplicate" && e["actor"] == admin_id.as_str()),
        "{ledger:?}"
    );

    // Every write, in order, with its key; finance reads them too.
    let (status, page) = app
        .call(
            Method::GET,
            "/v1/operator-actions?customer=acme",
            Some(&app.finance_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let actions = page["actions"].as_array().unwrap();
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "grant",
            "adjustment",
            "plan",
            "limits",
            "alert_thresholds",
            "override"
        ]
    );
    assert!(actions.iter().all(|a| a["key_id"] == admin_id.as_str()));
    assert_eq!(actions[0]["subject"], grant["id"]);
    assert_eq!(actions[0]["detail"]["memo"], "welcome");
    assert_eq!(actions[2]["detail"]["plan"], "pro");
    let (_, all) = app
        .call(
            Method::GET,
            "/v1/operator-actions",
            Some(&app.admin_key),
            None,
        )
        .await;
    let close = all["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "period_close")
        .expect("the close");
    assert_eq!(
        (&close["key_id"], &close["subject"]),
        (&json!(finance_id), &json!("2026-03"))
    );
    // The app may not read them.
    let (status, _) = app.get_app("/v1/operator-actions").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.assert_audit_clean().await;
}

for_each_engine!(every_operator_write_names_its_key);
