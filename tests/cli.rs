//! The command line: config errors name the file, the key and the reason; keys are printed once
//! and stored only as their SHA-256.

mod common;

use sea_orm::EntityTrait;
use sha2::{Digest, Sha256};
use std::path::Path;

fn run(config: &Path, args: &[&str]) -> (bool, String, String) {
    let output = common::run_cli(config, args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_config_fails_with_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[plans]]\nid = \"pro\"\ncredits = \"10\"\noverage = \"allow\"\n",
            "plans[0].overage_limit: is required with overage = \"allow\"",
        ),
        (
            "[server]\nlisten = 8080\n",
            "server.listen: invalid type: integer `8080`, expected a string",
        ),
        (
            "[[features]]\nid = \"chat\"\n[[actions]]\nid = \"a\"\nfeature = \"chat\"\ncredits = \"0\"\n",
            "actions[0].credits: 0 must be greater than zero",
        ),
        (
            "[accounting]\ncurrency = \"euros\"\n",
            "accounting.currency: currency \"euros\" is not a three-letter ISO 4217 code",
        ),
        ("[serverr]\n", "unknown field `serverr`"),
        (
            "[server]\nshutdown_timeout_seconds = 0\n",
            "server.shutdown_timeout_seconds: must be between 1 and 3600",
        ),
        (
            "[server]\nmax_connections = 1001\n",
            "server.max_connections: must be between 1 and 1000",
        ),
        (
            "[server]\nacquire_timeout_seconds = 301\n",
            "server.acquire_timeout_seconds: must be between 1 and 300",
        ),
        ("[server]\nlog_format = \"xml\"\n", "server.log_format"),
        (
            "[stripe]\nwebhook_secrets = [\"\"]\n",
            "stripe.webhook_secrets[0]: is empty",
        ),
        (
            "[stripe]\nwebhook_secrets = [\"whsec_x\"]\n",
            "stripe.webhook_secrets[0]: must be Stripe's signing secret",
        ),
        ("[stripe]\napi_key = \"pk_test_x\"\n", "stripe.api_key"),
        ("[pages]\nsecret = \"\"\n", "pages.secret"),
        (
            "[[webhooks]]\nurl = \"https://example.com/h\"\nsecret = \"\"\n",
            "webhooks[0].secret",
        ),
    ];
    for (text, expected) in cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let (ok, _, stderr) = run(&file, &["migrate"]);
        assert!(!ok, "{text} was accepted");
        assert!(
            stderr.contains(&format!("{}: ", file.display())),
            "names the file: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
    }
    // A trailing comma in the environment's list of secrets: the server does not start.
    let file = dir.path().join("ok.toml");
    std::fs::write(&file, "").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_creditbook"))
        .arg("--config")
        .arg(&file)
        .arg("serve")
        .env(
            "CREDITBOOK_STRIPE_WEBHOOK_SECRET",
            "whsec_0123456789abcdefABCDEF,",
        )
        .env(
            "CREDITBOOK_DATABASE_URL",
            format!("sqlite://{}/never.db?mode=rwc", dir.path().display()),
        )
        .env("CREDITBOOK_LISTEN", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "started: {stderr}");
    assert!(
        stderr.contains("CREDITBOOK_STRIPE_WEBHOOK_SECRET (secret 2): is empty"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("never.db").exists(),
        "refused before the database"
    );
    let (ok, _, stderr) = run(&dir.path().join("missing.toml"), &["migrate"]);
    assert!(!ok);
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[tokio::test]
async fn keys_are_printed_once_and_stored_as_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/keys.db?mode=rwc", dir.path().display());
    let config = common::write_example_config(dir.path(), &database_url);
    let (ok, stdout, stderr) = run(&config, &["keys", "create", "--scope", "finance"]);
    assert!(ok, "{stderr}");
    let key = stdout.lines().last().unwrap();
    assert!(
        key.starts_with("cb_finance_") && !key.contains(' '),
        "{stdout}"
    );
    let (ok, _, stderr) = run(&config, &["keys", "create", "--scope", "root"]);
    assert!(!ok && stderr.contains("root"), "{stderr}");

    let store = creditbook::store::Store::connect(&database_url)
        .await
        .unwrap();
    let rows = entity::api_keys::Entity::find()
        .all(store.connection())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].key_hash,
        hex::encode(Sha256::digest(key.as_bytes()))
    );
    assert_eq!(rows[0].scope, "finance");
    assert_eq!(
        store.authenticate(key).await.unwrap().map(|p| p.scope),
        Some(creditbook::store::keys::Scope::Finance)
    );
    assert_eq!(
        store
            .authenticate(&key.replace("cb_", "cc_"))
            .await
            .unwrap(),
        None
    );
}

