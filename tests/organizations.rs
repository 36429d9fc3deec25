//! Organizations through the HTTP API: a customer spends its own grants, then its parent's
//! shared grants, then its grandparent's; who spent and whose grant paid are kept; usage and
//! margin by customer add up to the ledger and the journal.

mod common;

use axum::http::StatusCode;
use common::{Engine, TestApp};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn start() -> chrono::DateTime<chrono::Utc> {
    "2026-03-10T12:00:00Z".parse().unwrap()
}

fn decimal(value: &Value) -> Decimal {
    value.as_str().unwrap().parse().unwrap()
}

async fn spend(
    app: &TestApp,
    customer: &str,
    quantity: u32,
    subject: Option<&str>,
) -> (StatusCode, Value) {
    let mut body = json!({"customer": customer, "action": "chat.request", "quantity": quantity,
        "idempotency_key": uuid::Uuid::new_v4().to_string()});
    if let Some(subject) = subject {
        body["subject"] = json!(subject);
    }
    app.post_app("/v1/usage", body).await
}

async fn parent_of(app: &TestApp, child: &str, parent: &str) {
    let (status, body) = app.set_parent(child, json!(parent)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["parent"], parent);
}

/// Credits drawn per grant by the consume entries of `customer`'s ledger, and whose grant each
/// was (`paid_by`, the customer itself when absent).
async fn drawn(app: &TestApp, customer: &str) -> BTreeMap<(String, String), Decimal> {
    let mut drawn = BTreeMap::new();
    for e in app.ledger(customer).await {
        if e["kind"] == "consume" {
            let owner = e["paid_by"].as_str().unwrap_or(customer).to_owned();
            let grant = e["grant"].as_str().unwrap().to_owned();
            *drawn.entry((owner, grant)).or_default() -= decimal(&e["credits"]);
        }
    }
    drawn
}

