//! The gate under load: starts `creditbook serve` on SQLite (and on PostgreSQL when
//! `CREDITBOOK_BENCH_POSTGRES_URL` names a server), drives it over HTTP from this process, and
//! prints for each scenario the throughput, p50, p99 and max latency; beside them, in the same
//! run, the ceiling of the same server on a route that does nothing and a plain-SQL baseline
//! (the same statements as an authorization, one command per transaction, from one client), so
//! the figures read as ratios on any machine. After each scenario it checks the books: no
//! customer's available credits below zero, every book's invariants, and the audit.
//!
//! `cargo bench --bench gate`. `CREDITBOOK_BENCH_SECONDS` (default 5) sets each scenario's
//! length, `CREDITBOOK_BENCH_CUSTOMERS` (default 2,000, as the targets) the spread; `CREDITBOOK_BENCH_SERVER_LOG`
//! names a file for the server's log (its filter from `CREDITBOOK_LOG`, else `warn`); `CREDITBOOK_BENCH_ONLY` picks
//! scenarios by words of their names (for profiling one).
//! Not a timed test: it fails only if the books do not hold.

mod common;

use common::{WEBHOOK_SECRET, check_books, cli, env_number, start, write_config};
use creditbook::store::Store;
use futures::future::join_all;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections of the load generator, as in the targets.
const CONNECTIONS: usize = 64;
/// Connections posting usage batches, and usages per batch.
const BATCH_CONNECTIONS: usize = 8;
const USAGES_PER_BATCH: usize = 1_000;
/// Senders of Stripe events, as Stripe delivers several at once, and Stripe customers they buy for.
const STRIPE_SENDERS: usize = 16;
const STRIPE_CUSTOMERS: usize = 1_000;
/// Commands of the plain-SQL baseline.
const SQL_COMMANDS: usize = 2_000;

/// The throughput of `GET /livez` on the server measured now, per second.
static CEILING: std::sync::Mutex<Option<f64>> = std::sync::Mutex::new(None);

/// Latencies of one scenario, in microseconds, and what was done.
struct Run {
    name: String,
    /// Units counted per second (requests, pairs or usages).
    units: u64,
    unit: &'static str,
    errors: u64,
    latencies: Vec<u32>,
    elapsed: Duration,
}

