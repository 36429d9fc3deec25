//! Bad input is expected: each case gets its documented problem+json and changes nothing.

mod common;

use common::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[derive(Clone, Copy)]
enum Key {
    None,
    Wrong,
    App,
    Admin,
    Finance,
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    key: Key,
    body: Option<String>,
    content_type: Option<&'static str>,
    status: u16,
    kind: &'static str,
}

fn case(
    name: &'static str,
    path: &str,
    key: Key,
    body: &str,
    status: u16,
    kind: &'static str,
) -> Case {
    Case {
        name,
        method: Method::POST,
        path: path.to_owned(),
        key,
        body: Some(body.to_owned()),
        content_type: Some("application/json"),
        status,
        kind,
    }
}

fn get(name: &'static str, path: &str, key: Key, status: u16, kind: &'static str) -> Case {
    Case {
        name,
        method: Method::GET,
        path: path.to_owned(),
        key,
        body: None,
        content_type: None,
        status,
        kind,
    }
}

fn authorize_body(quantity: &str) -> String {
    format!(
        r#"{{"customer": "victim", "action": "chat.request", "quantity": {quantity}, "idempotency_key": "k"}}"#
    )
}

fn cases(hold: &str) -> Vec<Case> {
    use Key::*;
    let auth = "/v1/authorizations";
    let grants = "/v1/customers/victim/grants";
    let capture = format!("/v1/authorizations/{hold}/capture");
    let mut cases = vec![
        case(
            "malformed json",
            auth,
            App,
            r#"{"customer": "victim","#,
            400,
            "malformed_json",
        ),
        case("not an object", auth, App, "[1, 2]", 422, "invalid_request"),
        // serde would read the struct from its fields in order: refused all the same.
        case(
            "an array of the fields",
            auth,
            App,
            r#"["victim", "chat.request", "1", "k-array", null]"#,
            422,
            "invalid_request",
        ),
        case(
            "missing field",
            auth,
            App,
            r#"{"customer": "victim", "action": "chat.request", "idempotency_key": "k"}"#,
            422,
            "invalid_request",
        ),
        case(
            "customer of wrong type",
            auth,
            App,
            r#"{"customer": 5, "action": "chat.request", "quantity": 1, "idempotency_key": "k"}"#,
            422,
            "invalid_request",
        ),
        case(
            "quantity of wrong type",
            auth,
            App,
            &authorize_body("true"),
            422,
            "invalid_request",
        ),
        case(
            "quantity as a float",
            auth,
            App,
            &authorize_body("1.5"),
            422,
            "invalid_request",
        ),
        case(
            "zero quantity",
            auth,
            App,
            &authorize_body("0"),
            422,
            "invalid_request",
        ),
        case(
            "negative quantity",
            auth,
            App,
            &authorize_body("-3"),
            422,
            "invalid_request",
        ),
        case(
            "absurd quantity",
            auth,
            App,
            &authorize_body("\"1000000000000000000000\""),
            422,
            "invalid_request",
        ),
        case(
            "quantity too precise",
            auth,
            App,
            &authorize_body("\"0.0000001\""),
            422,
            "invalid_request",
        ),
        case(
            "quantity not a number",
            auth,
            App,
            &authorize_body("\"lots\""),
            422,
            "invalid_request",
        ),
        case(
            "quantity in exponent form",
            auth,
            App,
            &authorize_body("\"1e3\""),
            422,
            "invalid_request",
        ),
        case(
            "unknown action",
            auth,
            App,
            r#"{"customer": "victim", "action": "teleport", "quantity": 1, "idempotency_key": "k"}"#,
            422,
            "unknown_action",
        ),
        case(
            "empty customer",
            auth,
            App,
            r#"{"customer": "", "action": "chat.request", "quantity": 1, "idempotency_key": "k"}"#,
            422,
            "invalid_request",
        ),
        case(
            "empty idempotency key",
            auth,
            App,
            r#"{"customer": "victim", "action": "chat.request", "quantity": 1, "idempotency_key": ""}"#,
            422,
            "invalid_request",
        ),
        case(
            "unknown customer",
            auth,
            App,
            r#"{"customer": "stranger", "action": "chat.request", "quantity": 1, "idempotency_key": "k"}"#,
            402,
            "insufficient_credits",
        ),
        case(
            "more than available",
            auth,
            App,
            &authorize_body("11"),
            402,
            "insufficient_credits",
        ),
        case(
            "no key",
            auth,
            None,
            &authorize_body("1"),
            401,
            "unauthorized",
        ),
        case(
            "wrong key",
            auth,
            Wrong,
            &authorize_body("1"),
            401,
            "unauthorized",
        ),
        case(
            "admin key on the gate",
            auth,
            Admin,
            &authorize_body("1"),
            403,
            "insufficient_scope",
        ),
        case(
            "finance key on the gate",
            auth,
            Finance,
            &authorize_body("1"),
            403,
            "insufficient_scope",
        ),
        case(
            "usage with zero quantity",
            "/v1/usage",
            App,
            &authorize_body("0").replace("\"k\"", "\"u\""),
            422,
            "invalid_request",
        ),
        case(
            "check with negative quantity",
            "/v1/check",
            App,
            r#"{"customer": "victim", "action": "chat.request", "quantity": -1}"#,
            422,
            "invalid_request",
        ),
        case(
            "app key grants credits",
            grants,
            App,
            r#"{"kind": "promotional", "credits": "5", "idempotency_key": "g"}"#,
            403,
            "insufficient_scope",
        ),
        case(
            "negative grant",
            grants,
            Admin,
            r#"{"kind": "promotional", "credits": "-5", "idempotency_key": "g"}"#,
            422,
            "invalid_request",
        ),
        case(
            "zero grant",
            grants,
            Admin,
            r#"{"kind": "promotional", "credits": "0", "idempotency_key": "g"}"#,
            422,
            "invalid_request",
        ),
        case(
            "absurd grant",
            grants,
            Admin,
            r#"{"kind": "promotional", "credits": "99999999999999", "idempotency_key": "g"}"#,
            422,
            "invalid_request",
        ),
        case(
            "grant too precise",
            grants,
            Admin,
            r#"{"kind": "promotional", "credits": "1.0000001", "idempotency_key": "g"}"#,
            422,
            "invalid_request",
        ),
        case(
            "unknown grant kind",
            grants,
            Admin,
            r#"{"kind": "gift", "credits": "5", "idempotency_key": "g"}"#,
            422,
            "invalid_request",
        ),
        case(
            "grant expiring in the past",
            grants,
            Admin,
            r#"{"kind": "promotional", "credits": "5", "expires_at": "2001-01-01T00:00:00Z", "idempotency_key": "g"}"#,
            422,
            "invalid_request",
        ),
        case(
            "grant expiry not a time",
            grants,
            Admin,
            r#"{"kind": "promotional", "credits": "5", "expires_at": "soon", "idempotency_key": "g"}"#,
            422,
            "invalid_request",
        ),
        case(
            "unknown pack",
            grants,
            Admin,
            r#"{"kind": "pack", "pack": "mystery", "idempotency_key": "g"}"#,
            422,
            "unknown_catalog_item",
        ),
        case(
            "pack price too precise",
            grants,
            Admin,
            r#"{"kind": "pack", "pack": "topup_small", "price": "9.999", "idempotency_key": "g"}"#,
            422,
            "invalid_request",
        ),
        case(
            "capture an unknown hold",
            "/v1/authorizations/hold_nope/capture",
            App,
            r#"{"credits": "1"}"#,
            404,
            "hold_not_found",
        ),
        case(
            "capture with both amounts",
            &capture,
            App,
            r#"{"credits": "1", "quantity": 1}"#,
            422,
            "invalid_request",
        ),
        case(
            "capture with neither",
            &capture,
            App,
            r#"{}"#,
            422,
            "invalid_request",
        ),
        case(
            "capture negative credits",
            &capture,
            App,
            r#"{"credits": "-1"}"#,
            422,
            "invalid_request",
        ),
        case(
            "capture beyond what exists",
            &capture,
            App,
            r#"{"credits": "100"}"#,
            402,
            "insufficient_credits",
        ),
        case(
            "void an unknown hold",
            "/v1/authorizations/hold_nope/void",
            App,
            "{}",
            404,
            "hold_not_found",
        ),
        case(
            "admin key captures",
            &capture,
            Admin,
            r#"{"credits": "1"}"#,
            403,
            "insufficient_scope",
        ),
        case(
            "clock backwards",
            "/v1/test-clock/advance",
            Admin,
            r#"{"to": "2001-01-01T00:00:00Z"}"#,
            409,
            "clock_backwards",
        ),
        case(
            "app key moves the clock",
            "/v1/test-clock/advance",
            App,
            r#"{"to": "2100-01-01T00:00:00Z"}"#,
            403,
            "insufficient_scope",
        ),
        case(
            "adjustment of zero",
            "/v1/customers/victim/adjustments",
            Admin,
            r#"{"credits": "0", "reason": "typo", "idempotency_key": "adj1"}"#,
            422,
            "invalid_request",
        ),
        case(
            "adjustment without a reason",
            "/v1/customers/victim/adjustments",
            Admin,
            r#"{"credits": "-1", "idempotency_key": "adj2"}"#,
            422,
            "invalid_request",
        ),
        case(
            "adjustment with a blank reason",
            "/v1/customers/victim/adjustments",
            Admin,
            r#"{"credits": "-1", "reason": "  ", "idempotency_key": "adj3"}"#,
            422,
            "invalid_request",
        ),
        case(
            "adjustment with a misspelled field",
            "/v1/customers/victim/adjustments",
            Admin,
            r#"{"credits": "-1", "reason": "typo", "idempotency_key": "adj4", "reasn": "x"}"#,
            422,
            "invalid_request",
        ),
        case(
            "adjustment as a JSON float",
            "/v1/customers/victim/adjustments",
            Admin,
            r#"{"credits": -1.5, "reason": "typo", "idempotency_key": "adj5"}"#,
            422,
            "invalid_request",
        ),
        case(
            "adjustment beyond the limit",
            "/v1/customers/victim/adjustments",
            Admin,
            r#"{"credits": "-1000000000001", "reason": "typo", "idempotency_key": "adj6"}"#,
            422,
            "invalid_request",
        ),
        case(
            "adjustment finer than the credit scale",
            "/v1/customers/victim/adjustments",
            Admin,
            r#"{"credits": "-0.0000001", "reason": "typo", "idempotency_key": "adj7"}"#,
            422,
            "invalid_request",
        ),
        case(
            "adjustment taking back more than is available",
            "/v1/customers/victim/adjustments",
            Admin,
            r#"{"credits": "-8.000001", "reason": "typo", "idempotency_key": "adj8"}"#,
            409,
            "adjustment_exceeds_available",
        ),
        case(
            "adjustment by an app key",
            "/v1/customers/victim/adjustments",
            App,
            r#"{"credits": "5", "reason": "typo", "idempotency_key": "adj9"}"#,
            403,
            "insufficient_scope",
        ),
        case(
            "taking back from an unknown customer",
            "/v1/customers/stranger/adjustments",
            Admin,
            r#"{"credits": "-1", "reason": "typo", "idempotency_key": "adj10"}"#,
            404,
            "customer_not_found",
        ),
        get(
            "unknown customer",
            "/v1/customers/stranger",
            App,
            404,
            "customer_not_found",
        ),
        get(
            "ledger page too big",
            "/v1/customers/victim/ledger?limit=1000",
            App,
            422,
            "invalid_request",
        ),
        get(
            "ledger page of zero",
            "/v1/customers/victim/ledger?limit=0",
            App,
            422,
            "invalid_request",
        ),
        get(
            "garbled cursor",
            "/v1/customers/victim/ledger?cursor=abc",
            App,
            422,
            "invalid_request",
        ),
        get(
            "customer without key",
            "/v1/customers/victim",
            None,
            401,
            "unauthorized",
        ),
        get("unknown path", "/v1/nothing-here", App, 404, "not_found"),
        Case {
            name: "oversized body",
            body: Some(format!(
                r#"{{"customer": "victim", "action": "chat.request", "quantity": 1, "idempotency_key": "{}"}}"#,
                "x".repeat(100_000)
            )),
            ..case("", auth, App, "", 413, "payload_too_large")
        },
        Case {
            name: "no content type",
            content_type: Option::None,
            ..case(
                "",
                auth,
                App,
                &authorize_body("1"),
                415,
                "unsupported_media_type",
            )
        },
        Case {
            name: "text content type",
            content_type: Some("text/plain"),
            ..case(
                "",
                auth,
                App,
                &authorize_body("1"),
                415,
                "unsupported_media_type",
            )
        },
    ];
    let long_customer = format!(
        r#"{{"customer": "{}", "action": "chat.request", "quantity": 1, "idempotency_key": "k"}}"#,
        "c".repeat(300)
    );
    cases.push(case(
        "customer id too long",
        auth,
        App,
        &long_customer,
        422,
        "invalid_request",
    ));
    cases
}

