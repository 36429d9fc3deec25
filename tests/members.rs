//! Members and subjects through the HTTP API: who inside a customer spends is kept on holds,
//! ledger entries and consumptions; usage, margin and spend limits read it.

mod common;

use axum::http::StatusCode;
use common::{Engine, TestApp};
use rust_decimal::Decimal;
use serde_json::{Value, json};

fn start() -> chrono::DateTime<chrono::Utc> {
    "2026-03-10T12:00:00Z".parse().unwrap()
}

/// A usage of `quantity` units of `action`, by `subject` when given.
async fn spend(
    app: &TestApp,
    customer: &str,
    action: &str,
    quantity: u32,
    subject: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = json!({"customer": customer, "action": action, "quantity": quantity,
        "idempotency_key": uuid::Uuid::new_v4().to_string()});
    if let Some(subject) = subject {
        body["subject"] = json!(subject);
    }
    app.post_app("/v1/usage", body).await
}

async fn hold(
    app: &TestApp,
    customer: &str,
    action: &str,
    quantity: u32,
    subject: &str,
) -> (StatusCode, Value) {
    app.post_app(
        "/v1/authorizations",
        json!({"customer": customer, "action": action, "quantity": quantity, "subject": subject,
            "idempotency_key": uuid::Uuid::new_v4().to_string()}),
    )
    .await
}

async fn put_limits(app: &TestApp, customer: &str, limits: Value) -> (StatusCode, Value) {
    app.call(
        reqwest::Method::PUT,
        &format!("/v1/customers/{customer}/limits"),
        Some(&app.app_key),
        Some(json!({ "limits": limits })),
    )
    .await
}

fn decimal(value: &Value) -> Decimal {
    value.as_str().unwrap().parse().unwrap()
}

