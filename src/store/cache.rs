//! Books in memory: the last committed state of the customers' books this process has read or
//! written, kept between batches.
//!
//! - **For writes** a cached book is used only when it is exactly the database's: under the
//!   batch's row lock the customer's `version` must be the one the book was committed at plus the
//!   lock's own step (`book::run_commands`). Any other writer, in this process or another, moves
//!   the version, and the book is read again. Correctness still comes from the database.
//! - **For `check`** a cached book is used while it is younger than `[ledger]
//!   check_staleness_ms`; an older one is confirmed with one read of the customer's version (and
//!   read again only when the version moved): an entry is stamped with an instant before which every commit of its
//!   customer is in it, so `check` reflects every write committed longer ago than that bound, in
//!   any process; the batches of this process publish their books as they commit, and its other
//!   writers forget the customers they wrote, so this process's own writes are seen at once.
//!
//! - **Kept fresh in the background**: a book `check` decides on past half the bound is noted,
//!   and a background round (`Store::check_view` starts it, a round every quarter of the bound) reads the
//!   versions of the noted customers with one statement per chunk and confirms those unchanged,
//!   as of the instant before the read. A customer `check`s keep asking for is then confirmed
//!   before its book grows stale, and its checks never wait for a read; one whose version moved
//!   is left to be read again by its next check.
//!
//! At most [`MAX_CACHED_BOOKS`] customers are kept; past that an arbitrary one makes room.

use crate::domain::alerts::Armed;
use crate::domain::gate::Standing;
use crate::domain::ledger::Book;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most customers whose books one process keeps in memory.
pub const MAX_CACHED_BOOKS: usize = 100_000;

/// Most customers noted for the next background confirmation; past that, a book is confirmed
/// by its own check's read, as before.
pub const MAX_NOTED_FOR_CONFIRMATION: usize = 10_000;

/// `[ledger] check_staleness_ms`: the default, and the most a config may set.
pub const DEFAULT_CHECK_STALENESS_MS: u64 = 1_000;
pub const MAX_CHECK_STALENESS_MS: u64 = 10_000;

/// A customer's book as a load would read it at `version`.
#[derive(Debug, Clone)]
pub(crate) struct Cached {
    /// The customer row's version the book is as of.
    pub version: i64,
    pub book: Book,
    pub standing: Standing,
    pub alerts: Armed,
    /// Read to write: every open hold's reservations are in the book (a read for `check` reads
    /// only the reservations due to be released).
    pub writable: bool,
}

/// A kept book, and the instant before which every commit of its customer is in it.
#[derive(Debug, Clone)]
struct Entry {
    cached: Arc<Cached>,
    as_of: Instant,
}

#[derive(Debug)]
pub(crate) struct BookCache {
    entries: Mutex<HashMap<String, Entry>>,
    /// How old a book `check` may decide on.
    staleness: Duration,
    capacity: usize,
    /// Customers whose kept book a check used past half the bound: to be confirmed in the
    /// background (at most [`MAX_NOTED_FOR_CONFIRMATION`]).
    noted: Mutex<HashSet<String>>,
    /// Whether the background confirmation runs (started by the first check).
    confirming: std::sync::atomic::AtomicBool,
}