impl Run {
    /// Throughput per second, then p50, p99 and max latency in milliseconds (two decimals).
    fn stats(&self) -> (f64, String, String, String) {
        let mut l = self.latencies.clone();
        l.sort_unstable();
        let pick = |q: f64| {
            l.get(((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        let ms = |us: u32| format!("{:.2}", f64::from(us) / 1000.0);
        (
            self.units as f64 / self.elapsed.as_secs_f64().max(1e-9),
            ms(pick(0.50)),
            ms(pick(0.99)),
            ms(l.last().copied().unwrap_or(0)),
        )
    }

    /// Throughput, p50, p99, max and errors, as table cells.
    fn figures(&self) -> String {
        let (rate, p50, p99, max) = self.stats();
        format!(
            "{rate:.0} {} | {p50} | {p99} | {max} | {}",
            self.unit, self.errors
        )
    }

    /// A row of the scenario table, with its throughput as a share of the ceiling measured
    /// last (`GET /livez` of the same server); the ceiling's own row sets it.
    fn print(&self) {
        let (rate, p50, p99, max) = self.stats();
        let mut ceiling = CEILING.lock().unwrap();
        if self.name.starts_with("ceiling") {
            *ceiling = Some(rate);
        }
        let share = ceiling.map_or("".to_owned(), |c| format!("{:.1}%", 100.0 * rate / c));
        println!(
            "| {:<44} | {:>9.0} {:<7} | {:>6} | {:>7} | {:>7} | {:>8} | {:>6} |",
            self.name, rate, self.unit, share, p50, p99, max, self.errors
        );
    }
}

/// Runs `op` on `connections` connections for `seconds`; `op` returns how many units it did and
/// the latency of each request it made.
/// Whether a scenario runs: `CREDITBOOK_BENCH_ONLY` (comma-separated words) picks those whose
/// name contains one of them; unset, all run.
fn wanted(name: &str) -> bool {
    std::env::var("CREDITBOOK_BENCH_ONLY").map_or(true, |only| {
        only.split(',')
            .any(|word| !word.trim().is_empty() && name.contains(word.trim()))
    })
}

async fn drive<F, Fut>(
    name: &str,
    unit: &'static str,
    connections: usize,
    seconds: u64,
    op: F,
) -> Run
where
    F: Fn(reqwest::Client, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = (u64, Vec<u32>, u64)> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    // Scenarios not chosen by `CREDITBOOK_BENCH_ONLY` run for no time: they print zeros.
    let seconds = if wanted(name) { seconds } else { 0 };
    let deadline = started + Duration::from_secs(seconds);
    let tasks = (0..connections).map(|c| {
        let op = op.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .unwrap();
            let (mut units, mut latencies, mut errors) = (0, Vec::new(), 0);
            let mut i = 0_u64;
            while Instant::now() < deadline {
                let (u, l, e) = op(client.clone(), c, i).await;
                units += u;
                latencies.extend(l);
                errors += e;
                i += 1;
            }
            (units, latencies, errors)
        })
    });
    let mut run = Run {
        name: name.to_owned(),
        units: 0,
        unit,
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for done in join_all(tasks).await {
        let (u, l, e) = done.unwrap();
        run.units += u;
        run.latencies.extend(l);
        run.errors += e;
    }
    run.elapsed = started.elapsed();
    run
}

async fn post(client: &reqwest::Client, url: &str, key: &str, body: &Value) -> (u16, Value, u32) {
    let t = Instant::now();
    let response = client.post(url).bearer_auth(key).json(body).send().await;
    let (status, value) = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    };
    (status, value, t.elapsed().as_micros() as u32)
}

/// Authorize then capture 1 credit, on 64 connections, on the hot customer or spread over
/// `customers`. `tag` keeps idempotency keys apart between runs on one database.
async fn pairs(
    name: &str,
    base: &Arc<String>,
    app: &Arc<String>,
    customers: &Arc<Vec<String>>,
    hot: bool,
    tag: &'static str,
    seconds: u64,
) -> Run {
    let (base, app, customers) = (base.clone(), app.clone(), customers.clone());
    drive(
        name,
        "pairs/s",
        CONNECTIONS,
        seconds,
        move |client, c, i| {
            let (base, app) = (base.clone(), app.clone());
            let customer = if hot {
                "hot".to_owned()
            } else {
                customers[(c * 7919 + i as usize * 104_729) % customers.len()].clone()
            };
            async move {
                let (s1, hold, l1) = post(
                    &client,
                    &format!("{base}/v1/authorizations"),
                    &app,
                    &json!({"customer": customer, "action": "chat.request", "quantity": 1,
                        "idempotency_key": format!("a-{tag}-{hot}-{c}-{i}")}),
                )
                .await;
                if s1 != 201 {
                    return (0, vec![l1], 1);
                }
                let id = hold["id"].as_str().unwrap_or_default();
                let (s2, _, l2) = post(
                    &client,
                    &format!("{base}/v1/authorizations/{id}/capture"),
                    &app,
                    &json!({"quantity": 1}),
                )
                .await;
                (u64::from(s2 == 200), vec![l1, l2], u64::from(s2 != 200))
            }
        },
    )
    .await
}

/// An organization, `org`, with a pool of 100,000,000 credits, and 1,000 children below it
/// (`org-t0000`…); returns the children.
async fn seed_organization<G, F>(
    client: &reqwest::Client,
    base: &Arc<String>,
    admin: &str,
    grant: &G,
) -> Vec<String>
where
    G: Fn(String, &'static str) -> F,
    F: std::future::Future<Output = ()>,
{
    grant("org".into(), "100000000").await;
    let children: Vec<String> = (0..1_000).map(|i| format!("org-t{i:04}")).collect();
    for chunk in children.chunks(CONNECTIONS) {
        join_all(chunk.iter().map(|child| async move {
            let response = client
                .put(format!("{base}/v1/customers/{child}/parent"))
                .bearer_auth(admin)
                .json(&json!({"parent": "org"}))
                .send()
                .await
                .expect("set a parent");
            assert_eq!(response.status(), 200, "parent of {child}");
        }))
        .await;
    }
    children
}

/// Batch settings tried by the sweep: (`batch_max_commands`, `batch_max_wait_micros`, tag).
const SWEEP: [(usize, u64, &str); 5] = [
    (1, 0, "s1"),
    (16, 0, "s16"),
    (256, 0, "s256"),
    (256, 1_000, "w1000"),
    (256, 5_000, "w5000"),
];

/// The gate runner's counters from `/metrics`: batches, commands, and microseconds waited in
/// the queue and spent per phase.
#[derive(Debug, Clone, Copy, Default)]
struct RunnerFigures {
    batches: f64,
    commands: f64,
    wait: f64,
    phases: [f64; 5],
    /// Stripe's batches: how many, their events, and those applied in runs.
    stripe: [f64; 3],
    /// Bytes the database wrote (`Writes`); none where they cannot be read.
    written: Option<f64>,
}

/// Where the bytes a database writes are counted: on SQLite, what the server process wrote
/// (its write-ahead log and the checkpoints that copy it into the database file, from
/// `/proc/<pid>/io`); on PostgreSQL, the server's write-ahead log (`pg_stat_wal`, whole
/// cluster: the benchmark's server should serve nothing else).
#[derive(Clone)]
enum Writes {
    Process(u32),
    Wal(sea_orm::DatabaseConnection),
}

impl Writes {
    fn of(server: &common::Server, store: &Store) -> Writes {
        match store.connection().get_database_backend() {
            sea_orm::DbBackend::Postgres => Writes::Wal(store.connection().clone()),
            _ => Writes::Process(server.child.id()),
        }
    }

    async fn bytes(&self) -> Option<f64> {
        use sea_orm::ConnectionTrait;
        match self {
            Writes::Process(pid) => std::fs::read_to_string(format!("/proc/{pid}/io"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("wchar:"))
                .and_then(|v| v.trim().parse().ok()),
            Writes::Wal(db) => {
                let sql = "SELECT wal_bytes::bigint AS bytes FROM pg_stat_wal";
                let row = db
                    .query_one_raw(sea_orm::Statement::from_string(
                        sea_orm::DbBackend::Postgres,
                        sql,
                    ))
                    .await
                    .ok()??;
                row.try_get::<i64>("", "bytes").ok().map(|b| b as f64)
            }
        }
    }
}

const PHASES: [&str; 5] = ["load", "decide", "write", "post", "commit"];

impl RunnerFigures {
    async fn read(client: &reqwest::Client, base: &str, writes: &Writes) -> RunnerFigures {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text");
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        };
        let mut phases = [0.0; 5];
        for (slot, phase) in phases.iter_mut().zip(PHASES) {
            *slot = value(&format!(
                "creditbook_gate_batch_seconds_total{{phase=\"{phase}\"}}"
            )) * 1e6;
        }
        RunnerFigures {
            batches: value("creditbook_gate_batches_total"),
            commands: value("creditbook_gate_batch_commands_total"),
            wait: value("creditbook_gate_queue_wait_seconds_total") * 1e6,
            phases,
            stripe: [
                value("creditbook_stripe_batches_total"),
                value("creditbook_stripe_batch_events_total"),
                value("creditbook_stripe_events_together_total"),
            ],
            written: writes.bytes().await,
        }
    }

    fn since(&self, before: &RunnerFigures) -> RunnerFigures {
        let mut phases = [0.0; 5];
        for (i, slot) in phases.iter_mut().enumerate() {
            *slot = self.phases[i] - before.phases[i];
        }
        RunnerFigures {
            batches: self.batches - before.batches,
            commands: self.commands - before.commands,
            wait: self.wait - before.wait,
            phases,
            stripe: std::array::from_fn(|i| self.stripe[i] - before.stripe[i]),
            written: self.written.zip(before.written).map(|(a, b)| a - b),
        }
    }
}

/// Where the runner's time went in each scenario, read from `/metrics` before and after it.
struct Runner {
    client: reqwest::Client,
    base: String,
    writes: Writes,
    last: RunnerFigures,
    rows: Vec<(String, RunnerFigures)>,
}

impl Runner {
    async fn new(base: &str, writes: Writes) -> Runner {
        let client = reqwest::Client::new();
        let last = RunnerFigures::read(&client, base, &writes).await;
        Runner {
            client,
            base: base.to_owned(),
            writes,
            last,
            rows: Vec::new(),
        }
    }

    /// Records what the runner did since the previous mark, under `scenario`.
    async fn mark(&mut self, scenario: &str) {
        let now = RunnerFigures::read(&self.client, &self.base, &self.writes).await;
        let delta = now.since(&self.last);
        self.last = now;
        if (delta.batches > 0.0 || delta.stripe[0] > 0.0) && wanted(scenario) {
            self.rows.push((scenario.to_owned(), delta));
        }
    }

    fn print(&self) {
        println!(
            "\nWhere the runner's time went (per batch; one transaction and one commit each):\n"
        );
        println!(
            "| scenario | commands per batch | ms per batch | load | decide | write | post | commit | queue wait ms | KiB written per command |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (name, f) in self.rows.iter().filter(|(_, f)| f.batches > 0.0) {
            let per_batch = |micros: f64| micros / f.batches / 1000.0;
            let total: f64 = f.phases.iter().sum();
            let phases: Vec<String> = f
                .phases
                .iter()
                .map(|p| format!("{:.2}", per_batch(*p)))
                .collect();
            println!(
                "| {:<44} | {:>6.1} | {:>6.2} | {} | {:>6.2} | {} |",
                name,
                f.commands / f.batches,
                per_batch(total),
                phases.join(" | "),
                f.wait / f.commands / 1000.0,
                kib_per(f.written, f.commands),
            );
        }
        println!("\nStripe's batches (one transaction and one commit each):\n");
        println!("| scenario | events per batch | applied in runs | KiB written per event |");
        println!("|---|---|---|---|");
        for (name, f) in self.rows.iter().filter(|(_, f)| f.stripe[0] > 0.0) {
            let [batches, events, together] = f.stripe;
            println!(
                "| {:<44} | {:>6.1} | {:>5.1}% | {} |",
                name,
                events / batches,
                100.0 * together / events,
                kib_per(f.written, events),
            );
        }
    }
}

/// `bytes` per unit in KiB, or a dash where the bytes could not be read.
fn kib_per(bytes: Option<f64>, units: f64) -> String {
    bytes.map_or("—".to_owned(), |b| {
        format!("{:.1}", b / units.max(1.0) / 1024.0)
    })
}

async fn bench_engine(engine: &str, database_url: &str, dir: &std::path::Path) {
    let seconds = env_number("CREDITBOOK_BENCH_SECONDS", 5) as u64;
    let spread = env_number("CREDITBOOK_BENCH_CUSTOMERS", 2_000);
    let config = dir.join(format!("{engine}.toml"));
    write_config(&config, database_url, &[]);
    cli(&config, &["migrate"]);
    let last = |s: String| s.lines().last().unwrap().trim().to_owned();
    let admin = last(cli(&config, &["keys", "create", "--scope", "admin"]));
    let app = Arc::new(last(cli(&config, &["keys", "create", "--scope", "app"])));
    let server = start(&config, &[]).await;
    let base = Arc::new(server.address.clone());

    // Seed: one hot customer and `spread` others, each with a paid pack (revenue is posted).
    let seed_started = Instant::now();
    let customers: Vec<String> = (0..spread).map(|i| format!("c{i:05}")).collect();
    let client = reqwest::Client::new();
    let grant = |customer: String, credits: &'static str| {
        let (client, base, admin) = (client.clone(), base.clone(), admin.clone());
        async move {
            let (status, body, _) = post(
                &client,
                &format!("{base}/v1/customers/{customer}/grants"),
                &admin,
                &json!({"kind": "pack", "pack": "topup_small", "credits": credits,
                        "idempotency_key": format!("seed-{customer}")}),
            )
            .await;
            assert_eq!(status, 201, "seed {customer}: {body}");
        }
    };
    grant("hot".into(), "100000000").await;
    for chunk in customers.chunks(CONNECTIONS) {
        join_all(chunk.iter().map(|c| grant(c.clone(), "1000"))).await;
    }
    println!(
        "\n### {engine}: {} customers seeded over HTTP in {:.1} s\n",
        spread + 1,
        seed_started.elapsed().as_secs_f64()
    );
    let store = Store::connect(database_url).await.expect("connect");
    let mut runner = Runner::new(&base, Writes::of(&server, &store)).await;
    let mut all = customers.clone();
    all.push("hot".into());
    let customers = Arc::new(customers);

    println!("| scenario | throughput | of ceiling | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---|---|---|---|---|---|");
    let livez = {
        let base = base.clone();
        drive(
            "ceiling: GET /livez (does nothing)",
            "req/s",
            CONNECTIONS,
            seconds,
            move |client, _, _| {
                let url = format!("{base}/livez");
                async move {
                    let t = Instant::now();
                    let ok = client
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    (1, vec![t.elapsed().as_micros() as u32], u64::from(!ok))
                }
            },
        )
        .await
    };
    livez.print();

    let main_pairs =
        |name: &'static str, hot: bool| pairs(name, &base, &app, &customers, hot, "main", seconds);
    main_pairs("authorize + capture, one hot customer", true)
        .await
        .print();
    runner.mark("authorize + capture, one hot customer").await;
    check_books(&store, &all).await;
    main_pairs("authorize + capture, spread", false)
        .await
        .print();
    runner.mark("authorize + capture, spread").await;
    check_books(&store, &all).await;
    {
        // One organization's pool spent by 1,000 children, each with no credits of its own:
        // every pair locks its child and the organization (README, Organizations).
        let children = Arc::new(seed_organization(&client, &base, &admin, &grant).await);
        let name = "authorize + capture, 1,000 children of one organization";
        pairs(name, &base, &app, &children, false, "org", seconds)
            .await
            .print();
        runner.mark(name).await;
        let mut org: Vec<String> = children.to_vec();
        org.push("org".into());
        check_books(&store, &org).await;
    }

    {
        let (base, app, customers) = (base.clone(), app.clone(), customers.clone());
        drive(
            "POST /v1/usage, spread",
            "usages/s",
            CONNECTIONS,
            seconds,
            move |client, c, i| {
                let (base, app) = (base.clone(), app.clone());
                let customer = customers[(c * 31 + i as usize * 7_919) % customers.len()].clone();
                async move {
                    let (s, _, l) = post(
                        &client,
                        &format!("{base}/v1/usage"),
                        &app,
                        &json!({"customer": customer, "action": "chat.request", "quantity": 1,
                                "idempotency_key": format!("u-{c}-{i}")}),
                    )
                    .await;
                    (u64::from(s == 201), vec![l], u64::from(s != 201))
                }
            },
        )
        .await
        .print();
    }
    runner.mark("POST /v1/usage, spread").await;
    check_books(&store, &all).await;

    {
        let (base, app, customers) = (base.clone(), app.clone(), customers.clone());
        drive(
            "POST /v1/check, spread",
            "req/s",
            CONNECTIONS,
            seconds,
            move |client, c, i| {
                let (base, app) = (base.clone(), app.clone());
                let customer = customers[(c * 13 + i as usize * 7_919) % customers.len()].clone();
                async move {
                    let (s, _, l) = post(
                        &client,
                        &format!("{base}/v1/check"),
                        &app,
                        &json!({"customer": customer, "action": "chat.request", "quantity": 1}),
                    )
                    .await;
                    (u64::from(s == 200), vec![l], u64::from(s != 200))
                }
            },
        )
        .await
        .print();
    }
    runner.mark("POST /v1/check, spread").await;

    {
        let (base, app, customers) = (base.clone(), app.clone(), customers.clone());
        drive(
            "POST /v1/usage/batch (1,000 per request), spread",
            "usages/s",
            BATCH_CONNECTIONS,
            seconds,
            move |client, c, i| {
                let (base, app, customers) = (base.clone(), app.clone(), customers.clone());
                async move {
                    let usages: Vec<Value> = (0..USAGES_PER_BATCH)
                        .map(|k| {
                            let n = c * 1_000_003 + i as usize * USAGES_PER_BATCH + k;
                            json!({"customer": customers[n % customers.len()],
                                   "action": "chat.request", "quantity": 1,
                                   "idempotency_key": format!("b-{c}-{i}-{k}")})
                        })
                        .collect();
                    let (s, body, l) = post(
                        &client,
                        &format!("{base}/v1/usage/batch"),
                        &app,
                        &json!({ "usages": usages }),
                    )
                    .await;
                    let ok = body["results"]
                        .as_array()
                        .map_or(0, |r| r.iter().filter(|x| x["status"] == 201).count());
                    let failed = if s == 200 {
                        (USAGES_PER_BATCH - ok) as u64
                    } else {
                        USAGES_PER_BATCH as u64
                    };
                    (ok as u64, vec![l], failed)
                }
            },
        )
        .await
        .print();
    }
    runner
        .mark("POST /v1/usage/batch (1,000 per request), spread")
        .await;
    check_books(&store, &all).await;
    stripe_scenarios(&base, &store, seconds, &mut runner).await;
    drop(server);

    sql_baseline(&store, &customers).await.print();
    runner.print();

    // What batching costs and buys: the spread pairs again under other batch settings.
    if wanted("sweep") {
        println!("\nBatch settings (authorize + capture, spread; a server started with each):\n");
        println!(
            "| batch_max_commands | batch_max_wait_micros | throughput | p50 ms | p99 ms | max ms | errors | commands per batch |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let swept = dir.join(format!("{engine}-sweep.toml"));
        for (max, wait, tag) in SWEEP {
            write_config(
                &swept,
                database_url,
                &[
                    ("batch_max_commands", max.to_string()),
                    ("batch_max_wait_micros", wait.to_string()),
                ],
            );
            let server = start(&swept, &[]).await;
            let base = Arc::new(server.address.clone());
            let mut runner = Runner::new(&base, Writes::of(&server, &store)).await;
            let run = pairs("sweep", &base, &app, &customers, false, tag, seconds).await;
            runner.mark("sweep").await;
            let f = runner.rows.last().map(|(_, f)| *f).unwrap_or_default();
            println!(
                "| {max} | {wait} | {} | {:.1} |",
                run.figures(),
                f.commands / f.batches.max(1.0)
            );
            drop(server);
            check_books(&store, &all).await;
        }
    }
}

/// A paid checkout of one `topup_small` pack (1,000 credits) by a Stripe customer: event `n` of
/// sender `c`.
fn checkout_event(c: usize, n: u64) -> String {
    let id = format!("{c}_{n}");
    let customer = format!(
        "cus_bench_{:04}",
        (c * 7_919 + n as usize * 104_729) % STRIPE_CUSTOMERS
    );
    json!({
        "id": format!("evt_bench_{id}"), "object": "event", "type": "checkout.session.completed",
        "api_version": "2025-03-31.basil", "created": chrono::Utc::now().timestamp(), "livemode": false,
        "data": {"object": {
            "id": format!("cs_bench_{id}"), "object": "checkout.session", "mode": "payment",
            "payment_status": "paid", "status": "complete", "customer": customer,
            "amount_total": 1000, "amount_subtotal": 1000, "currency": "usd",
            "created": chrono::Utc::now().timestamp(), "payment_intent": format!("pi_bench_{id}"),
            "metadata": {"creditbook_pack": "topup_small"}}}
    })
    .to_string()
}

async fn deliver(
    client: &reqwest::Client,
    base: &str,
    body: String,
    secret: &str,
) -> (u16, String, u32) {
    let header = creditbook::stripe::signature::sign(
        body.as_bytes(),
        secret,
        chrono::Utc::now().timestamp(),
    );
    let t = Instant::now();
    let response = client
        .post(format!("{base}/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", header)
        .body(body)
        .send()
        .await;
    let (status, outcome) = match response {
        Ok(r) => {
            let status = r.status().as_u16();
            let value = r.json::<Value>().await.unwrap_or(Value::Null);
            (
                status,
                value["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        }
        Err(_) => (0, String::new()),
    };
    (status, outcome, t.elapsed().as_micros() as u32)
}

/// Stripe events from 16 senders: new paid checkouts spread over 1,000 Stripe customers, then
/// the same events delivered again; beside them, the same route refusing a wrong signature (no
/// database work). Then the books: every event applied once, each grant where it belongs.
async fn stripe_scenarios(base: &Arc<String>, store: &Store, seconds: u64, runner: &mut Runner) {
    let sent: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..STRIPE_SENDERS).map(|_| Default::default()).collect());
    {
        let base = base.clone();
        drive(
            "baseline: POST /webhooks/stripe, wrong signature",
            "req/s",
            STRIPE_SENDERS,
            seconds,
            move |client, c, i| {
                let base = base.clone();
                async move {
                    let (s, _, l) =
                        deliver(&client, &base, checkout_event(c, i), "whsec_wrong").await;
                    (1, vec![l], u64::from(s != 400))
                }
            },
        )
        .await
        .print();
    }
    // New events (sender `c`'s event `i`), then those events again: the answer each expects.
    for (name, outcome) in [
        ("Stripe: new checkout events, 1,000 customers", "applied"),
        ("Stripe: the same events again (duplicates)", "duplicate"),
    ] {
        let (base, sent) = (base.clone(), sent.clone());
        drive(
            name,
            "events/s",
            STRIPE_SENDERS,
            seconds,
            move |client, c, i| {
                let (base, sent) = (base.clone(), sent.clone());
                async move {
                    let n = match outcome {
                        "applied" => i,
                        _ => i % sent[c].load(std::sync::atomic::Ordering::Relaxed).max(1),
                    };
                    let (s, answer, l) =
                        deliver(&client, &base, checkout_event(c, n), WEBHOOK_SECRET).await;
                    let ok = s == 200 && answer == outcome;
                    if ok && outcome == "applied" {
                        sent[c].store(i + 1, std::sync::atomic::Ordering::Relaxed);
                    }
                    (u64::from(ok), vec![l], u64::from(!ok))
                }
            },
        )
        .await
        .print();
        runner.mark(name).await;
    }
    // The books: one grant of 1,000 credits per event applied, to the Stripe customer it names.
    let applied: u64 = sent
        .iter()
        .map(|s| s.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let customers: Vec<String> = (0..STRIPE_CUSTOMERS)
        .map(|k| format!("cus_bench_{k:04}"))
        .collect();
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    for (c, count) in sent.iter().enumerate() {
        for n in 0..count.load(std::sync::atomic::Ordering::Relaxed) {
            let body: Value = serde_json::from_str(&checkout_event(c, n)).unwrap();
            let customer = body["data"]["object"]["customer"]
                .as_str()
                .unwrap()
                .to_owned();
            *expected.entry(customer).or_default() += 1_000;
        }
    }
    let now = chrono::Utc::now();
    let mut total = 0_u64;
    for chunk in customers.chunks(500) {
        for (id, (book, _)) in store.view_many(chunk, now).await.expect("read books") {
            let granted: rust_decimal::Decimal =
                book.grants.iter().map(|g| g.credits.value()).sum();
            let want = expected.get(id.as_str()).copied().unwrap_or(0);
            assert_eq!(granted, want.into(), "{id}: credits granted");
            total += want;
        }
    }
    assert_eq!(total, applied * 1_000, "every applied event granted once");
    check_books(store, &customers).await;
    renewal_scenario(base, store, seconds, runner).await;
    stream_scenario(base, store, seconds, runner).await;
}

/// Each sender's own Stripe customers (every 16th of the first 992).
const RENEWING_PER_SENDER: u64 = 62;

/// A paid `pro` invoice (2,000 credits for $20) of sender `c`'s event `n`: its customer's next
/// monthly period from `epoch` (the first its subscription's creation, then renewals, in order).
fn renewal_event(c: usize, n: u64, epoch: i64) -> (String, String) {
    let k = c as u64 + STRIPE_SENDERS as u64 * (n % RENEWING_PER_SENDER);
    let period = n / RENEWING_PER_SENDER;
    let start = epoch + period as i64 * 30 * 86_400;
    let customer = format!("cus_renew_{k:04}");
    let id = format!("{k}_{period}");
    let line = json!({
        "id": format!("il_bench_{id}"), "object": "line_item", "amount": 2000, "currency": "usd",
        "quantity": 1, "period": {"start": start, "end": start + 30 * 86_400},
        "pricing": {"type": "price_details",
                    "price_details": {"price": "price_pro_monthly", "product": "prod_pro"}},
        "parent": {"type": "subscription_item_details", "subscription_item_details": {
            "subscription": format!("sub_bench_{k}"), "proration": false}}});
    let body = json!({
        "id": format!("evt_renew_{id}"), "object": "event", "type": "invoice.paid",
        "api_version": "2025-03-31.basil", "created": chrono::Utc::now().timestamp(),
        "livemode": false,
        "data": {"object": {
            "id": format!("in_bench_{id}"), "object": "invoice", "customer": customer,
            "currency": "usd", "status": "paid",
            "billing_reason": if period == 0 { "subscription_create" } else { "subscription_cycle" },
            "amount_paid": 2000, "total": 2000,
            "parent": {"type": "subscription_details", "subscription_details": {
                "subscription": format!("sub_bench_{k}")}},
            "payments": {"object": "list", "data": [{"payment": {
                "type": "payment_intent", "payment_intent": format!("pi_in_bench_{id}")}}]},
            "lines": {"object": "list", "has_more": false, "data": [line]}}}
    });
    (customer, body.to_string())
}

/// Paid renewal invoices from 16 senders, each renewing its own customers' subscriptions month
/// after month, in order (so each paid period after the first is a renewal); then the books:
/// every invoice granted its 2,000 credits once.
async fn renewal_scenario(base: &Arc<String>, store: &Store, seconds: u64, runner: &mut Runner) {
    let epoch = chrono::Utc::now().timestamp();
    let sent: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..STRIPE_SENDERS).map(|_| Default::default()).collect());
    {
        let (base, sent) = (base.clone(), sent.clone());
        drive(
            "Stripe: paid renewal invoices, 992 customers",
            "events/s",
            STRIPE_SENDERS,
            seconds,
            move |client, c, i| {
                let (base, sent) = (base.clone(), sent.clone());
                async move {
                    let (_, body) = renewal_event(c, i, epoch);
                    let (s, answer, l) = deliver(&client, &base, body, WEBHOOK_SECRET).await;
                    let ok = s == 200 && answer == "applied";
                    if ok {
                        sent[c].store(i + 1, std::sync::atomic::Ordering::Relaxed);
                    }
                    (u64::from(ok), vec![l], u64::from(!ok))
                }
            },
        )
        .await
        .print();
        runner
            .mark("Stripe: paid renewal invoices, 992 customers")
            .await;
    }
    check_renewed(store, &sent, |c, n| renewal_event(c, n, epoch).0).await;
}

/// The statements of one authorization, one command per transaction, from one client: what the
/// engine gives without the service and without batching.
async fn sql_baseline(store: &Store, customers: &[String]) -> Run {
    use creditbook::domain::ledger::HoldStatus;
    use entity::{
        customers as c, grants as g, holds as h, idempotency_records as ir, ledger_entries as le,
    };
    use sea_orm::ActiveValue::{NotSet, Set};
    use sea_orm::sea_query::{Expr, ExprTrait};
    use sea_orm::{
        ColumnTrait, DbBackend, EntityTrait, QueryFilter, SqliteTransactionMode,
        TransactionOptions, TransactionTrait,
    };
    let db = store.connection();
    let sqlite = db.get_database_backend() == DbBackend::Sqlite;
    let mut run = Run {
        name: "baseline: the same SQL, 1 command/txn, 1 client".into(),
        units: 0,
        unit: "cmd/s",
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let started = Instant::now();
    let now = chrono::Utc::now().timestamp_micros();
    for n in 0..SQL_COMMANDS {
        let t = Instant::now();
        let customer = &customers[n % customers.len()];
        let txn = db
            .begin_with_options(TransactionOptions {
                isolation_level: None,
                access_mode: None,
                sqlite_transaction_mode: sqlite.then_some(SqliteTransactionMode::Immediate),
            })
            .await
            .unwrap();
        c::Entity::update_many()
            .col_expr(c::Column::Version, Expr::col(c::Column::Version).add(1))
            .filter(c::Column::Id.eq(customer))
            .exec(&txn)
            .await
            .unwrap();
        c::Entity::find_by_id(customer.clone())
            .one(&txn)
            .await
            .unwrap();
        let grant = g::Entity::find()
            .filter(g::Column::CustomerId.eq(customer))
            .filter(g::Column::Expired.eq(false))
            .all(&txn)
            .await
            .unwrap()
            .into_iter()
            .find(|g| g.remaining - g.held >= 1_000_000)
            .expect("a grant with a free credit");
        h::Entity::find()
            .filter(h::Column::CustomerId.eq(customer))
            .filter(h::Column::Status.eq("held"))
            .all(&txn)
            .await
            .unwrap();
        let hold_id = format!("hold_sql_{n}");
        h::Entity::insert(h::ActiveModel {
            id: Set(hold_id.clone()),
            customer_id: Set(customer.clone()),
            action: Set("chat.request".into()),
            quantity: Set("1".into()),
            credits: Set(1_000_000),
            overdraft: Set(0),
            status: Set(HoldStatus::Voided.as_str().into()),
            expires_at: Set(now),
            captured: Set(None),
            created_at: Set(now),
            resolved_at: Set(Some(now)),
            subject: Set(None),
        })
        .exec_without_returning(&txn)
        .await
        .unwrap();
        // Held and released at once, so the books stay as they were for the audit.
        g::Entity::update_many()
            .col_expr(g::Column::Held, Expr::col(g::Column::Held).add(0))
            .filter(g::Column::Id.eq(grant.id.clone()))
            .filter(g::Column::Held.eq(grant.held))
            .exec(&txn)
            .await
            .unwrap();
        le::Entity::insert(le::ActiveModel {
            id: NotSet,
            operation_id: Set(format!("op_sql_{n}")),
            position: Set(0),
            customer_id: Set(customer.clone()),
            kind: Set("release".into()),
            grant_id: Set(Some(grant.id.clone())),
            hold_id: Set(Some(hold_id)),
            action: Set(Some("chat.request".into())),
            quantity: Set(Some("1".into())),
            credits: Set(0),
            held: Set(0),
            overage: Set(0),
            effective_at: Set(now),
            recorded_at: Set(now),
            money: Set(None),
            reason: Set(None),
            actor: Set(None),
            subject: Set(None),
        })
        .exec_without_returning(&txn)
        .await
        .unwrap();
        ir::Entity::insert(ir::ActiveModel {
            customer_id: Set(customer.clone()),
            idempotency_key: Set(format!("sql-{n}")),
            request_hash: Set("x".into()),
            body: Set("{}".into()),
            created_at: Set(now),
        })
        .exec_without_returning(&txn)
        .await
        .unwrap();
        txn.commit().await.unwrap();
        run.latencies.push(t.elapsed().as_micros() as u32);
        run.units += 1;
    }
    run.elapsed = started.elapsed();
    run
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    println!(
        "# creditbook gate benchmark ({} s per scenario)",
        env_number("CREDITBOOK_BENCH_SECONDS", 5)
    );
    let sqlite_url = format!("sqlite://{}/bench.db?mode=rwc", dir.path().display());
    bench_engine("SQLite", &sqlite_url, dir.path()).await;
    match std::env::var("CREDITBOOK_BENCH_POSTGRES_URL") {
        Ok(admin) => {
            let url = common::postgres_database(&admin, "cb_bench").await;
            bench_engine("PostgreSQL", &url, dir.path()).await;
        }
        Err(_) => println!("\n(PostgreSQL skipped: set CREDITBOOK_BENCH_POSTGRES_URL)"),
    }
}

/// Sender `c`'s renewal `n` as Stripe sends it (API 2025-03-31.basil): the subscription's new
/// period, its paid `pro` invoice (which names no payment), then the invoice payment that paid
/// it; each event `created` after the one before.
fn stream_events(c: usize, n: u64, created: i64) -> (String, [String; 3]) {
    let k = c as u64 + STRIPE_SENDERS as u64 * (n % RENEWING_PER_SENDER);
    let period = n / RENEWING_PER_SENDER;
    let start = created + period as i64 * 30 * 86_400;
    let end = start + 30 * 86_400;
    let customer = format!("cus_stream_{k:04}");
    let (id, subscription) = (format!("{k}_{period}"), format!("sub_stream_{k}"));
    let at = created + 3 * n as i64;
    let event = |kind: &str, type_: &str, at: i64, object: Value| {
        json!({"id": format!("evt_stream_{kind}_{id}"), "object": "event", "type": type_,
               "api_version": "2025-03-31.basil", "created": at, "livemode": false,
               "data": {"object": object}})
        .to_string()
    };
    let updated = event(
        "sub",
        "customer.subscription.updated",
        at,
        json!({"id": subscription, "object": "subscription", "customer": customer,
               "status": "active", "items": {"object": "list", "data": [{
                   "id": format!("si_stream_{k}"), "object": "subscription_item", "quantity": 1,
                   "current_period_start": start, "current_period_end": end,
                   "price": {"id": "price_pro_monthly", "object": "price"}}]}}),
    );
    let line = json!({
        "id": format!("il_stream_{id}"), "object": "line_item", "amount": 2000, "currency": "usd",
        "quantity": 1, "period": {"start": start, "end": end},
        "pricing": {"type": "price_details",
                    "price_details": {"price": "price_pro_monthly", "product": "prod_pro"}},
        "parent": {"type": "subscription_item_details", "subscription_item_details": {
            "subscription": subscription, "proration": false}}});
    let paid = event(
        "inv",
        "invoice.paid",
        at + 1,
        json!({"id": format!("in_stream_{id}"), "object": "invoice", "customer": customer,
               "currency": "usd", "status": "paid",
               "billing_reason": if period == 0 { "subscription_create" } else { "subscription_cycle" },
               "amount_paid": 2000, "total": 2000,
               "parent": {"type": "subscription_details", "subscription_details": {
                   "subscription": subscription}},
               "lines": {"object": "list", "has_more": false, "data": [line]}}),
    );
    let payment = event(
        "pay",
        "invoice_payment.paid",
        at + 2,
        json!({"id": format!("inpay_stream_{id}"), "object": "invoice_payment",
               "invoice": format!("in_stream_{id}"), "status": "paid",
               "payment": {"type": "payment_intent", "payment_intent": format!("pi_stream_{id}")}}),
    );
    (customer, [updated, paid, payment])
}

/// Renewals as Stripe sends them, from 16 senders: each renewal's subscription, invoice and
/// invoice payment events in order. Then the books: every invoice granted its 2,000 credits once.
async fn stream_scenario(base: &Arc<String>, store: &Store, seconds: u64, runner: &mut Runner) {
    const NAME: &str = "Stripe: renewals as sent (3 events each), 992 customers";
    let created = chrono::Utc::now().timestamp();
    let sent: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..STRIPE_SENDERS).map(|_| Default::default()).collect());
    {
        let (base, sent) = (base.clone(), sent.clone());
        drive(
            NAME,
            "events/s",
            STRIPE_SENDERS,
            seconds,
            move |client, c, i| {
                let (base, sent) = (base.clone(), sent.clone());
                async move {
                    let (_, bodies) = stream_events(c, i, created);
                    let mut latencies = Vec::new();
                    for body in bodies {
                        let (s, answer, l) = deliver(&client, &base, body, WEBHOOK_SECRET).await;
                        latencies.push(l);
                        if s != 200 || answer != "applied" {
                            return (0, latencies, 1);
                        }
                    }
                    sent[c].store(i + 1, std::sync::atomic::Ordering::Relaxed);
                    (3, latencies, 0)
                }
            },
        )
        .await
        .print();
    }
    runner.mark(NAME).await;
    check_renewed(store, &sent, |c, n| stream_events(c, n, created).0).await;
}

/// The books after renewals: each customer (`customer_of` sender `c`'s event `n`) holds 2,000
/// plan credits per invoice its senders saw applied, and the books hold.
async fn check_renewed(
    store: &Store,
    sent: &[std::sync::atomic::AtomicU64],
    customer_of: impl Fn(usize, u64) -> String,
) {
    let mut expected = std::collections::BTreeMap::<String, u64>::new();
    for (c, count) in sent.iter().enumerate() {
        for n in 0..count.load(std::sync::atomic::Ordering::Relaxed) {
            *expected.entry(customer_of(c, n)).or_default() += 2_000;
        }
    }
    let customers: Vec<String> = expected.keys().cloned().collect();
    let now = chrono::Utc::now();
    for chunk in customers.chunks(500) {
        for (id, (book, _)) in store.view_many(chunk, now).await.expect("read books") {
            let granted: rust_decimal::Decimal =
                book.grants.iter().map(|g| g.credits.value()).sum();
            assert_eq!(
                granted,
                expected[id.as_str()].into(),
                "{id}: plan credits granted"
            );
        }
    }
    check_books(store, &customers).await;
}