async fn who_spent_is_kept_on_holds_entries_and_consumptions(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    // A pack sold outside Stripe: 1,000 credits for $10, a cent a credit.
    app.grant("acme", json!({"kind": "pack", "pack": "topup_small"}))
        .await;
    for (credits, subject) in [(30, Some("alice")), (20, Some("bob")), (10, None)] {
        let (status, used) = spend(&app, "acme", "chat.request", credits, subject).await;
        assert_eq!(status, StatusCode::CREATED, "{used}");
        assert_eq!(used["subject"], subject.map_or(Value::Null, |s| json!(s)));
    }
    // A hold names its member; its capture is that member's.
    let (status, held) = hold(&app, "acme", "image.standard", 2, "alice").await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    assert_eq!(
        (&held["subject"], &held["credits"]),
        (&json!("alice"), &json!("10"))
    );
    let hold_id = held["id"].as_str().unwrap();
    let (status, captured) = app.capture(hold_id, json!({"quantity": 1})).await;
    assert_eq!(status, StatusCode::OK, "{captured}");

    let ledger = app.ledger("acme").await;
    let of_hold: Vec<(&str, &Value)> = ledger
        .iter()
        .filter(|e| e["hold"] == *hold_id)
        .map(|e| (e["kind"].as_str().unwrap(), &e["subject"]))
        .collect();
    assert_eq!(
        of_hold,
        [
            ("release", &json!("alice")),
            ("consume", &json!("alice")),
            ("hold", &json!("alice"))
        ]
    );
    let spent_by = |who: Value| -> Decimal {
        ledger
            .iter()
            .filter(|e| e["kind"] == "consume" && e["subject"] == who)
            .map(|e| -decimal(&e["credits"]))
            .sum()
    };
    assert_eq!(
        (
            spent_by(json!("alice")),
            spent_by(json!("bob")),
            spent_by(Value::Null)
        ),
        (Decimal::from(35), Decimal::from(20), Decimal::from(10))
    );
    // Usage by member adds up to the ledger, and to usage by action.
    let by_subject = app.usage_by("acme", "subject").await;
    assert_eq!(
        by_subject.into_iter().collect::<Vec<_>>(),
        [
            ("(none)".to_owned(), Decimal::from(10)),
            ("alice".to_owned(), Decimal::from(35)),
            ("bob".to_owned(), Decimal::from(20))
        ]
    );
    // In order on both engines: by day, usage that named nobody first.
    let (_, report) = app
        .get_app("/v1/customers/acme/usage?from=2026-03-10&to=2026-03-10&by=subject")
        .await;
    let groups: Vec<&Value> = report["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["group"])
        .collect();
    assert_eq!(groups, [&Value::Null, &json!("alice"), &json!("bob")]);
    let by_action = app.usage_by("acme", "action").await;
    assert_eq!(
        by_action.values().copied().sum::<Decimal>(),
        Decimal::from(65)
    );

    // Margin by member: the journal's usage revenue, a cent a credit, with each member's cost.
    let (status, margin) = app
        .call(
            reqwest::Method::GET,
            "/v1/revenue/margin?from=2026-03&to=2026-03&by=subject",
            Some(&app.finance_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{margin}");
    let rows: Vec<(Value, String, String)> = margin["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["group"].clone(),
                r["revenue"].as_str().unwrap().to_owned(),
                r["vendor_cost"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (json!("alice"), "0.35".into(), "0.10".into()),
            (json!("bob"), "0.20".into(), "0.04".into()),
            (Value::Null, "0.10".into(), "0.02".into()),
        ]
    );
    app.assert_audit_clean().await;
}

async fn a_subject_is_checked_and_part_of_the_request(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("acme", "100").await;
    let before = app.ledger("acme").await.len();
    for (subject, detail) in [
        (json!(""), "must not be empty"),
        (json!("a".repeat(256)), "at most 255"),
        (json!("line\nbreak"), "control characters"),
    ] {
        for path in ["/v1/usage", "/v1/authorizations", "/v1/check"] {
            let mut body = json!({"customer": "acme", "action": "chat.request", "quantity": 1,
                "subject": subject});
            if path != "/v1/check" {
                body["idempotency_key"] = json!("k-bad");
            }
            let (status, problem) = app.post_app(path, body).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path}: {problem}"
            );
            assert_eq!(problem["type"], "invalid_request", "{problem}");
            assert_eq!(problem["field"], "subject");
            assert!(
                problem["detail"].as_str().unwrap().contains(detail),
                "{problem}"
            );
        }
    }
    // Not a string: refused as a wrong type, before anything.
    let (status, problem) = app
        .post_app(
            "/v1/usage",
            json!({"customer": "acme", "action": "chat.request", "quantity": 1, "subject": 7,
                "idempotency_key": "k-type"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(app.ledger("acme").await.len(), before);
    // The member is part of what a key promises: the same key for another member conflicts,
    // the same request replays.
    let body = |subject: &str| {
        json!({"customer": "acme", "action": "chat.request", "quantity": 3, "subject": subject,
            "idempotency_key": "k-1"})
    };
    let (status, first) = app.post_app("/v1/usage", body("alice")).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = app.post_app("/v1/usage", body("alice")).await;
    assert_eq!((status, &again["id"]), (StatusCode::CREATED, &first["id"]));
    let (status, other) = app.post_app("/v1/usage", body("bob")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{other}");
    assert_eq!(other["type"], "idempotency_conflict");
    let (status, none) = app
        .post_app(
            "/v1/usage",
            json!({"customer": "acme", "action": "chat.request", "quantity": 3,
                "idempotency_key": "k-1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{none}");
    assert_eq!(app.balances("acme").await.2, "97");
    // A usage batch takes a member per usage.
    let (status, batch) = app
        .post_app(
            "/v1/usage/batch",
            json!({"usages": [
                {"customer": "acme", "action": "chat.request", "quantity": 2, "subject": "carol",
                 "idempotency_key": "b-1"},
                {"customer": "acme", "action": "chat.request", "quantity": 2, "subject": "",
                 "idempotency_key": "b-2"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    assert_eq!(batch["results"][0]["subject"], "carol");
    assert_eq!(batch["results"][1]["type"], "invalid_request");
    let by_subject = app.usage_by("acme", "subject").await;
    assert_eq!(by_subject.get("carol"), Some(&Decimal::from(2)));
    assert_eq!(by_subject.get("alice"), Some(&Decimal::from(3)));
    app.assert_audit_clean().await;
}

async fn a_cap_on_each_member_refuses_one_while_another_spends(engine: Engine) {
    // An endpoint, so the outbox keeps what would be sent (nothing listens there).
    let app = common::spawn_app_at(engine, start(), |config| {
        let toml = "[[webhooks]]\nurl = \"http://127.0.0.1:9/hooks\"\n\
                    secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";
        let parsed = creditbook::config::Config::parse(toml, "webhooks.toml", |_| None)
            .expect("the webhook config parses");
        config.webhooks = parsed.webhooks;
        config.catalog.webhooks = parsed.catalog.webhooks;
    })
    .await;
    app.promo("team", "1000").await;
    // Alice spent 6 this month before any limit: the cap set now counts them.
    assert_eq!(
        spend(&app, "team", "chat.request", 6, Some("alice"))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, set) = put_limits(
        &app,
        "team",
        json!([
            {"period": "month", "credits": "10", "mode": "hard", "each_subject": true},
            {"period": "day", "credits": "4", "mode": "hard", "subject": "intern"},
            {"period": "month", "credits": "100", "mode": "hard"},
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let each = &set["limits"][0];
    assert_eq!(each["each_subject"], true);
    assert_eq!(
        each["members"],
        json!([{"subject": "alice", "spent": "6", "held": "0", "remaining": "4"}])
    );
    assert_eq!(set["limits"][1]["subject"], "intern");
    // Alice holds 3 (9 of her 10), and 2 more would pass her cap: refused, naming her.
    let (status, held) = hold(&app, "team", "chat.request", 3, "alice").await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    let (status, refused) = spend(&app, "team", "chat.request", 2, Some("alice")).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{refused}");
    assert_eq!(refused["type"], "spend_limit_reached");
    assert_eq!(
        (
            &refused["subject"],
            &refused["spent"],
            &refused["held"],
            &refused["limit"]
        ),
        (&json!("alice"), &json!("6"), &json!("3"), &json!("10"))
    );
    // Bob has his own 10; a spend naming nobody is not a member's.
    assert_eq!(
        spend(&app, "team", "chat.request", 10, Some("bob")).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        spend(&app, "team", "chat.request", 20, None).await.0,
        StatusCode::CREATED
    );
    // The intern's own day cap of 4, beside the cap on each member.
    assert_eq!(
        spend(&app, "team", "chat.request", 4, Some("intern"))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, refused) = spend(&app, "team", "chat.request", 1, Some("intern")).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{refused}");
    assert_eq!(
        (&refused["subject"], &refused["period"]),
        (&json!("intern"), &json!("day"))
    );
    // `check` says the same for the member, and yes for another.
    let check = |subject: &'static str| {
        let app = &app;
        async move {
            app.post_app(
                "/v1/check",
                json!({"customer": "team", "action": "chat.request", "quantity": 2,
                    "subject": subject}),
            )
            .await
            .1
        }
    };
    assert_eq!(check("alice").await["reason"], "spend_limit_reached");
    assert_eq!(check("carol").await["reason"], "ok");
    // The customer's own cap counts everyone: 6 + 3 held + 10 + 20 + 4 = 43 of 100.
    let customer = app.customer("team").await;
    let limits = customer["limits"].as_array().unwrap();
    assert_eq!(
        (&limits[2]["spent"], &limits[2]["held"]),
        (&json!("40"), &json!("3"))
    );
    // The limit on each member, in all: what members spent and hold (not the 20 of nobody).
    assert_eq!(
        (&limits[0]["spent"], &limits[0]["held"]),
        (&json!("20"), &json!("3"))
    );
    let members: Vec<(&str, &str, &str)> = limits[0]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["subject"].as_str().unwrap(),
                m["spent"].as_str().unwrap(),
                m["remaining"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        members,
        [
            ("alice", "6", "1"),
            ("bob", "10", "0"),
            ("intern", "4", "6")
        ]
    );
    // Alice's hold captured in full: her spent is 9; next month she starts again.
    let (status, _) = app
        .capture(held["id"].as_str().unwrap(), json!({"quantity": 3}))
        .await;
    assert_eq!(status, StatusCode::OK);
    app.advance("2026-04-01T00:00:01Z".parse().unwrap()).await;
    assert_eq!(
        spend(&app, "team", "chat.request", 10, Some("alice"))
            .await
            .0,
        StatusCode::CREATED
    );
    // Each limit said so once per member and window, naming the member.
    let (status, page) = app
        .call(
            reqwest::Method::GET,
            "/v1/outbox?limit=200",
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let mut reached: Vec<(String, String, bool)> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] == "spend_limit.reached")
        .map(|m| {
            let data = &m["body"]["data"];
            (
                data["period"].as_str().unwrap().to_owned(),
                data["subject"].as_str().unwrap_or("-").to_owned(),
                data["each_subject"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    reached.sort();
    assert_eq!(
        reached,
        [
            ("day".into(), "intern".into(), false),
            ("month".into(), "alice".into(), true),
            ("month".into(), "alice".into(), true),
            ("month".into(), "bob".into(), true),
        ]
    );
    app.assert_audit_clean().await;
}

async fn limits_on_members_are_checked(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("team", "10").await;
    for (limits, field) in [
        (
            json!([{"period": "day", "credits": "1", "mode": "hard", "subject": "a",
                "each_subject": true}]),
            "limits[0].each_subject",
        ),
        (
            json!([{"period": "day", "credits": "1", "mode": "hard", "subject": ""}]),
            "limits[0].subject",
        ),
        (
            json!([{"period": "day", "credits": "1", "mode": "hard", "each_subject": "yes"}]),
            "body",
        ),
    ] {
        let (status, problem) = put_limits(&app, "team", limits).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        if field != "body" {
            assert_eq!(problem["field"], field, "{problem}");
        }
    }
    // One cap per period, feature and members: the same member twice is a duplicate, a member
    // beside the whole customer is not.
    let (status, problem) = put_limits(
        &app,
        "team",
        json!([
            {"period": "day", "credits": "1", "mode": "hard", "subject": "a"},
            {"period": "day", "credits": "2", "mode": "soft", "subject": "a"},
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, set) = put_limits(
        &app,
        "team",
        json!([
            {"period": "day", "credits": "1", "mode": "hard", "subject": "a"},
            {"period": "day", "credits": "2", "mode": "hard"},
            {"period": "day", "credits": "3", "mode": "hard", "each_subject": true},
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(set["limits"].as_array().unwrap().len(), 3);
}

for_each_engine!(who_spent_is_kept_on_holds_entries_and_consumptions);
for_each_engine!(a_subject_is_checked_and_part_of_the_request);
for_each_engine!(a_cap_on_each_member_refuses_one_while_another_spends);
for_each_engine!(limits_on_members_are_checked);