async fn bad_input_is_refused_and_changes_nothing(app: TestApp) {
    app.promo("victim", "10").await;
    let (_, hold) = app.authorize("victim", "chat.request", json!(2)).await;
    let hold = hold["id"].as_str().unwrap().to_owned();
    let before = (app.balances("victim").await, app.ledger("victim").await);

    for case in cases(&hold) {
        let mut request = app
            .client
            .request(case.method.clone(), format!("{}{}", app.address, case.path));
        request = match case.key {
            Key::None => request,
            Key::Wrong => request.bearer_auth(
                "cb_app_0000000000000000000000000000000000000000000000000000000000000000",
            ),
            Key::App => request.bearer_auth(&app.app_key),
            Key::Admin => request.bearer_auth(&app.admin_key),
            Key::Finance => request.bearer_auth(&app.finance_key),
        };
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = &case.body {
            request = request.body(body.clone());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(
            status,
            StatusCode::from_u16(case.status).unwrap(),
            "{}: {body}",
            case.name
        );
        assert_eq!(body["type"], case.kind, "{}: {body}", case.name);
        assert_eq!(body["status"], case.status, "{}", case.name);
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{}",
            case.name
        );
    }
    let after = (app.balances("victim").await, app.ledger("victim").await);
    assert_eq!(before, after, "bad input changed the books");
    let (status, _) = app.get_app("/v1/customers/stranger").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no customer was created by refused requests"
    );
    app.assert_audit_clean().await;
}
on_both_engines!(bad_input_is_refused_and_changes_nothing);

