//! Fail fast, stay up: a client that stalls is cut off, a request that takes too long or one too
//! many is answered 503 with `Retry-After`, a database that goes away is answered 503 within the
//! request timeout and the service recovers by itself when it returns, and a worker that panics
//! goes on (`/healthz` names one that keeps failing).

mod common;

use common::{Engine, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn bounded(seconds: u64, max_requests: usize) -> impl FnOnce(&mut creditbook::config::Config) {
    move |config| {
        config.limits.request_timeout = Duration::from_secs(seconds);
        config.limits.max_concurrent_requests = max_requests;
    }
}

fn host(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `limit` passes); what it sent.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut seen = Vec::new();
    let mut buffer = [0_u8; 4096];
    let read = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&seen).into_owned())
}

/// A client that sends half its headers is cut off; one that sends half its body is answered 503.
async fn a_stalled_client_is_cut_off(engine: Engine) {
    let app = common::spawn_app_with(engine, bounded(1, 512)).await;
    let started = Instant::now();
    let mut stalled = TcpStream::connect(host(&app)).await.unwrap();
    stalled
        .write_all(b"GET /v1/customers/x HTTP/1.1\r\nHost: creditbook\r\n")
        .await
        .unwrap();
    let closed = read_until_closed(&mut stalled, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "the connection was held open");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut off after {:?}",
        started.elapsed()
    );

    // Headers sent, the body never finished: the request's time runs out.
    let started = Instant::now();
    let mut slow = TcpStream::connect(host(&app)).await.unwrap();
    let head = format!(
        "POST /v1/usage HTTP/1.1\r\nHost: creditbook\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"customer\":",
        app.app_key
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut slow, Duration::from_secs(10))
        .await
        .expect("an answer, then the connection closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("\"type\":\"unavailable\""), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server still answers everyone else.
    let (status, _) = app.get_app("/v1/customers/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

for_each_engine!(a_stalled_client_is_cut_off);

/// One request more than `max_concurrent_requests` is refused at once; the probes still answer.
async fn one_request_too_many_is_refused(engine: Engine) {
    let app = common::spawn_app_with(engine, bounded(5, 1)).await;
    // A request that holds the one permit while its body trickles in; then one more request.
    // Should the second be served first (the holder refused in its place), both are made again.
    let head = format!(
        "POST /v1/usage HTTP/1.1\r\nHost: creditbook\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{",
        app.app_key
    );
    let mut response = None;
    let mut holder = None;
    for _ in 0..20 {
        let mut stream = TcpStream::connect(host(&app)).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let answer = app
            .client
            .get(format!("{}/v1/customers/acme", app.address))
            .bearer_auth(&app.app_key)
            .send()
            .await
            .unwrap();
        if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
            response = Some(answer);
            holder = Some(stream);
            break;
        }
    }
    let response = response.expect("one request too many was refused");
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "unavailable", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("at once (1)"),
        "{problem}"
    );
    for probe in ["/livez", "/metrics"] {
        let response = app
            .client
            .get(format!("{}{probe}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{probe}");
    }
    drop(holder);
    // The permit comes back: answered again.
    let mut answered = false;
    for _ in 0..50 {
        let (status, _) = app.get_app("/v1/customers/acme").await;
        if status == StatusCode::NOT_FOUND {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "the server did not take requests again");
    let (_, metrics) = metrics_text(&app).await;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("creditbook_http_requests_refused_total{reason=\"overloaded\"} ")
        })
        .expect("the counter")
        .parse()
        .unwrap();
    // The one above, and any the retries met before the held request's permit came back.
    assert!(refused >= 1, "{metrics}");
}

for_each_engine!(one_request_too_many_is_refused);