async fn a_team_spends_its_own_then_the_shared_grants_and_never_an_unshared_one(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    let shared = app.promo("acme", "100").await;
    let unshared = app
        .grant(
            "acme",
            json!({"kind": "promotional", "credits": "50", "shared": false}),
        )
        .await;
    let own = app.promo("team", "10").await;
    parent_of(&app, "team", "acme").await;
    let team = app.customer("team").await;
    assert_eq!(
        (&team["parent"], &team["available"], &team["pool_available"]),
        (&json!("acme"), &json!("10"), &json!("110"))
    );
    let acme = app.customer("acme").await;
    assert_eq!(
        (&acme["parent"], &acme["available"], &acme["pool_available"]),
        (&Value::Null, &json!("150"), &json!("150"))
    );

    // 30: its own 10 first, then 20 of the organization's shared grant.
    let (status, used) = spend(&app, "team", 30, Some("alice")).await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    assert_eq!(
        drawn(&app, "team").await.into_iter().collect::<Vec<_>>(),
        [
            (("acme".to_owned(), shared.clone()), Decimal::from(20)),
            (("team".to_owned(), own.clone()), Decimal::from(10)),
        ]
    );
    // The check sees the pool; more than the shared grant has left is refused, and the
    // unshared grant is never spent by the team.
    let (status, check) = app
        .post_app(
            "/v1/check",
            json!({"customer": "team", "action": "chat.request", "quantity": 80}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{check}");
    assert_eq!(check["allowed"], true, "{check}");
    let (status, refused) = spend(&app, "team", 81, None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{refused}");
    assert_eq!(refused["available"], "80", "{refused}");
    let acme = app.customer("acme").await;
    let remaining: BTreeMap<&str, &Value> = acme["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["id"].as_str().unwrap(), &g["remaining"]))
        .collect();
    assert_eq!(remaining[shared.as_str()], "80");
    assert_eq!(remaining[unshared.as_str()], "50");
    // The organization spends its own grants as always: the shared one is first by age.
    let (status, used) = spend(&app, "acme", 90, None).await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    assert_eq!(app.customer("team").await["pool_available"], "0");

    // Usage by subject and by customer add up to the ledger.
    assert_eq!(
        app.usage_by("team", "subject")
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        [("alice".to_owned(), Decimal::from(30))]
    );
    assert_eq!(
        app.usage_by("acme", "customer")
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        [
            ("acme".to_owned(), Decimal::from(90)),
            ("team".to_owned(), Decimal::from(30))
        ]
    );
    let spent: Decimal = drawn(&app, "acme").await.values().sum::<Decimal>()
        + drawn(&app, "team").await.values().sum::<Decimal>();
    assert_eq!(spent, Decimal::from(120));
    app.assert_audit_clean().await;
}
for_each_engine!(a_team_spends_its_own_then_the_shared_grants_and_never_an_unshared_one);

async fn a_grandchild_spends_through_two_levels_and_its_holds_span_them(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    let top = app.promo("acme", "100").await;
    let middle = app.promo("acme-eu", "20").await;
    let own = app.promo("acme-eu-ml", "5").await;
    parent_of(&app, "acme-eu", "acme").await;
    parent_of(&app, "acme-eu-ml", "acme-eu").await;
    assert_eq!(app.customer("acme-eu-ml").await["pool_available"], "125");

    // A hold of 60 reserves 5 of its own, 20 of its parent's and 35 of its grandparent's.
    let (status, held) = app.authorize("acme-eu-ml", "chat.request", json!(60)).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    let reserved: BTreeMap<String, Decimal> = app
        .ledger("acme-eu-ml")
        .await
        .iter()
        .filter(|e| e["kind"] == "hold")
        .map(|e| (e["grant"].as_str().unwrap().to_owned(), decimal(&e["held"])))
        .collect();
    assert_eq!(
        reserved,
        BTreeMap::from([
            (own.clone(), Decimal::from(5)),
            (middle.clone(), Decimal::from(20)),
            (top.clone(), Decimal::from(35))
        ])
    );
    // Held above is not available to those above either.
    assert_eq!(app.customer("acme").await["available"], "65");
    assert_eq!(app.customer("acme-eu").await["pool_available"], "65");
    // Captured for 40: 5 + 20 + 15 spent, 20 given back to the top.
    let (status, captured) = app
        .capture(held["id"].as_str().unwrap(), json!({"quantity": 40}))
        .await;
    assert_eq!(status, StatusCode::OK, "{captured}");
    assert_eq!(
        drawn(&app, "acme-eu-ml")
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        [
            (("acme".to_owned(), top.clone()), Decimal::from(15)),
            (("acme-eu".to_owned(), middle.clone()), Decimal::from(20)),
            (("acme-eu-ml".to_owned(), own.clone()), Decimal::from(5)),
        ]
    );
    assert_eq!(app.customer("acme").await["available"], "85");
    // A hold voided gives back to every level.
    let (status, held) = app.authorize("acme-eu-ml", "chat.request", json!(85)).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    assert_eq!(app.customer("acme").await["available"], "0");
    let (status, voided) = app.void(held["id"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{voided}");
    assert_eq!(app.customer("acme").await["available"], "85");
    assert_eq!(
        app.usage_by("acme", "customer")
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        [("acme-eu-ml".to_owned(), Decimal::from(40))]
    );
    // While a hold below reserves on a pool, that pool stays above it: the grandchild, and its
    // parent (whose parent holds the grant), cannot move.
    let (status, held) = app.authorize("acme-eu-ml", "chat.request", json!(10)).await;
    assert_eq!(status, StatusCode::CREATED, "{held}");
    for customer in ["acme-eu-ml", "acme-eu"] {
        let (status, refused) = app.set_parent(customer, Value::Null).await;
        assert_eq!(status, StatusCode::CONFLICT, "{refused}");
        assert_eq!(refused["type"], "parent_refused");
        assert!(refused["detail"].as_str().unwrap().contains("open holds"));
    }
    let (status, _) = app.void(held["id"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    // Taken off the tree, it spends its own grants alone.
    let (status, alone) = app.set_parent("acme-eu-ml", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{alone}");
    assert_eq!(alone["pool_available"], "0");
    let (status, _) = spend(&app, "acme-eu-ml", 1, None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    app.assert_audit_clean().await;
}
for_each_engine!(a_grandchild_spends_through_two_levels_and_its_holds_span_them);

async fn a_cycle_a_fourth_level_and_bad_parents_are_refused(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    for customer in ["acme", "acme-eu", "acme-eu-ml", "solo"] {
        app.promo(customer, "1").await;
    }
    parent_of(&app, "acme-eu", "acme").await;
    parent_of(&app, "acme-eu-ml", "acme-eu").await;
    let refused = |child: &'static str, parent: Value, status: StatusCode, kind: &'static str| {
        let app = &app;
        async move {
            let (got, problem) = app.set_parent(child, parent).await;
            assert_eq!((got, &problem["type"]), (status, &json!(kind)), "{problem}");
            problem["detail"].as_str().unwrap().to_owned()
        }
    };
    let conflict = StatusCode::CONFLICT;
    assert!(
        refused("acme", json!("acme-eu-ml"), conflict, "parent_refused")
            .await
            .contains("cycle")
    );
    assert!(
        refused("acme", json!("acme"), conflict, "parent_refused")
            .await
            .contains("own parent")
    );
    // A fourth level, below or above.
    assert!(
        refused("solo", json!("acme-eu-ml"), conflict, "parent_refused")
            .await
            .contains("at most 3 levels")
    );
    assert!(
        refused("acme", json!("solo"), conflict, "parent_refused")
            .await
            .contains("at most 3 levels")
    );
    let unknown = StatusCode::NOT_FOUND;
    assert!(
        refused("solo", json!("nobody"), unknown, "customer_not_found")
            .await
            .contains("nobody")
    );
    let invalid = StatusCode::UNPROCESSABLE_ENTITY;
    refused("solo", json!("bad\u{1}id"), invalid, "invalid_request").await;
    refused("solo", json!(""), invalid, "invalid_request").await;
    refused("solo", json!(7), invalid, "invalid_request").await;
    let (status, problem) = app
        .call(
            reqwest::Method::PUT,
            "/v1/customers/solo/parent",
            Some(&app.admin_key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, problem) = app
        .call(
            reqwest::Method::PUT,
            "/v1/customers/solo/parent",
            Some(&app.admin_key),
            Some(json!({"parent": "acme", "parnet": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    // An app key may not move customers.
    let (status, _) = app
        .call(
            reqwest::Method::PUT,
            "/v1/customers/solo/parent",
            Some(&app.app_key),
            Some(json!({"parent": "acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing changed.
    for (customer, parent) in [
        ("acme", Value::Null),
        ("acme-eu", json!("acme")),
        ("acme-eu-ml", json!("acme-eu")),
        ("solo", Value::Null),
    ] {
        assert_eq!(app.customer(customer).await["parent"], parent, "{customer}");
    }
    // Two levels under a customer that was a child: allowed once it is at the top.
    let (status, _) = app.set_parent("acme-eu", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    parent_of(&app, "acme-eu", "solo").await;
    // A member account is set under its organization before its first call.
    parent_of(&app, "new-team", "acme").await;
    assert_eq!(app.customer("new-team").await["pool_available"], "1");
    app.assert_audit_clean().await;
}
for_each_engine!(a_cycle_a_fourth_level_and_bad_parents_are_refused);

async fn a_per_member_cap_refuses_one_member_while_another_spends(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("acme", "1000").await;
    parent_of(&app, "team", "acme").await;
    let (status, limits) = app
        .call(
            reqwest::Method::PUT,
            "/v1/customers/team/limits",
            Some(&app.app_key),
            Some(json!({"limits": [{"period": "month", "credits": "10", "mode": "hard", "each_subject": true}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{limits}");
    let (status, _) = spend(&app, "team", 10, Some("alice")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, refused) = spend(&app, "team", 1, Some("alice")).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{refused}");
    assert_eq!(refused["subject"], "alice", "{refused}");
    let (status, used) = spend(&app, "team", 10, Some("bob")).await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    assert_eq!(app.customer("acme").await["available"], "980");
    app.assert_audit_clean().await;
}
for_each_engine!(a_per_member_cap_refuses_one_member_while_another_spends);

/// Chargeback, as the README's worked example (Organizations) tells it: what each team spent of
/// the organization's paid pack is revenue at the pack's price per credit, attributed to the
/// team, and the margin by customer adds up to the journal's usage revenue per customer.
async fn chargeback_per_team_reconciles_to_the_journal(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    // 1,000 credits for $10: a cent a credit; and 50 kept for the organization alone.
    app.grant("acme", json!({"kind": "pack", "pack": "topup_small"}))
        .await;
    app.grant(
        "acme",
        json!({"kind": "promotional", "credits": "50", "shared": false, "memo": "for the admins"}),
    )
    .await;
    for team in ["acme-research", "acme-design"] {
        parent_of(&app, team, "acme").await;
    }
    app.promo("acme-research", "10").await;
    let (status, used) = spend(&app, "acme-research", 300, Some("alice")).await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    let (status, used) = spend(&app, "acme-design", 200, None).await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    let (status, refused) = spend(&app, "acme-design", 600, None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{refused}");
    assert_eq!(refused["available"], "510");
    for team in ["acme-research", "acme-design"] {
        assert_eq!(app.customer(team).await["pool_available"], "510", "{team}");
    }
    let journal = app.journal_lines("2026-03-01", "2026-03-31").await;
    let mut by_customer: BTreeMap<String, Decimal> = BTreeMap::new();
    for line in &journal {
        if line["account"] == "usage_revenue" {
            *by_customer
                .entry(line["customer"].as_str().unwrap().to_owned())
                .or_default() += decimal(&line["credit"]) - decimal(&line["debit"]);
        }
    }
    let expected = [
        ("acme-design".to_owned(), Decimal::from(2)),
        ("acme-research".to_owned(), Decimal::new(290, 2)),
    ];
    assert_eq!(by_customer.into_iter().collect::<Vec<_>>(), expected);
    let (status, margin) = app
        .call(
            reqwest::Method::GET,
            "/v1/revenue/margin?from=2026-03&to=2026-03&by=customer",
            Some(&app.finance_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{margin}");
    let revenue: BTreeMap<String, Decimal> = margin["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["group"].as_str().unwrap().to_owned(),
                decimal(&r["revenue"]),
            )
        })
        .collect();
    assert_eq!(revenue.into_iter().collect::<Vec<_>>(), expected);
    assert_eq!(
        app.usage_by("acme", "customer")
            .await
            .into_iter()
            .collect::<Vec<_>>(),
        [
            ("acme-design".to_owned(), Decimal::from(200)),
            ("acme-research".to_owned(), Decimal::from(300))
        ]
    );
    app.assert_audit_clean().await;
}
for_each_engine!(chargeback_per_team_reconciles_to_the_journal);