async fn the_openapi_document_and_operations_endpoints(app: TestApp) {
    let (status, doc) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/check",
        "/v1/authorizations",
        "/v1/authorizations/{id}/capture",
        "/v1/usage",
        "/v1/customers/{id}/ledger",
        "/v1/customers/{id}/adjustments",
        "/livez",
        "/metrics",
        "/openapi.json",
        "/webhooks/stripe",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from openapi.json"
        );
    }
    // Every refusal is described, with the problem schema; query parameters are in the query.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(
                    !response["description"].as_str().unwrap_or("").is_empty(),
                    "{method} {path} {status}: no description"
                );
                if status.starts_with(['4', '5']) {
                    assert_eq!(
                        response["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    let limit = &doc["paths"]["/v1/customers/{id}/ledger"]["get"]["parameters"][1];
    assert_eq!(
        (&limit["name"], &limit["in"]),
        (&json!("limit"), &json!("query"))
    );
    assert_eq!(
        doc["components"]["schemas"]["GrantRequest"]["additionalProperties"],
        false
    );
    let (status, health) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, health), (StatusCode::OK, json!({"status": "ok"})));
    app.promo("m", "1").await;
    app.authorize("m", "chat.request", json!(1)).await;
    app.authorize("m", "chat.request", json!(1)).await;
    let (status, metrics) = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains("creditbook_authorizations_total{result=\"approved\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("creditbook_authorizations_total{result=\"refused\"} 1"),
        "{metrics}"
    );
    // The runner's own figures: the grant and both authorizations ran as commands (the refused
    // one too), in at most as many batches, and every phase has a line.
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} missing: {metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("creditbook_gate_batch_commands_total"), 3.0);
    let batches = value("creditbook_gate_batches_total");
    assert!((1.0..=3.0).contains(&batches), "{metrics}");
    let spent: Vec<f64> = ["load", "decide", "write", "post", "commit"]
        .iter()
        .map(|phase| {
            value(&format!(
                "creditbook_gate_batch_seconds_total{{phase=\"{phase}\"}}"
            ))
        })
        .collect();
    assert!(spent.iter().all(|s| (0.0..60.0).contains(s)), "{metrics}");
    assert!(spent.iter().sum::<f64>() > 0.0, "{metrics}");
    assert!(value("creditbook_gate_queue_wait_seconds_total") >= 0.0);
    // Latency histograms by route template and status.
    let series = "route=\"/v1/authorizations\",status=\"201\"";
    assert_eq!(
        value(&format!(
            "creditbook_http_request_duration_seconds_count{{{series}}}"
        )),
        1.0
    );
    assert_eq!(
        value(&format!(
            "creditbook_http_request_duration_seconds_bucket{{{series},le=\"+Inf\"}}"
        )),
        1.0
    );
    assert_eq!(
        value(
            "creditbook_http_request_duration_seconds_count{route=\"/v1/authorizations\",status=\"402\"}"
        ),
        1.0
    );
    assert!(
        value(&format!(
            "creditbook_http_request_duration_seconds_sum{{{series}}}"
        )) > 0.0
    );
}
on_both_engines!(the_openapi_document_and_operations_endpoints);

