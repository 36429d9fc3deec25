//! `POST /webhooks/stripe`: real Stripe payloads, refused deliveries, and the rows of the
//! README's event table not covered by the whole-life test.

mod common;

use common::{expect_outcome as expect, stripe_event as event};

use chrono::{Duration, TimeZone, Utc};
use common::{Engine, TestApp, WEBHOOK_SECRET, spawn_app_at, spawn_app_delivered_at};
use creditbook::domain::billing::{Outcome, OutcomeKind};
use creditbook::error::Error;
use creditbook::store::stripe::{StripeTx, StripeWork};
use futures::future::BoxFuture;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

fn fixture(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The prices of the real payloads, mapped into the example catalog.
fn map_real_prices(config: &mut creditbook::config::Config) {
    let pro = config.catalog.plans.get_mut("pro").unwrap();
    pro.stripe_prices
        .push("price_1RCV6tCMHTTliF5iuMgrQbyE".into());
    pro.stripe_prices
        .push("price_1SUyGiHOQNg4XnOMHSqLxNl9".into());
    let team = config.catalog.plans.get_mut("team").unwrap();
    team.stripe_prices
        .push("price_1SAFNkBe0ycHroRBidLX2jgZ".into());
}

/// A Unix time as the API renders it.
fn at(seconds: i64) -> String {
    Utc.timestamp_opt(seconds, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn real_payloads(engine: Engine) {
    // Delivered in the order Stripe sent them, each at its own time.
    let first = 1746742186;
    let app = spawn_app_at(
        engine,
        Utc.timestamp_opt(first, 0).unwrap(),
        map_real_prices,
    )
    .await;
    let deliver = |file: &'static str, outcome: &'static str| {
        let app = &app;
        async move {
            let body = fixture(&format!("stripe/real/{file}"));
            let created = serde_json::from_str::<Value>(&body).unwrap()["created"]
                .as_i64()
                .unwrap();
            if app.now().timestamp() < created + 2 {
                app.advance(Utc.timestamp_opt(created + 2, 0).unwrap())
                    .await;
            }
            expect(app, &body, outcome).await
        }
    };
    // A subscription checkout only links the customer; credits come with the invoice.
    let value = deliver(
        "checkout_session_completed_subscription_2025-03-31.basil.json",
        "applied",
    )
    .await;
    assert!(
        value["detail"].as_str().unwrap().contains("linked"),
        "{value}"
    );

    // Plan credits from a first invoice (basil: price under pricing.price_details, subscription
    // under parent), for the Stripe customer itself, none being linked.
    deliver(
        "invoice_payment_succeeded_2025-03-31.basil_signed.json",
        "applied",
    )
    .await;
    let c = app.customer("cus_SGqVI5XZS5sDjA").await;
    assert_eq!(c["balance"], "2000", "{c}");
    assert_eq!(c["plan"], "pro");
    let grant = &c["grants"][0];
    assert_eq!(grant["price"], "49.99");
    assert_eq!(grant["currency"], "cad");
    assert_eq!(grant["expires_at"], at(1749435787), "the line's period end");

    // A refund of a payment creditbook never saw: recorded, waiting for its purchase.
    deliver("charge_refund_updated_2025-08-27.basil.json", "pending").await;

    // A renewal's subscription state: plan and the item-level period end.
    deliver(
        "customer_subscription_updated_renewal_2025-08-27.basil.json",
        "applied",
    )
    .await;
    let c = app.customer("cus_T66xzarl5v73XN").await;
    assert_eq!(c["plan"], "team");
    assert_eq!(c["renews_at"], at(1759005442), "the item's period end");

    // A live-mode payment on this test-mode server: recorded, nothing granted.
    deliver(
        "invoice_payment_succeeded_live_brl_2025-08-27.basil.json",
        "other_mode",
    )
    .await;
    let (status, _) = app.get_app("/v1/customers/cus_TS6KX04w045BN9").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no credits from a live event"
    );

    // Once more: duplicates, no effect.
    deliver(
        "invoice_payment_succeeded_live_brl_2025-08-27.basil.json",
        "duplicate",
    )
    .await;
    deliver("charge_refund_updated_2025-08-27.basil.json", "duplicate").await;
    app.assert_audit_clean().await;

    // On a live-mode server the same payment grants its plan's credits.
    let body = fixture("stripe/real/invoice_payment_succeeded_live_brl_2025-08-27.basil.json");
    let created = serde_json::from_str::<Value>(&body).unwrap()["created"]
        .as_i64()
        .unwrap();
    let live = spawn_app_at(engine, Utc.timestamp_opt(created + 2, 0).unwrap(), |c| {
        map_real_prices(c);
        c.stripe.livemode = true;
    })
    .await;
    expect(&live, &body, "applied").await;
    let c = live.customer("cus_TS6KX04w045BN9").await;
    assert_eq!(c["balance"], "2000", "{c}");
    assert_eq!(c["grants"][0]["price"], "29.9");
    assert_eq!(c["grants"][0]["currency"], "brl");
    live.assert_audit_clean().await;
}

for_each_engine!(real_payloads);

/// The golden delivery, with its real signature and secret, at the time it was sent.
async fn golden_delivery(engine: Engine) {
    let secret = "whsec_750e601a79a762e75cf1ec30b41b2e6f88daafcc644b3a9f29e735b4453ebb9a";
    let header = "t=1746757390,v1=bc889a3926c751e3ea753efc027f6adbb11d224b57ebae9e86c0da62461e9f35,v0=537d1b7f8ebf0452111cafdcd6ee4cf80eb1b1ba62bc2ded7569289edfa0a2b0";
    let body = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden/payload.raw"),
    )
    .unwrap();
    let sent = Utc.timestamp_opt(1746757390 + 5, 0).unwrap();
    let app = spawn_app_delivered_at(engine, sent, Some(sent), |config| {
        config.stripe.webhook_secrets = vec!["whsec_old_rotated_out".into(), secret.into()];
        map_real_prices(config);
    })
    .await;
    let (status, value) = app.webhook_with(body, Some(header)).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["outcome"], "applied", "{value}");
}

for_each_engine!(golden_delivery);

