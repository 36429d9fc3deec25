//! `spawn_app()`: a real server on a fresh database (SQLite file or PostgreSQL database), with
//! the test clock, the example catalog and keys of every scope.
#![allow(dead_code)]

pub mod process;
pub mod stand_in;

use creditbook::config::Config;
use creditbook::store::Store;
use creditbook::store::keys::Scope;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub app_key: String,
    pub admin_key: String,
    pub finance_key: String,
    pub store: Store,
    pub database_url: String,
    pub engine: Engine,
    pub clock: creditbook::clock::TestClock,
    pub config: Config,
    _dir: tempfile::TempDir,
}

/// The PostgreSQL server the tests use; `scripts/test` starts one and sets this.
pub fn postgres_admin_url() -> String {
    std::env::var("CREDITBOOK_TEST_POSTGRES_URL").expect(
        "CREDITBOOK_TEST_POSTGRES_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
    )
}

/// A fresh, empty database of `engine`; its URL.
pub async fn fresh_database(engine: Engine, dir: &std::path::Path) -> String {
    match engine {
        Engine::Sqlite => format!("sqlite://{}/creditbook.db?mode=rwc", dir.display()),
        Engine::Postgres => {
            use sea_orm::{ConnectionTrait, Database};
            let admin = postgres_admin_url();
            let now = chrono::Utc::now().timestamp();
            // When it was made is in its name, so a later run can drop what this one leaves.
            let name = format!("cb_test_{now}_{}", uuid::Uuid::new_v4().simple());
            let db = Database::connect(&admin)
                .await
                .expect("connect to the test PostgreSQL server");
            static SWEPT: std::sync::Once = std::sync::Once::new();
            let mut sweep = false;
            SWEPT.call_once(|| sweep = true);
            if sweep {
                drop_stale_databases(&db, now).await;
            }
            db.execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            db.close().await.ok();
            let (base, _) = admin.rsplit_once('/').expect("the URL names a database");
            format!("{base}/{name}")
        }
    }
}

/// Test databases older than any test run (made more than six hours ago, or named before
/// names carried the time) are dropped, once per test process: a development server otherwise
/// gathers hundreds. CI's server is thrown away with its machine.
async fn drop_stale_databases(db: &sea_orm::DatabaseConnection, now: i64) {
    use sea_orm::{ConnectionTrait, Statement};
    const STALE_SECONDS: i64 = 6 * 3600;
    let Ok(rows) = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT datname FROM pg_database WHERE datname LIKE 'cb\\_test\\_%'",
        ))
        .await
    else {
        return;
    };
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        let made = name
            .trim_start_matches("cb_test_")
            .split_once('_')
            .and_then(|(secs, _)| secs.parse::<i64>().ok());
        if made.is_none_or(|made| now - made > STALE_SECONDS) {
            // Another process may be dropping it too: whatever fails is left for the next.
            let _ = db
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// The example config, pointed at `database_url`, written into `dir`; its path.
pub fn write_example_config(dir: &std::path::Path, database_url: &str) -> std::path::PathBuf {
    let example = include_str!("../../examples/creditbook.toml");
    let path = dir.join("creditbook.toml");
    std::fs::write(
        &path,
        example.replace("sqlite://creditbook.db?mode=rwc", database_url),
    )
    .unwrap();
    path
}

/// Runs the `creditbook` binary with `--config`, without the environment's overrides.
pub fn run_cli(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_creditbook"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CREDITBOOK_DATABASE_URL")
        .env_remove("CREDITBOOK_LISTEN")
        .output()
        .expect("run creditbook")
}

pub fn example_config(database_url: &str) -> Config {
    let text = include_str!("../../examples/creditbook.toml");
    let url = database_url.to_owned();
    Config::parse(text, "examples/creditbook.toml", move |name| {
        (name == "CREDITBOOK_DATABASE_URL").then(|| url.clone())
    })
    .expect("example config")
}

