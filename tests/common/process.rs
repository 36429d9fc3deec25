//! Servers as separate processes, started from the `creditbook` binary as an operator would.

use super::Engine;
use std::process::{Child, Command, Stdio};

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

pub fn creditbook(config: &std::path::Path, args: &[&str]) -> String {
    let output = super::run_cli(config, args);
    assert!(
        output.status.success(),
        "creditbook {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn start_server(config: &std::path::Path) -> Server {
    start_server_logging(config, Stdio::null()).await
}

/// A server whose log (standard error) goes to `log`.
pub async fn start_server_logging(config: &std::path::Path, log: Stdio) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_creditbook"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("CREDITBOOK_LISTEN", format!("127.0.0.1:{port}"))
        .env_remove("CREDITBOOK_DATABASE_URL")
        .env_remove("CREDITBOOK_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn creditbook serve");
    let server = Server {
        child,
        address: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("{}/healthz", server.address))
            .send()
            .await
            && r.status().is_success()
        {
            return server;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("creditbook serve did not become healthy on port {port}");
}

/// A migrated database of `engine` with its config file and an admin and an app key, made with
/// the `creditbook` command line as an operator would.
pub struct Prepared {
    pub _dir: tempfile::TempDir,
    pub database_url: String,
    pub config: std::path::PathBuf,
    pub admin: String,
    pub app: String,
}

pub async fn prepare(engine: Engine) -> Prepared {
    let dir = tempfile::tempdir().unwrap();
    let database_url = super::fresh_database(engine, dir.path()).await;
    let config = super::write_example_config(dir.path(), &database_url);
    creditbook(&config, &["migrate"]);
    let last_line = |out: String| out.lines().last().unwrap().trim().to_owned();
    let admin = last_line(creditbook(&config, &["keys", "create", "--scope", "admin"]));
    let app = last_line(creditbook(&config, &["keys", "create", "--scope", "app"]));
    assert!(app.starts_with("cb_app_"), "{app}");
    Prepared {
        _dir: dir,
        database_url,
        config,
        admin,
        app,
    }
}

/// Sends SIGTERM to a child process.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Grants `grant` (a grant body with its idempotency key) to each of `customers`, as an admin.
pub async fn grant_each(
    client: &reqwest::Client,
    server: &Server,
    admin: &str,
    customers: &[String],
    grant: &serde_json::Value,
) {
    for customer in customers {
        let response = client
            .post(format!("{}/v1/customers/{customer}/grants", server.address))
            .bearer_auth(admin)
            .json(grant)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            reqwest::StatusCode::CREATED,
            "{customer}"
        );
    }
}

/// Credits `customers` have used since each was granted `granted`, from the books in `store`:
/// a whole number when every usage took whole credits.
pub async fn credits_used(
    store: &creditbook::store::Store,
    customers: &[String],
    granted: i64,
) -> i64 {
    let books = store
        .view_many(customers, chrono::Utc::now())
        .await
        .unwrap();
    let used: rust_decimal::Decimal = books
        .values()
        .map(|(book, _)| rust_decimal::Decimal::from(granted) - book.balance().value())
        .sum();
    i64::try_from(used).expect("whole credits")
}

/// `GET /v1/customers/{id}` from `server`, as `key`.
pub async fn customer_on(
    client: &reqwest::Client,
    server: &Server,
    key: &str,
    id: &str,
) -> serde_json::Value {
    client
        .get(format!("{}/v1/customers/{id}", server.address))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Opens the database at `url` as a tool would, checks that its books audit clean, and returns
/// the store for further reads.
pub async fn audited(url: &str) -> creditbook::store::Store {
    let store = creditbook::store::Store::connect(url).await.unwrap();
    assert_eq!(store.audit().await.unwrap(), Vec::<String>::new());
    store
}
