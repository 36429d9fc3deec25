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

async fn override_admin(app: &TestApp, customer: &str, body: Value) -> Value {
    let (status, made) = app
        .post_admin(&format!("/v1/customers/{customer}/overrides"), body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    made
}

async fn a_customer_s_own_price_and_overage_rule_price_its_spend(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("vip", "100").await;
    // image.standard is 5 credits in the catalog; 2 for this customer until April 10.
    let price = json!({"action": "image.standard", "credits_per_unit": "2",
                       "until": "2026-04-10T00:00:00Z", "reason": "enterprise deal, ticket 7",
                       "idempotency_key": "vip-price-1"});
    let made = override_admin(&app, "vip", price.clone()).await;
    assert_eq!(
        (&made["kind"], &made["action"], &made["credits_per_unit"]),
        (&json!("price"), &json!("image.standard"), &json!("2"))
    );
    assert_eq!(made["feature"], Value::Null);
    // Replayed with its key, it answers the first; changed, it is a conflict.
    let (status, again) = app
        .post_admin("/v1/customers/vip/overrides", price.clone())
        .await;
    assert_eq!((status, &again["id"]), (StatusCode::CREATED, &made["id"]));
    let mut changed = price.clone();
    changed["credits_per_unit"] = json!("3");
    let (status, conflict) = app.post_admin("/v1/customers/vip/overrides", changed).await;
    assert_eq!(
        (status, &conflict["type"]),
        (StatusCode::CONFLICT, &json!("idempotency_conflict"))
    );
    let (status, used) = spend(&app, "vip", "image.standard", 3).await;
    assert_eq!(
        (status, &used["credits"], &used["available"]),
        (StatusCode::CREATED, &json!("6"), &json!("94"))
    );
    let (_, checked) = app
        .post_app(
            "/v1/check",
            json!({"customer": "vip", "action": "image.standard", "quantity": 1}),
        )
        .await;
    assert_eq!(
        (&checked["credits"], &checked["allowed"]),
        (&json!("2"), &json!(true))
    );
    // Another customer pays the catalog's price.
    app.promo("other", "100").await;
    let (_, used) = spend(&app, "other", "image.standard", 3).await;
    assert_eq!(used["credits"], "15");
    // A hold is captured by quantity at the price it was made at, whatever the price now.
    let (status, hold) = app.authorize("vip", "image.standard", json!(10)).await;
    assert_eq!(
        (status, &hold["credits"]),
        (StatusCode::CREATED, &json!("20"))
    );
    override_admin(
        &app,
        "vip",
        json!({"action": "image.standard", "credits_per_unit": 3, "reason": "repriced",
               "idempotency_key": "vip-price-2"}),
    )
    .await;
    let hold_id = hold["id"].as_str().unwrap();
    let (status, captured) = app.capture(hold_id, json!({"quantity": "5"})).await;
    assert_eq!(
        (status, &captured["credits"]),
        (StatusCode::OK, &json!("10"))
    );
    let (_, used) = spend(&app, "vip", "image.standard", 1).await;
    assert_eq!(
        (&used["credits"], &used["available"]),
        (&json!("3"), &json!("81"))
    );
    // Without a plan the customer is blocked at zero; its own rule lets it go 50 below.
    let (status, _) = spend(&app, "vip", "chat.request", 82).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let made = override_admin(
        &app,
        "vip",
        json!({"overage": "allow", "overage_limit": "50", "reason": "pilot", "idempotency_key": "vip-overage-1"}),
    )
    .await;
    assert_eq!(
        (&made["kind"], &made["overage"], &made["overage_limit"]),
        (&json!("overage"), &json!("allow"), &json!("50"))
    );
    let (status, used) = spend(&app, "vip", "chat.request", 100).await;
    assert_eq!(
        (status, &used["available"]),
        (StatusCode::CREATED, &json!("-19"))
    );
    let (status, refused) = spend(&app, "vip", "chat.request", 40).await;
    assert_eq!(
        (status, &refused["type"]),
        (StatusCode::PAYMENT_REQUIRED, &json!("insufficient_credits"))
    );
    // The customer view shows both in force; `plan` gives back the plan's rule (none: block).
    let customer = app.customer("vip").await;
    let kinds: Vec<(&str, Option<&str>)> = customer["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["kind"].as_str().unwrap(), o["credits_per_unit"].as_str()))
        .collect();
    assert_eq!(kinds, [("price", Some("3")), ("overage", None)]);
    override_admin(
        &app,
        "vip",
        json!({"overage": "plan", "reason": "pilot over", "idempotency_key": "vip-overage-2"}),
    )
    .await;
    override_admin(
        &app,
        "vip",
        json!({"action": "image.standard", "credits_per_unit": null, "reason": "deal ended",
               "idempotency_key": "vip-price-3"}),
    )
    .await;
    let (_, checked) = app
        .post_app(
            "/v1/check",
            json!({"customer": "vip", "action": "image.standard", "quantity": 1}),
        )
        .await;
    assert_eq!(
        (&checked["credits"], &checked["reason"]),
        (&json!("5"), &json!("insufficient_credits"))
    );
    // The history keeps all five, newest first, with who and why.
    let (status, history) = app
        .call(
            reqwest::Method::GET,
            "/v1/customers/vip/overrides",
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let made: Vec<(&str, &str)> = history["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["kind"].as_str().unwrap(), o["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        made,
        [
            ("price", "deal ended"),
            ("overage", "pilot over"),
            ("overage", "pilot"),
            ("price", "repriced"),
            ("price", "enterprise deal, ticket 7"),
        ]
    );
    assert_eq!(history["overrides"][1]["overage"], "plan");
    // A customer billed for its overage at its own price.
    app.promo("metered", "10").await;
    override_admin(
        &app,
        "metered",
        json!({"overage": "bill", "overage_price": "0.02", "reason": "usage contract",
               "idempotency_key": "metered-1"}),
    )
    .await;
    let (status, used) = spend(&app, "metered", "chat.request", 15).await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    let ledger = app.ledger("metered").await;
    assert_eq!(
        (
            &ledger[0]["kind"],
            &ledger[0]["overage"],
            &ledger[0]["money"]
        ),
        (&json!("overage"), &json!("5"), &json!("0.1"))
    );
    app.assert_audit_clean().await;
}
for_each_engine!(a_customer_s_own_price_and_overage_rule_price_its_spend);

async fn bad_price_and_overage_overrides_are_refused_and_change_nothing(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("acme", "100").await;
    let base = json!({"reason": "why", "idempotency_key": "k"});
    let body = |fields: Value| {
        let mut body = base.clone();
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    for (fields, status, kind, field) in [
        (json!({}), 422, "invalid_request", "body"),
        (
            json!({"feature": "video", "enabled": true, "action": "chat.request", "credits_per_unit": "1"}),
            422,
            "invalid_request",
            "body",
        ),
        (
            json!({"feature": "video"}),
            422,
            "invalid_request",
            "enabled",
        ),
        (
            json!({"feature": "video", "enabled": true, "overage_limit": "5"}),
            422,
            "invalid_request",
            "overage_limit",
        ),
        (
            json!({"action": "teleport", "credits_per_unit": "1"}),
            422,
            "unknown_action",
            "",
        ),
        (
            json!({"action": "chat.request"}),
            422,
            "invalid_request",
            "credits_per_unit",
        ),
        (
            json!({"action": "chat.request", "credits_per_unit": "0"}),
            422,
            "invalid_request",
            "credits_per_unit",
        ),
        (
            json!({"action": "chat.request", "credits_per_unit": "-2"}),
            422,
            "invalid_request",
            "credits_per_unit",
        ),
        // chat.request is 1 credit a unit: a price in tenths would make some quantities inexact.
        (
            json!({"action": "chat.request", "credits_per_unit": "0.5"}),
            422,
            "invalid_request",
            "credits_per_unit",
        ),
        (
            json!({"action": "chat.request", "credits_per_unit": 0.5}),
            422,
            "invalid_request",
            "credits_per_unit",
        ),
        (
            json!({"action": "chat.request", "credits_per_unit": "1", "enabled": true}),
            422,
            "invalid_request",
            "enabled",
        ),
        (
            json!({"overage": "maybe"}),
            422,
            "invalid_request",
            "overage",
        ),
        (
            json!({"overage": "allow"}),
            422,
            "invalid_request",
            "overage_limit",
        ),
        (
            json!({"overage": "allow", "overage_limit": "0"}),
            422,
            "invalid_request",
            "overage_limit",
        ),
        (
            json!({"overage": "bill"}),
            422,
            "invalid_request",
            "overage_price",
        ),
        (
            json!({"overage": "bill", "overage_price": "0.0000001"}),
            422,
            "invalid_request",
            "overage_price",
        ),
        (
            json!({"overage": "block", "overage_price": "1"}),
            422,
            "invalid_request",
            "overage_price",
        ),
        (
            json!({"overage": "bill", "overage_price": "1", "overage_limit": "1"}),
            422,
            "invalid_request",
            "overage_limit",
        ),
        (
            json!({"overage": "plan", "credits_per_unit": "1"}),
            422,
            "invalid_request",
            "credits_per_unit",
        ),
        (
            json!({"overage": "allow", "overage_limt": "5"}),
            422,
            "invalid_request",
            "overage_limt",
        ),
    ] {
        let sent = body(fields);
        let (got, problem) = app
            .post_admin("/v1/customers/acme/overrides", sent.clone())
            .await;
        assert_eq!(
            (got.as_u16(), problem["type"].as_str().unwrap()),
            (status, kind),
            "{sent}: {problem}"
        );
        let named = problem["field"].as_str().unwrap_or_default();
        assert_eq!(named, field, "{sent}: {problem}");
    }
    let (got, problem) = app
        .post_app(
            "/v1/customers/acme/overrides",
            body(json!({"overage": "block"})),
        )
        .await;
    assert_eq!(
        (got, &problem["type"]),
        (StatusCode::FORBIDDEN, &json!("insufficient_scope"))
    );
    assert_eq!(app.customer("acme").await["overrides"], json!([]));
    let (_, history) = app
        .call(
            reqwest::Method::GET,
            "/v1/customers/acme/overrides",
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(history["overrides"], json!([]));
    // The key was never used: a good request with it is made.
    let made = override_admin(&app, "acme", body(json!({"overage": "block"}))).await;
    assert_eq!(made["overage"], "block");
}
for_each_engine!(bad_price_and_overage_overrides_are_refused_and_change_nothing);