pub async fn spawn_app(engine: Engine) -> TestApp {
    spawn_app_with(engine, |_| {}).await
}

/// The webhook secret every test app accepts.
pub const WEBHOOK_SECRET: &str = "whsec_test_creditbook_0123456789abcdef";

/// `spawn_app` with the config changed by `configure` first.
pub async fn spawn_app_with(engine: Engine, configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_at(engine, chrono::Utc::now(), configure).await
}

/// `spawn_app_with`, its test clock starting at `start`.
pub async fn spawn_app_at(
    engine: Engine,
    start: chrono::DateTime<chrono::Utc>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    spawn_app_delivered_at(engine, start, None, configure).await
}

/// Serves `state` on a free port: its address, store and test clock. A long job interval: tests
/// drive time through the test clock.
async fn serve(state: creditbook::http::AppState) -> (String, Store, creditbook::clock::TestClock) {
    let clock = state.test_clock.clone().expect("the test clock");
    let store = state.store.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(creditbook::serve(
        listener,
        state,
        3_600,
        std::time::Duration::from_secs(30),
        std::future::pending(),
    ));
    (address, store, clock)
}

/// A server whose business time starts at `start` and whose real time (what Stripe's signatures
/// are measured against) is `wall` when given: a recorded delivery verifies at the time it was
/// sent.
pub async fn spawn_app_delivered_at(
    engine: Engine,
    start: chrono::DateTime<chrono::Utc>,
    wall: Option<chrono::DateTime<chrono::Utc>>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let database_url = fresh_database(engine, dir.path()).await;
    let mut config = example_config(&database_url);
    config.stripe.webhook_secrets = vec![WEBHOOK_SECRET.to_owned()];
    configure(&mut config);
    let state = creditbook::build_state_with_clock(
        &config,
        Some(creditbook::clock::TestClock::starting_at(start)),
    )
    .await
    .expect("state");
    let state = match wall {
        Some(wall) => state.with_wall_clock(std::sync::Arc::new(
            creditbook::clock::TestClock::starting_at(wall),
        )),
        None => state,
    };
    let (address, store, clock) = serve(state).await;
    let now = chrono::Utc::now();
    let app_key = store.create_api_key(Scope::App, None, now).await.unwrap().1;
    let admin_key = store
        .create_api_key(Scope::Admin, None, now)
        .await
        .unwrap()
        .1;
    let finance_key = store
        .create_api_key(Scope::Finance, None, now)
        .await
        .unwrap()
        .1;
    TestApp {
        address,
        client: reqwest::Client::new(),
        app_key,
        admin_key,
        finance_key,
        store,
        database_url,
        engine,
        clock,
        config,
        _dir: dir,
    }
}

impl TestApp {
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    /// Another server on the same database, as a second instance would run: its own runner
    /// and books in memory, the same keys.
    pub async fn another_instance(&self) -> TestApp {
        let state = creditbook::build_state_with_clock(
            &self.config,
            Some(creditbook::clock::TestClock::starting_at(self.now())),
        )
        .await
        .expect("state");
        let (address, store, clock) = serve(state).await;
        TestApp {
            address,
            client: reqwest::Client::new(),
            app_key: self.app_key.clone(),
            admin_key: self.admin_key.clone(),
            finance_key: self.finance_key.clone(),
            store,
            database_url: self.database_url.clone(),
            engine: self.engine,
            clock,
            config: example_config(&self.database_url),
            _dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub async fn post_app(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(&self.app_key), Some(body))
            .await
    }

    pub async fn post_admin(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::POST,
            path,
            Some(&self.admin_key),
            Some(body),
        )
        .await
    }

