//! The gate and the ledger through the real HTTP stack, on SQLite and PostgreSQL.

mod common;

use chrono::{Duration, Utc};
use common::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn consumed_grants(entries: &[Value], operation_of: &Value) -> Vec<(String, String)> {
    let operation = operation_of["operation"].as_str().unwrap();
    let mut rows: Vec<&Value> = entries
        .iter()
        .filter(|e| e["operation"] == operation && e["kind"] == "consume")
        .collect();
    rows.sort_by_key(|e| e["position"].as_i64().unwrap());
    rows.iter()
        .map(|e| {
            (
                e["grant"].as_str().unwrap_or("-").to_owned(),
                e["credits"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn consumption_follows_priority_then_expiry_then_age(app: TestApp) {
    let now = Utc::now();
    let c = "order";
    let pack = app
        .grant(
            c,
            json!({"kind": "pack", "pack": "topup_small", "credits": "7"}),
        )
        .await;
    let plan = app
        .grant(
            c,
            json!({"kind": "plan", "plan": "pro", "credits": "6", "price": "20.00"}),
        )
        .await;
    let promo_a = app
        .grant(
            c,
            json!({"kind": "promotional", "credits": "3", "expires_at": now + Duration::days(10)}),
        )
        .await;
    let promo_b = app
        .grant(
            c,
            json!({"kind": "promotional", "credits": "2", "expires_at": now + Duration::days(5)}),
        )
        .await;
    let promo_c = app
        .grant(c, json!({"kind": "promotional", "credits": "4"}))
        .await;
    let adjustment = app
        .grant(
            c,
            json!({"kind": "adjustment", "credits": "5", "expires_at": now + Duration::days(30)}),
        )
        .await;
    assert_eq!(
        app.balances(c).await,
        ("27".into(), "0".into(), "27".into())
    );

    let (status, usage) = app.usage(c, "chat.request", json!(20), "u1").await;
    assert_eq!(status, StatusCode::CREATED, "{usage}");
    assert_eq!(usage["available"], "7");
    let entries = app.ledger(c).await;
    // Priority 0 promotions first, soonest expiry first, no expiry last; then priority 10: the
    // adjustment (expires) before the plan grant (none); the pack (priority 20) is untouched.
    assert_eq!(
        consumed_grants(&entries, &entries[0]),
        vec![
            (promo_b.clone(), "-2".into()),
            (promo_a.clone(), "-3".into()),
            (promo_c.clone(), "-4".into()),
            (adjustment.clone(), "-5".into()),
            (plan.clone(), "-6".into()),
        ]
    );
    let (status, _) = app.usage(c, "chat.request", json!("3"), "u2").await;
    assert_eq!(status, StatusCode::CREATED);
    let entries = app.ledger(c).await;
    assert_eq!(
        consumed_grants(&entries, &entries[0]),
        vec![(pack.clone(), "-3".into())]
    );
    let customer = app.customer(c).await;
    assert_eq!(customer["grants"].as_array().unwrap().len(), 1);
    assert_eq!(customer["grants"][0]["id"], pack.as_str());
    assert_eq!(customer["grants"][0]["remaining"], "4");
    assert_eq!(customer["grants"][0]["price"], "10");
    app.assert_audit_clean().await;
}
on_both_engines!(consumption_follows_priority_then_expiry_then_age);

async fn capture_below_and_above_the_hold(app: TestApp) {
    let c = "capture";
    app.promo(c, "10").await;
    let (status, hold) = app.authorize(c, "image.standard", json!(1)).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    assert_eq!(hold["credits"], "5");
    assert_eq!(app.balances(c).await, ("10".into(), "5".into(), "5".into()));

    // Less than held: the rest is released.
    let id = hold["id"].as_str().unwrap();
    let (status, captured) = app.capture(id, json!({"credits": "3"})).await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    assert_eq!(captured["status"], "captured");
    assert_eq!(captured["credits"], "3");
    assert_eq!(app.balances(c).await, ("7".into(), "0".into(), "7".into()));

    // More than held, beyond what is free, under `block`: refused, nothing changes.
    let (_, hold) = app.authorize(c, "image.standard", json!(1)).await;
    let id = hold["id"].as_str().unwrap();
    let before = app.ledger(c).await.len();
    let (status, problem) = app.capture(id, json!({"credits": "8"})).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{problem}");
    assert_eq!(problem["type"], "insufficient_credits");
    assert_eq!(app.ledger(c).await.len(), before);
    assert_eq!(app.balances(c).await, ("7".into(), "5".into(), "2".into()));

    // More than held, within what is free: the excess is charged.
    let (status, captured) = app.capture(id, json!({"quantity": "1.4"})).await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    assert_eq!(captured["credits"], "7");
    assert_eq!(app.balances(c).await, ("0".into(), "0".into(), "0".into()));

    // The same capture again answers the first result; a different one is refused.
    // The entries record the quantity used, not the one authorized.
    let latest = app.ledger(c).await;
    assert!(
        latest
            .iter()
            .filter(|e| e["operation"] == latest[0]["operation"])
            .all(|e| e["quantity"] == "1.4")
    );
    let (status, again) = app.capture(id, json!({"quantity": "1.4"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, captured);
    let (status, problem) = app.capture(id, json!({"credits": "1"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "hold_already_resolved");
    app.assert_audit_clean().await;
}
on_both_engines!(capture_below_and_above_the_hold);

async fn over_capture_under_allow_goes_into_overdraft(app: TestApp) {
    let c = "allow";
    app.set_plan_without_its_credits(c, "pro").await;
    app.promo(c, "10").await;
    let (_, hold) = app.authorize(c, "video.clip", json!(1)).await; // 50 > 10: allowed down to -200
    assert_eq!(hold["status"], "held", "{hold}");
    assert_eq!(hold["available"], "-40");
    let id = hold["id"].as_str().unwrap();
    let (status, captured) = app.capture(id, json!({"credits": "60"})).await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    let customer = app.customer(c).await;
    assert_eq!(customer["balance"], "-50");
    assert_eq!(customer["overdraft"], "50");
    // Beyond the limit: refused.
    let (status, problem) = app.usage(c, "chat.request", json!(151), "x").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{problem}");
    let (status, _) = app.usage(c, "chat.request", json!(150), "y").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        app.balances(c).await,
        ("-200".into(), "0".into(), "-200".into())
    );
    // A new grant pays off the overdraft first.
    app.promo(c, "300").await;
    let customer = app.customer(c).await;
    assert_eq!(customer["balance"], "100");
    assert_eq!(customer["overdraft"], "0");
    app.assert_audit_clean().await;
}
on_both_engines!(over_capture_under_allow_goes_into_overdraft);

async fn overage_under_bill_is_recorded_not_owed(app: TestApp) {
    let c = "bill";
    app.set_plan_without_its_credits(c, "team").await;
    app.promo(c, "3").await;
    let (status, usage) = app.usage(c, "chat.request", json!(10), "b1").await;
    assert_eq!(status, StatusCode::CREATED, "{usage}");
    assert_eq!(app.balances(c).await, ("0".into(), "0".into(), "0".into()));
    let entries = app.ledger(c).await;
    let overage: Vec<&Value> = entries.iter().filter(|e| e["kind"] == "overage").collect();
    assert_eq!(overage.len(), 1);
    assert_eq!(overage[0]["overage"], "7");
    app.assert_audit_clean().await;
}
on_both_engines!(overage_under_bill_is_recorded_not_owed);

async fn void_releases_and_resolves_once(app: TestApp) {
    let c = "void";
    app.promo(c, "10").await;
    let (status, problem) = app.authorize(c, "image.hd", json!(1)).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "15 > 10: {problem}");
    let (_, hold) = app.authorize(c, "image.standard", json!(2)).await;
    let id = hold["id"].as_str().unwrap();
    let (status, voided) = app.void(id).await;
    assert_eq!(status, StatusCode::OK, "{voided}");
    assert_eq!(voided["status"], "voided");
    assert_eq!(voided["available"], "10");
    let (status, again) = app.void(id).await;
    assert_eq!((status, &again), (StatusCode::OK, &voided));
    let (status, problem) = app.capture(id, json!({"credits": "1"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "hold_already_resolved");
    assert!(
        problem["detail"].as_str().unwrap().contains("voided"),
        "{problem}"
    );
    assert!(app.ledger(c).await.iter().all(|e| e["kind"] != "consume"));
    assert_eq!(
        app.balances(c).await,
        ("10".into(), "0".into(), "10".into())
    );
    app.assert_audit_clean().await;
}
on_both_engines!(void_releases_and_resolves_once);

async fn holds_expire_by_the_test_clock(app: TestApp) {
    let c = "hold-expiry";
    app.promo(c, "10").await;
    let (_, hold) = app.authorize(c, "image.standard", json!(1)).await;
    let id = hold["id"].as_str().unwrap().to_owned();
    let expires_at: chrono::DateTime<Utc> = hold["expires_at"].as_str().unwrap().parse().unwrap();
    app.advance(expires_at - Duration::seconds(1)).await;
    assert_eq!(app.balances(c).await.1, "5");
    let advanced = app.advance(expires_at + Duration::seconds(1)).await;
    assert_eq!(advanced["customers_settled"], 1);
    assert_eq!(
        app.balances(c).await,
        ("10".into(), "0".into(), "10".into())
    );
    let (status, problem) = app.capture(&id, json!({"credits": "5"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "hold_expired");
    let release = app
        .ledger(c)
        .await
        .into_iter()
        .find(|e| e["kind"] == "release")
        .expect("a release");
    assert_eq!(release["held"], "-5");
    assert_eq!(
        release["effective_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap(),
        expires_at
    );
    app.assert_audit_clean().await;
}
on_both_engines!(holds_expire_by_the_test_clock);

async fn a_grant_expiring_under_a_live_hold_can_still_be_captured(app: TestApp) {
    let c = "grant-expiry";
    let now = Utc::now();
    app.grant(
        c,
        json!({"kind": "promotional", "credits": "10", "expires_at": now + Duration::minutes(5)}),
    )
    .await;
    let (_, first) = app.authorize(c, "image.standard", json!(1)).await;
    let (_, second) = app.authorize(c, "chat.request", json!(2)).await;
    app.advance(now + Duration::minutes(6)).await;
    // The unheld 3 expired; the 7 held remain until their holds resolve.
    assert_eq!(app.balances(c).await, ("7".into(), "7".into(), "0".into()));
    let id = first["id"].as_str().unwrap();
    let (status, captured) = app.capture(id, json!({"credits": "5"})).await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    // Capturing less releases the rest onto an expired grant: it expires at once.
    let id = second["id"].as_str().unwrap();
    let (status, _) = app.capture(id, json!({"credits": "0.5"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.balances(c).await, ("0".into(), "0".into(), "0".into()));
    let expired: Vec<String> = app
        .ledger(c)
        .await
        .iter()
        .filter(|e| e["kind"] == "expire")
        .map(|e| e["credits"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(expired, vec!["-1.5", "-3"]);
    app.assert_audit_clean().await;
}
on_both_engines!(a_grant_expiring_under_a_live_hold_can_still_be_captured);

async fn writes_are_idempotent(app: TestApp) {
    let c = "idem";
    let body = json!({"kind": "promotional", "credits": "10", "idempotency_key": "grant-1"});
    let (status, first) = app
        .post_admin(&format!("/v1/customers/{c}/grants"), body.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, again) = app
        .post_admin(&format!("/v1/customers/{c}/grants"), body)
        .await;
    assert_eq!((status, &again), (StatusCode::CREATED, &first));
    let (status, problem) = app
        .post_admin(
            &format!("/v1/customers/{c}/grants"),
            json!({"kind": "promotional", "credits": "11", "idempotency_key": "grant-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["type"], "idempotency_conflict");
    assert_eq!(app.balances(c).await.0, "10");

    let authorize = json!({"customer": c, "action": "chat.request", "quantity": 2, "idempotency_key": "auth-1"});
    let (_, hold) = app.post_app("/v1/authorizations", authorize.clone()).await;
    let (status, replay) = app.post_app("/v1/authorizations", authorize).await;
    assert_eq!((status, &replay), (StatusCode::CREATED, &hold));
    let (status, problem) = app
        .post_app("/v1/authorizations", json!({"customer": c, "action": "chat.request", "quantity": 3, "idempotency_key": "auth-1"}))
        .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict"))
    );

    let usage =
        json!({"customer": c, "action": "chat.request", "quantity": 1, "idempotency_key": "use-1"});
    let (_, first) = app.post_app("/v1/usage", usage.clone()).await;
    let (status, replay) = app.post_app("/v1/usage", usage).await;
    assert_eq!((status, &replay), (StatusCode::CREATED, &first));
    // One grant, one hold, one usage: 10 - 2 held - 1 used.
    assert_eq!(app.balances(c).await, ("9".into(), "2".into(), "7".into()));
    let kinds: Vec<String> = app
        .ledger(c)
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, vec!["consume", "hold", "grant"]);
    app.assert_audit_clean().await;
}
on_both_engines!(writes_are_idempotent);

async fn amounts_round_trip_exactly(app: TestApp) {
    let c = "exact";
    app.grant(
        c,
        json!({"kind": "adjustment", "credits": "123456789012.123456"}),
    )
    .await;
    assert_eq!(app.balances(c).await.0, "123456789012.123456");
    app.set_plan_without_its_credits(c, "pro").await;
    let (status, usage) = app.usage(c, "voice.speech", json!(3), "v").await;
    assert_eq!(status, StatusCode::CREATED, "{usage}");
    assert_eq!(usage["credits"], "1.5");
    assert_eq!(usage["available"], "123456789010.623456");
    // At 0.5 credits a unit, a quantity takes 5 places: the finest costs 0.000005 exactly; one
    // more place is refused, whatever its cost, and changes nothing.
    let (status, fine) = app.usage(c, "voice.speech", json!("0.00001"), "fine").await;
    assert_eq!(status, StatusCode::CREATED, "{fine}");
    assert_eq!(fine["credits"], "0.000005");
    let (status, refused) = app
        .usage(c, "voice.speech", json!("0.000002"), "too_fine")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["field"], "quantity");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("more than 5 decimal places"),
        "{refused}"
    );
    assert_eq!(app.balances(c).await.0, "123456789010.623451");
    app.grant(c, json!({"kind": "promotional", "credits": "0.000001"}))
        .await;
    assert_eq!(app.balances(c).await.0, "123456789010.623452");
    let ledger = app.ledger(c).await;
    assert_eq!(ledger.last().unwrap()["credits"], "123456789012.123456");
    app.assert_audit_clean().await;
}
on_both_engines!(amounts_round_trip_exactly);

async fn entitlements_and_unknown_customers(app: TestApp) {
    let (status, check) = app
        .post_app(
            "/v1/check",
            json!({"customer": "nobody", "action": "chat.request", "quantity": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        check,
        json!({"allowed": false, "credits": "1", "available": "0", "reason": "insufficient_credits"})
    );
    let (status, problem) = app.authorize("nobody", "chat.request", json!(1)).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::PAYMENT_REQUIRED, Some("insufficient_credits"))
    );
    let (status, problem) = app.get_app("/v1/customers/nobody").await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("customer_not_found"))
    );

    let c = "entitled";
    app.promo(c, "100").await;
    let (_, check) = app
        .post_app(
            "/v1/check",
            json!({"customer": c, "action": "video.clip", "quantity": 1}),
        )
        .await;
    assert_eq!(check["reason"], "feature_not_entitled");
    let (status, problem) = app.authorize(c, "video.clip", json!(1)).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::FORBIDDEN, Some("feature_not_entitled"))
    );
    app.set_plan_without_its_credits(c, "pro").await;
    let (_, check) = app
        .post_app(
            "/v1/check",
            json!({"customer": c, "action": "video.clip", "quantity": 1}),
        )
        .await;
    assert_eq!(
        check,
        json!({"allowed": true, "credits": "50", "available": "100", "reason": "ok"})
    );
    let (status, _) = app.authorize(c, "video.clip", json!(1)).await;
    assert_eq!(status, StatusCode::CREATED);
    // check changes nothing
    assert_eq!(
        app.balances(c).await,
        ("100".into(), "50".into(), "50".into())
    );
    app.assert_audit_clean().await;
}
on_both_engines!(entitlements_and_unknown_customers);

async fn responses_keep_their_shape(app: TestApp) {
    let c = "shape";
    let now = Utc::now();
    app.grant(c, json!({"kind": "pack", "pack": "topup_small"}))
        .await;
    app.grant(
        c,
        json!({"kind": "promotional", "credits": "25", "expires_at": now + Duration::days(7)}),
    )
    .await;
    let (_, hold) = app.authorize(c, "image.hd", json!(2)).await;
    let redact = insta::dynamic_redaction(|value, _| {
        if value.as_str().is_some() {
            "[redacted]".into()
        } else {
            value
        }
    });
    insta::assert_json_snapshot!("authorization", hold, {".id" => "[hold id]", ".expires_at" => "[time]"});
    let customer = app.customer(c).await;
    insta::assert_json_snapshot!("customer", customer, {
        ".grants[].id" => "[grant id]",
        ".grants[].expires_at" => redact,
        ".grants[].source" => "[source]",
        ".holds[].id" => "[hold id]",
        ".holds[].expires_at" => "[time]",
    });
    let (_, problem) = app.authorize(c, "image.hd", json!(100)).await;
    insta::assert_json_snapshot!("insufficient_credits", problem);
}
on_both_engines!(responses_keep_their_shape);

async fn a_callers_key_never_collides_with_a_hold_resolution(app: TestApp) {
    let c = "namespaces";
    app.promo(c, "10").await;
    let (_, hold) = app.authorize(c, "chat.request", json!(2)).await;
    let id = hold["id"].as_str().unwrap();
    // A caller may choose any key, even one spelled like the hold's own resolution key.
    let (status, _) = app
        .usage(c, "chat.request", json!(1), &format!("hold:{id}"))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, captured) = app.capture(id, json!({"quantity": 2})).await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    assert_eq!(app.balances(c).await, ("7".into(), "0".into(), "7".into()));
    app.assert_audit_clean().await;
}
on_both_engines!(a_callers_key_never_collides_with_a_hold_resolution);

/// One usage batch that mixes customers, refusals, idempotent replays (of an earlier request
/// and of an item of the same batch), conflicts and bad items: each is answered as if it had
/// run alone, in order, and a refused item changes nothing for its neighbours.
async fn a_usage_batch_answers_each_usage_as_if_it_ran_alone(app: TestApp) {
    app.promo("batch-a", "3").await;
    app.promo("batch-b", "1").await;
    let (status, early) = app
        .usage("batch-b", "chat.request", json!(1), "early")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{early}");
    let usage = |customer: &str, action: &str, quantity: i64, key: &str| json!({"customer": customer, "action": action, "quantity": quantity, "idempotency_key": key});
    let mut misspelled = usage("batch-a", "chat.request", 1, "k5");
    misspelled["quantiy"] = json!(1);
    let (status, body) = app
        .post_app(
            "/v1/usage/batch",
            json!({"usages": [
                usage("batch-a", "chat.request", 1, "k1"),
                usage("batch-b", "chat.request", 1, "k2"),
                usage("batch-b", "chat.request", 1, "early"),
                usage("batch-b", "chat.request", 2, "early"),
                usage("batch-a", "chat.request", 1, "k1"),
                usage("nobody", "chat.request", 1, "k3"),
                usage("batch-a", "no.such.action", 1, "k4"),
                misspelled,
                usage("batch-a", "image.standard", 1, "k6"),
                usage("batch-a", "chat.request", 2, "k7"),
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 402, 201, 409, 201, 402, 422, 422, 402, 201]);
    let types: Vec<&str> = results
        .iter()
        .map(|r| r["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        [
            "",
            "insufficient_credits",
            "",
            "idempotency_conflict",
            "",
            "insufficient_credits",
            "unknown_action",
            "invalid_request",
            "insufficient_credits",
            ""
        ]
    );
    assert_eq!(results[0]["available"], "2");
    // Replays answer the first result, whether it was earlier or in this batch.
    assert_eq!(results[2]["id"], early["id"]);
    assert_eq!(results[4], results[0]);
    assert_eq!(results[9]["available"], "0");
    assert_eq!(
        app.balances("batch-a").await,
        ("0".into(), "0".into(), "0".into())
    );
    assert_eq!(
        app.balances("batch-b").await,
        ("0".into(), "0".into(), "0".into())
    );
    // Each usage wrote its own operation: three for batch-a, none for the refused.
    let consumed = app
        .ledger("batch-a")
        .await
        .into_iter()
        .filter(|e| e["kind"] == "consume")
        .count();
    assert_eq!(consumed, 2);
    app.assert_audit_clean().await;

    // The batch itself must be well formed and bounded.
    let (status, problem) = app.post_app("/v1/usage/batch", json!({"usages": []})).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request"))
    );
    let too_many: Vec<Value> = (0..1001)
        .map(|i| usage("batch-a", "chat.request", 1, &format!("m{i}")))
        .collect();
    let (status, _) = app
        .post_app("/v1/usage/batch", json!({"usages": too_many}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // A batch's body may exceed the 64 KiB of other requests, up to 1 MiB, and the refusal
    // names the batch's own limit.
    let huge = usage("batch-a", "chat.request", 1, &"k".repeat(1_100_000));
    let (status, problem) = app
        .post_app("/v1/usage/batch", json!({"usages": [huge]}))
        .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("1048576 bytes"),
        "{problem}"
    );
    let (status, problem) = app.post_app("/v1/usage/batch", json!({"usage": []})).await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request"))
    );
    assert_eq!(
        app.balances("batch-a").await,
        ("0".into(), "0".into(), "0".into())
    );
}
on_both_engines!(a_usage_batch_answers_each_usage_as_if_it_ran_alone);