async fn metrics_text(app: &TestApp) -> (StatusCode, String) {
    let response = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

/// A TCP proxy in front of PostgreSQL that can be cut (every connection closed, new ones closed
/// at once: the database is gone) and restored.
struct Proxy {
    address: String,
    up: Arc<AtomicBool>,
    /// Bumped on every cut: connections of an older generation close.
    generation: Arc<AtomicU64>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(AtomicU64::new(0));
        let (accept_up, accept_generation) = (up.clone(), generation.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                if !accept_up.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let born = accept_generation.load(Ordering::SeqCst);
                let generation = accept_generation.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let cut = async {
                        while generation.load(Ordering::SeqCst) == born {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        () = cut => {}
                    }
                });
            }
        });
        Proxy {
            address,
            up,
            generation,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// What one client's request ended as.
struct Answer {
    key: String,
    status: StatusCode,
    problem_type: Option<String>,
    retry_after: bool,
    sent: Instant,
    took: Duration,
}

/// PostgreSQL gone for four seconds under load: every request is answered (201, or 503
/// `unavailable` with `Retry-After`) within the request timeout, never 500, never a hang; usages
/// are acknowledged again within seconds of its return; nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_gone_under_load_is_answered_503_and_recovered_from() {
    let dir = tempfile::tempdir().unwrap();
    let database = common::fresh_database(Engine::Postgres, dir.path()).await;
    let (prefix, rest) = database.split_once('@').unwrap();
    let (target, name) = rest.split_once('/').unwrap();
    let proxy = Proxy::start(target.to_owned()).await;
    let through_proxy = format!("{prefix}@{}/{name}", proxy.address);
    let timeout_seconds = 3;
    let app = common::spawn_app_with(Engine::Postgres, move |config| {
        config.database_url = through_proxy;
        config.limits.request_timeout = Duration::from_secs(timeout_seconds);
        config.pool.acquire_timeout = Duration::from_secs(1);
    })
    .await;
    for c in 0..4 {
        app.promo(&format!("load-{c}"), "1000000").await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(std::sync::Mutex::new(Vec::<Answer>::new()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for sender in 0..16 {
        let (stop, answers, client) = (stop.clone(), answers.clone(), client.clone());
        let (address, key) = (app.address.clone(), app.app_key.clone());
        senders.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let idempotency_key = format!("s{sender}-{n}");
                let sent = Instant::now();
                let response = client
                    .post(format!("{address}/v1/usage"))
                    .bearer_auth(&key)
                    .json(&json!({"customer": format!("load-{}", sender % 4),
                        "action": "chat.request", "quantity": 1,
                        "idempotency_key": idempotency_key}))
                    .send()
                    .await
                    .expect("an answer, never a dropped connection");
                let status = response.status();
                let retry_after = response.headers().contains_key("retry-after");
                let body: Value = response.json().await.unwrap_or(Value::Null);
                answers.lock().unwrap().push(Answer {
                    key: idempotency_key,
                    status,
                    problem_type: body["type"].as_str().map(str::to_owned),
                    retry_after,
                    sent,
                    took: sent.elapsed(),
                });
                if status != StatusCode::CREATED {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.cut();
    let cut_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    proxy.restore();
    let restored_at = Instant::now();
    // Acknowledged again within seconds.
    let recovered = loop {
        let sent_after = answers
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.sent > restored_at && a.status == StatusCode::CREATED)
            .map(|a| a.sent + a.took);
        if let Some(at) = sent_after {
            break at.duration_since(restored_at);
        }
        assert!(
            restored_at.elapsed() < Duration::from_secs(20),
            "no usage acknowledged within 20 s of the database's return"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        sender.await.unwrap();
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let limit = Duration::from_secs(timeout_seconds) + Duration::from_millis(1_500);
    let mut during = 0;
    for a in &answers {
        assert!(
            a.status == StatusCode::CREATED || a.status == StatusCode::SERVICE_UNAVAILABLE,
            "{}: {} {:?}",
            a.key,
            a.status,
            a.problem_type
        );
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(a.problem_type.as_deref(), Some("unavailable"), "{}", a.key);
            assert!(a.retry_after, "{}: no Retry-After", a.key);
        }
        assert!(a.took <= limit, "{} took {:?}", a.key, a.took);
        if a.sent >= cut_at && a.sent + a.took <= restored_at {
            during += 1;
        }
    }
    let refused = answers
        .iter()
        .filter(|a| a.status == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!(during > 0 && refused > 0, "the outage was not felt");
    assert!(
        recovered < Duration::from_secs(10),
        "recovered after {recovered:?}"
    );
    println!(
        "{} answers, {refused} refused with 503, {during} answered while the database was gone; \
         acknowledged again {recovered:?} after it returned",
        answers.len()
    );

    // Nothing acknowledged is lost: each acknowledged usage, sent again, is a replay.
    let acknowledged: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .collect();
    let before = usages(&app).await;
    assert!(
        before >= acknowledged.len(),
        "{before} < {}",
        acknowledged.len()
    );
    for a in &acknowledged {
        let sender: usize = a.key[1..a.key.find('-').unwrap()].parse().unwrap();
        let (status, _) = app
            .usage(
                &format!("load-{}", sender % 4),
                "chat.request",
                json!(1),
                &a.key,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{}", a.key);
    }
    assert_eq!(usages(&app).await, before, "an acknowledged usage was lost");
    app.assert_audit_clean().await;
}

/// Usages in the load's customers' ledgers.
async fn usages(app: &TestApp) -> usize {
    let mut total = 0;
    for c in 0..4 {
        let ledger = app.ledger(&format!("load-{c}")).await;
        total += ledger.iter().filter(|e| e["kind"] == "consume").count();
    }
    total
}

/// A worker made to panic goes on; one that keeps panicking is named by `/healthz`.
async fn a_panicking_worker_goes_on(engine: Engine) {
    use creditbook::supervise::{BATCH_RUNNER, OUTBOX};
    let app = common::spawn_app(engine).await;
    app.promo("acme", "100").await;
    let workers = app.store.workers().clone();
    workers.inject_panic(BATCH_RUNNER);
    // Its batch is dropped, nothing written: the caller is told to retry.
    let (status, problem) = app.usage("acme", "chat.request", json!(1), "u1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert_eq!(problem["type"], "unavailable");
    // The runner goes on: the same usage again is answered, once.
    let (status, used) = app.usage("acme", "chat.request", json!(1), "u1").await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    let (status, _) = app.get_app("/healthz").await;
    assert_eq!(status, StatusCode::OK, "one panic is not a failing worker");
    // The outbox worker, between its passes.
    workers.inject_panic(OUTBOX);
    let mut counted = false;
    for _ in 0..100 {
        let (_, metrics) = metrics_text(&app).await;
        if metrics.contains("creditbook_worker_panics_total{worker=\"outbox\"} 1") {
            assert!(
                metrics.contains("creditbook_worker_panics_total{worker=\"batch_runner\"} 1"),
                "{metrics}"
            );
            counted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(counted, "the outbox's panic was not counted");
    // Panicking again and again: /healthz says which.
    for n in 0..2 {
        workers.inject_panic(BATCH_RUNNER);
        let (status, _) = app
            .usage("acme", "chat.request", json!(1), &format!("again-{n}"))
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    // The caller is answered as its batch unwinds, a moment before the runner counts the panic.
    let mut response = None;
    for _ in 0..100 {
        let answer = app
            .client
            .get(format!("{}/healthz", app.address))
            .send()
            .await
            .unwrap();
        if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
            response = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = response.expect("/healthz never named the failing worker");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], "workers_failing", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("batch_runner"),
        "{problem}"
    );
    // Still serving: the books hold.
    let (status, _) = app.usage("acme", "chat.request", json!(1), "u2").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.balances("acme").await.0, "98");
    app.assert_audit_clean().await;
}

for_each_engine!(a_panicking_worker_goes_on);

/// A forged or stale Stripe webhook is refused from its header alone: the body it announces is
/// never waited for, read or hashed.
async fn a_webhook_is_refused_before_its_body_is_read(engine: Engine) {
    let app = common::spawn_app(engine).await;
    let now = chrono::Utc::now().timestamp();
    for (header, expected) in [
        ("t=1,v1=nothex".to_owned(), "invalid_signature"),
        (
            format!("t={},v1={}", now - 3_600, "ab".repeat(32)),
            "invalid_signature",
        ),
        ("".to_owned(), "invalid_signature"),
    ] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(host(&app)).await.unwrap();
        let head = format!(
            "POST /webhooks/stripe HTTP/1.1\r\nHost: creditbook\r\nContent-Type: application/json\r\n\
             Stripe-Signature: {header}\r\nContent-Length: 500000\r\n\r\n{{\"id\":"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // The body never comes; the answer does.
        let mut buffer = vec![0_u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("answered without the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&buffer[..n]);
        assert!(answer.starts_with("HTTP/1.1 400"), "{header}: {answer}");
        assert!(answer.contains(expected), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert!(app.store.stripe_events(10).await.unwrap().is_empty());
}

for_each_engine!(a_webhook_is_refused_before_its_body_is_read);
