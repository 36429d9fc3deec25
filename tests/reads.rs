//! Reads for people and dashboards through the HTTP API: the customers a page at a time (search
//! by id or Stripe customer) and a customer's usage per day or month, by action or feature.

mod common;

use axum::http::StatusCode;
use common::{Engine, TestApp};
use serde_json::{Value, json};

fn start() -> chrono::DateTime<chrono::Utc> {
    "2026-03-10T12:00:00Z".parse().unwrap()
}

async fn get_admin(app: &TestApp, path: &str) -> (StatusCode, Value) {
    app.call(reqwest::Method::GET, path, Some(&app.admin_key), None)
        .await
}

async fn customers_come_a_page_at_a_time_with_their_balances(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    for (id, credits) in [
        ("acme-1", "100"),
        ("acme-2", "50"),
        ("beta", "10"),
        ("acme-3", "5"),
    ] {
        app.promo(id, credits).await;
    }
    let (status, hold) = app.authorize("acme-2", "chat.request", json!(20)).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, _) = app.usage("beta", "chat.request", json!(4), "beta-1").await;
    assert_eq!(status, StatusCode::CREATED);
    // Two at a time, by id, following the cursor; each row equals the customer's own view.
    let mut seen = Vec::new();
    let mut path = "/v1/customers?limit=2".to_owned();
    loop {
        let (status, page) = get_admin(&app, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for row in page["customers"].as_array().unwrap() {
            let id = row["id"].as_str().unwrap();
            let view = app.customer(id).await;
            for field in [
                "balance",
                "held",
                "available",
                "overdraft",
                "frozen",
                "plan",
            ] {
                assert_eq!(row[field], view[field], "{id} {field}");
            }
            seen.push(id.to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/customers?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ["acme-1", "acme-2", "acme-3", "beta"]);
    let (_, page) = get_admin(&app, "/v1/customers?q=acme&limit=200").await;
    let found: Vec<&str> = page["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(found, ["acme-1", "acme-2", "acme-3"]);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = get_admin(&app, "/v1/customers?q=ACME").await;
    assert_eq!(page["customers"], json!([]), "the search is case-sensitive");
    let acme2 = &get_admin(&app, "/v1/customers?q=acme-2").await.1["customers"][0];
    assert_eq!(
        (&acme2["balance"], &acme2["held"], &acme2["available"]),
        (&json!("50"), &json!("20"), &json!("30"))
    );
    // Refusals.
    for (path, field) in [
        ("/v1/customers?limit=0", "limit"),
        ("/v1/customers?limit=201", "limit"),
        ("/v1/customers?q=", "q"),
        ("/v1/customers?cursor=%01", "cursor"),
        ("/v1/customers?sort=id", "sort"),
    ] {
        let (status, problem) = get_admin(&app, path).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {problem}"
        );
        assert_eq!(problem["field"], field, "{path}: {problem}");
    }
    let (status, problem) = app.get_app("/v1/customers").await;
    assert_eq!(
        (status, &problem["type"]),
        (StatusCode::FORBIDDEN, &json!("insufficient_scope"))
    );
}
for_each_engine!(customers_come_a_page_at_a_time_with_their_balances);

async fn usage_is_summed_per_day_or_month_by_action_or_feature(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("acme", "10000").await;
    let used = |key: &str, action: &str, quantity: u32, at: &str| {
        json!({"customer": "acme", "action": action, "quantity": quantity,
               "idempotency_key": key, "occurred_at": at})
    };
    for body in [
        used("u1", "chat.request", 3, "2026-02-27T10:00:00Z"),
        used("u2", "chat.request", 4, "2026-03-01T00:00:00Z"),
        used("u3", "image.standard", 2, "2026-03-01T23:59:59Z"),
        used("u4", "image.hd", 1, "2026-03-09T08:00:00Z"),
    ] {
        let (status, answer) = app.post_app("/v1/usage", body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    // A capture counts when it is captured, at what it captured.
    let (_, hold) = app.authorize("acme", "chat.request", json!(10)).await;
    let (status, _) = app
        .capture(hold["id"].as_str().unwrap(), json!({"quantity": 6}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, report) = app.get_app("/v1/customers/acme/usage").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (
            &report["from"],
            &report["to"],
            &report["interval"],
            &report["by"]
        ),
        (
            &json!("2026-02-09"),
            &json!("2026-03-10"),
            &json!("day"),
            &json!("action")
        )
    );
    assert_eq!(
        report["usage"],
        json!([
            {"period": "2026-02-27", "group": "chat.request", "credits": "3"},
            {"period": "2026-03-01", "group": "chat.request", "credits": "4"},
            {"period": "2026-03-01", "group": "image.standard", "credits": "10"},
            {"period": "2026-03-09", "group": "image.hd", "credits": "15"},
            {"period": "2026-03-10", "group": "chat.request", "credits": "6"},
        ])
    );
    assert_eq!(report["total"], "38");
    // The total is what the ledger says was consumed.
    let consumed: rust_decimal::Decimal = app
        .ledger("acme")
        .await
        .iter()
        .filter(|e| e["kind"] == "consume")
        .map(|e| {
            -e["credits"]
                .as_str()
                .unwrap()
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(consumed.to_string(), "38");
    let (_, report) = app
        .get_app("/v1/customers/acme/usage?from=2026-02-01&to=2026-03-31&interval=month&by=feature")
        .await;
    assert_eq!(
        report["usage"],
        json!([
            {"period": "2026-02", "group": "chat", "credits": "3"},
            {"period": "2026-03", "group": "chat", "credits": "10"},
            {"period": "2026-03", "group": "image", "credits": "25"},
        ])
    );
    let (_, report) = app
        .get_app("/v1/customers/acme/usage?from=2026-03-01&to=2026-03-01")
        .await;
    assert_eq!(report["total"], "14");
    // Refusals.
    for (query, field) in [
        ("interval=week", "interval"),
        ("by=plan", "by"),
        ("from=2026-3-1", "from"),
        ("from=2026-03-02&to=2026-03-01", "to"),
        ("from=2025-01-01&to=2026-03-01", "from"),
        ("from=2010-01-01&to=2026-03-01&interval=month", "from"),
        ("page=2", "page"),
    ] {
        let (status, problem) = app
            .get_app(&format!("/v1/customers/acme/usage?{query}"))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {problem}"
        );
        assert_eq!(problem["field"], field, "{query}: {problem}");
    }
    let (status, problem) = app.get_app("/v1/customers/nobody/usage").await;
    assert_eq!(
        (status, &problem["type"]),
        (StatusCode::NOT_FOUND, &json!("customer_not_found"))
    );
    app.assert_audit_clean().await;
}
for_each_engine!(usage_is_summed_per_day_or_month_by_action_or_feature);
