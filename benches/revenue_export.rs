//! Builds a history of 1,000,000 consumptions over 10,000 customers (one $100 pack each, used a
//! hundred times across 2026, every posting made by the domain's own lots), then prints how long
//! the journal export and the roll-forward take and the peak memory of each.
//!
//! `cargo bench --bench revenue_export` (SQLite in a temporary directory), or with
//! `CREDITBOOK_BENCH_DATABASE_URL=postgres://...` against an empty PostgreSQL database.
//! `CREDITBOOK_BENCH_CUSTOMERS` and `CREDITBOOK_BENCH_USES` change the size.
//!
//! Not a timed test: it prints figures. It fails only if the export's memory is not bounded
//! (peak growth beyond `MAX_EXPORT_GROWTH_BYTES` while writing the journal).

use chrono::{DateTime, Duration, TimeZone, Utc};
use creditbook::domain::catalog::Breakage;
use creditbook::domain::money::Credits;
use creditbook::domain::revrec::{Lot, Period, Posting};
use creditbook::store::Store;
use rust_decimal::Decimal;
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::EntityTrait;
use std::time::Instant;

/// What writing the journal may add to the process's peak memory, whatever its size.
const MAX_EXPORT_GROWTH_BYTES: u64 = 256 * 1024 * 1024;
/// Rows per INSERT (SQLite allows 32,766 variables per statement).
const BATCH_ROWS: usize = 1_000;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident memory of this process since the last reset (Linux), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Starts a new peak-memory window (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn current_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

struct Batches {
    customers: Vec<entity::customers::ActiveModel>,
    grants: Vec<entity::grants::ActiveModel>,
    lots: Vec<entity::revenue_lots::ActiveModel>,
    lines: Vec<entity::journal_lines::ActiveModel>,
    entries: u64,
}

impl Batches {
    async fn flush(&mut self, store: &Store, all: bool) {
        let db = store.connection();
        if all || self.customers.len() >= BATCH_ROWS {
            if !self.customers.is_empty() {
                entity::customers::Entity::insert_many(std::mem::take(&mut self.customers))
                    .exec_without_returning(db)
                    .await
                    .expect("customers");
            }
            if !self.grants.is_empty() {
                entity::grants::Entity::insert_many(std::mem::take(&mut self.grants))
                    .exec_without_returning(db)
                    .await
                    .expect("grants");
            }
            if !self.lots.is_empty() {
                entity::revenue_lots::Entity::insert_many(std::mem::take(&mut self.lots))
                    .exec_without_returning(db)
                    .await
                    .expect("lots");
            }
        }
        while self.lines.len() >= BATCH_ROWS || (all && !self.lines.is_empty()) {
            let take = self.lines.len().min(BATCH_ROWS);
            let chunk: Vec<_> = self.lines.drain(..take).collect();
            entity::journal_lines::Entity::insert_many(chunk)
                .exec_without_returning(db)
                .await
                .expect("journal lines");
        }
    }

    fn post(&mut self, customer: &str, grant: &str, source: &str, posting: &Posting) {
        self.entries += 1;
        let entry_id = format!("je_bench_{:012}", self.entries);
        let at = posting.effective_at.timestamp_micros();
        for (index, line) in posting.lines.iter().enumerate() {
            self.lines.push(entity::journal_lines::ActiveModel {
                id: NotSet,
                entry_id: Set(entry_id.clone()),
                line: Set(index as i32 + 1),
                kind: Set(posting.kind.as_str().to_owned()),
                effective_at: Set(at),
                booked_at: Set(at),
                period: Set(Period::of(posting.effective_at).to_string()),
                adjustment: Set(false),
                account: Set(line.account.as_str().to_owned()),
                debit: Set(line.debit.to_micros().unwrap()),
                credit: Set(line.credit.to_micros().unwrap()),
                currency: Set(posting.currency.clone()),
                customer_id: Set(customer.to_owned()),
                grant_id: Set(Some(grant.to_owned())),
                source: Set(Some(source.to_owned())),
                event: Set(None),
                memo: Set(posting.memo.clone()),
                posted_at: Set(at),
            });
        }
    }
}

#[tokio::main]
async fn main() {
    let customers = env_number("CREDITBOOK_BENCH_CUSTOMERS", 10_000);
    let uses = env_number("CREDITBOOK_BENCH_USES", 100);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = std::env::var("CREDITBOOK_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}/bench.db?mode=rwc", dir.path().display()));
    let engine = if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let store = Store::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");

    println!(
        "revenue export benchmark: {customers} customers x {uses} consumptions = {} on {engine}",
        customers * uses
    );
    let build = Instant::now();
    let year: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let price = Credits::new(Decimal::from(100)).unwrap();
    let credits = Credits::new(Decimal::from(12_000)).unwrap();
    let mut batches = Batches {
        customers: Vec::new(),
        grants: Vec::new(),
        lots: Vec::new(),
        lines: Vec::new(),
        entries: 0,
    };
    for c in 0..customers {
        let customer = format!("bench_{c:05}");
        let grant = format!("grant_bench_{c:05}");
        let bought = year + Duration::hours((c % 24 * 24) as i64);
        let (mut lot, payment) = Lot::pack(&grant, "usd", price, credits, Breakage::Remote, bought);
        batches.post(&customer, &grant, "checkout:bench", &payment);
        for u in 0..uses {
            // Spread over the year, a few credits each.
            let at = bought + Duration::minutes((u * 5_000 + c % 997) as i64);
            let used = Credits::new(Decimal::new(((c + u) % 50 + 1) as i64, 0)).unwrap();
            if let Some(posting) = lot.consume(used, at) {
                batches.post(&customer, &grant, &format!("usage_bench_{c}_{u}"), &posting);
            }
        }
        batches.customers.push(entity::customers::ActiveModel {
            id: Set(customer.clone()),
            plan_id: Set(None),
            overdraft: Set(0),
            overdraft_held: Set(0),
            frozen: Set(false),
            version: Set(0),
            created_at: Set(bought.timestamp_micros()),
            past_due_since: Set(None),
            renews_at: Set(None),
            alert_state: Set(0),
            alert_arming: Set(0),
            limits: Set(None),
            overrides: Set(None),
            low_balance: Set(None),
            auto_topup: Set(None),
        });
        batches.grants.push(entity::grants::ActiveModel {
            id: Set(grant.clone()),
            customer_id: Set(customer.clone()),
            kind: Set("pack".into()),
            credits: Set(credits.to_micros().unwrap()),
            remaining: Set(lot.remaining().to_micros().unwrap()),
            held: Set(0),
            price: Set(Some(price.to_micros().unwrap())),
            currency: Set(Some("usd".into())),
            expires_at: Set(None),
            expired: Set(false),
            priority: Set(20),
            plan_id: Set(None),
            pack_id: Set(Some("topup_large".into())),
            source_type: Set("bench".into()),
            source_id: Set(grant.clone()),
            created_at: Set(bought.timestamp_micros()),
            refunded: Set(0),
            expiry_warned_for: Set(None),
        });
        batches.lots.push(entity::revenue_lots::ActiveModel {
            grant_id: Set(grant.clone()),
            customer_id: Set(customer.clone()),
            catalog_item: Set("pack:topup_large".into()),
            currency: Set("usd".into()),
            price: Set(lot.price.to_micros().unwrap()),
            credits: Set(lot.credits.to_micros().unwrap()),
            breakage: Set("remote".into()),
            expected_unused: Set(None),
            consumed: Set(lot.consumed.to_micros().unwrap()),
            lapsed: Set(0),
            removed: Set(0),
            forfeited: Set(0),
            usage_recognized: Set(lot.usage.to_micros().unwrap()),
            breakage_recognized: Set(0),
            refunded: Set(0),
            contra: Set(0),
            transferred: Set(0),
            platform_amount: Set(None),
            platform_first_day: Set(None),
            platform_days: Set(None),
            platform_days_done: Set(None),
            platform_recognized: Set(None),
            platform_refunded: Set(None),
            platform_contra: Set(None),
            platform_next_at: Set(None),
            booked_period: Set(Period::of(bought).to_string()),
            created_at: Set(bought.timestamp_micros()),
        });
        batches.flush(&store, false).await;
    }
    batches.flush(&store, true).await;
    println!(
        "  history built: {} journal entries in {:.1} s",
        batches.entries,
        build.elapsed().as_secs_f64()
    );
    drop(batches);

    let out = dir.path().join("journal.csv");
    let baseline = current_rss_bytes();
    reset_peak();
    let started = Instant::now();
    let exported = creditbook::export::export(&store, "2026-01-01", "2027-12-31", &out, |_, _| {})
        .await
        .expect("export");
    let export_seconds = started.elapsed().as_secs_f64();
    let export_peak = peak_rss_bytes().unwrap_or(0);
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "  export (journal CSV + roll-forward + waterfall): {} lines, {} written, {:.1} s, {:.0} lines/s",
        exported.journal_lines,
        mib(size),
        export_seconds,
        exported.journal_lines as f64 / export_seconds
    );
    println!(
        "    peak memory {} (resident before: {}, growth {})",
        mib(export_peak),
        mib(baseline),
        mib(export_peak.saturating_sub(baseline))
    );

    let baseline = current_rss_bytes();
    reset_peak();
    let started = Instant::now();
    let rows = store
        .rollforward(Period::of(year), Period::of(year + Duration::days(364)))
        .await
        .expect("roll-forward");
    let rollforward_seconds = started.elapsed().as_secs_f64();
    let rollforward_peak = peak_rss_bytes().unwrap_or(0);
    println!(
        "  roll-forward (12 months): {:.2} s; peak memory {} (growth {})",
        rollforward_seconds,
        mib(rollforward_peak),
        mib(rollforward_peak.saturating_sub(baseline))
    );
    let december = rows.last().expect("a row per month");
    println!(
        "    December: opening {}, recognized {}, closing {}",
        december.opening, december.recognized, december.closing
    );
    assert!(
        export_peak.saturating_sub(baseline) < MAX_EXPORT_GROWTH_BYTES,
        "the export's memory grew by {}: not bounded",
        mib(export_peak.saturating_sub(baseline))
    );
}
