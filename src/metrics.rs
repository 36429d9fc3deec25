//! Counters exposed at `/metrics` in the Prometheus text format.

use crate::store::RunnerStats;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request latency buckets, in microseconds (Prometheus `le`, in seconds).
const LATENCY_BUCKETS_MICROS: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// One route and status's latencies: counts per bucket (not cumulative), total and sum.
#[derive(Default, Clone)]
struct Latencies {
    buckets: [u64; LATENCY_BUCKETS_MICROS.len()],
    count: u64,
    sum_micros: u64,
}

#[derive(Default)]
pub struct Metrics {
    /// Request latencies by (route template, status). Routes are the router's templates (or
    /// `unmatched`), so the number of series is bounded.
    latencies: Mutex<BTreeMap<(String, u16), Latencies>>,
    pub responses_2xx: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub authorizations_approved: AtomicU64,
    pub authorizations_refused: AtomicU64,
    pub captures: AtomicU64,
    pub voids: AtomicU64,
    pub usages: AtomicU64,
    pub idempotent_replays: AtomicU64,
    pub customers_settled_by_jobs: AtomicU64,
    pub webhooks_delivered: AtomicU64,
    pub webhooks_failed: AtomicU64,
    /// Requests refused because `max_concurrent_requests` were being answered.
    pub requests_refused_overloaded: AtomicU64,
    /// Requests answered 503 at `request_timeout_seconds`.
    pub requests_timed_out: AtomicU64,
    /// Gauges read from the database by the job loop (never per scrape): refunds waiting for
    /// their payment, and outbox rows by status; none until the first run.
    pub gauges: Mutex<Option<Gauges>>,
}

/// What the database says, as of the job loop's last run.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub stripe_refunds_pending: Option<u64>,
    pub outbox: Vec<(&'static str, u64)>,
}

impl Metrics {
    pub fn bump(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records one request's latency under its route template and status.
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let mut latencies = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        let series = latencies.entry((route.to_owned(), status)).or_default();
        if let Some(bucket) = LATENCY_BUCKETS_MICROS.iter().position(|&le| micros <= le) {
            series.buckets[bucket] += 1;
        }
        series.count += 1;
        series.sum_micros = series.sum_micros.saturating_add(micros);
    }

    pub fn count_response(&self, status: u16) {
        match status {
            200..=299 => Self::bump(&self.responses_2xx),
            400..=499 => Self::bump(&self.responses_4xx),
            500..=599 => Self::bump(&self.responses_5xx),
            _ => {}
        }
    }

