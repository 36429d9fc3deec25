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
use creditbook::domain::money::{Credits, Money};
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

/// One reading of this process's resident memory (Linux `/proc/self/status`), in bytes:
/// anonymous (the heap and stacks: what the process itself holds) and file-backed (pages of
/// mapped files, such as SQLite's memory-mapped database, which the kernel reclaims at will).
#[derive(Debug, Clone, Copy, Default)]
struct Resident {
    anonymous: u64,
    file: u64,
}

fn resident() -> Resident {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    Resident {
        anonymous: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// The peaks of resident memory while some work runs, read every 5 ms by a thread of its own,
/// beside the reading taken just before the work began.
struct PeakWatch {
    before: Resident,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<Resident>,
}

impl PeakWatch {
    fn start() -> PeakWatch {
        let before = resident();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = resident();
            loop {
                let now = resident();
                peak.anonymous = peak.anonymous.max(now.anonymous);
                peak.file = peak.file.max(now.file);
                if stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        PeakWatch {
            before,
            stop,
            sampler,
        }
    }

    /// Stops watching: (the reading before, the peaks while watched).
    fn finish(self) -> (Resident, Resident) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peak = self.sampler.join().expect("the sampler");
        (self.before, peak)
    }
}

/// How much the process's own memory grew while watched: the guard's measure.
fn growth((before, peak): (Resident, Resident)) -> u64 {
    peak.anonymous.saturating_sub(before.anonymous)
}

/// The guard must be able to fail: memory held during a watch beyond the bound is reported as
/// growth beyond it (or the benchmark's own measurement is broken, and it stops here).
fn the_guard_can_fail() {
    let watch = PeakWatch::start();
    let mut held: Vec<u8> = vec![0; (MAX_EXPORT_GROWTH_BYTES + 64 * 1024 * 1024) as usize];
    // Touch every page so it is resident, as an unbounded export's rows would be.
    for page in held.chunks_mut(4096) {
        page[0] = 1;
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let seen = growth(watch.finish());
    drop(std::hint::black_box(held));
    assert!(
        seen >= MAX_EXPORT_GROWTH_BYTES,
        "the memory guard saw {} of {} held: it could not fail",
        mib(seen),
        mib(MAX_EXPORT_GROWTH_BYTES + 64 * 1024 * 1024)
    );
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
    let price = Money::new(Decimal::from(100)).unwrap();
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
            credit_cycle: Set(None),
            next_grant_at: Set(None),
            parent_id: Set(None),
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
            frozen: Set(false),
            starts_at: Set(None),
            scheduled: Set(false),
            shared: Set(true),
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

    the_guard_can_fail();
    let out = dir.path().join("journal.csv");
    // As `creditbook revenue export` does: on one connection of its own.
    let exporter = Store::connect_with(
        &url,
        creditbook::store::PoolSettings {
            max_connections: Some(1),
            ..Default::default()
        },
    )
    .await
    .expect("connect the exporter");
    let watch = PeakWatch::start();
    let started = Instant::now();
    let exported =
        creditbook::export::export(&exporter, "2026-01-01", "2027-12-31", &out, |_, _| {})
            .await
            .expect("export");
    let export_seconds = started.elapsed().as_secs_f64();
    let export_memory = watch.finish();
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    println!(
        "  export (journal CSV + roll-forward + waterfall): {} lines, {} written, {:.1} s, {:.0} lines/s",
        exported.journal_lines,
        mib(size),
        export_seconds,
        exported.journal_lines as f64 / export_seconds
    );
    print_memory(export_memory);

    let watch = PeakWatch::start();
    let started = Instant::now();
    let rows = store
        .rollforward(Period::of(year), Period::of(year + Duration::days(364)))
        .await
        .expect("roll-forward");
    let rollforward_seconds = started.elapsed().as_secs_f64();
    let rollforward_memory = watch.finish();
    println!("  roll-forward (12 months): {rollforward_seconds:.2} s");
    print_memory(rollforward_memory);
    let december = rows.last().expect("a row per month");
    println!(
        "    December: opening {}, recognized {}, closing {}",
        december.opening, december.recognized, december.closing
    );
    assert!(
        growth(export_memory) < MAX_EXPORT_GROWTH_BYTES,
        "the export's memory grew by {}: not bounded",
        mib(growth(export_memory))
    );
}

fn print_memory((before, peak): (Resident, Resident)) {
    println!(
        "    peak memory: own (anonymous) {} (before: {}, growth {}); mapped database pages {} \
         (before: {})",
        mib(peak.anonymous),
        mib(before.anonymous),
        mib(peak.anonymous.saturating_sub(before.anonymous)),
        mib(peak.file),
        mib(before.file)
    );
}
