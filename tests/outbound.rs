//! Outbound webhooks end to end: balance alerts written with the ledger change that causes them,
//! delivered by the outbox to a real HTTP receiver that fails on purpose, each attempt verified
//! by the Standard Webhooks specification's own Python library (`standardwebhooks` from PyPI,
//! installed by scripts/test).

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use common::{Engine, TestApp};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    /// What the receiver answered.
    status: u16,
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// The first attempt of each message fails (503 with `Retry-After: 1` for the first message,
    /// 500 for the others); retries succeed.
    FailFirst,
    /// Every attempt fails with 500.
    AlwaysFail,
    Accept,
}

#[derive(Clone)]
struct Receiver {
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, HeaderMap) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let mut deliveries = r.deliveries.lock().unwrap();
    let seen_before = deliveries.iter().any(|d| d.id == id);
    let first_message = deliveries.is_empty() || deliveries[0].id == id;
    let behaviour = *r.behaviour.lock().unwrap();
    let mut out = HeaderMap::new();
    let status = match behaviour {
        Behaviour::Accept => StatusCode::NO_CONTENT,
        Behaviour::AlwaysFail => StatusCode::INTERNAL_SERVER_ERROR,
        Behaviour::FailFirst if seen_before => StatusCode::NO_CONTENT,
        Behaviour::FailFirst if first_message => {
            out.insert("retry-after", "1".parse().unwrap());
            StatusCode::SERVICE_UNAVAILABLE
        }
        Behaviour::FailFirst => StatusCode::INTERNAL_SERVER_ERROR,
    };
    deliveries.push(Delivery {
        id,
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
        status: status.as_u16(),
    });
    (status, out)
}

/// A receiver on a free port; returns its URL.
async fn start_receiver(behaviour: Behaviour) -> (String, Receiver) {
    let receiver = Receiver {
        deliveries: Default::default(),
        behaviour: Arc::new(Mutex::new(behaviour)),
    };
    let app = axum::Router::new()
        .route("/hooks", axum::routing::post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver)
}

/// A signing secret as the specification writes them: `whsec_` and 32 random bytes.
fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    )
}

async fn spawn_with_webhook(
    engine: Engine,
    url: &str,
    secret: &str,
    dead_after_seconds: u64,
) -> TestApp {
    spawn_with_webhook_and(engine, url, secret, dead_after_seconds, |_| {}).await
}

/// `spawn_with_webhook`, the config changed by `configure` too.
async fn spawn_with_webhook_and(
    engine: Engine,
    url: &str,
    secret: &str,
    dead_after_seconds: u64,
    configure: impl FnOnce(&mut creditbook::config::Config),
) -> TestApp {
    let (url, secret) = (url.to_owned(), secret.to_owned());
    common::spawn_app_with(engine, move |config| {
        let toml = format!(
            "[[webhooks]]\nurl = {url:?}\nsecret = {secret:?}\n\n[outbox]\nfirst_retry_ms = 50\n\
             max_retry_ms = 200\npoll_interval_ms = 20\ndead_after_seconds = {dead_after_seconds}\n"
        );
        let parsed = creditbook::config::Config::parse(&toml, "webhooks.toml", |_| None)
            .expect("the webhook config parses");
        config.webhooks = parsed.webhooks;
        config.outbox = parsed.outbox;
        config.catalog.webhooks = parsed.catalog.webhooks;
        configure(config);
    })
    .await
}

/// Verifies every delivery with the `standardwebhooks` library; returns the verified bodies.
fn verify_with_standard_webhooks(secret: &str, deliveries: &[Delivery]) -> Vec<Value> {
    let input: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            json!({"headers": {"webhook-id": d.id, "webhook-timestamp": d.timestamp,
                   "webhook-signature": d.signature}, "body": d.body})
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
hook = Webhook(sys.argv[1])
out = []
for d in json.load(sys.stdin):
    out.append(hook.verify(d["body"], d["headers"]))
# A tampered body must not verify.
d = json.load(open(sys.argv[2]))[0]
try:
    hook.verify(d["body"].replace("customer", "custom3r"), d["headers"])
    raise SystemExit("a tampered body verified")
except Exception as e:
    if isinstance(e, SystemExit):
        raise
print(json.dumps(out))
"#;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deliveries.json");
    std::fs::write(&file, serde_json::to_string(&input).unwrap()).unwrap();
    let python = std::env::var("CREDITBOOK_TEST_STRIPE_PYTHON")
        .expect("run the tests with scripts/test, which installs standardwebhooks");
    let output = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(secret)
        .arg(&file)
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "standardwebhooks refused a delivery: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Waits until `done` holds of the deliveries (at most 20 s).
async fn wait_for(
    receiver: &Receiver,
    what: &str,
    done: impl Fn(&[Delivery]) -> bool,
) -> Vec<Delivery> {
    for _ in 0..400 {
        let deliveries = receiver.deliveries.lock().unwrap().clone();
        if done(&deliveries) {
            return deliveries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "timed out waiting for {what}: {:#?}",
        receiver.deliveries.lock().unwrap()
    );
}

/// Messages accepted (2xx), in order of acceptance: (id, type).
fn accepted(deliveries: &[Delivery]) -> Vec<(String, String)> {
    deliveries
        .iter()
        .filter(|d| d.status < 300)
        .map(|d| {
            let body: Value = serde_json::from_str(&d.body).unwrap();
            (d.id.clone(), body["type"].as_str().unwrap().to_owned())
        })
        .collect()
}

async fn outbox(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, page) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/outbox{query}"),
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["messages"].as_array().unwrap().clone()
}

