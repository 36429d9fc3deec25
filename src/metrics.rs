//! Counters exposed at `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
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
}

impl Metrics {
    pub fn bump(counter: &AtomicU64) {
        Self::add(counter, 1);
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn count_response(&self, status: u16) {
        match status {
            200..=299 => Self::bump(&self.responses_2xx),
            400..=499 => Self::bump(&self.responses_4xx),
            500..=599 => Self::bump(&self.responses_5xx),
            _ => {}
        }
    }

    pub fn render(&self) -> String {
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
        out
    }
}
