//! Credit cycles of plans outside Stripe, through the real HTTP stack on SQLite and PostgreSQL,
//! driven by the test clock: the default plan on first sight, monthly and daily periods granted
//! by the jobs, rollover, plan changes, and one grant per period under concurrency.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::{Engine, TestApp};
use creditbook::domain::catalog::CreditsInterval;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// January 31st: the monthly periods end on the last day of shorter months.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 31, 12, 0, 0).unwrap()
}

fn at(month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, month, day, 12, 0, 0).unwrap()
}

/// An app whose customers without a plan are on `free` (50 credits a month, chat and image).
async fn with_default_plan(engine: Engine) -> TestApp {
    common::spawn_app_at(engine, start(), |config| {
        config.catalog.default_plan = Some("free".into());
    })
    .await
}

/// The customer's live grants as (id, plan, remaining, expires_at).
fn grants(customer: &Value) -> Vec<(String, String, String, String)> {
    customer["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let s = |k: &str| g[k].as_str().unwrap_or("-").to_owned();
            (s("id"), s("plan"), s("remaining"), s("expires_at"))
        })
        .collect()
}

/// The grants the ledger says were made (written, not shown as due), oldest first.
async fn granted(app: &TestApp, customer: &str) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = app
        .ledger(customer)
        .await
        .iter()
        .filter(|e| e["kind"] == "grant")
        .map(|e| {
            (
                e["grant"].as_str().unwrap().to_owned(),
                e["credits"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    entries.reverse();
    entries
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A customer first seen spends its default plan's first grant in that same call; `check`
/// answers on it before anything exists; the grant renews every month, from the day the customer
/// was first seen, by the jobs alone, and what was not used expires with its period.
async fn the_default_plan_is_spendable_on_first_sight_and_renews(engine: Engine) {
    let app = with_default_plan(engine).await;
    let (status, check) = app
        .post_app(
            "/v1/check",
            json!({"customer": "newcomer", "action": "chat.request", "quantity": 5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        check,
        json!({"allowed": true, "credits": "5", "available": "50", "reason": "ok"})
    );
    // Nothing was written by the check: the customer is still unknown.
    let (status, _) = app.get_app("/v1/customers/newcomer").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A plan-only feature stays out of reach on free.
    let (status, refused) = app.authorize("newcomer", "video.clip", json!(1)).await;
    assert_eq!(
        (status, refused["type"].as_str()),
        (StatusCode::FORBIDDEN, Some("feature_not_entitled"))
    );
    let (status, used) = app.usage("newcomer", "chat.request", json!(20), "u1").await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    assert_eq!(used["available"], "30");
    let customer = app.customer("newcomer").await;
    assert_eq!(customer["plan"], "free");
    assert_eq!(customer["next_grant_at"], time(at(2, 28)));
    assert_eq!(customer["allowance"], "50");
    let first = format!("cycle_newcomer_free_{}", start().timestamp());
    assert_eq!(
        grants(&customer),
        [(first.clone(), "free".into(), "30".into(), time(at(2, 28)))]
    );

    // The end of February: the jobs grant March's period on their own.
    app.advance(at(2, 28)).await;
    let second = format!("cycle_newcomer_free_{}", at(2, 28).timestamp());
    assert_eq!(
        granted(&app, "newcomer").await,
        [(first.clone(), "50".into()), (second.clone(), "50".into())]
    );
    let customer = app.customer("newcomer").await;
    assert_eq!(
        grants(&customer),
        [(second, "free".into(), "50".into(), time(at(3, 31)))]
    );
    assert_eq!(customer["next_grant_at"], time(at(3, 31)));
    let expired: Vec<Value> = app
        .ledger("newcomer")
        .await
        .into_iter()
        .filter(|e| e["kind"] == "expire")
        .collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(
        expired[0]["credits"], "-30",
        "the unused 30 expire: free has no rollover"
    );
    // Asked again and again within the period: still one grant of it.
    app.advance(at(3, 10)).await;
    app.usage("newcomer", "chat.request", json!(1), "u2").await;
    assert_eq!(granted(&app, "newcomer").await.len(), 2);
    app.assert_audit_clean().await;
}
for_each_engine!(the_default_plan_is_spendable_on_first_sight_and_renews);

/// A daily plan set through the API grants every day from the day it was set, carries what
/// `rollover_max` allows, and days nobody was there for are not granted; removing the plan keeps
/// what is live and grants nothing more, and the customer falls back to no plan.
async fn a_daily_plan_grants_every_day_and_stops_when_removed(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |config| {
        let mut daily = config.catalog.plans["free"].clone();
        daily.id = "daily".into();
        daily.credits = "10".parse().unwrap();
        daily.credits_interval = CreditsInterval::Day;
        daily.rollover_max = "5".parse().unwrap();
        config.catalog.plans.insert("daily".into(), daily);
    })
    .await;
    let c = "daily_user";
    app.set_plan(c, "daily").await;
    assert_eq!(app.balances(c).await.0, "10");
    app.usage(c, "chat.request", json!(2), "d1").await;
    // A day later: 8 unused, 5 of them carried, and the new day's 10.
    app.advance(start() + Duration::days(1)).await;
    let customer = app.customer(c).await;
    assert_eq!(customer["balance"], "15", "{customer}");
    assert_eq!(customer["rolls_over"], "5");
    assert_eq!(customer["next_grant_at"], time(start() + Duration::days(2)));
    // Five days on: only the current day is granted, and nothing carries over the days between.
    app.advance(start() + Duration::days(6) + Duration::hours(1))
        .await;
    assert_eq!(app.balances(c).await.0, "10");
    let days = granted(&app, c).await;
    assert_eq!(days.len(), 3, "{days:?}");
    // Removed: what is live stays until it expires; nothing after.
    app.clear_plan(c).await;
    let customer = app.customer(c).await;
    assert_eq!(customer["balance"], "10");
    assert_eq!(customer["next_grant_at"], Value::Null);
    app.advance(start() + Duration::days(9)).await;
    assert_eq!(app.balances(c).await.0, "0");
    assert_eq!(granted(&app, c).await.len(), 3);
    app.assert_audit_clean().await;
}
for_each_engine!(a_daily_plan_grants_every_day_and_stops_when_removed);

/// Plan changes outside Stripe within one period: an upgrade tops up to the higher allowance, a
/// downgrade gives nothing and takes nothing, a downgrade then an upgrade never gives a second
/// allowance; the next period grants the plan in force, whole.
async fn plan_changes_never_give_more_than_the_highest_allowance_in_a_period(engine: Engine) {
    let app = with_default_plan(engine).await;
    let c = "changer";
    app.usage(c, "chat.request", json!(10), "c1").await; // first sight: free's 50
    app.advance(at(2, 5)).await;
    app.set_plan(c, "pro").await;
    assert_eq!(
        app.balances(c).await.0,
        "1990",
        "40 left of free, and the 1,950 pro adds"
    );
    app.set_plan(c, "free").await;
    assert_eq!(
        app.balances(c).await.0,
        "1990",
        "a downgrade keeps what is live"
    );
    app.set_plan(c, "pro").await;
    app.set_plan(c, "pro").await;
    assert_eq!(app.balances(c).await.0, "1990", "no second allowance");
    let customer = app.customer(c).await;
    assert_eq!(customer["plan"], "pro");
    assert_eq!(customer["allowance"], "2000");
    assert_eq!(customer["next_grant_at"], time(at(2, 28)));
    app.advance(at(3, 1)).await;
    let customer = app.customer(c).await;
    assert_eq!(
        customer["balance"], "2000",
        "pro's whole allowance for March"
    );
    let made: Vec<String> = granted(&app, c).await.into_iter().map(|g| g.1).collect();
    assert_eq!(made, ["50", "1950", "2000"]);
    app.assert_audit_clean().await;
}
for_each_engine!(plan_changes_never_give_more_than_the_highest_allowance_in_a_period);

/// Sixty concurrent holds of one credit by a customer nobody has seen, through two instances:
/// one first grant of the default plan, exactly fifty holds, the rest refused.
async fn a_first_sight_under_concurrency_grants_once(engine: Engine) {
    let app = with_default_plan(engine).await;
    let other = app.another_instance().await;
    let mut tasks = Vec::new();
    for n in 0..60 {
        let instance = if n % 2 == 0 { &app } else { &other };
        let (client, address, key) = (
            instance.client.clone(),
            instance.address.clone(),
            instance.app_key.clone(),
        );
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{address}/v1/authorizations"))
                .bearer_auth(key)
                .json(
                    &json!({"customer": "crowd", "action": "chat.request", "quantity": 1,
                               "idempotency_key": format!("k{n}")}),
                )
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut held = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::CREATED => held += 1,
            StatusCode::PAYMENT_REQUIRED => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(held, 50);
    assert_eq!(granted(&app, "crowd").await.len(), 1);
    assert_eq!(
        app.balances("crowd").await,
        ("50".into(), "50".into(), "0".into())
    );
    app.assert_audit_clean().await;
}
for_each_engine!(a_first_sight_under_concurrency_grants_once);

/// Without a default plan nothing changes for a customer nobody has seen; a bad
/// `credits_interval` or a default plan the catalog lacks is refused at start, naming the key.
async fn config_names_are_checked_and_no_default_means_no_first_grant(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    let (status, refused) = app.authorize("stranger", "chat.request", json!(1)).await;
    assert_eq!(
        (status, refused["type"].as_str()),
        (StatusCode::PAYMENT_REQUIRED, Some("insufficient_credits"))
    );
    let (status, _) = app.get_app("/v1/customers/stranger").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let example = include_str!("../examples/creditbook.toml");
    let parse = |text: &str| {
        creditbook::config::Config::parse(text, "c.toml", |name| {
            (name == "CREDITBOOK_DATABASE_URL").then(|| "sqlite::memory:".to_owned())
        })
    };
    let bad_interval = example.replacen(
        "id = \"free\"\n",
        "id = \"free\"\ncredits_interval = \"fortnight\"\n",
        1,
    );
    let error = parse(&bad_interval).unwrap_err().to_string();
    assert!(error.contains("plans[0].credits_interval"), "{error}");
    // A plan sold through Stripe is granted per paid invoice: another interval would be ignored.
    let stripe_daily = example.replacen(
        "id = \"pro\"\n",
        "id = \"pro\"\ncredits_interval = \"day\"\n",
        1,
    );
    let error = parse(&stripe_daily).unwrap_err().to_string();
    assert!(
        error.contains("plans[1].credits_interval") && error.contains("stripe_prices"),
        "{error}"
    );
    // Trial credits are a Stripe trial's: refused on a plan outside Stripe, and never zero.
    let free_trial = example.replacen(
        "id = \"free\"\n",
        "id = \"free\"\ntrial_credits = \"10\"\n",
        1,
    );
    let error = parse(&free_trial).unwrap_err().to_string();
    assert!(
        error.contains("plans[0].trial_credits") && error.contains("stripe_prices"),
        "{error}"
    );
    let zero_trial = example.replacen("# trial_credits = \"100\"", "trial_credits = \"0\"", 1);
    let error = parse(&zero_trial).unwrap_err().to_string();
    assert!(error.contains("plans[1].trial_credits"), "{error}");
    let trial = example.replacen("# trial_credits = \"100\"", "trial_credits = \"100\"", 1);
    assert!(parse(&trial).is_ok());
    let unknown_default = format!("{example}\n[customers]\ndefault_plan = \"gold\"\n");
    let error = parse(&unknown_default).unwrap_err().to_string();
    assert!(error.contains("customers.default_plan"), "{error}");
    assert!(
        parse(&format!(
            "{example}\n[customers]\ndefault_plan = \"free\"\n"
        ))
        .is_ok()
    );
}
for_each_engine!(config_names_are_checked_and_no_default_means_no_first_grant);
