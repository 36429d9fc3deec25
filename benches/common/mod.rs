//! What the benchmarks share: the server they start, the CLI, the config and the books' check.

#![allow(dead_code)]

use creditbook::store::Store;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Stripe webhook secret the benchmarks' servers take.
pub const WEBHOOK_SECRET: &str = "whsec_bench_0123456789abcdef";

pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub struct Server {
    pub child: Child,
    pub address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cli(config: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_creditbook"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CREDITBOOK_DATABASE_URL")
        .output()
        .expect("run creditbook");
    assert!(
        out.status.success(),
        "creditbook {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Where the server's log goes: the file `CREDITBOOK_BENCH_SERVER_LOG` names (appended), or nowhere.
pub fn server_log() -> Stdio {
    match std::env::var("CREDITBOOK_BENCH_SERVER_LOG") {
        Ok(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_or_else(|_| Stdio::null(), Stdio::from),
        Err(_) => Stdio::null(),
    }
}

/// Starts `creditbook serve` (with `args`) on `config`, and waits until it answers.
pub async fn start(config: &std::path::Path, args: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_creditbook"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .args(args)
        .env("CREDITBOOK_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("CREDITBOOK_DATABASE_URL")
        .env("CREDITBOOK_STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
        // No access log unless asked for: the benchmark measures the gate, not log writing.
        .env(
            "CREDITBOOK_LOG",
            std::env::var("CREDITBOOK_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(server_log())
        .spawn()
        .expect("spawn creditbook serve");
    let server = Server {
        child,
        address: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(r) = client
            .get(format!("{}/healthz", server.address))
            .send()
            .await
            && r.status().is_success()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("creditbook serve did not start");
}

/// The example config on `database_url`, with the batch keys given (or set in the environment
/// as `CREDITBOOK_BENCH_<KEY>`) replaced.
pub fn write_config(path: &std::path::Path, database_url: &str, set: &[(&str, String)]) {
    let example = include_str!("../../examples/creditbook.toml");
    let mut text = example.replace("sqlite://creditbook.db?mode=rwc", database_url);
    for key in [
        "batch_max_commands",
        "batch_max_wait_micros",
        "postgres_batch_workers",
    ] {
        let value = set
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(format!("CREDITBOOK_BENCH_{}", key.to_uppercase())).ok());
        if let Some(value) = value {
            let line = text
                .lines()
                .find(|l| l.starts_with(key))
                .expect("the example config sets every batch key")
                .to_owned();
            text = text.replace(&line, &format!("{key} = {value}"));
        }
    }
    std::fs::write(path, text).unwrap();
}

/// The books after a scenario: no overspend, every invariant, the audit.
pub async fn check_books(store: &Store, customers: &[String]) {
    let now = chrono::Utc::now();
    for chunk in customers.chunks(500) {
        let books = store.view_many(chunk, now).await.expect("read books");
        for (id, (book, _)) in books {
            assert!(
                !book.available().is_negative(),
                "{id} overspent: available {}",
                book.available()
            );
            book.check_invariants()
                .unwrap_or_else(|e| panic!("{id}: {e}"));
        }
    }
    let problems = store.audit().await.expect("audit");
    assert!(problems.is_empty(), "audit: {problems:?}");
}

/// A new, empty database on the PostgreSQL server `admin` names (its URL): the URL to reach it.
pub async fn postgres_database(admin: &str, prefix: &str) -> String {
    use sea_orm::{ConnectionTrait, Database};
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let db = Database::connect(admin)
        .await
        .expect("connect to PostgreSQL");
    db.execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create the bench database");
    let (base, _) = admin.rsplit_once('/').expect("the URL names a database");
    format!("{base}/{name}")
}