async fn use_credits(app: &TestApp, customer: &str, credits: u32) {
    // `chat.request` costs 1 credit a unit in the example catalog.
    let (status, body) = app
        .usage(
            customer,
            "chat.request",
            json!(credits),
            &uuid::Uuid::new_v4().to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn alerts_are_signed_retried_and_delivered_once(engine: Engine) {
    let (url, receiver) = start_receiver(Behaviour::FailFirst).await;
    let secret = secret();
    let app = spawn_with_webhook(engine, &url, &secret, 600).await;
    app.promo("acme", "100").await;
    use_credits(&app, "acme", 79).await;
    // 79% consumed: nothing yet. 80%: low. All of it: depleted.
    use_credits(&app, "acme", 1).await;
    use_credits(&app, "acme", 20).await;
    // A top-up recovers and re-arms; the next crossing is a new message.
    app.promo("acme", "100").await;
    use_credits(&app, "acme", 85).await;
    let deliveries = wait_for(&receiver, "four alerts accepted", |d| {
        accepted(d).len() == 4
    })
    .await;
    // Written in the order they happened (the outbox lists oldest first); delivered in any order,
    // since each message is retried on its own.
    let expected = [
        "credit.balance_low",
        "credit.balance_depleted",
        "credit.balance_recovered",
        "credit.balance_low",
    ];
    let written: Vec<Value> = outbox(&app, "").await;
    let written_types: Vec<&str> = written
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(written_types, expected);
    let mut types: Vec<String> = accepted(&deliveries).into_iter().map(|(_, t)| t).collect();
    types.sort();
    let mut sorted = expected.map(str::to_owned).to_vec();
    sorted.sort();
    assert_eq!(types, sorted);
    // Each message failed once and was sent again with the same id; the two lows are distinct.
    let ids: Vec<String> = accepted(&deliveries)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        4
    );
    for id in &ids {
        let attempts: Vec<u16> = deliveries
            .iter()
            .filter(|d| &d.id == id)
            .map(|d| d.status)
            .collect();
        assert_eq!(attempts.len(), 2, "{id}: {attempts:?}");
        assert!(
            attempts[0] >= 500 && attempts[1] == 204,
            "{id}: {attempts:?}"
        );
    }
    // The first message tried was refused with `Retry-After: 1`: its retry waited that long.
    let first: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| d.id == deliveries[0].id)
        .collect();
    let waited =
        first[1].timestamp.parse::<i64>().unwrap() - first[0].timestamp.parse::<i64>().unwrap();
    assert!(waited >= 1, "Retry-After honoured: waited {waited} s");
    // Every attempt verifies with the specification's library, and says what happened.
    let verified = verify_with_standard_webhooks(&secret, &deliveries);
    assert_eq!(verified.len(), deliveries.len());
    let mut lows: Vec<(String, String)> = verified
        .iter()
        .filter(|v| v["type"] == "credit.balance_low")
        .map(|v| {
            assert_eq!(v["data"]["customer"], "acme");
            (
                v["data"]["available"].as_str().unwrap().to_owned(),
                v["data"]["consumed_share"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    lows.sort();
    lows.dedup();
    assert_eq!(
        lows,
        [("15".into(), "0.85".into()), ("20".into(), "0.8".into())]
    );
    let depleted = verified
        .iter()
        .find(|v| v["type"] == "credit.balance_depleted")
        .unwrap();
    assert_eq!(depleted["data"]["available"], "0");
    // The outbox says the same: four delivered rows, two attempts each.
    let rows = outbox(&app, "?status=delivered").await;
    assert_eq!(rows.len(), 4, "{rows:#?}");
    for row in &rows {
        assert_eq!(row["attempts"], 2);
        assert_eq!(row["destination"], url);
        assert!(row["last_error"].is_null());
        assert!(ids.contains(&row["message_id"].as_str().unwrap().to_owned()));
    }
    assert!(outbox(&app, "?status=pending").await.is_empty());
    // Pages of one.
    let (_, page) = app
        .call(
            reqwest::Method::GET,
            "/v1/outbox?limit=1",
            Some(&app.admin_key),
            None,
        )
        .await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = outbox(&app, &format!("?limit=1&cursor={cursor}")).await;
    assert_ne!(next[0]["id"], page["messages"][0]["id"]);
    // Nothing more arrives: no message was sent twice once accepted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(accepted(&receiver.deliveries.lock().unwrap()).len(), 4);
    // The gauges are read by the jobs (a scrape reads no table): a run, as the test clock makes.
    app.advance(app.now() + chrono::Duration::seconds(1)).await;
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("creditbook_outbox_messages{status=\"delivered\"} 4"),
        "{metrics}"
    );
    assert!(metrics.contains("creditbook_webhook_deliveries_total{result=\"delivered\"} 4"));
    assert!(metrics.contains("creditbook_webhook_deliveries_total{result=\"failed\"} 4"));
    app.assert_audit_clean().await;
}
for_each_engine!(alerts_are_signed_retried_and_delivered_once);

async fn alerts_fire_once_under_concurrency(engine: Engine) {
    let (url, receiver) = start_receiver(Behaviour::Accept).await;
    let app = Arc::new(spawn_with_webhook(engine, &url, &secret(), 600).await);
    app.promo("busy", "100").await;
    // 100 concurrent usages of one credit each: the balance crosses 80% and 0 once each.
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { use_credits(&app, "busy", 1).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let deliveries = wait_for(&receiver, "two alerts", |d| accepted(d).len() >= 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deliveries = {
        let now = receiver.deliveries.lock().unwrap().clone();
        assert!(now.len() >= deliveries.len());
        now
    };
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for (_, t) in accepted(&deliveries) {
        *by_type.entry(t).or_default() += 1;
    }
    assert_eq!(
        by_type,
        BTreeMap::from([
            ("credit.balance_depleted".to_owned(), 1),
            ("credit.balance_low".to_owned(), 1)
        ])
    );
    assert_eq!(app.balances("busy").await.2, "0");
    app.assert_audit_clean().await;
}
for_each_engine!(alerts_fire_once_under_concurrency);

async fn a_message_given_up_is_dead_until_replayed(engine: Engine) {
    let (url, receiver) = start_receiver(Behaviour::AlwaysFail).await;
    let app = spawn_with_webhook(engine, &url, &secret(), 1).await;
    app.promo("gone", "10").await;
    use_credits(&app, "gone", 10).await;
    // Low and depleted, retried until the 1 s window closes, then dead.
    let mut dead = Vec::new();
    for _ in 0..200 {
        dead = outbox(&app, "?status=dead").await;
        if dead.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 2, "{dead:#?}");
    assert!(dead[0]["attempts"].as_i64().unwrap() >= 2);
    assert_eq!(dead[0]["last_error"], "the endpoint answered 500");
    let tried = receiver.deliveries.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.deliveries.lock().unwrap().len(),
        tried,
        "a dead message is not retried"
    );
    // The operator fixes the endpoint and replays one: it is delivered, with the same id.
    *receiver.behaviour.lock().unwrap() = Behaviour::Accept;
    let id = dead[0]["id"].as_str().unwrap();
    let (status, replayed) = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/outbox/{id}/replay"),
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replayed}");
    assert_eq!(replayed["status"], "pending");
    let deliveries = wait_for(&receiver, "the replay", |d| !accepted(d).is_empty()).await;
    assert_eq!(accepted(&deliveries)[0].0, dead[0]["message_id"]);
    assert_eq!(outbox(&app, "?status=dead").await.len(), 1);
    // Unknown ids, bad filters and other scopes are refused.
    let (status, problem) = app
        .call(
            reqwest::Method::POST,
            "/v1/outbox/nope/replay",
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (StatusCode::NOT_FOUND, Some("outbox_message_not_found"))
    );
    for query in ["?status=lost", "?cursor=12", "?limit=0", "?colour=red"] {
        let (status, problem) = app
            .call(
                reqwest::Method::GET,
                &format!("/v1/outbox{query}"),
                Some(&app.admin_key),
                None,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {problem}"
        );
    }
    let (status, _) = app
        .call(reqwest::Method::GET, "/v1/outbox", Some(&app.app_key), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
for_each_engine!(a_message_given_up_is_dead_until_replayed);

async fn a_hard_limit_holds_under_concurrency_and_says_so_once(engine: Engine) {
    let (url, receiver) = start_receiver(Behaviour::Accept).await;
    let secret = secret();
    let app = Arc::new(spawn_with_webhook(engine, &url, &secret, 600).await);
    app.promo("capped", "1000").await;
    let (status, set) = app
        .call(
            reqwest::Method::PUT,
            "/v1/customers/capped/limits",
            Some(&app.app_key),
            Some(json!({"limits": [
                {"period": "day", "credits": "50", "mode": "hard"},
                {"period": "month", "credits": "30", "feature": "chat", "mode": "soft"},
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    // 100 concurrent requests of one credit each, half holds and half usages: exactly 50 pass,
    // held credits counting as spent.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    app.authorize("capped", "chat.request", json!(1)).await
                } else {
                    app.usage(
                        "capped",
                        "chat.request",
                        json!(1),
                        &uuid::Uuid::new_v4().to_string(),
                    )
                    .await
                }
            })
        })
        .collect();
    let mut passed = 0;
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => passed += 1,
            StatusCode::PAYMENT_REQUIRED => assert_eq!(body["type"], "spend_limit_reached"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(passed, 50);
    let customer = app.customer("capped").await;
    let day = &customer["limits"][0];
    let (spent, held) = (
        day["spent"].as_str().unwrap().parse::<u32>().unwrap(),
        day["held"].as_str().unwrap().parse::<u32>().unwrap(),
    );
    assert_eq!((spent + held, &day["remaining"]), (50, &json!("0")));
    assert_eq!(customer["held"], held.to_string());
    assert_eq!(customer["available"], "950");
    // Each limit said so once: the hard one when reached, the soft one when 30 were used.
    wait_for(&receiver, "two limits reached", |d| accepted(d).len() >= 2).await;
    let deliveries = after_a_pause(&receiver).await;
    let verified = verify_with_standard_webhooks(&secret, &deliveries);
    let mut reached: Vec<(String, String)> = verified
        .iter()
        .map(|v| {
            assert_eq!(v["type"], "spend_limit.reached", "{v}");
            assert_eq!(v["data"]["customer"], "capped");
            (
                v["data"]["period"].as_str().unwrap().to_owned(),
                v["data"]["mode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    reached.sort();
    assert_eq!(
        reached,
        [
            ("day".to_owned(), "hard".to_owned()),
            ("month".to_owned(), "soft".to_owned())
        ]
    );
    app.assert_audit_clean().await;
}
for_each_engine!(a_hard_limit_holds_under_concurrency_and_says_so_once);

/// Every delivery so far, after a pause long enough for any stray second delivery to arrive.
async fn after_a_pause(receiver: &Receiver) -> Vec<Delivery> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    receiver.deliveries.lock().unwrap().clone()
}

async fn a_paid_grant_about_to_expire_is_warned_of_once(engine: Engine) {
    let (url, receiver) = start_receiver(Behaviour::Accept).await;
    let secret = secret();
    let app = spawn_with_webhook(engine, &url, &secret, 600).await;
    let start = app.now();
    let days = |n: i64| (start + chrono::Duration::days(n)).to_rfc3339();
    // A paid pack with credits left, expiring in 10 days; a free grant and a spent paid one,
    // both expiring in 5 days, are never warned of.
    let pack = app
        .grant(
            "expiring",
            json!({"kind": "pack", "pack": "topup_small", "expires_at": days(10),
                   "idempotency_key": "pack-1"}),
        )
        .await;
    app.grant(
        "expiring",
        json!({"kind": "promotional", "credits": "5", "expires_at": days(5),
               "idempotency_key": "promo-1"}),
    )
    .await;
    app.grant(
        "spent",
        json!({"kind": "pack", "pack": "topup_small", "expires_at": days(5),
               "idempotency_key": "pack-2"}),
    )
    .await;
    let all = app.balances("spent").await.2;
    let (status, body) = app
        .usage(
            "spent",
            "chat.request",
            json!(all.parse::<u32>().unwrap()),
            "use-all",
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Within 7 days of its expiry: one warning, however often the jobs run.
    app.advance(start + chrono::Duration::days(3) + chrono::Duration::seconds(1))
        .await;
    app.advance(start + chrono::Duration::days(4)).await;
    app.advance(start + chrono::Duration::days(6)).await;
    let expiring = |d: &[Delivery]| {
        accepted(d)
            .into_iter()
            .filter(|(_, t)| t == "credit.grant_expiring")
            .count()
    };
    wait_for(&receiver, "the warning", |d| expiring(d) >= 1).await;
    let deliveries = after_a_pause(&receiver).await;
    assert_eq!(expiring(&deliveries), 1, "{deliveries:#?}");
    let verified = verify_with_standard_webhooks(&secret, &deliveries);
    let warning = verified
        .iter()
        .find(|v| v["type"] == "credit.grant_expiring")
        .unwrap();
    assert_eq!(warning["data"]["customer"], "expiring");
    assert_eq!(warning["data"]["grant"], pack);
    assert_eq!(warning["data"]["pack"], "topup_small");
    let remaining = app.customer("expiring").await["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == pack)
        .unwrap()["remaining"]
        .clone();
    assert_eq!(warning["data"]["remaining"], remaining);
    app.assert_audit_clean().await;
}
for_each_engine!(a_paid_grant_about_to_expire_is_warned_of_once);

async fn a_plan_s_own_threshold_decides_its_customers_low(engine: Engine) {
    let (url, receiver) = start_receiver(Behaviour::Accept).await;
    let app = spawn_with_webhook_and(engine, &url, &secret(), 600, |config| {
        let pro = config.catalog.plans.get_mut("pro").unwrap();
        pro.low_balance = Some(creditbook::domain::alerts::LowBalance {
            consumed_share: Some("0.5".parse().unwrap()),
            credits: None,
        });
    })
    .await;
    for customer in ["on_pro", "no_plan"] {
        app.promo(customer, "100").await;
    }
    app.set_plan_without_its_credits("on_pro", "pro").await;
    // Half used: low on pro (50%), not without a plan (80% by default).
    for customer in ["on_pro", "no_plan"] {
        use_credits(&app, customer, 50).await;
    }
    wait_for(&receiver, "the low alert", |d| !accepted(d).is_empty()).await;
    let deliveries = after_a_pause(&receiver).await;
    let said: Vec<(String, String)> = deliveries
        .iter()
        .map(|d| {
            let body: Value = serde_json::from_str(&d.body).unwrap();
            (
                body["data"]["customer"].as_str().unwrap().to_owned(),
                body["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        said,
        [("on_pro".to_owned(), "credit.balance_low".to_owned())]
    );
    app.assert_audit_clean().await;
}
for_each_engine!(a_plan_s_own_threshold_decides_its_customers_low);

/// A pack's thresholds decide for customers without a plan's or their own: `topup_small` warns at
/// 900 credits left, `topup_large` keeps the default 80%. Each customer uses 150 credits of its
/// pack; only the one on `topup_small` is low. Its own threshold then wins over the pack's.
async fn a_pack_s_threshold_decides_its_buyers_low(engine: Engine) {
    let (url, receiver) = start_receiver(Behaviour::Accept).await;
    let secret = secret();
    let app = spawn_with_webhook_and(engine, &url, &secret, 600, |config| {
        let small = config.catalog.packs.get_mut("topup_small").unwrap();
        small.low_balance = Some(creditbook::domain::alerts::LowBalance {
            consumed_share: None,
            credits: Some(creditbook::domain::money::Credits::new("900".parse().unwrap()).unwrap()),
        });
    })
    .await;
    app.grant("on_small", json!({"kind": "pack", "pack": "topup_small"}))
        .await;
    app.grant("on_large", json!({"kind": "pack", "pack": "topup_large"}))
        .await;
    for customer in ["on_small", "on_large"] {
        use_credits(&app, customer, 150).await;
    }
    wait_for(&receiver, "the low alert", |d| !accepted(d).is_empty()).await;
    let deliveries = after_a_pause(&receiver).await;
    let said: Vec<Value> = verify_with_standard_webhooks(&secret, &deliveries);
    let said: Vec<(&str, &str)> = said
        .iter()
        .map(|b| {
            (
                b["data"]["customer"].as_str().unwrap(),
                b["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(said, [("on_small", "credit.balance_low")]);
    // The answer to a customer's own thresholds says the pack's are in force until then.
    let (status, answer) = app
        .call(
            reqwest::Method::PUT,
            "/v1/customers/on_large/alert-thresholds",
            Some(&app.admin_key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer["effective_credits"].is_null(), "{answer}");
    let (status, answer) = app
        .call(
            reqwest::Method::PUT,
            "/v1/customers/on_small/alert-thresholds",
            Some(&app.admin_key),
            Some(json!({"low_balance_credits": "100"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["effective_credits"], "100", "{answer}");
    app.assert_audit_clean().await;
}
for_each_engine!(a_pack_s_threshold_decides_its_buyers_low);

/// A customer's own threshold wins over its plan's: 50% for one customer on `pro` whose plan
/// warns at 90%, none for another on `pro`; bad thresholds are refused and change nothing.
async fn a_customer_s_own_threshold_decides_its_low(engine: Engine) {
    let (url, receiver) = start_receiver(Behaviour::Accept).await;
    let secret = secret();
    let app = spawn_with_webhook_and(engine, &url, &secret, 600, |config| {
        let pro = config.catalog.plans.get_mut("pro").unwrap();
        pro.low_balance = Some(creditbook::domain::alerts::LowBalance {
            consumed_share: Some("0.9".parse().unwrap()),
            credits: None,
        });
        // Its thresholds, judged on the customers' own credits: no allowance of its own.
        pro.credits = creditbook::domain::Credits::ZERO;
    })
    .await;
    for customer in ["own", "plan_only"] {
        app.promo(customer, "100").await;
        app.set_plan(customer, "pro").await;
    }
    let put = |customer: &'static str, body: Value| {
        let app = &app;
        async move {
            app.call(
                reqwest::Method::PUT,
                &format!("/v1/customers/{customer}/alert-thresholds"),
                Some(&app.app_key),
                Some(body),
            )
            .await
        }
    };
    for (body, field) in [
        (
            json!({"low_balance_consumed_share": "1.5"}),
            "low_balance_consumed_share",
        ),
        (
            json!({"low_balance_consumed_share": "0"}),
            "low_balance_consumed_share",
        ),
        (json!({"low_balance_credits": "-5"}), "low_balance_credits"),
        (json!({"low_balance_share": "0.5"}), "low_balance_share"),
    ] {
        let (status, problem) = put("own", body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let (status, _) = put("nobody", json!({"low_balance_consumed_share": "0.5"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, set) = put("own", json!({"low_balance_consumed_share": "0.5"})).await;
    assert_eq!(status, StatusCode::OK, "{set}");
    assert_eq!(
        (
            &set["effective_consumed_share"],
            &set["low_balance_credits"]
        ),
        (&json!("0.5"), &Value::Null)
    );
    // Half used: low for the customer at 50%, not for its neighbour at its plan's 90%.
    for customer in ["own", "plan_only"] {
        use_credits(&app, customer, 50).await;
    }
    wait_for(&receiver, "the low alert", |d| !accepted(d).is_empty()).await;
    let deliveries = after_a_pause(&receiver).await;
    let said: Vec<(String, String)> = verify_with_standard_webhooks(&secret, &deliveries)
        .iter()
        .map(|body| {
            (
                body["data"]["customer"].as_str().unwrap().to_owned(),
                body["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(said, [("own".to_owned(), "credit.balance_low".to_owned())]);
    // Removed: back to the plan's.
    let (status, cleared) = put("own", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert_eq!(cleared["effective_consumed_share"], "0.9");
    app.assert_audit_clean().await;
}
for_each_engine!(a_customer_s_own_threshold_decides_its_low);

/// Posts a Stripe event (signed now) and returns its outcome.
async fn stripe_event(app: &TestApp, id: &str, kind: &str, object: Value) -> String {
    let body = common::stripe_event(id, kind, app.now().timestamp(), object);
    let (status, value) = app.webhook(&body).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value["outcome"].as_str().unwrap().to_owned()
}

async fn auto_topup(app: &TestApp, customer: &str) -> Value {
    let (status, view) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/customers/{customer}/auto-topup"),
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view
}

async fn set_auto_topup(app: &TestApp, customer: &str, body: Value) -> (StatusCode, Value) {
    app.call(
        reqwest::Method::PUT,
        &format!("/v1/customers/{customer}/auto-topup"),
        Some(&app.admin_key),
        Some(body),
    )
    .await
}

/// Waits until the customer's auto top-up is no longer charging and no charge waits in the
/// outbox.
async fn charges_settle(app: &TestApp, customer: &str) -> Value {
    for _ in 0..400 {
        let view = auto_topup(app, customer).await;
        let waiting = outbox(app, &format!("?customer={customer}&status=pending"))
            .await
            .iter()
            .any(|m| m["kind"] == "stripe_payment_intent");
        let asked = view["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["status"] != "pending" || !a["payment_intent"].is_null());
        if !waiting && asked {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "charges did not settle: {}",
        auto_topup(app, customer).await
    );
}

/// An app charging through the Stripe stand-in, its outbox giving up after `dead_after_seconds`,
/// and `acct_{x}` linked to `cus_{x}` (card `pm_card_{x}`) by buying `topup_small` (1,000 credits
/// for $10) at checkout.
async fn auto_topup_app(
    engine: Engine,
    dead_after_seconds: u64,
    x: &str,
) -> (TestApp, Receiver, String, common::stand_in::StandIn) {
    let (url, receiver) = start_receiver(Behaviour::Accept).await;
    let secret = secret();
    let (base, stand_in) = common::stand_in::spawn(BTreeMap::new()).await;
    let app = spawn_with_webhook_and(engine, &url, &secret, dead_after_seconds, move |config| {
        config.stripe.api_key = Some(common::stand_in::API_KEY.into());
        config.stripe.api_base = Some(base);
    })
    .await;
    stand_in
        .payment_methods
        .lock()
        .unwrap()
        .insert(format!("cus_{x}"), format!("pm_card_{x}"));
    let bought = stripe_event(
        &app,
        &format!("evt_{x}_checkout"),
        "checkout.session.completed",
        json!({"id": format!("cs_{x}"), "object": "checkout.session", "mode": "payment",
               "payment_status": "paid", "customer": format!("cus_{x}"),
               "client_reference_id": format!("acct_{x}"), "amount_total": 1000,
               "currency": "usd", "payment_intent": format!("pi_checkout_{x}"),
               "metadata": {"creditbook_pack": "topup_small"}}),
    )
    .await;
    assert_eq!(bought, "applied");
    (app, receiver, secret, stand_in)
}

/// Auto top-up end to end. `acct_t` buys `topup_small` (1,000 credits for $10) at checkout, which
/// links it to `cus_t` and saves a card; it opts in below 200 credits, at most 2 a month. 100
/// concurrent usages take it to 100: one charge starts (Stripe down once, then its answer lost:
/// three requests under one idempotency key, one payment intent). Its `payment_intent.succeeded`
/// grants the pack once however often it arrives. The next charge is declined: it fails once,
/// says `auto_topup.failed` (verified with `standardwebhooks`), and nothing more is charged
/// until the customer sets it again; then the month's limit holds.
async fn auto_topup_charges_once_and_stops_after_a_failure(engine: Engine) {
    let (app, receiver, secret, stand_in) = auto_topup_app(engine, 3_600, "t").await;
    assert_eq!(app.balances("acct_t").await.0, "1000");
    app.promo("acct_unlinked", "10").await;

    // Refused, and nothing changed.
    let setting = json!({"threshold": "200", "pack": "topup_small", "monthly_limit": 2});
    for (customer, body, status, problem, field) in [
        (
            "acct_t",
            json!({"threshold": "0", "pack": "topup_small", "monthly_limit": 2}),
            422,
            "invalid_request",
            Some("threshold"),
        ),
        (
            "acct_t",
            json!({"threshold": "200", "pack": "topup_huge", "monthly_limit": 2}),
            422,
            "invalid_request",
            Some("pack"),
        ),
        (
            "acct_t",
            json!({"threshold": "200", "pack": "topup_small", "monthly_limit": 0}),
            422,
            "invalid_request",
            Some("monthly_limit"),
        ),
        (
            "acct_t",
            json!({"threshold": "200", "pack": "topup_small", "monthly_limit": "2"}),
            422,
            "invalid_request",
            Some("monthly_limit"),
        ),
        (
            "acct_t",
            json!({"threshold": "200", "pack": "topup_small", "monthly_limt": 2}),
            422,
            "invalid_request",
            Some("monthly_limt"),
        ),
        (
            "acct_t",
            json!({"threshold": 0.5, "pack": "topup_small", "monthly_limit": 2}),
            422,
            "invalid_request",
            Some("threshold"),
        ),
        (
            "acct_nobody",
            setting.clone(),
            404,
            "customer_not_found",
            None,
        ),
        (
            "acct_unlinked",
            setting.clone(),
            409,
            "auto_topup_unavailable",
            None,
        ),
    ] {
        let (got, problem_body) = set_auto_topup(&app, customer, body.clone()).await;
        assert_eq!(got.as_u16(), status, "{body}: {problem_body}");
        assert!(
            problem_body["type"].as_str().unwrap().ends_with(problem),
            "{problem_body}"
        );
        if let Some(field) = field {
            assert_eq!(problem_body["field"], field, "{problem_body}");
        }
    }
    let (status, refused) = app
        .call(
            reqwest::Method::PUT,
            "/v1/customers/acct_t/auto-topup",
            Some(&app.app_key),
            Some(setting.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(auto_topup(&app, "acct_t").await["status"], "off");

    let (status, view) = set_auto_topup(&app, "acct_t", setting.clone()).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["status"], "active");
    assert_eq!(view["setting"]["threshold"], "200");
    assert!(view["attempts"].as_array().unwrap().is_empty());

    // 100 concurrent usages of 9 credits: 1,000 → 100, one charge.
    *stand_in.charge_down.lock().unwrap() = 1;
    *stand_in.charge_answers_lost.lock().unwrap() = 1;
    let uses = (0..100).map(|_| use_credits(&app, "acct_t", 9));
    futures::future::join_all(uses).await;
    let view = charges_settle(&app, "acct_t").await;
    assert_eq!(view["status"], "charging", "{view}");
    let attempts = view["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{view}");
    let first = attempts[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(view["in_flight"], first.as_str());
    assert_eq!(
        (attempts[0]["pack"].as_str(), attempts[0]["amount"].as_str()),
        (Some("topup_small"), Some("10"))
    );
    let intents = stand_in.payment_intents.lock().unwrap().clone();
    assert_eq!(intents.len(), 1, "{intents:#?}");
    assert_eq!(attempts[0]["payment_intent"], intents[0]["id"]);
    assert_eq!(intents[0]["amount"], 1000);
    assert_eq!(intents[0]["payment_method"], "pm_card_t");
    assert_eq!(
        intents[0]["metadata"]["creditbook_auto_topup"],
        first.as_str()
    );
    assert_eq!(
        *stand_in.charge_requests.lock().unwrap(),
        vec![first.clone(), first.clone(), first.clone()]
    );
    // Stripe acknowledged the charge: its row is never sent again, however asked.
    let (_, rows) = app
        .call(
            reqwest::Method::GET,
            "/v1/outbox?customer=acct_t",
            Some(&app.admin_key),
            None,
        )
        .await;
    let charge_row = rows["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "stripe_payment_intent")
        .expect("the charge's row")
        .clone();
    assert_eq!(charge_row["status"], "delivered", "{charge_row}");
    let (status, refused) = app
        .post_admin(
            &format!(
                "/v1/outbox/{}/replay?absent_in_stripe=true",
                charge_row["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(
        (status, refused["type"].as_str()),
        (StatusCode::CONFLICT, Some("outbox_already_delivered")),
        "{refused}"
    );
    assert_eq!(stand_in.charge_requests.lock().unwrap().len(), 3);
    // In flight: a further fall starts nothing.
    use_credits(&app, "acct_t", 50).await;
    assert_eq!(
        charges_settle(&app, "acct_t").await["attempts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The money taken: the credits arrive once.
    let intent = intents[0].clone();
    let paid = stripe_event(
        &app,
        "evt_t_pi1",
        "payment_intent.succeeded",
        intent.clone(),
    )
    .await;
    assert_eq!(paid, "applied");
    assert_eq!(
        stripe_event(
            &app,
            "evt_t_pi1",
            "payment_intent.succeeded",
            intent.clone()
        )
        .await,
        "duplicate"
    );
    assert_eq!(
        stripe_event(
            &app,
            "evt_t_pi1b",
            "payment_intent.succeeded",
            intent.clone()
        )
        .await,
        "applied"
    );
    assert_eq!(app.balances("acct_t").await.0, "1050");
    let view = auto_topup(&app, "acct_t").await;
    assert_eq!(
        (
            &view["status"],
            &view["attempts"][0]["status"],
            &view["started_this_month"]
        ),
        (&json!("active"), &json!("succeeded"), &json!(1)),
        "{view}"
    );
    // A payment intent that is not an automatic top-up's is left to its own checkout's event.
    let other = json!({"id": "pi_checkout_t", "object": "payment_intent", "amount": 1000,
        "amount_received": 1000, "currency": "usd", "customer": "cus_t", "metadata": {}});
    assert_eq!(
        stripe_event(&app, "evt_t_pi_other", "payment_intent.succeeded", other).await,
        "ignored"
    );
    assert_eq!(app.balances("acct_t").await.0, "1050");

    // Declined: failed once, told once, stopped.
    stand_in.declining.lock().unwrap().push("cus_t".into());
    use_credits(&app, "acct_t", 900).await;
    let view = charges_settle(&app, "acct_t").await;
    assert_eq!(view["status"], "stopped", "{view}");
    let second = view["attempts"][0]["id"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    assert_eq!(view["attempts"][0]["status"], "failed");
    assert_eq!(view["attempts"][0]["failure_code"], "insufficient_funds");
    assert_eq!(view["stopped"]["attempt"], second.as_str());
    assert_eq!(
        view["started_this_month"], 1,
        "a failed charge is not counted"
    );
    wait_for(&receiver, "auto_topup.failed", |d| {
        accepted(d).iter().any(|(_, t)| t == "auto_topup.failed")
    })
    .await;
    use_credits(&app, "acct_t", 10).await;
    let failed = json!({"id": "pi_declined_t", "object": "payment_intent", "amount": 1000,
        "currency": "usd", "customer": "cus_t", "status": "requires_payment_method",
        "metadata": {"creditbook_auto_topup": second, "creditbook_customer": "acct_t",
                     "creditbook_pack": "topup_small"},
        "last_payment_error": {"code": "card_declined", "decline_code": "insufficient_funds",
                               "message": "Your card has insufficient funds."}});
    assert_eq!(
        stripe_event(
            &app,
            "evt_t_failed",
            "payment_intent.payment_failed",
            failed
        )
        .await,
        "applied"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deliveries = receiver.deliveries.lock().unwrap().clone();
    let told: Vec<Value> = verify_with_standard_webhooks(&secret, &deliveries)
        .into_iter()
        .filter(|b| b["type"] == "auto_topup.failed")
        .collect();
    assert_eq!(told.len(), 1, "{told:#?}");
    assert_eq!(told[0]["data"]["customer"], "acct_t");
    assert_eq!(told[0]["data"]["attempt"], second.as_str());
    assert_eq!(told[0]["data"]["pack"], "topup_small");
    assert_eq!(told[0]["data"]["code"], "insufficient_funds");
    assert_eq!(
        told[0]["data"]["reason"],
        "Your card has insufficient funds."
    );
    assert_eq!(stand_in.payment_intents.lock().unwrap().len(), 1);
    assert_eq!(stand_in.charge_requests.lock().unwrap().len(), 4);
    assert_eq!(app.balances("acct_t").await.0, "140");

    // The customer acts (a new card): set again below the threshold, a charge starts at once;
    // it is the month's second, so the next fall starts none.
    stand_in.declining.lock().unwrap().clear();
    let (status, view) = set_auto_topup(&app, "acct_t", setting).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    let view = charges_settle(&app, "acct_t").await;
    assert_eq!(view["status"], "charging", "{view}");
    let intents = stand_in.payment_intents.lock().unwrap().clone();
    assert_eq!(intents.len(), 2);
    assert_eq!(
        stripe_event(
            &app,
            "evt_t_pi3",
            "payment_intent.succeeded",
            intents[1].clone()
        )
        .await,
        "applied"
    );
    assert_eq!(app.balances("acct_t").await.0, "1140");
    use_credits(&app, "acct_t", 1000).await;
    let view = charges_settle(&app, "acct_t").await;
    assert_eq!(
        (&view["status"], &view["started_this_month"]),
        (&json!("active"), &json!(2)),
        "{view}"
    );
    assert_eq!(view["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(stand_in.payment_intents.lock().unwrap().len(), 2);

    // Turned off.
    let (status, view) = set_auto_topup(&app, "acct_t", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["status"], "off");
    assert!(view["setting"].is_null());
    app.assert_audit_clean().await;
}

for_each_engine!(auto_topup_charges_once_and_stops_after_a_failure);

/// Stripe unreachable for the whole retry window: the charge is given up, the attempt fails with
/// `stripe_unreachable`, `auto_topup.failed` says so, and nothing more is asked.
async fn an_auto_top_up_stripe_never_answers_fails(engine: Engine) {
    let (app, receiver, secret, stand_in) = auto_topup_app(engine, 1, "d").await;
    *stand_in.charge_down.lock().unwrap() = u32::MAX;
    let (status, view) = set_auto_topup(
        &app,
        "acct_d",
        json!({"threshold": "500", "pack": "topup_small", "monthly_limit": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    use_credits(&app, "acct_d", 600).await;
    wait_for(&receiver, "auto_topup.failed", |d| {
        accepted(d).iter().any(|(_, t)| t == "auto_topup.failed")
    })
    .await;
    let view = charges_settle(&app, "acct_d").await;
    assert_eq!(view["status"], "stopped", "{view}");
    assert_eq!(view["stopped"]["code"], "stripe_unreachable", "{view}");
    assert_eq!(view["attempts"][0]["status"], "failed");
    let tried = stand_in.charge_requests.lock().unwrap().len();
    assert!(tried >= 2, "retried before giving up: {tried}");
    let rows = outbox(&app, "?customer=acct_d").await;
    let charge = rows
        .iter()
        .find(|m| m["kind"] == "stripe_payment_intent")
        .unwrap();
    assert_eq!(charge["status"], "dead", "{charge}");
    let deliveries = receiver.deliveries.lock().unwrap().clone();
    let told = verify_with_standard_webhooks(&secret, &deliveries);
    let failed: Vec<&Value> = told
        .iter()
        .filter(|b| b["type"] == "auto_topup.failed")
        .collect();
    assert_eq!(failed.len(), 1, "{told:#?}");
    assert_eq!(failed[0]["data"]["code"], "stripe_unreachable");
    // Stopped: a further fall asks nothing of Stripe.
    use_credits(&app, "acct_d", 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stand_in.charge_requests.lock().unwrap().len(), tried);
    assert!(stand_in.payment_intents.lock().unwrap().is_empty());
    app.assert_audit_clean().await;
}

for_each_engine!(an_auto_top_up_stripe_never_answers_fails);