    /// The counters, then the gate runner's (`runner`).
    // Long: one block per metric family, in the order the README lists them.
    pub fn render(&self, runner: &RunnerStats) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        counter(
            "creditbook_http_responses_total",
            "HTTP responses by status class.",
            &[
                ("{class=\"2xx\"}", get(&self.responses_2xx)),
                ("{class=\"4xx\"}", get(&self.responses_4xx)),
                ("{class=\"5xx\"}", get(&self.responses_5xx)),
            ],
        );
        counter(
            "creditbook_http_requests_refused_total",
            "Requests answered 503 by the server's bounds, by reason.",
            &[
                (
                    "{reason=\"overloaded\"}",
                    get(&self.requests_refused_overloaded),
                ),
                ("{reason=\"timed_out\"}", get(&self.requests_timed_out)),
            ],
        );
        counter(
            "creditbook_authorizations_total",
            "Authorizations by result.",
            &[
                ("{result=\"approved\"}", get(&self.authorizations_approved)),
                ("{result=\"refused\"}", get(&self.authorizations_refused)),
            ],
        );
        counter(
            "creditbook_captures_total",
            "Holds captured.",
            &[("", get(&self.captures))],
        );
        counter(
            "creditbook_voids_total",
            "Holds voided.",
            &[("", get(&self.voids))],
        );
        counter(
            "creditbook_usages_total",
            "One-shot usages recorded.",
            &[("", get(&self.usages))],
        );
        counter(
            "creditbook_idempotent_replays_total",
            "Writes answered from an earlier request with the same idempotency key.",
            &[("", get(&self.idempotent_replays))],
        );
        counter(
            "creditbook_job_customers_settled_total",
            "Customers whose due holds or grants a job expired.",
            &[("", get(&self.customers_settled_by_jobs))],
        );
        counter(
            "creditbook_webhook_deliveries_total",
            "Outbound webhook attempts, by result.",
            &[
                ("{result=\"delivered\"}", get(&self.webhooks_delivered)),
                ("{result=\"failed\"}", get(&self.webhooks_failed)),
            ],
        );
        counter(
            "creditbook_gate_batches_total",
            "Batches the gate's runner ran (one transaction, one commit each).",
            &[("", get(&runner.batches))],
        );
        counter(
            "creditbook_gate_batch_commands_total",
            "Commands run in those batches.",
            &[("", get(&runner.commands))],
        );
        counter(
            "creditbook_gate_split_batches_total",
            "Batches that failed as a whole and were run again one command at a time.",
            &[("", get(&runner.split_batches))],
        );
        counter(
            "creditbook_stripe_events_together_total",
            "Stripe checkout events applied in runs decided together (one read and one write \
             of each table for the run).",
            &[("", get(&runner.stripe_events_together))],
        );
        counter(
            "creditbook_stripe_batches_total",
            "Batches of Stripe events committed, one transaction each.",
            &[("", get(&runner.stripe_batches))],
        );
        counter(
            "creditbook_stripe_batch_events_total",
            "Stripe events applied in those batches (their ratio is the mean batch size).",
            &[("", get(&runner.stripe_batch_events))],
        );
        counter(
            "creditbook_stripe_split_runs_total",
            "Runs of Stripe checkout events that failed as a whole and were applied again one \
             event at a time.",
            &[("", get(&runner.stripe_runs_split))],
        );
        counter(
            "creditbook_stripe_deferred_total",
            "Stripe events that found a lock taken behind other events of their batch on \
             PostgreSQL, and were applied on their own once the batch committed.",
            &[("", get(&runner.stripe_deferred))],
        );
        counter(
            "creditbook_gate_books_total",
            "Customers' books decided on by batches and checks, by where they came from: kept in \
             memory since the last batch, or read from the database.",
            &[
                ("{from=\"memory\"}", get(&runner.books_from_memory)),
                ("{from=\"database\"}", get(&runner.books_from_database)),
            ],
        );
        counter(
            "creditbook_gate_books_confirmed_total",
            "Books kept in memory that a read of their customers' versions confirmed current for \
             checks: in the background before they grew stale, or by a check's own read.",
            &[
                (
                    "{by=\"background\"}",
                    get(&runner.books_confirmed_in_background),
                ),
                ("{by=\"check\"}", get(&runner.books_confirmed_by_check)),
            ],
        );
        let seconds = |micros: u64| format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
        let _ = writeln!(
            out,
            "# HELP creditbook_http_request_duration_seconds Time to answer a request, by route \
             and status.\n# TYPE creditbook_http_request_duration_seconds histogram"
        );
        let latencies = self
            .latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for ((route, status), series) in &latencies {
            let labels = format!("route=\"{route}\",status=\"{status}\"");
            let mut cumulative = 0;
            for (le, n) in LATENCY_BUCKETS_MICROS.iter().zip(series.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "creditbook_http_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}",
                    seconds(*le)
                );
            }
            let _ = writeln!(
                out,
                "creditbook_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}\n\
                 creditbook_http_request_duration_seconds_sum{{{labels}}} {}\n\
                 creditbook_http_request_duration_seconds_count{{{labels}}} {}",
                series.count,
                seconds(series.sum_micros),
                series.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP creditbook_gate_queue_wait_seconds_total Time commands waited in the queue \
             before their batch began, summed.\n# TYPE creditbook_gate_queue_wait_seconds_total \
             counter\ncreditbook_gate_queue_wait_seconds_total {}",
            seconds(get(&runner.queue_wait_micros))
        );
        let _ = writeln!(
            out,
            "# HELP creditbook_gate_batch_seconds_total Time batches spent, by phase.\n\
             # TYPE creditbook_gate_batch_seconds_total counter"
        );
        for (phase, micros) in [
            ("load", &runner.load_micros),
            ("decide", &runner.decide_micros),
            ("write", &runner.write_micros),
            ("post", &runner.post_micros),
            ("commit", &runner.commit_micros),
        ] {
            let _ = writeln!(
                out,
                "creditbook_gate_batch_seconds_total{{phase=\"{phase}\"}} {}",
                seconds(get(micros))
            );
        }
        out
    }
}

/// Reads the gauges `/metrics` shows, once per job run, so that a scrape reads no table; a
/// gauge the database cannot give now keeps its last value.
pub async fn refresh_gauges(store: &crate::store::Store, metrics: &Metrics) {
    let pending = store.pending_stripe_refunds().await;
    let outbox = store.outbox_counts().await;
    let mut gauges = metrics.gauges.lock().unwrap_or_else(|e| e.into_inner());
    let current = gauges.get_or_insert_with(Default::default);
    match pending {
        Ok(n) => current.stripe_refunds_pending = Some(n),
        Err(e) => tracing::warn!(error = %e, "pending refunds not read for /metrics"),
    }
    match outbox {
        Ok(counts) => {
            current.outbox = counts
                .into_iter()
                .map(|(status, n)| (status.as_str(), n))
                .collect();
        }
        Err(e) => tracing::warn!(error = %e, "outbox not counted for /metrics"),
    }
}