/// A server with no webhook secret refuses deliveries with 503, so that Stripe keeps them and
/// retries, and says what to configure rather than to retry; nothing is recorded.
async fn unconfigured_webhooks(engine: Engine) {
    let app = spawn_app_at(engine, Utc::now(), |config| {
        config.stripe.webhook_secrets = Vec::new();
    })
    .await;
    let body = event(
        "evt_unconfigured",
        "customer.created",
        Utc::now().timestamp(),
        json!({"id": "cus_x", "object": "customer"}),
    );
    let response = app
        .client
        .post(format!("{}/webhooks/stripe", app.address))
        .header("stripe-signature", "t=1,v1=00")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().get("retry-after").is_none());
    let value: Value = response.json().await.unwrap();
    assert_eq!(value["type"], "webhook_not_configured", "{value}");
    let detail = value["detail"].as_str().unwrap();
    assert!(
        detail.contains("webhook_secrets") && detail.contains("CREDITBOOK_STRIPE_WEBHOOK_SECRET"),
        "{detail}"
    );
    assert!(!detail.contains("temporarily"), "{detail}");
    assert!(app.store.stripe_events(10).await.unwrap().is_empty());
}

for_each_engine!(unconfigured_webhooks);

/// A test clock moves business time, not deliveries: after the clock is advanced 60 days, a
/// genuine delivery (signed in real time) is accepted and applied at business time, and one
/// signed at the test clock's time is refused as out of tolerance.
async fn signatures_are_checked_in_real_time(app: TestApp) {
    let later = app.now() + Duration::days(60);
    app.advance(later).await;
    let body = event(
        "evt_after_advance",
        "checkout.session.completed",
        later.timestamp(),
        json!({"id": "cs_adv", "object": "checkout.session", "mode": "payment", "payment_status": "paid",
               "client_reference_id": "acct_adv", "amount_total": 1000, "currency": "usd",
               "payment_intent": "pi_adv", "metadata": {"creditbook_pack": "topup_small"}}),
    );
    let at_test_time =
        creditbook::stripe::signature::sign(body.as_bytes(), WEBHOOK_SECRET, later.timestamp());
    let (status, value) = app
        .webhook_with(body.clone().into_bytes(), Some(&at_test_time))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(value["type"], "invalid_signature");
    let (status, value) = app.webhook(&body).await;
    assert_eq!(
        (status, &value["outcome"]),
        (StatusCode::OK, &json!("applied")),
        "{value}"
    );
    // Applied at business time: the pack's grant was made on the advanced clock.
    let grants = app.customer("acct_adv").await["grants"].clone();
    let expires = grants[0]["expires_at"].as_str().expect("a pack expires");
    let expires: chrono::DateTime<Utc> = expires.parse().unwrap();
    let after = expires - (later + Duration::days(365));
    assert!(after.num_seconds().abs() < 1, "{grants}");
}

on_both_engines!(signatures_are_checked_in_real_time);

/// Headers made by Stripe's own library are accepted by the endpoint.
async fn stripe_library_signatures(app: TestApp) {
    let python = std::env::var("CREDITBOOK_TEST_STRIPE_PYTHON")
        .expect("CREDITBOOK_TEST_STRIPE_PYTHON is set by scripts/test");
    let body = fixture("stripe/synthetic/unknown_type.json");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &body).unwrap();
    let output = std::process::Command::new(python)
        .arg("-c")
        .arg("import sys, stripe\npayload = open(sys.argv[1], encoding='utf-8').read()\nprint(stripe.WebhookSignature.generate_signature_header(payload, sys.argv[2], int(sys.argv[3])))")
        .arg(file.path())
        .arg(WEBHOOK_SECRET)
        .arg(Utc::now().timestamp().to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let header = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let (status, value) = app.webhook_with(body.into_bytes(), Some(&header)).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["outcome"], "unknown_type");
}

on_both_engines!(stripe_library_signatures);

/// Forged, replayed, truncated and oversized deliveries are refused and change nothing.
async fn refused_deliveries(app: TestApp) {
    let body = event(
        "evt_pack",
        "checkout.session.completed",
        app.now().timestamp(),
        json!({"id": "cs_1", "object": "checkout.session", "mode": "payment", "payment_status": "paid",
               "client_reference_id": "acct_1", "amount_total": 1000, "currency": "usd",
               "payment_intent": "pi_1", "metadata": {"creditbook_pack": "topup_small"}}),
    );
    // Deliveries are signed in real time.
    let now = Utc::now().timestamp();
    let sign = |body: &str, secret: &str, at: i64| {
        creditbook::stripe::signature::sign(body.as_bytes(), secret, at)
    };
    let good = sign(&body, WEBHOOK_SECRET, now);
    let tampered = body.replace("topup_small", "topup_large");
    let truncated = body[..body.len() - 10].to_owned();
    type Case<'a> = (&'a str, Vec<u8>, Option<String>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "tampered body",
            tampered.into_bytes(),
            Some(good.clone()),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            "wrong secret",
            body.clone().into_bytes(),
            Some(sign(&body, "whsec_wrong", now)),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            "old timestamp",
            body.clone().into_bytes(),
            Some(sign(&body, WEBHOOK_SECRET, now - 301)),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            "future timestamp",
            body.clone().into_bytes(),
            // Beyond the 300 s tolerance by more than a loaded machine's delay before the
            // server reads its clock (real time moves towards a future timestamp).
            Some(sign(&body, WEBHOOK_SECRET, now + 360)),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            "missing header",
            body.clone().into_bytes(),
            None,
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            "garbled header",
            body.clone().into_bytes(),
            Some("t=abc,v1=zz".into()),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            "v0 only",
            body.clone().into_bytes(),
            Some(good.replace("v1=", "v0=")),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            "truncated body",
            truncated.clone().into_bytes(),
            Some(good.clone()),
            StatusCode::BAD_REQUEST,
            "invalid_signature",
        ),
        (
            "signed but not JSON",
            truncated.clone().into_bytes(),
            Some(sign(&truncated, WEBHOOK_SECRET, now)),
            StatusCode::BAD_REQUEST,
            "malformed_event",
        ),
        (
            "oversized body",
            vec![b' '; 600 * 1024],
            Some(good.clone()),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (name, body, header, status, kind) in cases {
        let (got, value) = app.webhook_with(body, header.as_deref()).await;
        assert_eq!(got, status, "{name}: {value}");
        assert_eq!(value["type"], kind, "{name}: {value}");
    }
    let (status, _) = app.get_app("/v1/customers/acct_1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was granted");
    assert!(
        app.store.stripe_events(10).await.unwrap().is_empty(),
        "nothing was recorded"
    );
    // The good delivery still goes through, once.
    let (status, value) = app
        .webhook_with(body.clone().into_bytes(), Some(&good))
        .await;
    assert_eq!(
        (status, value["outcome"].as_str()),
        (StatusCode::OK, Some("applied"))
    );
    expect(&app, &body, "duplicate").await;
    assert_eq!(app.customer("acct_1").await["balance"], "1000");
}

