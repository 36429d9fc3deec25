//! Running it: logs in both formats, with one access-log line per request.

mod common;

use common::Engine;
use common::process::{
    Prepared, credits_used, grant_each, prepare, start_server_logging, terminate,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Stdio;

/// Starts a server with `[server] log_format = format`, makes a usage, a refused usage and a
/// customer read, stops it with SIGTERM, and returns its log.
async fn served_log(format: &str) -> (String, Prepared) {
    let prepared = prepare(Engine::Sqlite).await;
    let text = std::fs::read_to_string(&prepared.config).unwrap();
    assert!(
        text.contains("log_format = \"text\"\n"),
        "the example sets log_format"
    );
    let text = text.replacen(
        "log_format = \"text\"\n",
        &format!("log_format = \"{format}\"\n"),
        1,
    );
    std::fs::write(&prepared.config, text).unwrap();
    let log_path = prepared._dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = start_server_logging(&prepared.config, Stdio::from(log)).await;
    let client = reqwest::Client::new();
    let status = |r: reqwest::Response| r.status();
    let granted = client
        .post(format!("{}/v1/customers/logged/grants", server.address))
        .bearer_auth(&prepared.admin)
        .json(&json!({"kind": "promotional", "credits": "5", "idempotency_key": "g"}))
        .send()
        .await
        .map(status)
        .unwrap();
    assert_eq!(granted, StatusCode::CREATED);
    for (key, quantity, expected) in [
        ("u1", 1, StatusCode::CREATED),
        ("u2", 100, StatusCode::PAYMENT_REQUIRED),
    ] {
        let answered = client
            .post(format!("{}/v1/usage", server.address))
            .bearer_auth(&prepared.app)
            .json(&json!({"customer": "logged", "action": "chat.request",
                          "quantity": quantity, "idempotency_key": key}))
            .send()
            .await
            .map(status)
            .unwrap();
        assert_eq!(answered, expected);
    }
    terminate(&server.child);
    assert!(server.child.wait().unwrap().success());
    (std::fs::read_to_string(&log_path).unwrap(), prepared)
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_an_access_line_per_request() {
    let (log, prepared) = served_log("json").await;
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|l| l["target"] == "creditbook::access")
        .collect();
    assert_eq!(access.len(), 4, "grant, two usages, healthz: {log}");
    let usage: Vec<&&Value> = access
        .iter()
        .filter(|l| l["route"] == "/v1/usage")
        .collect();
    assert_eq!(usage.len(), 2);
    assert_eq!(usage[0]["method"], "POST");
    assert_eq!(usage[0]["status"], 201);
    assert_eq!(usage[0]["customer"], "logged");
    assert_eq!(usage[1]["status"], 402);
    assert_eq!(
        usage[1]["customer"], "logged",
        "a refusal names its customer"
    );
    assert!(usage[0]["latency_micros"].as_u64().unwrap() > 0);
    let grant = access
        .iter()
        .find(|l| l["route"] == "/v1/customers/{id}/grants")
        .expect("the grant's line");
    assert_eq!(grant["customer"], "logged");
    // Who: the key's id, never the key.
    let key_id = |l: &Value| l["key_id"].as_str().unwrap_or_default().to_owned();
    assert!(key_id(grant).starts_with("key_"), "{grant}");
    assert!(key_id(usage[0]).starts_with("key_"), "{}", usage[0]);
    assert_ne!(
        key_id(grant),
        key_id(usage[0]),
        "the admin's key is not the app's"
    );
    assert!(
        lines.iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("stopped"))),
        "the drain is logged: {log}"
    );
    for key in [&prepared.admin, &prepared.app] {
        assert!(!log.contains(key.as_str()), "a key reached the log");
    }
}

#[tokio::test]
async fn text_logs_have_no_colour_codes_off_a_terminal() {
    let (log, prepared) = served_log("text").await;
    assert!(!log.contains('\u{1b}'), "ANSI codes in a file: {log}");
    let usage_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("creditbook::access") && l.contains("route=/v1/usage"))
        .collect();
    assert_eq!(usage_lines.len(), 2, "{log}");
    assert!(usage_lines[0].contains("status=201"), "{log}");
    assert!(usage_lines[0].contains("customer=\"logged\""), "{log}");
    for key in [&prepared.admin, &prepared.app] {
        assert!(!log.contains(key.as_str()), "a key reached the log");
    }
}