/// `keys create --label`, `keys list` (never the key) and `keys revoke`: a revoked key is refused
/// by a server that never used it at once, and by one that did within `key_cache_seconds`.
async fn keys_are_labelled_listed_and_revoked(engine: common::Engine) {
    use common::process::start_server;
    let dir = tempfile::tempdir().unwrap();
    let database_url = common::fresh_database(engine, dir.path()).await;
    let config = common::write_example_config(dir.path(), &database_url);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("key_cache_seconds = 30", "key_cache_seconds = 1");
    std::fs::write(&config, text).unwrap();
    let create = |scope: &str, label: &str| {
        let (ok, stdout, stderr) = run(
            &config,
            &["keys", "create", "--scope", scope, "--label", label],
        );
        assert!(ok, "{stderr}");
        let id = stdout
            .split_whitespace()
            .find(|w| w.starts_with("key_"))
            .expect("the key's id")
            .trim_end_matches(';')
            .to_owned();
        (id, stdout.lines().last().unwrap().to_owned())
    };
    let (app_id, app_key) = create("app", "billing app");
    let (_, other_key) = create("app", "spare");
    let (ok, _, stderr) = run(
        &config,
        &["keys", "create", "--scope", "app", "--label", "a\tb"],
    );
    assert!(!ok && stderr.contains("label"), "{stderr}");

    let server = start_server(&config).await;
    let client = reqwest::Client::new();
    let customer = |key: String| {
        let request = client
            .get(format!("{}/v1/customers/nobody", server.address))
            .bearer_auth(key);
        async move { request.send().await.unwrap().status() }
    };
    // Used, so trusted from memory for up to a second.
    assert_eq!(customer(app_key.clone()).await, 404);

    let list = |config: &Path| {
        let (ok, stdout, stderr) = run(config, &["keys", "list"]);
        assert!(ok, "{stderr}");
        stdout
    };
    // The last use is recorded off the request's path: wait for it.
    let mut listed = String::new();
    for _ in 0..50 {
        listed = list(&config);
        if listed
            .lines()
            .any(|l| l.starts_with(&app_id) && l.split('\t').nth(4) != Some("-"))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // One line per key, nothing else.
    let lines: Vec<Vec<&str>> = listed.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines.iter().all(|l| l.len() == 6), "{listed}");
    assert_eq!(lines[0][..3], [app_id.as_str(), "app", "billing app"]);
    assert_ne!(lines[0][4], "-", "last use recorded: {listed}");
    assert_eq!(lines[0][5], "-");
    assert_eq!(lines[1][2], "spare");
    assert!(
        !listed.contains(&app_key) && !listed.contains(&other_key),
        "a key was listed"
    );

    let (ok, stdout, stderr) = run(&config, &["keys", "revoke", &app_id]);
    assert!(ok && stdout.contains("revoked"), "{stderr}");
    let (ok, stdout, _) = run(&config, &["keys", "revoke", &app_id]);
    assert!(ok && stdout.contains("already revoked"), "{stdout}");
    let (ok, _, stderr) = run(&config, &["keys", "revoke", "key_nothing"]);
    assert!(!ok && stderr.contains("key_nothing"), "{stderr}");
    let revoked_line = list(&config);
    assert!(
        revoked_line
            .lines()
            .any(|l| l.starts_with(&app_id) && l.split('\t').nth(5) != Some("-")),
        "{revoked_line}"
    );

    // A server that never used the key refuses it at once.
    let fresh = start_server(&config).await;
    let status = client
        .get(format!("{}/v1/customers/nobody", fresh.address))
        .bearer_auth(&app_key)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    // The one that used it refuses it once its memory of the key is older than a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(customer(app_key.clone()).await, 401);
    assert_eq!(
        customer(other_key.clone()).await,
        404,
        "other keys still work"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_labelled_listed_and_revoked_on_sqlite() {
    keys_are_labelled_listed_and_revoked(common::Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_labelled_listed_and_revoked_on_postgres() {
    keys_are_labelled_listed_and_revoked(common::Engine::Postgres).await;
}

/// The quick start's example data: `scripts/example-data` fills a running server through its
/// API, twice without adding anything twice, and prints keys that sign in and a link that opens
/// a customer's page with the API's figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_data_script_fills_every_page() {
    let prepared = common::process::prepare(common::Engine::Sqlite).await;
    let server = common::process::start_server(&prepared.config).await;
    let run = || {
        let output = std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/example-data"),
        )
        .arg(&server.address)
        .env("CONFIG", &prepared.config)
        .env("CREDITBOOK_BIN", env!("CARGO_BIN_EXE_creditbook"))
        .env_remove("CREDITBOOK_DATABASE_URL")
        .output()
        .expect("run scripts/example-data");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let printed = run();
    let client = reqwest::Client::new();
    let acme = |key: String| {
        let client = client.clone();
        let url = format!("{}/v1/customers/acme", server.address);
        async move {
            client
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let first = acme(prepared.app.clone()).await;
    assert_eq!(first["plan"], "pro", "{first}");
    assert_eq!(first["held"], "15", "the hold: {first}");
    run();
    assert_eq!(
        acme(prepared.app.clone()).await,
        first,
        "run twice, added once"
    );
    // The link opens acme's page with the API's figures.
    let link = printed
        .lines()
        .map(str::trim)
        .find(|l| l.contains("/portal?token="))
        .expect("a portal link");
    let page = client.get(link).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains(&format!(
            "id=\"available\">{}<",
            first["available"].as_str().unwrap()
        )),
        "{page}"
    );
    // The printed keys sign in.
    for (scope, home) in [("admin", "/admin"), ("finance", "/finance")] {
        let key = printed
            .split_whitespace()
            .find(|w| w.starts_with(&format!("cb_{scope}_")))
            .unwrap_or_else(|| panic!("a {scope} key in {printed}"));
        let response = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("{}/login", server.address))
            .form(&[("key", key)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["location"], home);
    }
}