impl BookCache {
    pub fn new(staleness: Duration, capacity: usize) -> BookCache {
        BookCache {
            entries: Mutex::new(HashMap::new()),
            staleness,
            capacity,
            noted: Mutex::new(HashSet::new()),
            confirming: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// True the first time only: the caller starts the background confirmation.
    pub fn claim_confirming(&self) -> bool {
        !self
            .confirming
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// How long a book `check` decides on stays fresh.
    pub fn staleness(&self) -> Duration {
        self.staleness
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while the map was held leaves it whole (each operation is one map call).
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The book of `customer` as committed at `version`, to write from.
    pub fn at_version(&self, customer: &str, version: i64) -> Option<Arc<Cached>> {
        let entry = self.entries().get(customer)?.cached.clone();
        (entry.writable && entry.version == version).then_some(entry)
    }

    /// The book of `customer`, and whether it is younger than the staleness bound at `now`.
    /// Past half the bound it is noted for the background confirmation.
    pub fn for_check(&self, customer: &str, now: Instant) -> Option<(Arc<Cached>, bool)> {
        let entry = self.entries().get(customer)?.clone();
        let age = now.saturating_duration_since(entry.as_of);
        let fresh = !self.staleness.is_zero() && age <= self.staleness;
        if fresh && age > self.staleness / 2 {
            let mut noted = self.noted();
            if noted.len() < MAX_NOTED_FOR_CONFIRMATION {
                noted.insert(customer.to_owned());
            }
        }
        Some((entry.cached, fresh))
    }

    fn noted(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.noted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The customers noted for confirmation since the last call.
    pub fn take_noted(&self) -> Vec<String> {
        std::mem::take(&mut *self.noted()).into_iter().collect()
    }

    /// The book of `customer` if it is younger than the staleness bound at `now`.
    #[cfg(test)]
    fn fresh(&self, customer: &str, now: Instant) -> Option<Arc<Cached>> {
        self.for_check(customer, now)
            .and_then(|(cached, fresh)| fresh.then_some(cached))
    }

    /// The database showed `customer` at `version` at `as_of`: the book kept at that version
    /// is as of then. Whether a book was kept at that version.
    pub fn confirm(&self, customer: &str, version: i64, as_of: Instant) -> bool {
        match self.entries().get_mut(customer) {
            Some(entry) if entry.cached.version == version => {
                entry.as_of = entry.as_of.max(as_of);
                true
            }
            _ => false,
        }
    }

    /// Keeps each book, read or committed at `as_of`, unless one at a later version is kept. At
    /// the same version the state is the same: the later instant is kept, and the book read to
    /// write (with every reservation) is kept over one read for `check`.
    pub fn publish(&self, books: impl IntoIterator<Item = (String, Cached, Instant)>) {
        let mut entries = self.entries();
        for (customer, cached, as_of) in books {
            let entry = match entries.get(&customer) {
                Some(kept) if kept.cached.version > cached.version => continue,
                Some(kept) if kept.cached.version == cached.version => Entry {
                    cached: if kept.cached.writable || !cached.writable {
                        kept.cached.clone()
                    } else {
                        Arc::new(cached)
                    },
                    as_of: kept.as_of.max(as_of),
                },
                Some(_) => Entry {
                    cached: Arc::new(cached),
                    as_of,
                },
                None => {
                    if entries.len() >= self.capacity {
                        let Some(evicted) = entries.keys().next().cloned() else {
                            continue;
                        };
                        entries.remove(&evicted);
                    }
                    Entry {
                        cached: Arc::new(cached),
                        as_of,
                    }
                }
            };
            entries.insert(customer, entry);
        }
    }

    /// The parent a kept book's customer had, however old the book: a guess the unit of work
    /// confirms under the lock. None when no book of the customer is kept.
    pub fn parent_of(&self, customer: &str) -> Option<Option<crate::domain::customer::CustomerId>> {
        self.entries()
            .get(customer)
            .map(|e| e.cached.standing.parent.clone())
    }

    /// Drops what is kept of `customers` (written outside the batches).
    pub fn forget<'a>(&self, customers: impl IntoIterator<Item = &'a str>) {
        let mut entries = self.entries();
        for customer in customers {
            entries.remove(customer);
        }
    }

    /// Every book kept, for the audit.
    pub fn all(&self) -> Vec<(String, Arc<Cached>)> {
        self.entries()
            .iter()
            .map(|(customer, entry)| (customer.clone(), entry.cached.clone()))
            .collect()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries().len()
    }
}

/// Most holds whose customers one process remembers, in each of two generations.
pub const MAX_REMEMBERED_HOLDS: usize = 100_000;

/// The customer of each hold this process made: a capture or a void goes to its customer's
/// batch without reading the hold first. A hold's customer never changes, so what is remembered
/// is never stale; a hold not remembered (made by another process, or forgotten) is read. Two
/// generations of at most `capacity` holds: when the newer is full it becomes the older, and the
/// older is dropped.
#[derive(Debug)]
pub(crate) struct HoldOwners {
    generations: Mutex<[HashMap<String, String>; 2]>,
    capacity: usize,
}

impl HoldOwners {
    pub fn new(capacity: usize) -> HoldOwners {
        HoldOwners {
            generations: Mutex::new([HashMap::new(), HashMap::new()]),
            capacity: capacity.max(1),
        }
    }

    fn generations(&self) -> std::sync::MutexGuard<'_, [HashMap<String, String>; 2]> {
        // Each operation is whole map calls: a panic elsewhere leaves the maps whole.
        self.generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn remember(&self, hold: &str, customer: &str) {
        let mut generations = self.generations();
        if generations[0].len() >= self.capacity {
            generations[1] = std::mem::take(&mut generations[0]);
        }
        generations[0].insert(hold.to_owned(), customer.to_owned());
    }

    pub fn owner(&self, hold: &str) -> Option<String> {
        let generations = self.generations();
        generations.iter().find_map(|g| g.get(hold).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::CustomerId;

    fn cached(version: i64, as_of: Instant, writable: bool) -> (String, Cached, Instant) {
        let cached = Cached {
            version,
            book: Book::new(CustomerId::known("c")),
            standing: Standing::default(),
            alerts: Armed::default(),
            writable,
        };
        ("c".into(), cached, as_of)
    }

    #[test]
    fn an_older_book_never_replaces_a_newer_one() {
        let cache = BookCache::new(Duration::from_secs(1), 10);
        let t0 = Instant::now();
        cache.publish([cached(5, t0, true)]);
        cache.publish([cached(4, t0 + Duration::from_millis(5), true)]);
        assert_eq!(cache.at_version("c", 5).map(|c| c.version), Some(5));
        assert!(cache.at_version("c", 4).is_none());
        // A read for check at the same version keeps the book read to write, and its instant.
        let later = t0 + Duration::from_millis(500);
        cache.publish([cached(5, later, false)]);
        assert!(cache.at_version("c", 5).is_some());
        assert!(
            cache
                .fresh("c", later + Duration::from_millis(900))
                .is_some()
        );
    }

    #[test]
    fn a_book_read_for_check_is_never_written_from() {
        let cache = BookCache::new(Duration::from_secs(1), 10);
        let t0 = Instant::now();
        cache.publish([cached(3, t0, false)]);
        assert!(cache.at_version("c", 3).is_none());
        assert!(cache.fresh("c", t0).is_some());
    }

    #[test]
    fn check_sees_a_book_only_within_the_bound() {
        let cache = BookCache::new(Duration::from_millis(100), 10);
        let t0 = Instant::now();
        cache.publish([cached(1, t0, true)]);
        assert!(cache.fresh("c", t0 + Duration::from_millis(100)).is_some());
        assert!(cache.fresh("c", t0 + Duration::from_millis(101)).is_none());
        let off = BookCache::new(Duration::ZERO, 10);
        off.publish([cached(1, t0, true)]);
        assert!(
            off.fresh("c", t0).is_none(),
            "a bound of 0 reads every time"
        );
        assert!(off.at_version("c", 1).is_some(), "writes still use it");
    }

    #[test]
    fn a_book_checked_past_half_the_bound_is_noted_once() {
        let cache = BookCache::new(Duration::from_secs(1), 10);
        let start = Instant::now();
        cache.publish([cached(4, start, true)]);
        assert!(
            cache
                .for_check("c", start + Duration::from_millis(400))
                .is_some()
        );
        assert!(cache.take_noted().is_empty(), "young: not noted");
        cache.for_check("c", start + Duration::from_millis(600));
        cache.for_check("c", start + Duration::from_millis(700));
        assert_eq!(cache.take_noted(), vec!["c".to_owned()]);
        assert!(cache.take_noted().is_empty(), "taken");
        cache.for_check("c", start + Duration::from_millis(1_100));
        assert!(
            cache.take_noted().is_empty(),
            "stale: its own check reads it"
        );
        // Confirmed as of a later instant: young again.
        assert!(cache.confirm("c", 4, start + Duration::from_millis(650)));
        let (_, fresh) = cache
            .for_check("c", start + Duration::from_millis(1_100))
            .unwrap();
        assert!(fresh);
        // A confirmation at another version confirms nothing: stale a bound after 650 ms.
        assert!(!cache.confirm("c", 5, start + Duration::from_millis(1_000)));
        let (_, fresh) = cache
            .for_check("c", start + Duration::from_millis(1_700))
            .unwrap();
        assert!(!fresh);
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity_and_forgets_on_demand() {
        let cache = BookCache::new(Duration::from_secs(1), 3);
        let t0 = Instant::now();
        cache.publish((0..10).map(|i| {
            let (_, book, at) = cached(1, t0, true);
            (format!("c{i}"), book, at)
        }));
        assert_eq!(cache.len(), 3);
        cache.forget(["c9"]);
        assert!(cache.at_version("c9", 1).is_none());
    }

    #[test]
    fn a_hold_s_owner_is_remembered_for_at_least_its_capacity() {
        let owners = HoldOwners::new(2);
        owners.remember("h1", "a");
        owners.remember("h2", "b");
        owners.remember("h3", "c");
        // h1 and h2 are the older generation now; h3 starts the newer.
        assert_eq!(owners.owner("h1").as_deref(), Some("a"));
        assert_eq!(owners.owner("h3").as_deref(), Some("c"));
        owners.remember("h4", "d");
        owners.remember("h5", "e");
        // The newer filled again: the oldest generation went, the last `capacity` stay.
        assert_eq!(owners.owner("h1"), None);
        assert_eq!(owners.owner("h2"), None);
        assert_eq!(owners.owner("h4").as_deref(), Some("d"));
        assert_eq!(owners.owner("h3").as_deref(), Some("c"));
        assert_eq!(owners.owner("unknown"), None);
    }
}
