//! Customer controls through the HTTP API: spend limits (hard and soft, per day and month,
//! overall and per feature, held credits counted) and feature overrides (trials that end by
//! themselves, recorded with who and why).

mod common;

use axum::http::StatusCode;
use common::{Engine, TestApp};
use serde_json::{Value, json};

fn start() -> chrono::DateTime<chrono::Utc> {
    "2026-03-10T12:00:00Z".parse().unwrap()
}

async fn put_limits(
    app: &TestApp,
    key: &str,
    customer: &str,
    limits: Value,
) -> (StatusCode, Value) {
    app.call(
        reqwest::Method::PUT,
        &format!("/v1/customers/{customer}/limits"),
        Some(key),
        Some(json!({ "limits": limits })),
    )
    .await
}

async fn spend(app: &TestApp, customer: &str, action: &str, quantity: u32) -> (StatusCode, Value) {
    app.usage(
        customer,
        action,
        json!(quantity),
        &uuid::Uuid::new_v4().to_string(),
    )
    .await
}

async fn limits_count_what_was_spent_and_held_and_refuse_past_a_hard_cap(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("acme", "1000").await;
    // 30 spent before any limit: a day's limit set now counts them.
    assert_eq!(
        spend(&app, "acme", "chat.request", 30).await.0,
        StatusCode::CREATED
    );
    let (status, set) = put_limits(
        &app,
        &app.app_key,
        "acme",
        json!([
            {"period": "day", "credits": "40", "mode": "hard"},
            {"period": "month", "credits": "25", "feature": "image", "mode": "hard"},
            {"period": "month", "credits": 100, "mode": "soft"},
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let day = &set["limits"][0];
    assert_eq!(
        (
            day["spent"].as_str(),
            day["held"].as_str(),
            day["remaining"].as_str()
        ),
        (Some("30"), Some("0"), Some("10"))
    );
    assert_eq!(day["window_start"], "2026-03-10T00:00:00Z");
    assert_eq!(day["resets_at"], "2026-03-11T00:00:00Z");
    assert_eq!(set["limits"][1]["spent"], "0", "chat is not image");
    // A hold of 5 counts as spent: 35 of 40.
    let (status, hold) = app.authorize("acme", "image.standard", json!(1)).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let hold_id = hold["id"].as_str().unwrap().to_owned();
    // 6 more would pass 40: refused with what stands, and nothing written.
    let before = app.ledger("acme").await.len();
    let (status, refused) = spend(&app, "acme", "chat.request", 6).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{refused}");
    assert_eq!(refused["type"], "spend_limit_reached");
    assert_eq!(
        (
            &refused["period"],
            &refused["feature"],
            &refused["limit"],
            &refused["spent"],
            &refused["held"],
            &refused["requested"]
        ),
        (
            &json!("day"),
            &Value::Null,
            &json!("40"),
            &json!("30"),
            &json!("5"),
            &json!("6")
        )
    );
    assert_eq!(refused["resets_at"], "2026-03-11T00:00:00Z");
    assert_eq!(app.ledger("acme").await.len(), before);
    // `check` says the same without holding anything.
    let (_, check) = app
        .post_app(
            "/v1/check",
            json!({"customer": "acme", "action": "chat.request", "quantity": 6}),
        )
        .await;
    assert_eq!(
        (&check["allowed"], &check["reason"]),
        (&json!(false), &json!("spend_limit_reached"))
    );
    // Exactly up to the cap passes.
    assert_eq!(
        spend(&app, "acme", "chat.request", 5).await.0,
        StatusCode::CREATED
    );
    // A capture up to its hold passes; past it, it may not pass the cap.
    let (status, over) = app.capture(&hold_id, json!({"credits": "6"})).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{over}");
    assert_eq!(over["type"], "spend_limit_reached");
    let (status, captured) = app.capture(&hold_id, json!({"credits": "5"})).await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    let customer = app.customer("acme").await;
    let limits = customer["limits"].as_array().unwrap();
    assert_eq!(limits.len(), 3);
    assert_eq!(
        (
            &limits[0]["spent"],
            &limits[0]["held"],
            &limits[0]["remaining"]
        ),
        (&json!("40"), &json!("0"), &json!("0"))
    );
    assert_eq!(
        limits[1]["spent"], "5",
        "the image limit counts the capture"
    );
    assert_eq!(limits[2]["spent"], "40");
    assert_eq!(customer["available"], "960");
    // The next UTC day starts from nothing; the month goes on.
    app.advance("2026-03-11T00:00:01Z".parse().unwrap()).await;
    assert_eq!(
        spend(&app, "acme", "chat.request", 40).await.0,
        StatusCode::CREATED
    );
    let (status, refused) = spend(&app, "acme", "image.hd", 1).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{refused}");
    assert_eq!(
        (&refused["period"], &refused["feature"], &refused["spent"]),
        (&json!("day"), &Value::Null, &json!("40"))
    );
    let customer = app.customer("acme").await;
    assert_eq!(customer["limits"][2]["spent"], "80");
    // Setting them again keeps what was spent; an empty list removes them.
    let (status, again) = put_limits(
        &app,
        &app.admin_key,
        "acme",
        json!([{"period": "month", "credits": "25", "feature": "image", "mode": "hard"}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["limits"][0]["spent"], "5");
    let (status, none) = put_limits(&app, &app.app_key, "acme", json!([])).await;
    assert_eq!((status, &none["limits"]), (StatusCode::OK, &json!([])));
    assert_eq!(
        spend(&app, "acme", "image.hd", 1).await.0,
        StatusCode::CREATED
    );
    app.assert_audit_clean().await;
}
for_each_engine!(limits_count_what_was_spent_and_held_and_refuse_past_a_hard_cap);

async fn bad_limits_are_refused_and_change_nothing(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("acme", "100").await;
    let good = json!({"period": "day", "credits": "10", "mode": "hard"});
    let cases = [
        (
            json!([{"period": "week", "credits": "10", "mode": "hard"}]),
            "limits[0].period",
        ),
        (
            json!([{"period": "day", "credits": "10", "mode": "firm"}]),
            "limits[0].mode",
        ),
        (
            json!([{"period": "day", "credits": "0", "mode": "hard"}]),
            "limits[0].credits",
        ),
        (
            json!([{"period": "day", "credits": "-1", "mode": "hard"}]),
            "limits[0].credits",
        ),
        (
            json!([{"period": "day", "credits": "0.0000001", "mode": "hard"}]),
            "limits[0].credits",
        ),
        (
            json!([{"period": "day", "credits": 1.5, "mode": "hard"}]),
            "limits[0].credits",
        ),
        (
            json!([{"period": "day", "credits": "10", "mode": "hard", "feature": "teleport"}]),
            "limits[].feature",
        ),
        (
            json!([{"period": "day", "credits": "10", "mode": "hard", "featur": "chat"}]),
            "limits[0]",
        ),
        (json!([good.clone(), good.clone()]), "limits"),
        (json!(vec![good.clone(); 33]), "limits"),
    ];
    for (limits, field) in cases {
        let (status, problem) = put_limits(&app, &app.app_key, "acme", limits.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{limits}: {problem}"
        );
        assert_eq!(problem["type"], "invalid_request", "{limits}");
        assert!(
            problem["field"].as_str().unwrap().starts_with(field),
            "{limits}: {problem}"
        );
    }
    let (status, problem) = put_limits(&app, &app.finance_key, "acme", json!([good])).await;
    assert_eq!(
        (status, &problem["type"]),
        (StatusCode::FORBIDDEN, &json!("insufficient_scope"))
    );
    let (status, problem) = put_limits(&app, &app.app_key, "nobody", json!([good])).await;
    assert_eq!(
        (status, &problem["type"]),
        (StatusCode::NOT_FOUND, &json!("customer_not_found"))
    );
    assert_eq!(app.customer("acme").await["limits"], json!([]));
    let (status, _) = app.get_app("/v1/customers/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
for_each_engine!(bad_limits_are_refused_and_change_nothing);

async fn overrides_open_and_close_features_until_they_lapse(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("trial", "1000").await;
    // `video` needs a plan that lists it: refused, then opened for a week's trial.
    let (status, refused) = spend(&app, "trial", "video.clip", 1).await;
    assert_eq!(
        (status, &refused["type"]),
        (StatusCode::FORBIDDEN, &json!("feature_not_entitled"))
    );
    let body = json!({"feature": "video", "enabled": true, "until": "2026-03-17T12:00:00Z",
                      "reason": "sales trial, ticket 42", "idempotency_key": "trial-1"});
    let (status, made) = app
        .post_admin("/v1/customers/trial/overrides", body.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["customer"], "trial");
    assert!(made["made_by"].as_str().unwrap().starts_with("key_"));
    assert_eq!(made["made_at"], "2026-03-10T12:00:00Z");
    // The same request again answers the first; another request with the key is a conflict.
    let (status, again) = app
        .post_admin("/v1/customers/trial/overrides", body.clone())
        .await;
    assert_eq!((status, &again["id"]), (StatusCode::CREATED, &made["id"]));
    let mut other = body.clone();
    other["enabled"] = json!(false);
    let (status, conflict) = app.post_admin("/v1/customers/trial/overrides", other).await;
    assert_eq!(
        (status, &conflict["type"]),
        (StatusCode::CONFLICT, &json!("idempotency_conflict"))
    );
    assert_eq!(
        spend(&app, "trial", "video.clip", 1).await.0,
        StatusCode::CREATED
    );
    // `chat` is open to all: switched off for this customer, for good.
    let (status, _) = app
        .post_admin(
            "/v1/customers/trial/overrides",
            json!({"feature": "chat", "enabled": false, "reason": "abuse", "idempotency_key": "chat-off"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, refused) = spend(&app, "trial", "chat.request", 1).await;
    assert_eq!(
        (status, &refused["type"]),
        (StatusCode::FORBIDDEN, &json!("feature_not_entitled"))
    );
    let customer = app.customer("trial").await;
    let features: Vec<&str> = customer["features"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(features, ["image", "video"]);
    let in_force: Vec<(&str, bool)> = customer["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["feature"].as_str().unwrap(),
                o["enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(in_force, [("chat", false), ("video", true)]);
    assert_eq!(customer["overrides"][1]["reason"], "sales trial, ticket 42");
    // The trial ends by itself.
    app.advance("2026-03-17T12:00:00Z".parse().unwrap()).await;
    let (status, refused) = spend(&app, "trial", "video.clip", 1).await;
    assert_eq!(
        (status, &refused["type"]),
        (StatusCode::FORBIDDEN, &json!("feature_not_entitled"))
    );
    let customer = app.customer("trial").await;
    assert_eq!(customer["overrides"].as_array().unwrap().len(), 1);
    // The history keeps both, newest first, with who and why.
    let (status, history) = app
        .call(
            reqwest::Method::GET,
            "/v1/customers/trial/overrides",
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let reasons: Vec<&str> = history["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["abuse", "sales trial, ticket 42"]);
    app.assert_audit_clean().await;
}
for_each_engine!(overrides_open_and_close_features_until_they_lapse);

async fn bad_overrides_are_refused_and_change_nothing(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    let valid =
        json!({"feature": "video", "enabled": true, "reason": "why", "idempotency_key": "k"});
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    for (body, status, kind) in [
        (
            with("feature", json!("teleport")),
            422,
            "unknown_catalog_item",
        ),
        (
            with("until", json!("2026-03-10T11:00:00Z")),
            422,
            "invalid_request",
        ),
        (with("until", json!("tomorrow")), 422, "invalid_request"),
        (with("reason", json!("   ")), 422, "invalid_request"),
        (with("enabled", json!("yes")), 422, "invalid_request"),
        (with("enable", json!(true)), 422, "invalid_request"),
        (with("idempotency_key", json!("")), 422, "invalid_request"),
    ] {
        let (got, problem) = app
            .post_admin("/v1/customers/someone/overrides", body.clone())
            .await;
        assert_eq!(
            (got.as_u16(), problem["type"].as_str().unwrap()),
            (status, kind),
            "{body}: {problem}"
        );
    }
    let (got, problem) = app
        .post_app("/v1/customers/someone/overrides", valid.clone())
        .await;
    assert_eq!(
        (got, &problem["type"]),
        (StatusCode::FORBIDDEN, &json!("insufficient_scope"))
    );
    // Nothing was made: the customer does not exist.
    let (got, _) = app.get_app("/v1/customers/someone").await;
    assert_eq!(got, StatusCode::NOT_FOUND);
    let (got, problem) = app
        .call(
            reqwest::Method::GET,
            "/v1/customers/someone/overrides",
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(
        (got, &problem["type"]),
        (StatusCode::NOT_FOUND, &json!("customer_not_found"))
    );
}
for_each_engine!(bad_overrides_are_refused_and_change_nothing);