    pub async fn get_app(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, Some(&self.app_key), None)
            .await
    }

    /// An admin grant; returns its id.
    pub async fn grant(&self, customer: &str, body: Value) -> String {
        let mut body = body;
        if body.get("idempotency_key").is_none() {
            body["idempotency_key"] = json!(uuid::Uuid::new_v4().to_string());
        }
        let (status, value) = self
            .post_admin(&format!("/v1/customers/{customer}/grants"), body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "grant: {value}");
        value["id"].as_str().unwrap().to_owned()
    }

    pub async fn promo(&self, customer: &str, credits: &str) -> String {
        self.grant(customer, json!({"kind": "promotional", "credits": credits}))
            .await
    }

    pub async fn set_plan(&self, customer: &str, plan: &str) {
        self.put_plan(customer, json!(plan)).await;
    }

    /// Removes the plan set through the API.
    pub async fn clear_plan(&self, customer: &str) {
        self.put_plan(customer, Value::Null).await;
    }

    async fn put_plan(&self, customer: &str, plan: Value) {
        let (status, value) = self
            .call(
                reqwest::Method::PUT,
                &format!("/v1/customers/{customer}/plan"),
                Some(&self.admin_key),
                Some(json!({"plan": plan})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{value}");
    }

    /// Sets the customer's plan, then takes back the allowance its credit cycle grants with it:
    /// for tests of a plan's rules (features, overage, thresholds) on credits of their own.
    pub async fn set_plan_without_its_credits(&self, customer: &str, plan: &str) {
        self.set_plan(customer, plan).await;
        let allowance = self.customer(customer).await["allowance"]
            .as_str()
            .expect("a plan set outside Stripe says its allowance")
            .to_owned();
        let (status, value) = self
            .post_admin(
                &format!("/v1/customers/{customer}/adjustments"),
                json!({"credits": format!("-{allowance}"), "reason": "the plan's allowance, taken back by the test",
                       "idempotency_key": uuid::Uuid::new_v4().to_string()}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{value}");
    }

    /// The journal's lines of the days `from` to `to` (`YYYY-MM-DD`), read with the finance key.
    pub async fn journal_lines(&self, from: &str, to: &str) -> Vec<Value> {
        let (status, journal) = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/revenue/journal?from={from}&to={to}"),
                Some(&self.finance_key),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{journal}");
        journal["lines"].as_array().unwrap().clone()
    }

    /// `GET …/usage?by=…` for March 2026, as totals per group (`(none)` for no group); checks
    /// that they add up to the report's total.
    pub async fn usage_by(
        &self,
        customer: &str,
        by: &str,
    ) -> std::collections::BTreeMap<String, rust_decimal::Decimal> {
        let (status, report) = self
            .get_app(&format!(
                "/v1/customers/{customer}/usage?from=2026-03-01&to=2026-03-31&by={by}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["by"], by);
        let amount = |v: &Value| -> rust_decimal::Decimal { v.as_str().unwrap().parse().unwrap() };
        let mut totals = std::collections::BTreeMap::new();
        for point in report["usage"].as_array().unwrap() {
            let group = point["group"].as_str().unwrap_or("(none)").to_owned();
            *totals.entry(group).or_default() += amount(&point["credits"]);
        }
        assert_eq!(
            totals.values().copied().sum::<rust_decimal::Decimal>(),
            amount(&report["total"])
        );
        totals
    }

    /// `PUT /v1/customers/{child}/parent` with `parent` (a customer id, or null).
    pub async fn set_parent(&self, child: &str, parent: Value) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/customers/{child}/parent"),
            Some(&self.admin_key),
            Some(json!({ "parent": parent })),
        )
        .await
    }

    pub async fn authorize(
        &self,
        customer: &str,
        action: &str,
        quantity: Value,
    ) -> (StatusCode, Value) {
        self.post_app(
            "/v1/authorizations",
            json!({"customer": customer, "action": action, "quantity": quantity, "idempotency_key": uuid::Uuid::new_v4().to_string()}),
        )
        .await
    }

    pub async fn capture(&self, hold_id: &str, body: Value) -> (StatusCode, Value) {
        self.post_app(&format!("/v1/authorizations/{hold_id}/capture"), body)
            .await
    }

    pub async fn void(&self, hold_id: &str) -> (StatusCode, Value) {
        self.post_app(&format!("/v1/authorizations/{hold_id}/void"), json!({}))
            .await
    }

    pub async fn usage(
        &self,
        customer: &str,
        action: &str,
        quantity: Value,
        key: &str,
    ) -> (StatusCode, Value) {
        self.post_app(
            "/v1/usage",
            json!({"customer": customer, "action": action, "quantity": quantity, "idempotency_key": key}),
        )
        .await
    }

    pub async fn customer(&self, customer: &str) -> Value {
        let (status, value) = self.get_app(&format!("/v1/customers/{customer}")).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        value
    }

    /// (balance, held, available) as strings.
    pub async fn balances(&self, customer: &str) -> (String, String, String) {
        let c = self.customer(customer).await;
        let s = |k: &str| c[k].as_str().unwrap().to_owned();
        (s("balance"), s("held"), s("available"))
    }

    /// Every ledger entry of a customer, newest first, following cursors.
    pub async fn ledger(&self, customer: &str) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/customers/{customer}/ledger?limit=200&cursor={c}"),
                None => format!("/v1/customers/{customer}/ledger?limit=200"),
            };
            let (status, page) = self.get_app(&path).await;
            if status == StatusCode::NOT_FOUND {
                return entries;
            }
            assert_eq!(status, StatusCode::OK, "{page}");
            entries.extend(page["entries"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return entries,
            }
        }
    }

    pub async fn advance(&self, to: chrono::DateTime<chrono::Utc>) -> Value {
        let (status, value) = self
            .post_admin("/v1/test-clock/advance", json!({"to": to}))
            .await;
        assert_eq!(status, StatusCode::OK, "{value}");
        value
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        use creditbook::clock::Clock;
        self.clock.now()
    }

    /// Posts a webhook body signed now (real time, as Stripe signs) with the test secret;
    /// (status, body).
    pub async fn webhook(&self, body: &str) -> (StatusCode, Value) {
        let header = creditbook::stripe::signature::sign(
            body.as_bytes(),
            WEBHOOK_SECRET,
            chrono::Utc::now().timestamp(),
        );
        self.webhook_with(body.as_bytes().to_vec(), Some(&header))
            .await
    }

    pub async fn webhook_with(&self, body: Vec<u8>, header: Option<&str>) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}/webhooks/stripe", self.address))
            .header("content-type", "application/json")
            .body(body);
        if let Some(header) = header {
            request = request.header("stripe-signature", header);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The id (never the key) of the test's key of `scope`.
    pub async fn key_id(&self, scope: Scope) -> String {
        self.store
            .list_api_keys()
            .await
            .unwrap()
            .into_iter()
            .find(|k| k.scope == scope)
            .expect("a key of each scope")
            .id
    }

    /// The projection agrees with the ledger (the README's ledger invariants, recomputed).
    pub async fn assert_audit_clean(&self) {
        let problems = self.store.audit().await.expect("audit");
        assert!(problems.is_empty(), "ledger audit: {problems:#?}");
    }
}

/// A test body that makes its own app from an engine, run on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! for_each_engine {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(common::Engine::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(common::Engine::Postgres).await;
            }
        }
    };
}

/// A Stripe event around `object`, as Stripe sends it (API version 2025-08-27.basil).
pub fn stripe_event(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({"id": id, "object": "event", "api_version": "2025-08-27.basil", "created": created, "livemode": false,
           "type": kind, "data": {"object": object}})
    .to_string()
}

/// Delivers a signed event and checks it was answered 200 with `outcome`.
pub async fn expect_outcome(app: &TestApp, body: &str, outcome: &str) -> Value {
    let (status, value) = app.webhook(body).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value["outcome"], outcome, "{value}");
    value
}

/// One async test body, run on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_engines {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(common::spawn_app(common::Engine::Sqlite).await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(common::spawn_app(common::Engine::Postgres).await).await;
            }
        }
    };
}