on_both_engines!(refused_deliveries);

/// Unknown types and unmapped prices are recorded and answered 200, changing nothing.
async fn recorded_without_effect(app: TestApp) {
    expect(
        &app,
        &fixture("stripe/synthetic/unknown_type.json"),
        "unknown_type",
    )
    .await;
    // Synthetic invoices (every field of the current shape; and one in the pre-basil shape)
    // whose prices are not in the catalog.
    let now = app.now().timestamp();
    for file in [
        "invoice_paid.json",
        "invoice_paid_pre_basil_no_amount_overpaid.json",
    ] {
        let mut value: Value =
            serde_json::from_str(&fixture(&format!("stripe/synthetic/{file}"))).unwrap();
        value["id"] = json!(format!("evt_{file}"));
        value["created"] = json!(now);
        expect(&app, &value.to_string(), "unmapped_price").await;
    }
    let (status, _) = app.get_app("/v1/customers/cus_QXg1o8vcGmoR32").await;
    assert!(
        status == StatusCode::NOT_FOUND
            || app.customer("cus_QXg1o8vcGmoR32").await["balance"] == "0"
    );
    let events = app.store.stripe_events(10).await.unwrap();
    assert_eq!(events.len(), 3);
}

on_both_engines!(recorded_without_effect);

/// A live-mode payment on a test-mode server (and a test one on a live server) is recorded as
/// `other_mode` and grants nothing; an event that does not say its mode is not an event.
async fn the_other_mode_applies_nothing(app: TestApp) {
    let now = app.now().timestamp();
    let mut live: Value = serde_json::from_str(&event(
        "evt_live_1",
        "checkout.session.completed",
        now,
        pack_checkout("cs_live", "acct_live", "pi_live", true),
    ))
    .unwrap();
    live["livemode"] = json!(true);
    expect(&app, &live.to_string(), "other_mode").await;
    let (status, _) = app.get_app("/v1/customers/acct_live").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "no credits from a live event"
    );
    let recorded = app.store.stripe_events(10).await.unwrap();
    assert_eq!(recorded.len(), 1, "the event is kept with its outcome");
    // Delivered again: still recorded once, still nothing.
    expect(&app, &live.to_string(), "duplicate").await;
    // Without `livemode`: refused as not an event, nothing recorded.
    live["id"] = json!("evt_live_2");
    live.as_object_mut().unwrap().remove("livemode");
    let (status, problem) = app.webhook(&live.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("malformed_event"),
        "{problem}"
    );
    assert_eq!(app.store.stripe_events(10).await.unwrap().len(), 1);
    // The same purchase in test mode applies.
    expect(
        &app,
        &event(
            "evt_test_1",
            "checkout.session.completed",
            now,
            pack_checkout("cs_live", "acct_live", "pi_live", true),
        ),
        "applied",
    )
    .await;
    assert_eq!(app.customer("acct_live").await["balance"], "1000");
    app.assert_audit_clean().await;
}

on_both_engines!(the_other_mode_applies_nothing);

/// A live server refuses the test-mode event.
async fn a_live_server_applies_no_test_event(engine: Engine) {
    let app = spawn_app_at(engine, Utc::now(), |c| c.stripe.livemode = true).await;
    let now = app.now().timestamp();
    expect(
        &app,
        &event(
            "evt_t",
            "checkout.session.completed",
            now,
            pack_checkout("cs_t", "acct_t", "pi_t", true),
        ),
        "other_mode",
    )
    .await;
    let (status, _) = app.get_app("/v1/customers/acct_t").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

for_each_engine!(a_live_server_applies_no_test_event);

/// Every synthetic payload parses, in each of its API versions' shapes.
async fn synthetic_payloads_parse(app: TestApp) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stripe/synthetic");
    let now = app.now().timestamp();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let mut value: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        value["id"] = json!(format!(
            "evt_{}",
            path.file_stem().unwrap().to_string_lossy()
        ));
        value["created"] = json!(now);
        let (status, outcome) = app.webhook(&value.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{}: {outcome}", path.display());
    }
    app.assert_audit_clean().await;
}

on_both_engines!(synthetic_payloads_parse);

fn pack_checkout(id: &str, account: &str, payment_intent: &str, paid: bool) -> Value {
    json!({"id": id, "object": "checkout.session", "mode": "payment",
           "payment_status": if paid { "paid" } else { "unpaid" },
           "customer": format!("cus_{account}"), "client_reference_id": account,
           "amount_total": 1000, "currency": "usd", "payment_intent": payment_intent,
           "metadata": {"creditbook_pack": "topup_small"}})
}