/// Every request body and query refuses a field it does not know, naming it, so that a
/// misspelled optional field is never silently dropped; a wrong type or a missing field names
/// its field too. Nothing changes.
async fn unknown_fields_are_refused_naming_the_field(app: TestApp) {
    use Key::*;
    app.promo("victim", "10").await;
    let (_, hold) = app.authorize("victim", "chat.request", json!(2)).await;
    let hold = hold["id"].as_str().unwrap().to_owned();
    let before = (app.balances("victim").await, app.ledger("victim").await);
    let capture = format!("/v1/authorizations/{hold}/capture");
    let spend =
        r#""customer": "victim", "action": "chat.request", "quantity": 1, "idempotency_key": "u1""#;
    let cases: Vec<(Method, &str, Key, String, &str)> = vec![
        (
            Method::POST,
            "/v1/customers/victim/grants",
            Admin,
            r#"{"kind": "promotional", "credits": "5", "expire_at": "2030-01-01T00:00:00Z", "idempotency_key": "g1"}"#.into(),
            "expire_at",
        ),
        (
            Method::POST,
            "/v1/usage",
            App,
            format!(r#"{{{spend}, "occured_at": "2026-01-01T00:00:00Z"}}"#),
            "occured_at",
        ),
        (Method::POST, "/v1/authorizations", App, format!(r#"{{{spend}, "qty": 2}}"#), "qty"),
        (
            Method::POST,
            "/v1/check",
            App,
            r#"{"customer": "victim", "action": "chat.request", "quantity": 1, "dry_run": true}"#.into(),
            "dry_run",
        ),
        (Method::POST, &capture, App, r#"{"quantity": 1, "amount": "1"}"#.into(), "amount"),
        (
            Method::PUT,
            "/v1/customers/victim/plan",
            Admin,
            r#"{"plan": null, "effective": "now"}"#.into(),
            "effective",
        ),
        (
            Method::POST,
            "/v1/test-clock/advance",
            Admin,
            r#"{"to": "2100-01-01T00:00:00Z", "jobs": false}"#.into(),
            "jobs",
        ),
        // A wrong type names the field; so does a missing one.
        (
            Method::POST,
            "/v1/usage",
            App,
            r#"{"customer": "victim", "action": "chat.request", "quantity": true, "idempotency_key": "u2"}"#.into(),
            "quantity",
        ),
        (
            Method::POST,
            "/v1/usage",
            App,
            r#"{"customer": "victim", "action": "chat.request", "quantity": 1}"#.into(),
            "idempotency_key",
        ),
        (
            Method::GET,
            "/v1/customers/victim/ledger?limit=5&page=2",
            App,
            String::new(),
            "page",
        ),
        (
            Method::GET,
            "/v1/customers/victim/ledger?limit=five",
            App,
            String::new(),
            "limit",
        ),
        (
            Method::GET,
            "/v1/revenue/journal?from=2026-01-01&to=2026-01-31&fromat=csv",
            Finance,
            String::new(),
            "fromat",
        ),
    ];
    for (method, path, key, body, field) in cases {
        let key = match key {
            App => &app.app_key,
            Admin => &app.admin_key,
            Finance => &app.finance_key,
            None | Wrong => unreachable!(),
        };
        let mut request = app
            .client
            .request(method.clone(), format!("{}{path}", app.address))
            .bearer_auth(key);
        if method != Method::GET {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {problem}"
        );
        assert_eq!(problem["type"], "invalid_request", "{path}: {problem}");
        assert_eq!(problem["field"], field, "{path}: {problem}");
    }
    // Inside a batch, each usage's problem names the field by its place in the batch.
    let (status, batch) = app
        .post_app(
            "/v1/usage/batch",
            json!({"usages": [
                {"customer": "victim", "action": "chat.request", "quantity": 1, "idempotency_key": "b1", "occured_at": "2026-01-01T00:00:00Z"},
                {"customer": "victim", "action": "chat.request", "quantity": "x", "idempotency_key": "b2"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let fields: Vec<&serde_json::Value> = batch["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["field"])
        .collect();
    assert_eq!(
        fields,
        [&json!("usages[0].occured_at"), &json!("usages[1].quantity")]
    );
    let after = (app.balances("victim").await, app.ledger("victim").await);
    assert_eq!(before, after, "a refused field changed the books");
    app.assert_audit_clean().await;
}
on_both_engines!(unknown_fields_are_refused_naming_the_field);