#[test]
fn a_bad_log_format_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_example_config(dir.path(), "sqlite::memory:");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen("log_format = \"text\"", "log_format = \"xml\"", 1),
    )
    .unwrap();
    let out = common::run_cli(&config, &["migrate"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.log_format"), "{stderr}");
}

/// `creditbook backup` while usages stream in: the copy opens, holds some of them, and passes
/// the audit; the live database goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_makes_a_copy_that_passes_the_audit() {
    use common::process::start_server;
    let prepared = prepare(Engine::Sqlite).await;
    let server = start_server(&prepared.config).await;
    let client = reqwest::Client::new();
    let ids: Vec<String> = (0..10).map(|c| format!("b{c}")).collect();
    let pack = json!({"kind": "pack", "pack": "topup_small", "credits": "100000",
                      "idempotency_key": "g"});
    grant_each(&client, &server, &prepared.admin, &ids, &pack).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..16)
        .map(|worker| {
            let (client, address, app, stop) = (
                client.clone(),
                server.address.clone(),
                prepared.app.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut answered = 0;
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let response = client
                        .post(format!("{address}/v1/usage"))
                        .bearer_auth(&app)
                        .json(&json!({"customer": format!("b{}", (worker + i) % 10),
                                      "action": "chat.request", "quantity": 1,
                                      "idempotency_key": format!("bk-{worker}-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), StatusCode::CREATED);
                    answered += 1;
                    i += 1;
                }
                answered
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let copy = prepared._dir.path().join("backup.db");
    let out = tokio::task::spawn_blocking({
        let (config, copy) = (prepared.config.clone(), copy.clone());
        move || common::run_cli(&config, &["backup", "--out", copy.to_str().unwrap()])
    })
    .await
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut answered = 0;
    for worker in load {
        answered += worker.await.unwrap();
    }
    assert!(
        out.status.success(),
        "backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("backed up"));

    let backup = common::process::audited(&format!("sqlite://{}", copy.display())).await;
    let used = credits_used(&backup, &ids, 100_000).await;
    assert!(
        used > 0 && used < answered,
        "the copy is a snapshot taken mid-load: {used} of {answered} usages"
    );
    // A second backup to the same file is refused, changing nothing.
    let again = common::run_cli(
        &prepared.config,
        &["backup", "--out", copy.to_str().unwrap()],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
    drop(server);
}

#[test]
fn backup_of_postgres_points_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::write_example_config(dir.path(), "postgres://nobody@127.0.0.1:1/none");
    let out = common::run_cli(
        &config,
        &["backup", "--out", dir.path().join("x").to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"));
}

/// The README's PostgreSQL walkthrough, run as written: its SQL block makes the roles, the owner
/// migrates, two instances serve as the app role, and a customer's credits move through both.
/// The app role may not change tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readmes_two_instance_postgres_deployment_works() {
    use common::process::{creditbook, start_server};
    use sea_orm::{ConnectionTrait, Database};
    let readme = include_str!("../README.md");
    let section = readme
        .split("## Production: PostgreSQL with two instances")
        .nth(1)
        .expect("the README has the PostgreSQL walkthrough");
    let sql = section
        .split("```sql\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("the walkthrough has a SQL block");
    // Unique names, so that the test can run again on the same server.
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let (owner, app, database) = (
        format!("cb_owner_{suffix}"),
        format!("cb_app_{suffix}"),
        format!("cb_deploy_{suffix}"),
    );
    let sql = sql
        .replace("creditbook_owner", &owner)
        .replace("creditbook_app", &app)
        .replace(
            "CREATE DATABASE creditbook ",
            &format!("CREATE DATABASE {database} "),
        )
        .replace("\\c creditbook\n", &format!("\\c {database}\n"));
    let (on_server, on_database) = sql
        .split_once(&format!("\\c {database}\n"))
        .expect("the block connects to the new database");
    let admin_url = common::postgres_admin_url();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let run = |url: String, script: String| async move {
        let db = Database::connect(&url).await.unwrap();
        for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            db.execute_unprepared(statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        db.close().await.ok();
    };
    run(admin_url.clone(), on_server.to_owned()).await;
    run(format!("{base}/{database}"), on_database.to_owned()).await;

    // The test server trusts local connections, so the passwords are not checked here.
    let url_as = |role: &str| {
        let (scheme, rest) = base.split_once("://").unwrap();
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{role}:secret@{host}/{database}")
    };
    let dir = tempfile::tempdir().unwrap();
    let owner_config = common::write_example_config(dir.path(), &url_as(&owner));
    let owner_config = {
        let path = dir.path().join("owner.toml");
        std::fs::rename(&owner_config, &path).unwrap();
        path
    };
    creditbook(&owner_config, &["migrate"]);
    let app_config = common::write_example_config(dir.path(), &url_as(&app));
    let key = |scope: &str| {
        creditbook(&app_config, &["keys", "create", "--scope", scope])
            .lines()
            .last()
            .unwrap()
            .trim()
            .to_owned()
    };
    let (admin_key, app_key) = (key("admin"), key("app"));
    let first = start_server(&app_config).await;
    let second = start_server(&app_config).await;

    let client = reqwest::Client::new();
    let send = |address: &str, path: &str, key: &str, body: Value| {
        client
            .post(format!("{address}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let granted = send(
        &first.address,
        "/v1/customers/acme/grants",
        &admin_key,
        json!({"kind": "promotional", "credits": "100", "idempotency_key": "g1"}),
    )
    .await
    .unwrap();
    assert_eq!(granted.status(), StatusCode::CREATED);
    let hold: Value = send(
        &second.address,
        "/v1/authorizations",
        &app_key,
        json!({"customer": "acme", "action": "chat.request", "quantity": 2, "idempotency_key": "h1"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let hold = hold["id"].as_str().expect("a hold").to_owned();
    let captured = send(
        &first.address,
        &format!("/v1/authorizations/{hold}/capture"),
        &app_key,
        json!({"quantity": 1}),
    )
    .await
    .unwrap();
    assert_eq!(captured.status(), StatusCode::OK);
    let customer = common::process::customer_on(&client, &second, &app_key, "acme").await;
    assert_eq!(customer["available"], "99", "{customer}");

    // Least privilege: the instances' role reads and writes rows, and changes no table.
    let as_app = Database::connect(&url_as(&app)).await.unwrap();
    let refused = as_app
        .execute_unprepared("CREATE TABLE intruder (id INTEGER)")
        .await;
    assert!(refused.is_err(), "the app role created a table");
    let refused = as_app
        .execute_unprepared("ALTER TABLE ledger_entries ADD COLUMN intruder INTEGER")
        .await;
    assert!(refused.is_err(), "the app role altered a table");
    as_app.close().await.ok();
    common::process::audited(&url_as(&owner)).await;
}