/// Top-ups: paid at once, or later by async payment; refunds before and after the purchase,
/// partial and full; a lost dispute takes back, a won one only unfreezes.
async fn top_ups_refunds_and_disputes(app: TestApp) {
    let now = app.now().timestamp();
    // Delayed payment: nothing until async_payment_succeeded.
    expect(
        &app,
        &event(
            "e1",
            "checkout.session.completed",
            now,
            pack_checkout("cs_a", "acct_a", "pi_a", false),
        ),
        "ignored",
    )
    .await;
    let (status, _) = app.get_app("/v1/customers/acct_a").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no credits yet");
    expect(
        &app,
        &event(
            "e2",
            "checkout.session.async_payment_succeeded",
            now,
            pack_checkout("cs_a", "acct_a", "pi_a", true),
        ),
        "applied",
    )
    .await;
    assert_eq!(app.customer("acct_a").await["balance"], "1000");

    // A partial refund (charge.refunded carries the running total), then the rest.
    let charge = |refunded: i64| json!({"id": "ch_a", "object": "charge", "payment_intent": "pi_a", "amount_refunded": refunded, "currency": "usd"});
    expect(
        &app,
        &event("e3", "charge.refunded", now, charge(250)),
        "applied",
    )
    .await;
    assert_eq!(app.customer("acct_a").await["balance"], "750");
    // The same refund as refund.created: counted once, not twice.
    expect(&app, &event("e4", "refund.created", now, json!({"id": "re_a1", "object": "refund", "amount": 250, "currency": "usd", "status": "succeeded", "charge": "ch_a", "payment_intent": "pi_a"})), "applied").await;
    assert_eq!(app.customer("acct_a").await["balance"], "750");
    expect(
        &app,
        &event("e5", "charge.refunded", now, charge(1000)),
        "applied",
    )
    .await;
    assert_eq!(app.customer("acct_a").await["balance"], "0");

    // A refund before the purchase it refunds.
    expect(&app, &event("e6", "refund.created", now, json!({"id": "re_b", "object": "refund", "amount": 500, "currency": "usd", "status": "succeeded", "payment_intent": "pi_b"})), "pending").await;
    expect(
        &app,
        &event(
            "e7",
            "checkout.session.completed",
            now,
            pack_checkout("cs_b", "acct_b", "pi_b", true),
        ),
        "applied",
    )
    .await;
    assert_eq!(app.customer("acct_b").await["balance"], "500");

    // A dispute freezes what its payment bought, nothing else; won thaws it; lost takes the
    // disputed money's credits back.
    expect(
        &app,
        &event(
            "e8",
            "checkout.session.completed",
            now,
            pack_checkout("cs_c", "acct_c", "pi_c", true),
        ),
        "applied",
    )
    .await;
    app.promo("acct_c", "50").await;
    let dispute = |id: &str, status: &str| json!({"id": id, "object": "dispute", "amount": 300, "currency": "usd", "status": status, "payment_intent": "pi_c", "charge": "ch_c"});
    let value = expect(
        &app,
        &event(
            "e9",
            "charge.dispute.created",
            now,
            dispute("dp_1", "needs_response"),
        ),
        "applied",
    )
    .await;
    assert!(
        value["detail"].as_str().unwrap().contains("frozen"),
        "{value}"
    );
    let c = app.customer("acct_c").await;
    assert_eq!(
        (
            &c["frozen"],
            &c["frozen_credits"],
            &c["balance"],
            &c["available"]
        ),
        (&json!(true), &json!("1000"), &json!("1050"), &json!("50")),
        "{c}"
    );
    let pack = c["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["kind"] == "pack")
        .unwrap();
    assert_eq!(pack["frozen"], true);
    // Its own credits still spend; the frozen ones do not.
    let (status, used) = app.usage("acct_c", "chat.request", json!(40), "c-1").await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    let (status, refused) = app.usage("acct_c", "chat.request", json!(11), "c-2").await;
    assert_eq!(
        (
            status,
            refused["type"].as_str(),
            refused["available"].as_str()
        ),
        (
            StatusCode::PAYMENT_REQUIRED,
            Some("insufficient_credits"),
            Some("10")
        ),
        "{refused}"
    );
    expect(
        &app,
        &event(
            "e10",
            "charge.dispute.closed",
            now + 1,
            dispute("dp_1", "won"),
        ),
        "applied",
    )
    .await;
    let c = app.customer("acct_c").await;
    assert_eq!(
        (&c["frozen"], &c["balance"], &c["available"]),
        (&json!(false), &json!("1010"), &json!("1010")),
        "{c}"
    );
    // An old update after the close changes nothing.
    expect(
        &app,
        &event(
            "e11",
            "charge.dispute.updated",
            now,
            dispute("dp_1", "under_review"),
        ),
        "applied",
    )
    .await;
    assert_eq!(app.customer("acct_c").await["frozen"], false);
    expect(
        &app,
        &event(
            "e12",
            "charge.dispute.closed",
            now + 2,
            dispute("dp_2", "lost"),
        ),
        "applied",
    )
    .await;
    let c = app.customer("acct_c").await;
    assert_eq!(
        (c["balance"].as_str(), c["frozen"].as_bool()),
        (Some("710"), Some(false)),
        "{c}"
    );
    app.assert_audit_clean().await;
}

/// A stranger pays a public top-up link naming someone else's account, then disputes the charge:
/// only what the stranger bought is frozen, and taken back when the dispute is lost; the
/// account's own credits keep working throughout.
async fn a_stranger_s_dispute_freezes_only_what_it_paid_for(app: TestApp) {
    let now = app.now().timestamp();
    // The victim's own credits: a pack it bought itself.
    expect(
        &app,
        &event(
            "v1",
            "checkout.session.completed",
            now,
            pack_checkout("cs_own", "victim", "pi_own", true),
        ),
        "applied",
    )
    .await;
    // The stranger's payment, naming the victim (its own Stripe customer).
    let mut gift = pack_checkout("cs_gift", "victim", "pi_gift", true);
    gift["customer"] = json!("cus_stranger");
    expect(
        &app,
        &event("v2", "checkout.session.completed", now, gift),
        "applied",
    )
    .await;
    assert_eq!(app.customer("victim").await["balance"], "2000");
    let dispute = |status: &str| json!({"id": "dp_gift", "object": "dispute", "amount": 1000, "currency": "usd", "status": status, "payment_intent": "pi_gift", "charge": "ch_gift"});
    expect(
        &app,
        &event(
            "v3",
            "charge.dispute.created",
            now,
            dispute("needs_response"),
        ),
        "applied",
    )
    .await;
    let c = app.customer("victim").await;
    assert_eq!(
        (&c["available"], &c["frozen_credits"]),
        (&json!("1000"), &json!("1000")),
        "{c}"
    );
    // The victim spends its own credits, and can reserve them, while the dispute is open.
    let (status, used) = app.usage("victim", "chat.request", json!(600), "v-1").await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    let (status, hold) = app.authorize("victim", "chat.request", json!(400)).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (status, _) = app.authorize("victim", "chat.request", json!(1)).await;
    assert_eq!(
        status,
        StatusCode::PAYMENT_REQUIRED,
        "the frozen credits are not spent"
    );
    let (status, _) = app
        .capture(hold["id"].as_str().unwrap(), json!({"quantity": 400}))
        .await;
    assert_eq!(status, StatusCode::OK);
    // Lost: the stranger's credits go back; nothing of the victim's is touched.
    expect(
        &app,
        &event("v4", "charge.dispute.closed", now + 1, dispute("lost")),
        "applied",
    )
    .await;
    let c = app.customer("victim").await;
    assert_eq!(
        (&c["balance"], &c["available"], &c["frozen"]),
        (&json!("0"), &json!("0"), &json!(false)),
        "{c}"
    );
    app.assert_audit_clean().await;
}

on_both_engines!(a_stranger_s_dispute_freezes_only_what_it_paid_for);

on_both_engines!(top_ups_refunds_and_disputes);

fn subscription(id: &str, status: &str, price: &str, quantity: i64) -> Value {
    json!({"id": id, "object": "subscription", "customer": "cus_s", "status": status,
           "metadata": {"creditbook_customer": "acct_s"},
           "items": {"data": [{"quantity": quantity, "price": {"id": price}, "current_period_end": 1_999_999_999}]}})
}

/// Subscription state: newer wins, stale updates are ignored, cancellation is final; past due
/// keeps the plan for the grace, then the gate refuses its features.
async fn subscription_state(app: TestApp) {
    let now = app.now().timestamp();
    expect(
        &app,
        &event(
            "s1",
            "customer.subscription.created",
            now - 100,
            subscription("sub_s", "active", "price_pro_monthly", 1),
        ),
        "applied",
    )
    .await;
    assert_eq!(app.customer("acct_s").await["plan"], "pro");
    expect(
        &app,
        &event(
            "s2",
            "customer.subscription.updated",
            now - 50,
            subscription("sub_s", "active", "price_team_monthly", 2),
        ),
        "applied",
    )
    .await;
    // An older update arriving late does not win.
    expect(
        &app,
        &event(
            "s3",
            "customer.subscription.updated",
            now - 80,
            subscription("sub_s", "active", "price_pro_monthly", 1),
        ),
        "ignored",
    )
    .await;
    assert_eq!(app.customer("acct_s").await["plan"], "team");

    // Dunning: a failed payment makes it past due; video (plan-only) works through the grace.
    let failed = json!({"id": "in_f", "object": "invoice", "customer": "cus_s", "status": "open",
                        "parent": {"subscription_details": {"subscription": "sub_s", "metadata": {"creditbook_customer": "acct_s"}}}});
    expect(
        &app,
        &event("s4", "invoice.payment_failed", now - 10, failed),
        "applied",
    )
    .await;
    app.promo("acct_s", "500").await;
    let (status, _) = app.authorize("acct_s", "video.clip", json!(1)).await;
    assert_eq!(status, StatusCode::CREATED, "within the grace");
    assert_eq!(
        plans_shown_on_pages(&app, "acct_s").await,
        (Some("team".to_owned()), "Plan team".to_owned())
    );
    app.advance(app.now() + Duration::days(3) + Duration::seconds(1))
        .await;
    let (status, refused) = app.authorize("acct_s", "video.clip", json!(1)).await;
    assert_eq!(
        (status, refused["type"].as_str()),
        (StatusCode::FORBIDDEN, Some("feature_not_entitled")),
        "{refused}"
    );
    let (status, _) = app.authorize("acct_s", "chat.request", json!(1)).await;
    assert_eq!(status, StatusCode::CREATED, "open features stay open");
    // Past its grace the plan is in force nowhere: not in the API, the portal or the console.
    assert_eq!(app.customer("acct_s").await["plan"], Value::Null);
    assert_eq!(
        plans_shown_on_pages(&app, "acct_s").await,
        (None, "No plan".to_owned())
    );
    // Paid again: current again.
    let later = app.now().timestamp();
    expect(
        &app,
        &event(
            "s5",
            "customer.subscription.updated",
            later,
            subscription("sub_s", "active", "price_team_monthly", 2),
        ),
        "applied",
    )
    .await;
    let (status, _) = app.authorize("acct_s", "video.clip", json!(1)).await;
    assert_eq!(status, StatusCode::CREATED);

    // Canceled is final, even against a newer-looking update.
    expect(
        &app,
        &event(
            "s6",
            "customer.subscription.deleted",
            later + 10,
            subscription("sub_s", "canceled", "price_team_monthly", 2),
        ),
        "applied",
    )
    .await;
    expect(
        &app,
        &event(
            "s7",
            "customer.subscription.updated",
            later + 20,
            subscription("sub_s", "active", "price_team_monthly", 2),
        ),
        "ignored",
    )
    .await;
    let c = app.customer("acct_s").await;
    assert_eq!(
        (c["plan"].clone(), c["renews_at"].clone()),
        (Value::Null, Value::Null),
        "{c}"
    );
}

on_both_engines!(subscription_state);

/// The plan a customer's portal shows (its `#plan`, if any) and the console's plan line.
async fn plans_shown_on_pages(app: &TestApp, customer: &str) -> (Option<String>, String) {
    let (status, link) = app
        .post_app(&format!("/v1/customers/{customer}/portal-links"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let url = link["url"].as_str().unwrap();
    let path = &url[url.find("/portal?token=").expect("a portal URL")..];
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: String, cookie: Option<String>| {
        let mut request = client.get(format!("{}{path}", app.address));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let portal = get(path.to_owned(), None).await;
    let open = "id=\"plan\">";
    let plan = portal.find(open).map(|at| {
        let at = at + open.len();
        portal[at..at + portal[at..].find('<').unwrap()].to_owned()
    });
    let signed_in = client
        .post(format!("{}/login", app.address))
        .form(&[("key", app.admin_key.as_str())])
        .send()
        .await
        .unwrap();
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let console = get(format!("/admin/customers/{customer}"), Some(cookie)).await;
    let open = "<p class=\"muted\">";
    let at = console.find(open).expect("the console's plan line") + open.len();
    let line = console[at..at + console[at..].find('<').unwrap()].to_owned();
    (plan, line.trim().to_owned())
}

/// A link learnt later moves what arrived before it: an invoice for a Stripe customer without
/// metadata, then the checkout that names the account.
async fn late_link_moves_credits(app: TestApp) {
    let now = app.now().timestamp();
    let invoice = json!({"id": "in_l", "object": "invoice", "customer": "cus_late", "currency": "usd",
        "billing_reason": "subscription_create", "payment_intent": "pi_l",
        "lines": {"data": [{"id": "il_l", "amount": 2000, "currency": "usd", "quantity": 1,
            "period": {"start": now, "end": now + 30 * 86400},
            "price": {"id": "price_pro_monthly", "unit_amount": 2000}, "proration": false}]}});
    expect(&app, &event("l1", "invoice.paid", now, invoice), "applied").await;
    assert_eq!(app.customer("cus_late").await["balance"], "2000");
    let checkout = json!({"id": "cs_l", "object": "checkout.session", "mode": "subscription",
        "payment_status": "paid", "customer": "cus_late", "client_reference_id": "acct_late"});
    expect(
        &app,
        &event("l2", "checkout.session.completed", now, checkout),
        "applied",
    )
    .await;
    let moved = app.customer("acct_late").await;
    assert_eq!(moved["balance"], "2000", "{moved}");
    assert_eq!(moved["grants"][0]["price"], "20");
    assert_eq!(app.customer("cus_late").await["balance"], "0");
    // A refund of the invoice's payment now reaches the moved credits.
    expect(&app, &event("l3", "refund.created", now, json!({"id": "re_l", "object": "refund", "amount": 500, "currency": "usd", "status": "succeeded", "payment_intent": "pi_l"})), "applied").await;
    assert_eq!(app.customer("acct_late").await["balance"], "1500");
    app.assert_audit_clean().await;
}

on_both_engines!(late_link_moves_credits);

/// An account a Stripe object names that the API would refuse (empty, too long, a control
/// character) is not an account: the object is applied as if it named none, so its credits go
/// to the Stripe customer itself, and no account of that name comes to be.
async fn stripe_names_no_invalid_account(app: TestApp) {
    let now = app.now().timestamp();
    let customer =
        json!({"id": "cus_empty", "object": "customer", "metadata": {"creditbook_customer": ""}});
    expect(
        &app,
        &event("n1", "customer.updated", now, customer),
        "ignored",
    )
    .await;
    let mut checkout = pack_checkout("cs_bad", "bad", "pi_bad", true);
    checkout["customer"] = json!("cus_bell");
    checkout["client_reference_id"] = json!("acct\u{7}bell");
    checkout["metadata"]["creditbook_customer"] = json!("x".repeat(256));
    expect(
        &app,
        &event("n2", "checkout.session.completed", now, checkout),
        "applied",
    )
    .await;
    assert_eq!(app.customer("cus_bell").await["balance"], "1000");
    let invoice = json!({"id": "in_e", "object": "invoice", "customer": "cus_empty", "currency": "usd",
        "billing_reason": "subscription_create", "payment_intent": "pi_e",
        "metadata": {"creditbook_customer": ""},
        "lines": {"data": [{"id": "il_e", "amount": 2000, "currency": "usd", "quantity": 1,
            "period": {"start": now, "end": now + 30 * 86400},
            "price": {"id": "price_pro_monthly", "unit_amount": 2000}, "proration": false}]}});
    expect(&app, &event("n3", "invoice.paid", now, invoice), "applied").await;
    assert_eq!(app.customer("cus_empty").await["balance"], "2000");
    let (page, more) = app
        .store
        .customers_page(None, None, 10, app.now())
        .await
        .unwrap();
    let ids: Vec<&str> = page.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!((ids, more), (vec!["cus_bell", "cus_empty"], false));
    app.assert_audit_clean().await;
}

on_both_engines!(stripe_names_no_invalid_account);

/// A paid checkout of the small pack by a Stripe customer.
fn checkout_by(stripe_customer: &str, n: u32) -> String {
    event(
        &format!("evt_{stripe_customer}_{n}"),
        "checkout.session.completed",
        Utc::now().timestamp(),
        json!({"id": format!("cs_{stripe_customer}_{n}"), "object": "checkout.session",
               "mode": "payment", "payment_status": "paid", "customer": stripe_customer,
               "amount_total": 1000, "currency": "usd",
               "payment_intent": format!("pi_{stripe_customer}_{n}"),
               "metadata": {"creditbook_pack": "topup_small"}}),
    )
}

/// A Stripe event's work that signals once it is applying, then waits to be released: taking
/// the advisory lock of `lock` first when given, on the batch worker of `shard`.
struct Hold {
    lock: Option<&'static str>,
    shard: &'static str,
    held: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    released: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

/// A received event of a type creditbook does not know, with nothing in it.
fn test_event(id: String, now: chrono::DateTime<Utc>) -> creditbook::store::stripe::EventRecord {
    creditbook::store::stripe::EventRecord {
        id,
        event_type: "test.event".into(),
        api_version: None,
        created: 0,
        origin: creditbook::stripe::apply::Origin::Webhook,
        payload: "{}".into(),
        received_at: now,
    }
}

/// Whether `future` is still pending after `millis`.
async fn still_waiting<F: std::future::Future + Unpin>(future: &mut F, millis: u64) -> bool {
    tokio::time::timeout(std::time::Duration::from_millis(millis), future)
        .await
        .is_err()
}

impl Hold {
    fn new(
        lock: Option<&'static str>,
        shard: &'static str,
        held: tokio::sync::oneshot::Sender<()>,
        released: tokio::sync::oneshot::Receiver<()>,
    ) -> Arc<Hold> {
        Arc::new(Hold {
            lock,
            shard,
            held: Mutex::new(Some(held)),
            released: Mutex::new(Some(released)),
        })
    }

    /// Applies a hold through `app`'s store and waits until it holds: its task, and what
    /// releases it.
    async fn holding(
        app: &TestApp,
        lock: Option<&'static str>,
        shard: &'static str,
    ) -> (
        tokio::task::JoinHandle<Result<(), Error>>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let (held, is_held) = tokio::sync::oneshot::channel::<()>();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let store = app.store.clone();
        let hold = Hold::new(lock, shard, held, released);
        let task = tokio::spawn(async move { store.stripe_transaction(hold).await.map(|_| ()) });
        is_held.await.unwrap();
        (task, release)
    }
}

impl StripeWork for Hold {
    fn apply(self: Arc<Self>, tx: StripeTx) -> BoxFuture<'static, Result<Outcome, Error>> {
        Box::pin(async move {
            if let Some(lock) = self.lock {
                tx.lock(&[lock.to_owned()]).await?;
            }
            let held = self.held.lock().unwrap().take();
            let _ = held.expect("applied once").send(());
            let released = self.released.lock().unwrap().take();
            let _ = released.expect("applied once").await;
            tx.commit().await?;
            Ok(Outcome::new(OutcomeKind::Applied, "held"))
        })
    }

    fn shard(&self) -> &str {
        self.shard
    }
}

/// No global lock: while an event's transaction holds one Stripe customer, another customer's
/// event applies, and the held customer's next event waits for it (PostgreSQL; SQLite has one
/// writer, so its events are group-committed instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stripe_customers_apply_in_parallel() {
    let app = common::spawn_app(Engine::Postgres).await;
    let (holder, release) = Hold::holding(&app, Some("cus_held"), "cus_held").await;
    let other = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        app.webhook(&checkout_by("cus_free", 1)),
    )
    .await
    .expect("another customer's event does not wait");
    assert_eq!(other.1["outcome"], "applied", "{}", other.1);
    let body = checkout_by("cus_held", 1);
    let mut waiting = Box::pin(app.webhook(&body));
    assert!(
        still_waiting(&mut waiting, 500).await,
        "the held customer's event waits"
    );
    release.send(()).unwrap();
    let (status, value) = waiting.await;
    assert_eq!(
        (status, &value["outcome"]),
        (StatusCode::OK, &json!("applied"))
    );
    holder.await.unwrap().unwrap();
    assert_eq!(app.customer("cus_held").await["available"], "1000");
    app.assert_audit_clean().await;
}

/// Events that fail write nothing, and never fail the events committed with them (on SQLite the
/// events waiting share one transaction, each in a savepoint).
async fn a_failing_event_fails_alone(app: TestApp) {
    /// Records event `n`, and fails when `n` is odd.
    struct Record {
        n: usize,
        now: chrono::DateTime<Utc>,
    }
    impl StripeWork for Record {
        fn apply(self: Arc<Self>, tx: StripeTx) -> BoxFuture<'static, Result<Outcome, Error>> {
            Box::pin(async move {
                let record = test_event(format!("evt_batch_{}", self.n), self.now);
                tx.record_event(&record).await?;
                if self.n % 2 == 1 {
                    return Err(Error::Internal("fails".into()));
                }
                tx.commit().await?;
                Ok(Outcome::new(OutcomeKind::Applied, self.n.to_string()))
            })
        }

        fn shard(&self) -> &str {
            "batch"
        }
    }
    let work = |n: usize| {
        let store = app.store.clone();
        let now = app.now();
        async move { store.stripe_transaction(Arc::new(Record { n, now })).await }
    };
    let answers = futures::future::join_all((0..40).map(work)).await;
    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(answer.is_ok(), n % 2 == 0, "{n}: {answer:?}");
    }
    let mut recorded: Vec<String> = app
        .store
        .stripe_events(100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    recorded.sort();
    let mut expected: Vec<String> = (0..40)
        .filter(|n| n % 2 == 0)
        .map(|n| format!("evt_batch_{n}"))
        .collect();
    expected.sort();
    assert_eq!(recorded, expected);
}

on_both_engines!(a_failing_event_fails_alone);

/// Every kind of event is group-committed: the events of one Stripe customer that arrive while
/// its worker is busy wait, then apply together in the next batch, one commit for them all
/// (PostgreSQL; on SQLite every event always shares its batch's commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stripe_customer_s_events_share_one_commit_on_postgres() {
    let app = common::spawn_app(Engine::Postgres).await;
    let now = app.now().timestamp();
    // Keeps the worker of `cus_q` busy until released.
    let (busy, release) = Hold::holding(&app, None, "cus_q").await;
    // Subscriptions, a failed invoice and the customer itself: none of them a checkout.
    let mut bodies: Vec<String> = (0..8)
        .map(|n| {
            event(
                &format!("evt_q{n}"),
                "customer.subscription.created",
                now - 100 + n,
                json!({"id": format!("sub_q{n}"), "object": "subscription", "customer": "cus_q",
                       "status": "active",
                       "items": {"data": [{"quantity": 1, "price": {"id": "price_pro_monthly"},
                                           "current_period_end": 1_999_999_999}]}}),
            )
        })
        .collect();
    bodies.push(event(
        "evt_q_failed",
        "invoice.payment_failed",
        now - 10,
        // A subscription of its own: on `sub_q0` it would make that subscription's created
        // event stale whenever it arrived first.
        json!({"id": "in_q", "object": "invoice", "customer": "cus_q", "status": "open",
               "parent": {"subscription_details": {"subscription": "sub_q_failing"}}}),
    ));
    bodies.push(event(
        "evt_q_customer",
        "customer.updated",
        now - 5,
        json!({"id": "cus_q", "object": "customer", "metadata": {"creditbook_customer": "acct_q"}}),
    ));
    let sent = futures::future::join_all(bodies.iter().map(|body| app.webhook(body)));
    let releaser = async {
        // Long enough for every delivery to be queued behind the busy batch.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        release.send(()).unwrap();
    };
    let (answers, ()) = tokio::join!(sent, releaser);
    for (status, value) in &answers {
        assert_eq!(*status, StatusCode::OK, "{value}");
        assert_eq!(value["outcome"], "applied", "{value}");
    }
    busy.await.unwrap().unwrap();
    let stats = app.store.runner_stats();
    assert_eq!(
        (
            stats
                .stripe_batches
                .load(std::sync::atomic::Ordering::Relaxed),
            stats
                .stripe_batch_events
                .load(std::sync::atomic::Ordering::Relaxed)
        ),
        (2, 11),
        "the busy batch, then the ten events in one"
    );
    // Linked by `customer.updated`, and the failed invoice's subscription past due, in whatever
    // order the batch applied them; the paid subscriptions keep the account's plan.
    let customer = app.customer("acct_q").await;
    assert_eq!(
        (&customer["plan"], &customer["past_due_since"]),
        (&json!("pro"), &Value::Null),
        "{customer}"
    );
    use sea_orm::EntityTrait;
    let failing = entity::stripe_subscriptions::Entity::find_by_id("sub_q_failing")
        .all(app.store.connection())
        .await
        .unwrap();
    assert_eq!(failing.len(), 1);
    assert_eq!(failing[0].status, "past_due");
    assert!(failing[0].past_due_since.is_some());
    app.assert_audit_clean().await;
}

/// Locks `name`, records event `id`, commits; applied by the worker of `shard`.
struct LockAndRecord {
    name: &'static str,
    shard: &'static str,
    id: &'static str,
    now: chrono::DateTime<Utc>,
}

impl LockAndRecord {
    fn work(
        name: &'static str,
        shard: &'static str,
        id: &'static str,
        now: chrono::DateTime<Utc>,
    ) -> Arc<dyn StripeWork> {
        Arc::new(LockAndRecord {
            name,
            shard,
            id,
            now,
        })
    }
}

impl StripeWork for LockAndRecord {
    fn apply(self: Arc<Self>, tx: StripeTx) -> BoxFuture<'static, Result<Outcome, Error>> {
        Box::pin(async move {
            tx.lock(&[self.name.to_owned()]).await?;
            tx.record_event(&test_event(self.id.into(), self.now))
                .await?;
            tx.commit().await?;
            Ok(Outcome::new(OutcomeKind::Applied, self.id))
        })
    }

    fn shard(&self) -> &str {
        self.shard
    }
}

/// The ids of the events recorded, once there are any (a batch running in the background).
async fn recorded_events(app: &TestApp) -> Vec<String> {
    let mut recorded = Vec::new();
    for _ in 0..100 {
        recorded = app.store.stripe_events(10).await.unwrap();
        if !recorded.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    recorded.into_iter().map(|e| e.id).collect()
}

/// An event behind others in its PostgreSQL batch never waits for a lock while holding theirs
/// (a wait could close a cycle with another batch): it is deferred, the batch commits without
/// it, and it is applied on its own after, waiting then holding nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_that_finds_a_lock_taken_behind_others_waits_after_its_batch() {
    let app = common::spawn_app(Engine::Postgres).await;
    // Another transaction holds `account:b` until released.
    let (holder, release) = Hold::holding(&app, Some("account:b"), "account:b").await;
    let now = app.now();
    let works: Vec<Arc<dyn StripeWork>> = vec![
        LockAndRecord::work("account:a", "account:a", "evt_first", now),
        LockAndRecord::work("account:b", "account:b", "evt_behind", now),
    ];
    let store = app.store.clone();
    let mut batch = tokio::spawn(async move { store.stripe_batch(&works).await });
    // The batch committed its first event and waits, for the second, on nothing of its own.
    assert_eq!(
        recorded_events(&app).await,
        vec!["evt_first"],
        "the first event commits without the second"
    );
    assert!(
        still_waiting(&mut batch, 300).await,
        "the deferred event waits for the lock"
    );
    release.send(()).unwrap();
    let answers = batch.await.unwrap();
    let outcomes: Vec<String> = answers
        .into_iter()
        .map(|a| a.expect("both applied").detail)
        .collect();
    assert_eq!(outcomes, vec!["evt_first", "evt_behind"]);
    holder.await.unwrap().unwrap();
    assert_eq!(
        app.store
            .runner_stats()
            .stripe_deferred
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// The events of one shard apply in the order they arrived, a deferral included: an event
/// behind a deferred one of its shard is deferred with it, though it would find no lock taken,
/// and applied after it once the batch commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_behind_a_deferred_one_of_its_shard_waits_with_it() {
    let app = common::spawn_app(Engine::Postgres).await;
    let (holder, release) = Hold::holding(&app, Some("account:b"), "account:b").await;
    let now = app.now();
    let works: Vec<Arc<dyn StripeWork>> = vec![
        LockAndRecord::work("account:a", "account:a", "evt_first", now),
        LockAndRecord::work("account:b", "account:b", "evt_behind", now),
        // Of the same shard, locking nothing anyone holds.
        LockAndRecord::work("account:c", "account:b", "evt_after", now),
        // Of another shard: applied in the batch.
        LockAndRecord::work("account:d", "account:d", "evt_other", now),
    ];
    let store = app.store.clone();
    let mut batch = tokio::spawn(async move { store.stripe_batch(&works).await });
    let mut committed = recorded_events(&app).await;
    committed.sort();
    assert_eq!(
        committed,
        vec!["evt_first", "evt_other"],
        "the batch commits without the deferred event and the one behind it"
    );
    assert!(
        still_waiting(&mut batch, 300).await,
        "the deferred event waits for the lock, and the next of its shard behind it"
    );
    assert!(
        !recorded_events(&app)
            .await
            .contains(&"evt_after".to_owned()),
        "not applied before the event it arrived after"
    );
    release.send(()).unwrap();
    let outcomes: Vec<String> = batch
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.expect("all applied").detail)
        .collect();
    assert_eq!(
        outcomes,
        vec!["evt_first", "evt_behind", "evt_after", "evt_other"]
    );
    holder.await.unwrap().unwrap();
    assert_eq!(
        app.store
            .runner_stats()
            .stripe_deferred
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}
