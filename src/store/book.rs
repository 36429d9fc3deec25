//! Running commands on customers' books: the one way a command runs. A batch of commands shares
//! one transaction: lock the batch's customers in a fixed order, load their books with a few
//! set-based queries, decide each command in turn on the in-memory book (a refused command
//! changes nothing and leaves its neighbours alone), write everything with multi-row
//! statements, post the revenue, and let the caller commit once.

use super::cache::{BookCache, Cached};
use super::revenue::{self, Origin};
use super::rows::ByKey;
use super::rows::{self, ROWS_PER_STATEMENT, in_lists, micros, statement_chunks, time};
use crate::domain::Timestamp;
use crate::domain::alerts::Armed;
use crate::domain::catalog::Catalog;
use crate::domain::command::{self, Answer, Command as DomainCommand, Rules};
use crate::domain::customer::{CustomerId, Subject};
use crate::domain::gate::{Refusal, Standing};
use crate::domain::journal::Moved;
use crate::domain::ledger::{Book, Entry, EntryKind, HoldStatus};
use crate::domain::limits::{Period, SpentRow, SpentThisMonth};
use crate::domain::margin::Consumption;
use crate::domain::money::Credits;
use crate::domain::organization;
use crate::error::{Error, Result};
use entity::{
    consumptions, customers, grants, holds, idempotency_records, ledger_entries, override_history,
};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, Value,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// An idempotency key and the hash of the request it was first used with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The key in its namespace (`request:`, `hold:`, `override:`).
    key: String,
    request_hash: String,
    kept_in: KeptIn,
}

/// Where the first answer under a key is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeptIn {
    /// `idempotency_records`, as the response body.
    Records,
    /// `override_history`, the override itself under the caller's key: the history is the record.
    OverrideHistory { key: String },
}

impl Idempotency {
    /// A caller's `idempotency_key`. Stored under its own namespace, so that no caller's key can
    /// collide with a hold's resolution.
    pub fn request(key: &str, request_hash: String) -> Self {
        Idempotency {
            key: format!("request:{key}"),
            request_hash,
            kept_in: KeptIn::Records,
        }
    }

    /// The one resolution (capture or void) a hold may have.
    pub fn hold_resolution(hold_id: &str, request_hash: String) -> Self {
        Idempotency {
            key: format!("hold:{hold_id}"),
            request_hash,
            kept_in: KeptIn::Records,
        }
    }

    /// An override's `idempotency_key`: kept with the override in its history, apart from the
    /// other requests' keys.
    pub fn override_request(key: &str, request_hash: String) -> Self {
        Idempotency {
            key: format!("override:{key}"),
            request_hash,
            kept_in: KeptIn::OverrideHistory {
                key: key.to_owned(),
            },
        }
    }
}

/// A command as the unit of work receives it: the customer whose book it changes, and what is
/// kept with it (its idempotency key, where it comes from, who made it).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub customer_id: CustomerId,
    pub command: DomainCommand,
    pub idempotency: Option<Idempotency>,
    pub now: Timestamp,
    /// Where the command comes from, for the journal: a usage id, a Stripe event.
    pub origin: Origin,
    /// The operator's write it is, recorded with it (and its key id on its ledger entries).
    pub actor: Option<super::operators::OperatorAction>,
}

impl Envelope {
    /// `command` on `customer_id` at `now`, with no idempotency key, origin or actor.
    /// A usage's origin is its id.
    pub fn new(customer_id: CustomerId, command: DomainCommand, now: Timestamp) -> Envelope {
        let origin = Origin {
            source: match &command {
                DomainCommand::Usage { usage_id, .. } => Some(usage_id.clone()),
                _ => None,
            },
            event: None,
        };
        Envelope {
            customer_id,
            command,
            idempotency: None,
            now,
            origin,
            actor: None,
        }
    }

    /// Every customer the command changes: its own, then the others it names
    /// ([`DomainCommand::others`]).
    pub fn customers(&self) -> impl Iterator<Item = &CustomerId> {
        std::iter::once(&self.customer_id).chain(self.command.others())
    }

    pub fn idempotent(self, idempotency: Idempotency) -> Envelope {
        Envelope {
            idempotency: Some(idempotency),
            ..self
        }
    }

    pub fn by(self, actor: super::operators::OperatorAction) -> Envelope {
        Envelope {
            actor: Some(actor),
            ..self
        }
    }

    pub fn from_origin(self, origin: Origin) -> Envelope {
        Envelope { origin, ..self }
    }
}

#[derive(Debug)]
pub struct Executed<T> {
    pub value: T,
    /// The stored result of an earlier request with the same idempotency key.
    pub replayed: bool,
}

/// The answer of each command of a batch, in order.
pub type Answers = Vec<Result<Executed<Answer>>>;

/// A customer's book as loaded, and as the batch's commands left it.
pub(crate) struct Loaded {
    pub before: Book,
    pub book: Book,
    pub standing_before: Standing,
    pub standing: Standing,
    pub version: i64,
    /// Balance alerts sent since the last recovery, as loaded and as the batch left them.
    pub alerts_before: Armed,
    pub alerts: Armed,
    /// The hard spend limits that refused a command of the batch, and when.
    pub refused_by: Vec<(crate::domain::limits::Limit, Option<Subject>, Timestamp)>,
}

/// Bits of `customers.alert_state`.
const ALERT_LOW_SENT: i32 = 1;
const ALERT_DEPLETED_SENT: i32 = 2;

/// Which holds' reservations a load reads: all open ones (to write), or only those due to be
/// released at a time (to read a book as of then).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reservations {
    All,
    DueAt(Timestamp),
}

/// One command that changed its book: its entries, in order.
struct Done {
    item: usize,
    customer: CustomerId,
    entries: Vec<Entry>,
    consumed: Vec<Consumption>,
}

/// Where a batch's time went before its commit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Phases {
    /// Locking the customers and reading their books and idempotency records.
    pub load: std::time::Duration,
    /// Deciding each command in memory.
    pub decide: std::time::Duration,
    /// Writing grants, holds, customers, ledger entries and idempotency records.
    pub write: std::time::Duration,
    /// Reading and writing revenue lots and journal lines.
    pub post: std::time::Duration,
    /// Books taken from the cache, and read from the database.
    pub books_kept: usize,
    pub books_read: usize,
}

/// Runs `items` in order inside `txn` (see the module doc). The grants a command names are
/// loaded even when spent or expired (a refund or rollover acts on them). The outer error fails
/// the whole batch (nothing of it may be committed); each command's own refusal is in its answer.
/// The caller commits.
pub(crate) async fn run_commands(
    txn: &DatabaseTransaction,
    rules: Rules<'_>,
    items: &[&Envelope],
    phases: &mut Phases,
    cache: Option<&BookCache>,
) -> Result<Ran> {
    let started = std::time::Instant::now();
    let (mut books, books_read) = lock_and_load(txn, rules.catalog, items, cache).await?;
    let mut decided = Decided {
        records: load_idempotency(txn, items).await?,
        ..Decided::default()
    };
    let loaded_at = started.elapsed();
    for item in 0..items.len() {
        let answer = decide_one(txn, rules, items, item, &mut books, &mut decided).await?;
        decided.answers.push(answer);
    }
    let aftermath = aftermath(rules.catalog, items, &mut books, &decided.done);
    let tells = !aftermath.messages.is_empty();
    let decided_at = started.elapsed();
    write_batch(txn, rules.catalog, items, &books, &decided, &aftermath).await?;
    let written_at = started.elapsed();
    post_batch(txn, rules.catalog, items, &books, &decided.done).await?;
    // What the cache keeps once the batch commits: the books as a load would read them back.
    let kept = match cache {
        Some(_) => books
            .iter()
            .map(|(customer, loaded)| Ok((customer.to_string(), loaded.as_stored(customer)?)))
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    *phases = Phases {
        load: loaded_at,
        decide: decided_at - loaded_at,
        write: written_at - decided_at,
        post: started.elapsed() - written_at,
        books_kept: books.len() - books_read,
        books_read,
    };
    Ok(Ran {
        answers: decided.answers,
        kept,
        tells,
    })
}

/// Creates the customers the batch's commands may create, takes the batch's row locks in id
/// order and loads its books; how many of them were read (not kept).
async fn lock_and_load(
    txn: &DatabaseTransaction,
    catalog: &Catalog,
    items: &[&Envelope],
    cache: Option<&BookCache>,
) -> Result<(BTreeMap<CustomerId, Loaded>, usize)> {
    // Customers a command may create, at the time of the first command that names them.
    let mut create: BTreeMap<&str, Timestamp> = BTreeMap::new();
    for item in items.iter().filter(|c| c.command.creates_customer(catalog)) {
        for customer in item.customers() {
            create.entry(customer.as_str()).or_insert(item.now);
        }
    }
    let create: Vec<(&str, Timestamp)> = create.iter().map(|(id, now)| (*id, *now)).collect();
    super::locks::insert_customers_if_absent(txn, &create).await?;
    let mut ids: BTreeSet<String> = items
        .iter()
        .flat_map(|c| c.customers().chain(c.command.locks_too()))
        .map(CustomerId::to_string)
        .collect();
    // The pools above them are locked with them, in the same id order: as guessed before the
    // lock (kept books, or a read per level), confirmed from the rows as locked.
    ids.extend(guess_ancestors(txn, &ids, cache).await?);
    let ids: Vec<String> = ids.into_iter().collect();
    let mut customer_rows = super::locks::lock_customers(txn, &ids).await?;
    for _ in 0..organization::MAX_LEVELS {
        let locked: HashSet<&str> = customer_rows.iter().map(|r| r.id.as_str()).collect();
        let missing: Vec<String> = customer_rows
            .iter()
            .filter_map(|r| r.parent_id.clone())
            .filter(|p| !locked.contains(p.as_str()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            break;
        }
        // A parent changed since the guess: locked after the others, out of id order (a
        // deadlock this may meet is retried like any other).
        let more = super::locks::lock_customers(txn, &missing).await?;
        if more.is_empty() {
            break;
        }
        customer_rows.extend(more);
    }
    load_batch_books(txn, items, customer_rows, cache).await
}

/// The ancestors of `ids` (up to `organization::MAX_LEVELS_ABOVE` levels), as the kept books say
/// or, for customers not kept, as a read per level says: a guess made before the lock.
async fn guess_ancestors(
    txn: &DatabaseTransaction,
    ids: &BTreeSet<String>,
    cache: Option<&BookCache>,
) -> Result<BTreeSet<String>> {
    let mut found = BTreeSet::new();
    let mut frontier: Vec<String> = ids.iter().cloned().collect();
    for _ in 0..organization::MAX_LEVELS_ABOVE {
        let mut parents = Vec::new();
        let mut unknown = Vec::new();
        for id in frontier {
            match cache.and_then(|c| c.parent_of(&id)) {
                Some(parent) => parents.extend(parent.map(|p| p.to_string())),
                None => unknown.push(id),
            }
        }
        for chunk in in_lists(&unknown, ROWS_PER_STATEMENT) {
            let read: Vec<Option<String>> = customers::Entity::find()
                .select_only()
                .column(customers::Column::ParentId)
                .filter(customers::Column::Id.is_in(chunk.iter().cloned()))
                .filter(customers::Column::ParentId.is_not_null())
                .into_tuple()
                .all(txn)
                .await?;
            parents.extend(read.into_iter().flatten());
        }
        frontier = parents
            .into_iter()
            .filter(|p| !ids.contains(p) && found.insert(p.clone()))
            .collect();
        if frontier.is_empty() {
            break;
        }
    }
    Ok(found)
}

/// What the batch's commands decided, as they are decided.
#[derive(Default)]
struct Decided {
    answers: Answers,
    done: Vec<Done>,
    /// Idempotency keys known: loaded, and kept by the commands decided so far.
    records: HashMap<(String, String), (String, String)>,
    new_records: Vec<idempotency_records::ActiveModel>,
    new_overrides: Vec<override_history::ActiveModel>,
}

/// Decides command `item` of the batch on its customer's book as the commands before it left it:
/// a replay answers what was kept; a refusal leaves the book as it was.
// Long: a command's replay, its read of the month's spend, its decision and what is kept of it, in the order the unit of work takes them.
async fn decide_one(
    txn: &DatabaseTransaction,
    rules: Rules<'_>,
    items: &[&Envelope],
    item: usize,
    books: &mut BTreeMap<CustomerId, Loaded>,
    decided: &mut Decided,
) -> Result<Result<Executed<Answer>>> {
    let envelope = items[item];
    let Some(loaded) = books.get_mut(envelope.customer_id.as_str()) else {
        return Ok(Err(Error::CustomerNotFound(
            envelope.customer_id.to_string(),
        )));
    };
    if let Some(idempotency) = &envelope.idempotency {
        let key = (envelope.customer_id.to_string(), idempotency.key.clone());
        if let Some((hash, body)) = decided.records.get(&key) {
            return Ok(if *hash != idempotency.request_hash {
                Err(Error::IdempotencyConflict)
            } else {
                Answer::replayed(&envelope.command, body)
                    .map(|value| Executed {
                        value,
                        replayed: true,
                    })
                    .map_err(|e| Error::Internal(format!("stored idempotent result: {e}")))
            });
        }
    }
    debug_assert!(
        loaded.book.entries.is_empty(),
        "entries move out after each command"
    );
    // The pools above it settle first; it decides on a copy with their shared grants lent (a
    // refusal leaves every book as the previous command left it).
    let at = envelope.now;
    let (mut book, chain) = borrowed(
        rules.catalog,
        books,
        &envelope.customer_id,
        at,
        (item, &mut decided.done),
    )?;
    let mut standing = books[&envelope.customer_id].standing.clone();
    // The other books it changes, copied too (all of them locked and loaded with the batch).
    let mut other_books = Vec::new();
    for other in envelope.command.others() {
        if !books.contains_key(other.as_str()) {
            return Ok(Err(Error::CustomerNotFound(other.to_string())));
        }
        let (book, chain) = borrowed(rules.catalog, books, other, at, (item, &mut decided.done))?;
        other_books.push((other, book, chain));
    }
    let tree = if matches!(envelope.command, DomainCommand::SetParent { .. }) {
        Some(read_tree(txn, books, envelope).await?)
    } else {
        None
    };
    let loaded = books
        .get_mut(envelope.customer_id.as_str())
        .expect("found above");
    let read = if envelope.command.reads_spent() {
        let mut spent = spent_this_month(txn, envelope.customer_id.as_str(), envelope.now).await?;
        // What this batch spent before the command is not in the ledger yet.
        for d in decided
            .done
            .iter()
            .filter(|d| envelope.customer_id == d.customer)
        {
            spent.add(&d.entries, items[d.item].now, envelope.now);
        }
        command::Read {
            spent_this_month: Some(spent),
            tree,
        }
    } else {
        command::Read {
            tree,
            ..command::Read::default()
        }
    };
    let mut others: Vec<command::Other<'_>> = other_books
        .iter_mut()
        .map(|(customer, book, _)| command::Other { customer, book })
        .collect();
    let value = match command::decide_across(
        rules,
        &mut book,
        &mut standing,
        &mut others,
        &envelope.command,
        &read,
        envelope.now,
    ) {
        Ok(value) => value,
        Err(refusal) => {
            if let Refusal::SpendLimitReached(exceeded) = &refusal {
                loaded.refused_by.push((
                    exceeded.limit.clone(),
                    exceeded.subject.clone(),
                    envelope.now,
                ));
            }
            return Ok(Err(refusal.into()));
        }
    };
    if let Some(idempotency) = &envelope.idempotency {
        keep_answer(envelope, idempotency, &value, decided)?;
    }
    drop(others);
    loaded.standing = standing;
    let customer = &envelope.customer_id;
    keep_decided(books, customer, book, &chain, at, (item, &mut decided.done));
    for (other, book, chain) in other_books {
        keep_decided(books, other, book, &chain, at, (item, &mut decided.done));
    }
    Ok(Ok(Executed {
        value,
        replayed: false,
    }))
}

/// The customers above `customer` whose shared grants it spends, nearest first, as the books
/// loaded under the batch's locks say. One not loaded was not locked (its parent changed between
/// the read that chose the locks and the lock): the batch runs again.
fn chain_of(
    books: &BTreeMap<CustomerId, Loaded>,
    customer: &CustomerId,
) -> Result<Vec<CustomerId>> {
    let chain = organization::ancestors(customer, |c| {
        books
            .get(c.as_str())
            .and_then(|l| l.standing.parent.clone())
    });
    if chain.iter().any(|c| !books.contains_key(c.as_str())) {
        return Err(Error::WriteConflict);
    }
    Ok(chain)
}

/// Takes the books of `chain` out of `books`, to be changed together.
fn take_chain(
    books: &mut BTreeMap<CustomerId, Loaded>,
    chain: &[CustomerId],
) -> Vec<(CustomerId, Loaded)> {
    chain
        .iter()
        .map(|c| {
            books
                .remove_entry(c.as_str())
                .expect("a chain is of loaded books")
        })
        .collect()
}

/// Puts the books of a chain back, each with what it moved as a change of command `item`
/// (kept as one when `touched`, even without entries: its pool moved).
fn put_back_chain(
    books: &mut BTreeMap<CustomerId, Loaded>,
    taken: Vec<(CustomerId, Loaded)>,
    touched: &[bool],
    item: usize,
    done: &mut Vec<Done>,
) {
    for (at, (customer, mut loaded)) in taken.into_iter().enumerate() {
        let entries = std::mem::take(&mut loaded.book.entries);
        let consumed = std::mem::take(&mut loaded.book.consumed);
        if touched.get(at).copied().unwrap_or(false) || !entries.is_empty() {
            done.push(Done {
                item,
                customer: customer.clone(),
                entries,
                consumed,
            });
        }
        books.insert(customer, loaded);
    }
}

/// Takes the books of `chain` out of `books` for `work`, which says which of them it moved, and
/// puts them back with what they moved as changes of command `item`.
fn on_chain(
    books: &mut BTreeMap<CustomerId, Loaded>,
    chain: &[CustomerId],
    (item, done): (usize, &mut Vec<Done>),
    work: impl FnOnce(&mut [(CustomerId, Loaded)]) -> Vec<bool>,
) {
    if chain.is_empty() {
        return;
    }
    let mut taken = take_chain(books, chain);
    let touched = work(&mut taken);
    put_back_chain(books, taken, &touched, item, done);
}

/// Settles what is due at `now` in the books above a customer, from the top
/// (`command::settle_above`); what they moved is kept as changes of command `item`.
fn settle_chain(
    catalog: &Catalog,
    books: &mut BTreeMap<CustomerId, Loaded>,
    chain: &[CustomerId],
    now: Timestamp,
    at: (usize, &mut Vec<Done>),
) {
    on_chain(books, chain, at, |taken| {
        let mut above: Vec<(&mut Book, &mut Standing)> = taken
            .iter_mut()
            .map(|(_, l)| (&mut l.book, &mut l.standing))
            .collect();
        command::settle_above(catalog, &mut above, now);
        Vec::new()
    });
}

/// A copy of `customer`'s book to decide on at `now`, with the shared grants of the books above
/// it lent once they settled (what they moved is kept as changes of command `item`); and the
/// customers above it, nearest first.
fn borrowed(
    catalog: &Catalog,
    books: &mut BTreeMap<CustomerId, Loaded>,
    customer: &CustomerId,
    now: Timestamp,
    at: (usize, &mut Vec<Done>),
) -> Result<(Book, Vec<CustomerId>)> {
    let chain = chain_of(books, customer)?;
    settle_chain(catalog, books, &chain, now, at);
    let above: Vec<&Book> = chain.iter().map(|c| &books[c].book).collect();
    Ok((organization::lend(&books[customer].book, &above), chain))
}

/// What a decision did to `book` (borrowed at `now`), kept: its entries as `customer`'s change
/// of command `item`, its lent grants back with their owners, its own as `customer`'s book.
fn keep_decided(
    books: &mut BTreeMap<CustomerId, Loaded>,
    customer: &CustomerId,
    mut book: Book,
    chain: &[CustomerId],
    now: Timestamp,
    (item, done): (usize, &mut Vec<Done>),
) {
    let entries = std::mem::take(&mut book.entries);
    let consumed = std::mem::take(&mut book.consumed);
    done.push(Done {
        item,
        customer: customer.clone(),
        entries,
        consumed,
    });
    give_back(books, &mut book, chain, now, (item, done));
    books
        .get_mut(customer.as_str())
        .expect("a decided book is loaded")
        .book = book;
}

/// The grants `book` borrowed from the books of `chain`, back with their owners; the owners'
/// books are kept as changed by command `item` when they moved.
fn give_back(
    books: &mut BTreeMap<CustomerId, Loaded>,
    book: &mut Book,
    chain: &[CustomerId],
    now: Timestamp,
    at: (usize, &mut Vec<Done>),
) {
    on_chain(books, chain, at, |taken| {
        let mut owners: Vec<&mut Book> = taken.iter_mut().map(|(_, l)| &mut l.book).collect();
        organization::give_back(book, &mut owners, now)
    });
}

/// Where the customer of a `SetParent` would stand: its new parent's line (locked with the
/// batch: `Command::locks_too`) and how many levels of customers are below it (their parents
/// change only under this customer's lock, which the batch holds).
async fn read_tree(
    txn: &DatabaseTransaction,
    books: &BTreeMap<CustomerId, Loaded>,
    envelope: &Envelope,
) -> Result<command::Tree> {
    let above = match envelope.command.locks_too() {
        [parent] if books.contains_key(parent.as_str()) => Some(organization::Above {
            parent: parent.clone(),
            ancestors: chain_of(books, parent)?,
        }),
        _ => None,
    };
    let mut levels_below = 0;
    let mut level = vec![envelope.customer_id.to_string()];
    let mut subtree = level.clone();
    while levels_below < organization::MAX_LEVELS && !level.is_empty() {
        level = customers::Entity::find()
            .select_only()
            .column(customers::Column::Id)
            .filter(customers::Column::ParentId.is_in(rows::in_list(&level)))
            .into_tuple::<String>()
            .all(txn)
            .await?;
        if !level.is_empty() {
            levels_below += 1;
            subtree.extend(level.iter().cloned());
        }
    }
    // Open holds of the customer and those below it on its present pools' grants: they resolve
    // only while those pools stay above them.
    let pools = chain_of(books, &envelope.customer_id)?;
    let holds_on_pools = if pools.is_empty() {
        0
    } else {
        open_holds_on(txn, &subtree, &pools).await?
    };
    Ok(command::Tree {
        above,
        levels_below,
        holds_on_pools,
    })
}

/// How many open holds of `holders` reserve credits on grants of `owners`.
async fn open_holds_on(
    txn: &DatabaseTransaction,
    holders: &[String],
    owners: &[CustomerId],
) -> Result<usize> {
    let open: Vec<String> = holds::Entity::find()
        .select_only()
        .column(holds::Column::Id)
        .filter(holds::Column::CustomerId.is_in(rows::in_list(holders)))
        .filter(holds::Column::Status.eq(HoldStatus::Held.as_str()))
        .into_tuple()
        .all(txn)
        .await?;
    let owners: Vec<String> = owners.iter().map(CustomerId::to_string).collect();
    let mut on_pools = BTreeSet::new();
    for chunk in in_lists(&open, ROWS_PER_STATEMENT) {
        let reserving: Vec<(Option<String>, Option<String>)> = ledger_entries::Entity::find()
            .select_only()
            .column(ledger_entries::Column::HoldId)
            .column(ledger_entries::Column::GrantId)
            .filter(ledger_entries::Column::HoldId.is_in(chunk.iter().cloned()))
            .filter(ledger_entries::Column::Kind.eq(EntryKind::Hold.as_str()))
            .filter(ledger_entries::Column::GrantId.is_not_null())
            .into_tuple()
            .all(txn)
            .await?;
        let grant_ids: Vec<String> = reserving.iter().filter_map(|(_, g)| g.clone()).collect();
        let pooled: HashSet<String> = grants::Entity::find()
            .select_only()
            .column(grants::Column::Id)
            .filter(grants::Column::Id.is_in(rows::in_list(&grant_ids)))
            .filter(grants::Column::CustomerId.is_in(rows::in_list(&owners)))
            .into_tuple::<String>()
            .all(txn)
            .await?
            .into_iter()
            .collect();
        on_pools.extend(
            reserving
                .into_iter()
                .filter(|(_, g)| g.as_ref().is_some_and(|g| pooled.contains(g)))
                .filter_map(|(h, _)| h),
        );
    }
    Ok(on_pools.len())
}

/// Keeps a decided command's answer under its idempotency key, where that key's answers are kept.
fn keep_answer(
    envelope: &Envelope,
    idempotency: &Idempotency,
    value: &Answer,
    decided: &mut Decided,
) -> Result<()> {
    let body = value
        .stored()
        .map_err(|e| Error::Internal(format!("answer: {e}")))?;
    match (&idempotency.kept_in, value) {
        (KeptIn::Records, _) => decided.new_records.push(idempotency_records::ActiveModel {
            customer_id: Set(envelope.customer_id.to_string()),
            idempotency_key: Set(idempotency.key.clone()),
            request_hash: Set(idempotency.request_hash.clone()),
            body: Set(body.clone()),
            created_at: Set(time(envelope.now)),
        }),
        (KeptIn::OverrideHistory { key }, Answer::Overridden(made)) => {
            decided.new_overrides.push(rows::override_row(
                made,
                envelope.customer_id.as_str(),
                key,
                &idempotency.request_hash,
            )?);
        }
        (KeptIn::OverrideHistory { .. }, other) => return Err(Error::unexpected(other)),
    }
    decided.records.insert(
        (envelope.customer_id.to_string(), idempotency.key.clone()),
        (idempotency.request_hash.clone(), body),
    );
    Ok(())
}

/// What a batch says and starts once its commands are decided: balance alerts, limit and
/// threshold messages, auto top-up charges.
#[derive(Default)]
struct Aftermath {
    messages: Vec<crate::domain::outbound::Message>,
    starts: Vec<crate::domain::autotopup::Start>,
}

/// Per customer, from the book as loaded to the book as the batch left it
/// (`command::after_batch`), at the time of its latest command that was decided or refused by a
/// spend limit.
fn aftermath(
    catalog: &Catalog,
    items: &[&Envelope],
    books: &mut BTreeMap<CustomerId, Loaded>,
    done: &[Done],
) -> Aftermath {
    let mut latest: BTreeMap<CustomerId, Timestamp> = BTreeMap::new();
    let refusals = books
        .iter()
        .flat_map(|(c, l)| l.refused_by.iter().map(move |(_, _, at)| (c, *at)));
    let decided = done.iter().map(|d| (&d.customer, items[d.item].now));
    for (customer, now) in decided.chain(refusals) {
        let at = latest.entry(customer.clone()).or_insert(now);
        *at = Ord::max(*at, now);
    }
    // A customer of an organization is told of what it can spend: its pools' grants lent.
    let pools: BTreeMap<CustomerId, (Book, Book)> = latest
        .keys()
        .filter_map(|customer| {
            let chain = chain_of(books, customer).ok().filter(|c| !c.is_empty())?;
            let before: Vec<&Book> = chain.iter().map(|a| &books[a].before).collect();
            let after: Vec<&Book> = chain.iter().map(|a| &books[a].book).collect();
            let own = &books[customer];
            Some((
                customer.clone(),
                (
                    organization::lend(&own.before, &before),
                    organization::lend(&own.book, &after),
                ),
            ))
        })
        .collect();
    let mut aftermath = Aftermath::default();
    for (customer, loaded) in books.iter_mut() {
        let Some(&now) = latest.get(customer.as_str()) else {
            continue;
        };
        let (before, after) = match pools.get(customer) {
            Some((before, after)) => (before, after),
            None => (&loaded.before, &loaded.book),
        };
        let refused: Vec<_> = loaded
            .refused_by
            .iter()
            .map(|(l, s, _)| (l.clone(), s.clone()))
            .collect();
        let after = command::after_batch(
            catalog,
            command::Moved {
                customer,
                before,
                after,
                standing_before: &loaded.standing_before,
                refused: &refused,
            },
            &mut loaded.standing,
            loaded.alerts,
            now,
        );
        loaded.alerts = after.alerts;
        aftermath.messages.extend(after.messages);
        aftermath.starts.extend(after.auto_topup);
    }
    aftermath
}

/// Writes everything the batch decided, with multi-row statements: the books' changes, the
/// outbox's messages, auto top-up charges, ledger entries and consumptions, idempotency records
/// and override history.
async fn write_batch(
    txn: &DatabaseTransaction,
    catalog: &Catalog,
    items: &[&Envelope],
    books: &BTreeMap<CustomerId, Loaded>,
    decided: &Decided,
    aftermath: &Aftermath,
) -> Result<()> {
    write_books(txn, books).await?;
    super::outbox::enqueue(txn, &catalog.webhooks, &aftermath.messages).await?;
    super::autotopup::start_charges(txn, &aftermath.starts).await?;
    write_entries(txn, items, &decided.done).await?;
    for chunk in statement_chunks(&decided.new_records, ROWS_PER_STATEMENT) {
        idempotency_records::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    for chunk in statement_chunks(&decided.new_overrides, ROWS_PER_STATEMENT) {
        override_history::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// The revenue postings of the batch's decided commands (`revenue::post_all`).
async fn post_batch(
    txn: &DatabaseTransaction,
    catalog: &Catalog,
    items: &[&Envelope],
    books: &BTreeMap<CustomerId, Loaded>,
    done: &[Done],
) -> Result<()> {
    // A spend from a pool names its owner's grants: every grant of the batch's books.
    let pooled: Vec<crate::domain::ledger::Grant> =
        if books.values().any(|l| l.standing.parent.is_some()) {
            books
                .values()
                .flat_map(|l| l.book.grants.iter().cloned())
                .collect()
        } else {
            Vec::new()
        };
    let posted: Vec<revenue::Posted<'_>> = done
        .iter()
        .map(|d| {
            let command = items[d.item];
            let own = &books[&d.customer].book.grants;
            let names_others = d.entries.iter().any(|e| {
                e.grant_id
                    .as_ref()
                    .is_some_and(|g| !own.iter().any(|o| &o.id == g))
            });
            revenue::Posted {
                moved: Moved {
                    customer: &d.customer,
                    grants: if names_others { &pooled } else { own },
                    entries: &d.entries,
                    source: command.origin.source.as_deref(),
                    recognize: command.command.recognizes(),
                    now: command.now,
                },
                event: command.origin.event.as_deref(),
            }
        })
        .collect();
    revenue::post_all(txn, catalog, &posted).await
}

/// What a batch answered, and the books it leaves once committed (when it was run with a cache).
pub(crate) struct Ran {
    pub answers: Answers,
    pub kept: Vec<(String, Cached)>,
    /// It has something to say (a spend limit that refused): committed even when every
    /// command was refused.
    pub tells: bool,
}

/// The books of a batch's customers, whose rows it has locked: from `cache` when the book kept
/// there was committed just before the lock (the lock moves the version by one) and has every
/// hold and grant the batch names of it; read otherwise, with a few set-based queries.
async fn load_batch_books(
    txn: &DatabaseTransaction,
    items: &[&Envelope],
    customer_rows: Vec<customers::Model>,
    cache: Option<&BookCache>,
) -> Result<(BTreeMap<CustomerId, Loaded>, usize)> {
    let mut books = BTreeMap::new();
    let mut unread = Vec::new();
    for row in customer_rows {
        let kept = cache
            .and_then(|c| c.at_version(&row.id, row.version - 1))
            .filter(|kept| {
                items
                    .iter()
                    .filter(|i| i.customer_id == row.id)
                    .all(|i| names_are_in(&i.command, &kept.book))
            });
        match kept {
            Some(kept) => {
                books.insert(
                    CustomerId::known(row.id.clone()),
                    Loaded::kept(&kept, row.version),
                );
            }
            None => unread.push(row),
        }
    }
    let hold_ids: Vec<String> = items
        .iter()
        .filter_map(|c| c.command.hold().map(str::to_owned))
        .collect();
    let named: Vec<String> = items
        .iter()
        .flat_map(|c| c.command.grants_named())
        .map(str::to_owned)
        .collect();
    let read = load_books_of(txn, unread, &hold_ids, &named, Reservations::All).await?;
    let books_read = read.len();
    books.extend(read);
    Ok((books, books_read))
}

/// Whether the hold and grants `command` names are in `book` (a kept book has only the live ones).
fn names_are_in(command: &DomainCommand, book: &Book) -> bool {
    command
        .hold()
        .is_none_or(|hold| book.holds.iter().any(|h| h.id == hold))
        && command
            .grants_named()
            .into_iter()
            .all(|grant| book.grants.iter().any(|g| g.id == grant))
}

impl Loaded {
    /// A kept book, as loaded under a lock that moved its version to `version`.
    fn kept(kept: &Cached, version: i64) -> Loaded {
        Loaded {
            before: kept.book.clone(),
            book: kept.book.clone(),
            standing_before: kept.standing.clone(),
            standing: kept.standing.clone(),
            version,
            alerts_before: kept.alerts,
            alerts: kept.alerts,
            refused_by: Vec::new(),
        }
    }

    /// The book as a load would read it back once the batch commits: its live grants and open
    /// holds in the load's order, amounts and times as stored.
    fn as_stored(&self, customer: &CustomerId) -> Result<Cached> {
        let book = &self.book;
        let stored_credits = |c: Credits| micros(c).map(Credits::from_micros);
        let mut stored = Book::new(customer.clone());
        stored.overdraft = stored_credits(book.overdraft)?;
        stored.overdraft_held = stored_credits(book.overdraft_held)?;
        stored.grants = book
            .grants
            .iter()
            .filter(|g| (!g.expired && g.remaining.is_positive()) || g.held.is_positive())
            .map(|g| rows::grant_as_stored(customer.as_str(), g))
            .collect::<Result<_>>()?;
        stored
            .grants
            .sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        stored.holds = book
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Held)
            .map(|h| rows::hold_as_stored(customer.as_str(), h))
            .collect::<Result<_>>()?;
        stored
            .holds
            .sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(Cached {
            version: self.version,
            book: stored,
            standing: rows::standing_as_stored(&self.standing)?,
            alerts: self.alerts,
            writable: true,
        })
    }
}

/// The stored first results of the batch's idempotency keys, by (customer, key): one indexed
/// query.
async fn load_idempotency(
    txn: &DatabaseTransaction,
    items: &[&Envelope],
) -> Result<HashMap<(String, String), (String, String)>> {
    let pairs: BTreeSet<(&str, &str)> = items
        .iter()
        .filter_map(|c| {
            c.idempotency
                .as_ref()
                .filter(|i| i.kept_in == KeptIn::Records)
                .map(|i| (c.customer_id.as_str(), i.key.as_str()))
        })
        .collect();
    let mut found = load_override_keys(txn, items).await?;
    let pairs: Vec<_> = pairs.into_iter().collect();
    let backend = txn.get_database_backend();
    for chunk in in_lists(&pairs, ROWS_PER_STATEMENT) {
        let mut values = Vec::with_capacity(chunk.len() * 2);
        let tuples = chunk
            .iter()
            .map(|(customer, key)| {
                values.push(Value::from(*customer));
                values.push(Value::from(*key));
                format!(
                    "({}, {})",
                    placeholder(backend, values.len() - 1),
                    placeholder(backend, values.len())
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        // A join, not `(customer_id, idempotency_key) IN (VALUES ...)`: SQLite answers the
        // latter by scanning every record ever kept.
        let sql = format!(
            "WITH v(customer_id, idempotency_key) AS (VALUES {tuples}) \
             SELECT r.customer_id, r.idempotency_key, r.request_hash, r.body \
             FROM v JOIN idempotency_records r \
             ON r.customer_id = v.customer_id AND r.idempotency_key = v.idempotency_key"
        );
        let rows = txn
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        for row in rows {
            let customer: String = row.try_get("", "customer_id")?;
            let key: String = row.try_get("", "idempotency_key")?;
            let hash: String = row.try_get("", "request_hash")?;
            let body: String = row.try_get("", "body")?;
            found.insert((customer, key), (hash, body));
        }
    }
    Ok(found)
}

/// The overrides first made under the override keys of `items`, as their answers are kept:
/// by customer and namespaced key, the request's hash and the override.
async fn load_override_keys(
    txn: &DatabaseTransaction,
    items: &[&Envelope],
) -> Result<HashMap<(String, String), (String, String)>> {
    let mut found = HashMap::new();
    for envelope in items {
        let Some(idempotency) = &envelope.idempotency else {
            continue;
        };
        let KeptIn::OverrideHistory { key } = &idempotency.kept_in else {
            continue;
        };
        let earlier = override_history::Entity::find()
            .filter(override_history::Column::CustomerId.eq(envelope.customer_id.as_str()))
            .filter(override_history::Column::IdempotencyKey.eq(key.as_str()))
            .by_key(txn)
            .await?;
        if let Some(row) = earlier {
            let hash = row.request_hash.clone();
            let body = serde_json::to_string(&rows::override_from_row(row)?)
                .map_err(|e| Error::Internal(format!("an override as JSON: {e}")))?;
            found.insert(
                (envelope.customer_id.to_string(), idempotency.key.clone()),
                (hash, body),
            );
        }
    }
    Ok(found)
}

/// Reads the versions of the customers `books` noted, a chunk per statement, and confirms each
/// kept book still at its customer's version as of the instant before its chunk's read: every
/// commit of the customer before then is in it (each moves the version). Counts them in
/// `confirmed_total`.
async fn confirm_noted(
    db: &sea_orm::DatabaseConnection,
    books: &BookCache,
    confirmed_total: &std::sync::atomic::AtomicU64,
) -> Result<()> {
    let noted = books.take_noted();
    let mut confirmed = 0;
    for chunk in noted.chunks(ROWS_PER_STATEMENT) {
        let started = std::time::Instant::now();
        let versions: Vec<(String, i64)> = customers::Entity::find()
            .select_only()
            .column(customers::Column::Id)
            .column(customers::Column::Version)
            .filter(customers::Column::Id.is_in(chunk.iter().map(String::as_str)))
            .into_tuple()
            .all(db)
            .await?;
        for (customer, version) in versions {
            if books.confirm(&customer, version, started) {
                confirmed += 1;
            }
        }
    }
    confirmed_total.fetch_add(confirmed, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// The n-th (1-based) bound value in `backend`'s syntax.
pub(crate) fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

/// The books of `ids` (those that exist), with a few set-based queries whatever their number:
/// customers, their live grants (and `extra_grants`), their open holds (and `hold_ids`), and
/// the open holds' reservations.
pub(crate) async fn load_books<C: ConnectionTrait>(
    db: &C,
    ids: &[String],
    hold_ids: &[String],
    extra_grants: &[String],
    reservations: Reservations,
) -> Result<BTreeMap<CustomerId, Loaded>> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let customer_rows = customers::Entity::find()
        .filter(customers::Column::Id.is_in(rows::in_list(ids)))
        .all(db)
        .await?;
    load_books_of(db, customer_rows, hold_ids, extra_grants, reservations).await
}

/// [`load_books`] of customers whose rows are read.
// Long: the set-based reads of a batch's books (customers, grants, holds, reservations), one statement each, assembled in one place.
async fn load_books_of<C: ConnectionTrait>(
    db: &C,
    customer_rows: Vec<customers::Model>,
    hold_ids: &[String],
    extra_grants: &[String],
    reservations: Reservations,
) -> Result<BTreeMap<CustomerId, Loaded>> {
    let mut books = BTreeMap::new();
    if customer_rows.is_empty() {
        return Ok(books);
    }
    let found: Vec<String> = customer_rows.iter().map(|c| c.id.clone()).collect();
    let mut live = Condition::any()
        .add(
            Condition::all()
                .add(grants::Column::Expired.eq(false))
                .add(grants::Column::Remaining.gt(0)),
        )
        .add(grants::Column::Held.gt(0));
    if !extra_grants.is_empty() {
        live = live.add(grants::Column::Id.is_in(rows::in_list(extra_grants)));
    }
    let grant_rows = grants::Entity::find()
        .filter(grants::Column::CustomerId.is_in(rows::in_list(&found)))
        .filter(live)
        .order_by_asc(grants::Column::CreatedAt)
        .order_by_asc(grants::Column::Id)
        .all(db)
        .await?;
    // Open holds by (customer, status), and the named ones by id: two indexed reads (one query
    // with an OR would scan every hold the customers ever had).
    let mut hold_rows = holds::Entity::find()
        .filter(holds::Column::CustomerId.is_in(rows::in_list(&found)))
        .filter(holds::Column::Status.eq(HoldStatus::Held.as_str()))
        .all(db)
        .await?;
    if !hold_ids.is_empty() {
        let open: HashSet<String> = hold_rows.iter().map(|h| h.id.clone()).collect();
        // By id alone: with the customer in the filter too, SQLite may walk the customer's
        // whole history through the (customer, status) index instead.
        let named = holds::Entity::find()
            .filter(holds::Column::Id.is_in(rows::in_list(hold_ids)))
            .all(db)
            .await?;
        let found: HashSet<&str> = found.iter().map(String::as_str).collect();
        hold_rows.extend(
            named
                .into_iter()
                .filter(|h| found.contains(h.customer_id.as_str()) && !open.contains(&h.id)),
        );
    }
    hold_rows.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
    let wanted: Vec<String> = hold_rows
        .iter()
        .filter(|h| h.status == HoldStatus::Held.as_str())
        .filter(|h| match reservations {
            Reservations::All => true,
            Reservations::DueAt(now) => h.expires_at <= time(now),
        })
        .map(|h| h.id.clone())
        .collect();
    let mut allocations: HashMap<String, Vec<(String, Credits)>> = HashMap::new();
    for chunk in in_lists(&wanted, ROWS_PER_STATEMENT) {
        let reserved = ledger_entries::Entity::find()
            .filter(ledger_entries::Column::HoldId.is_in(chunk.iter().cloned()))
            .filter(ledger_entries::Column::Kind.eq("hold"))
            .filter(ledger_entries::Column::GrantId.is_not_null())
            .order_by_asc(ledger_entries::Column::Id)
            .all(db)
            .await?;
        for r in reserved {
            if let (Some(hold), Some(grant)) = (r.hold_id, r.grant_id) {
                allocations
                    .entry(hold)
                    .or_default()
                    .push((grant, Credits::from_micros(r.held)));
            }
        }
    }
    for customer in customer_rows {
        let mut book = Book::new(CustomerId::known(customer.id.clone()));
        book.overdraft = Credits::from_micros(customer.overdraft);
        book.overdraft_held = Credits::from_micros(customer.overdraft_held);
        let standing = rows::standing_from_row(&customer)?;
        let alerts = Armed {
            low_sent: customer.alert_state & ALERT_LOW_SENT != 0,
            depleted_sent: customer.alert_state & ALERT_DEPLETED_SENT != 0,
            arming: customer.alert_arming,
        };
        books.insert(
            book.customer_id.clone(),
            Loaded {
                before: book.clone(),
                book,
                standing_before: standing.clone(),
                standing,
                version: customer.version,
                alerts_before: alerts,
                alerts,
                refused_by: Vec::new(),
            },
        );
    }
    for row in grant_rows {
        let loaded = books
            .get_mut(row.customer_id.as_str())
            .expect("grants were read for these customers");
        loaded.book.grants.push(rows::grant_from_row(row)?);
    }
    for row in hold_rows {
        let reserved = allocations.remove(&row.id).unwrap_or_default();
        let loaded = books
            .get_mut(row.customer_id.as_str())
            .expect("holds were read for these customers");
        loaded.book.holds.push(rows::hold_from_row(row, reserved)?);
    }
    for loaded in books.values_mut() {
        loaded.before = loaded.book.clone();
    }
    Ok(books)
}

/// Writes the difference between each book as loaded and as decided: new grants and holds in
/// multi-row inserts, changed ones in multi-row updates. Grant updates are conditional on the
/// values read: a second line of defence behind the row lock, so a grant is never written from
/// a stale read.
// Long: one multi-row statement per kind of row a batch changes (grants, holds), diffed from the books as loaded.
async fn write_books(
    txn: &DatabaseTransaction,
    books: &BTreeMap<CustomerId, Loaded>,
) -> Result<()> {
    let mut new_grants = Vec::new();
    let mut changed_grants = Vec::new();
    let mut new_holds = Vec::new();
    let mut changed_holds = Vec::new();
    for (customer, loaded) in books {
        let (before, after) = (&loaded.before, &loaded.book);
        let old_grants: BTreeMap<&str, _> =
            before.grants.iter().map(|g| (g.id.as_str(), g)).collect();
        for grant in &after.grants {
            match old_grants.get(grant.id.as_str()) {
                None => new_grants.push(rows::grant_to_row(customer.as_str(), grant)?),
                Some(old) if *old != grant => changed_grants.push([
                    Value::from(grant.id.clone()),
                    Value::from(micros(grant.remaining)?),
                    Value::from(micros(grant.held)?),
                    Value::from(grant.expired),
                    Value::from(micros(grant.refunded)?),
                    Value::from(grant.expires_at.map(time)),
                    Value::from(grant.frozen),
                    Value::from(grant.scheduled),
                    Value::from(micros(old.remaining)?),
                    Value::from(micros(old.held)?),
                    Value::from(old.expired),
                ]),
                Some(_) => {}
            }
        }
        let old_holds: BTreeMap<&str, _> =
            before.holds.iter().map(|h| (h.id.as_str(), h)).collect();
        for hold in &after.holds {
            match old_holds.get(hold.id.as_str()) {
                None => new_holds.push(rows::hold_to_row(customer.as_str(), hold)?),
                Some(old) if *old != hold => changed_holds.push([
                    Value::from(hold.id.clone()),
                    Value::from(hold.status.as_str()),
                    Value::from(hold.captured.map(micros).transpose()?),
                    Value::from(hold.resolved_at.map(time)),
                ]),
                Some(_) => {}
            }
        }
        update_customer(txn, customer.as_str(), loaded).await?;
    }
    for chunk in statement_chunks(&new_grants, ROWS_PER_STATEMENT) {
        grants::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    for chunk in statement_chunks(&changed_grants, ROWS_PER_STATEMENT) {
        update_rows(
            txn,
            "grants",
            &[
                "id",
                "remaining",
                "held",
                "expired",
                "refunded",
                "expires_at",
                "frozen",
                "scheduled",
                "old_remaining",
                "old_held",
                "old_expired",
            ],
            "remaining = v.remaining, held = v.held, expired = v.expired, \
             refunded = v.refunded, expires_at = v.expires_at, frozen = v.frozen, \
             scheduled = v.scheduled",
            "grants.remaining = v.old_remaining AND grants.held = v.old_held \
             AND grants.expired = v.old_expired",
            chunk,
        )
        .await?;
    }
    // Holds before entries: entries reference them.
    for chunk in statement_chunks(&new_holds, ROWS_PER_STATEMENT) {
        holds::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    for chunk in statement_chunks(&changed_holds, ROWS_PER_STATEMENT) {
        update_rows(
            txn,
            "holds",
            &["id", "status", "captured", "resolved_at"],
            "status = v.status, captured = v.captured, resolved_at = v.resolved_at",
            "TRUE",
            chunk,
        )
        .await?;
    }
    Ok(())
}

/// The customer's row, when the batch moved its overdraft, standing or alert state; under its
/// row lock, at the version the lock left.
// Long: one SET per column of the customer's row, each beside its value.
async fn update_customer(txn: &DatabaseTransaction, customer: &str, loaded: &Loaded) -> Result<()> {
    let (before, after) = (&loaded.before, &loaded.book);
    let standing = &loaded.standing;
    if before.overdraft != after.overdraft
        || before.overdraft_held != after.overdraft_held
        || loaded.standing_before != *standing
        || loaded.alerts_before != loaded.alerts
    {
        let alert_state = i32::from(loaded.alerts.low_sent) * ALERT_LOW_SENT
            + i32::from(loaded.alerts.depleted_sent) * ALERT_DEPLETED_SENT;
        let updated = customers::Entity::update_many()
            .col_expr(
                customers::Column::Overdraft,
                Expr::value(micros(after.overdraft)?),
            )
            .col_expr(
                customers::Column::OverdraftHeld,
                Expr::value(micros(after.overdraft_held)?),
            )
            .col_expr(
                customers::Column::PlanId,
                Expr::value(standing.plan_id.clone()),
            )
            .col_expr(customers::Column::Frozen, Expr::value(standing.frozen))
            .col_expr(
                customers::Column::PastDueSince,
                Expr::value(standing.past_due_since.map(time)),
            )
            .col_expr(
                customers::Column::RenewsAt,
                Expr::value(standing.renews_at.map(time)),
            )
            .col_expr(customers::Column::AlertState, Expr::value(alert_state))
            .col_expr(
                customers::Column::Limits,
                Expr::value(rows::json_column(
                    &standing.limits,
                    standing.limits.is_empty(),
                )?),
            )
            .col_expr(
                customers::Column::Overrides,
                Expr::value(rows::json_column(
                    &standing.overrides,
                    standing.overrides.is_empty(),
                )?),
            )
            .col_expr(
                customers::Column::LowBalance,
                Expr::value(rows::json_column(
                    &standing.low_balance,
                    standing.low_balance.is_none(),
                )?),
            )
            .col_expr(
                customers::Column::AlertArming,
                Expr::value(loaded.alerts.arming),
            )
            .col_expr(
                customers::Column::AutoTopup,
                Expr::value(rows::json_column(
                    &standing.auto_topup,
                    standing.auto_topup.is_unset(),
                )?),
            )
            .col_expr(
                customers::Column::CreditCycle,
                Expr::value(rows::json_column(
                    &standing.cycle,
                    standing.cycle.is_none(),
                )?),
            )
            .col_expr(
                customers::Column::NextGrantAt,
                Expr::value(standing.cycle.as_ref().map(|c| time(c.period_end))),
            )
            .col_expr(
                customers::Column::ParentId,
                Expr::value(standing.parent.as_ref().map(|p| p.to_string())),
            )
            .filter(customers::Column::Id.eq(customer))
            .filter(customers::Column::Version.eq(loaded.version))
            .exec(txn)
            .await?;
        // The row lock is ours: nobody else can have moved the version.
        if updated.rows_affected != 1 {
            return Err(Error::WriteConflict);
        }
    }
    Ok(())
}

/// `UPDATE table SET ... FROM (VALUES ...)` for many rows in one statement; every row must match
/// (`id` and `condition`), or the batch fails with a write conflict.
async fn update_rows<const N: usize>(
    txn: &DatabaseTransaction,
    table: &str,
    columns: &[&str; N],
    set: &str,
    condition: &str,
    rows: &[[Value; N]],
) -> Result<()> {
    let backend = txn.get_database_backend();
    let mut values = Vec::with_capacity(rows.len() * N);
    let mut tuples = Vec::with_capacity(rows.len());
    for row in rows {
        let marks: Vec<String> = row
            .iter()
            .map(|v| {
                values.push(v.clone());
                placeholder(backend, values.len())
            })
            .collect();
        tuples.push(format!("({})", marks.join(", ")));
    }
    let sql = format!(
        "WITH v({}) AS (VALUES {}) UPDATE {table} SET {set} FROM v \
         WHERE {table}.id = v.id AND {condition}",
        columns.join(", "),
        tuples.join(", ")
    );
    let result = txn
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await?;
    if result.rows_affected() != rows.len() as u64 {
        return Err(Error::WriteConflict);
    }
    Ok(())
}

/// The batch's ledger entries, in command order: each command's entries share an operation.
async fn write_entries(
    txn: &DatabaseTransaction,
    items: &[&Envelope],
    done: &[Done],
) -> Result<()> {
    let mut rows = Vec::new();
    for d in done {
        let command = items[d.item];
        // Once per command, with its own customer's part (the pools above it have theirs).
        if let Some(actor) = command
            .actor
            .as_ref()
            .filter(|_| d.customer == command.customer_id)
        {
            super::operators::record(txn, actor, command.now).await?;
        }
        if d.entries.is_empty() {
            continue;
        }
        let operation_id = uuid::Uuid::now_v7().to_string();
        let actor = command.actor.as_ref().map(|a| a.key_id.as_str());
        for (position, entry) in d.entries.iter().enumerate() {
            rows.push(rows::entry_to_row(
                d.customer.as_str(),
                &operation_id,
                position,
                entry,
                command.now,
                actor,
            )?);
        }
    }
    for chunk in statement_chunks(&rows, ROWS_PER_STATEMENT) {
        ledger_entries::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    let mut consumed = Vec::new();
    for d in done {
        let command = items[d.item];
        for c in &d.consumed {
            // A capture's revenue posts under its hold; a usage's under its id.
            let source = c
                .hold_id
                .as_deref()
                .or(command.origin.source.as_deref())
                .ok_or_else(|| Error::Internal("a consumption without a source".into()))?;
            consumed.push(rows::consumption_to_row(
                d.customer.as_str(),
                source,
                c,
                command.now,
            )?);
        }
    }
    for chunk in statement_chunks(&consumed, ROWS_PER_STATEMENT) {
        consumptions::Entity::insert_many(chunk.to_vec())
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

impl super::Store {
    /// The customers' books as of `now`, without writing: for `check` and reads. Customers that
    /// do not exist are absent. Reads only the reservations of holds due to be released by then.
    pub async fn view_many(
        &self,
        customer_ids: &[String],
        now: Timestamp,
    ) -> Result<BTreeMap<CustomerId, (Book, Standing)>> {
        self.view_lines(customer_ids, now, false).await
    }

    /// What the customer can spend at `now`, its pools' shared grants included
    /// (`pool_available`). `None` when the customer is unknown.
    pub async fn pool_available(
        &self,
        customer_id: &CustomerId,
        now: Timestamp,
    ) -> Result<Option<Credits>> {
        let ids = [customer_id.to_string()];
        Ok(self
            .view_lines(&ids, now, true)
            .await?
            .remove(customer_id.as_str())
            .map(|(book, _)| book.available()))
    }

    /// The books of `customer_ids` as of `now`, each settled with its pools' grants lent (the
    /// pools settled first); kept lent when `pooled`, their own grants alone otherwise.
    async fn view_lines(
        &self,
        customer_ids: &[String],
        now: Timestamp,
        pooled: bool,
    ) -> Result<BTreeMap<CustomerId, (Book, Standing)>> {
        use sea_orm::TransactionTrait;
        // One snapshot for the few reads.
        let txn = self.connection().begin().await?;
        let mut loaded = load_books(&txn, customer_ids, &[], &[], Reservations::DueAt(now)).await?;
        // The pools above them, a level at a time.
        for _ in 0..organization::MAX_LEVELS_ABOVE {
            let missing: Vec<String> = loaded
                .values()
                .filter_map(|l| l.standing.parent.as_ref())
                .filter(|p| !loaded.contains_key(p.as_str()))
                .map(CustomerId::to_string)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if missing.is_empty() {
                break;
            }
            loaded.extend(load_books(&txn, &missing, &[], &[], Reservations::DueAt(now)).await?);
        }
        txn.commit().await?;
        let mut viewed = BTreeMap::new();
        for id in customer_ids {
            let customer = CustomerId::known(id.clone());
            if !loaded.contains_key(id.as_str()) {
                continue;
            }
            let parent_of = |c: &CustomerId| {
                loaded
                    .get(c.as_str())
                    .and_then(|l| l.standing.parent.clone())
            };
            let above = organization::ancestors(&customer, parent_of);
            // The customer, then as many of its pools as were found.
            let line = std::iter::once(&customer)
                .chain(&above)
                .map_while(|c| loaded.get(c.as_str()))
                .map(|l| (l.book.clone(), l.standing.clone()))
                .collect();
            let (book, standing) = self.settle_line(line, now, pooled);
            viewed.insert(customer, (book, standing));
        }
        Ok(viewed)
    }

    /// A customer's book and standing settled at `now` (`line[0]`), with its pools (`line[1..]`,
    /// nearest first) settled before and their grants lent; kept lent when `pooled`.
    fn settle_line(
        &self,
        mut line: Vec<(Book, Standing)>,
        now: Timestamp,
        pooled: bool,
    ) -> (Book, Standing) {
        let (mut book, mut standing) = line.remove(0);
        if line.is_empty() {
            command::settle_due(self.catalog(), &mut book, &mut standing, now);
            return (book, standing);
        }
        let mut above: Vec<(&mut Book, &mut Standing)> =
            line.iter_mut().map(|(b, s)| (b, s)).collect();
        command::settle_above(self.catalog(), &mut above, now);
        let above: Vec<&Book> = line.iter().map(|(b, _)| b).collect();
        let mut lent = organization::lend(&book, &above);
        command::settle_due(self.catalog(), &mut lent, &mut standing, now);
        if !pooled {
            lent.return_lent();
        }
        (lent, standing)
    }

    /// One customer's book as of `now` for `check`: the book kept in memory while it is younger
    /// than `[ledger] check_staleness_ms` (see `store::cache`); an older one once a read of the
    /// customer's version confirms it; read otherwise (and kept).
    /// `None` when the customer is unknown.
    pub async fn check_view(
        &self,
        customer_id: &CustomerId,
        now: Timestamp,
    ) -> Result<Option<(Book, Standing)>> {
        let Some(kept) = self.kept_for_check(customer_id.as_str()).await? else {
            // First sight: what its first command would find.
            return Ok(command::first_sight(
                self.catalog(),
                customer_id.clone(),
                now,
            ));
        };
        let mut line = vec![(kept.book.clone(), kept.standing.clone())];
        // Its pools, as check sees them too: a customer spends its ancestors' shared grants.
        let mut at = kept.standing.parent.clone();
        while let Some(parent) =
            at.filter(|_| line.len() <= usize::from(organization::MAX_LEVELS_ABOVE))
        {
            let Some(above) = self.kept_for_check(parent.as_str()).await? else {
                break;
            };
            at = above.standing.parent.clone();
            line.push((above.book.clone(), above.standing.clone()));
        }
        Ok(Some(self.settle_line(line, now, true)))
    }

    /// The book `check` decides on, as kept or read (see [`Store::check_view`]), not settled.
    /// `None` when the customer is unknown.
    async fn kept_for_check(&self, customer_id: &str) -> Result<Option<std::sync::Arc<Cached>>> {
        use sea_orm::TransactionTrait;
        let started = std::time::Instant::now();
        self.start_confirming();
        let kept = match self.books.for_check(customer_id, started) {
            Some((kept, true)) => Some(kept),
            // Older than the bound: one indexed read says whether it is still the stored book.
            Some((kept, false)) => {
                let version: Option<i64> = customers::Entity::find_by_id(customer_id)
                    .select_only()
                    .column(customers::Column::Version)
                    .into_tuple()
                    .by_key(self.connection())
                    .await?;
                (version == Some(kept.version)).then(|| {
                    self.books.confirm(customer_id, kept.version, started);
                    self.stats
                        .books_confirmed_by_check
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    kept
                })
            }
            None => None,
        };
        let kept = match kept {
            Some(kept) => {
                self.stats.books(1, 0);
                kept
            }
            None => {
                self.stats.books(0, 1);
                // One snapshot for the few reads; every reservation, so the book may be kept.
                let txn = self.connection().begin().await?;
                let ids = [customer_id.to_owned()];
                let loaded = load_books(&txn, &ids, &[], &[], Reservations::All).await?;
                txn.commit().await?;
                let Some((customer, loaded)) = loaded.into_iter().next() else {
                    return Ok(None);
                };
                let kept = Cached {
                    version: loaded.version,
                    book: loaded.book,
                    standing: loaded.standing,
                    alerts: loaded.alerts,
                    writable: true,
                };
                self.books
                    .publish([(customer.to_string(), kept.clone(), started)]);
                std::sync::Arc::new(kept)
            }
        };
        Ok(Some(kept))
    }

    /// Starts the background confirmation of the kept books that checks noted past half the
    /// staleness bound (see `store::cache`), a round every quarter of the bound, so that their
    /// next checks need no read: once, unless `check` decides on no kept book
    /// (`[ledger] check_staleness_ms = 0`). It ends when the books it confirms are dropped.
    fn start_confirming(&self) {
        let staleness = self.books.staleness();
        if staleness.is_zero() || !self.books.claim_confirming() {
            return;
        }
        let books = std::sync::Arc::downgrade(&self.books);
        let db = self.connection().clone();
        let stats = self.stats.clone();
        let period = (staleness / 4).max(std::time::Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(books) = books.upgrade() else {
                    return;
                };
                let confirmed = &stats.books_confirmed_in_background;
                if let Err(e) = confirm_noted(&db, &books, confirmed).await {
                    // Checks confirm by their own reads meanwhile.
                    tracing::warn!(error = %e, "confirming the books kept for checks failed");
                }
            }
        });
    }

    /// The books kept in memory that differ from what the database holds at their version:
    /// none, unless a write escaped the version (every write of a book moves it).
    pub(crate) async fn audit_kept_books(&self) -> Result<Vec<String>> {
        use sea_orm::TransactionTrait;
        let mut problems = Vec::new();
        for chunk in self.books.all().chunks(ROWS_PER_STATEMENT) {
            let ids: Vec<String> = chunk.iter().map(|(id, _)| id.clone()).collect();
            let txn = self.connection().begin().await?;
            let loaded = load_books(&txn, &ids, &[], &[], Reservations::All).await?;
            txn.commit().await?;
            for (customer, kept) in chunk {
                let Some(read) = loaded.get(customer.as_str()) else {
                    problems.push(format!("customer {customer}: kept in memory, not stored"));
                    continue;
                };
                if read.version != kept.version || !kept.writable {
                    continue;
                }
                // Compared as printed: an amount of another scale would print otherwise.
                let printed = |book: &Book, standing: &Standing, alerts: &Armed| {
                    let mut grants: Vec<_> = book.grants.iter().collect();
                    grants.sort_by(|a, b| a.id.cmp(&b.id));
                    let mut holds: Vec<_> = book.holds.iter().collect();
                    holds.sort_by(|a, b| a.id.cmp(&b.id));
                    let overdraft = (book.overdraft, book.overdraft_held);
                    format!("{grants:?} {holds:?} {overdraft:?} {standing:?} {alerts:?}")
                };
                if printed(&read.book, &read.standing, &read.alerts)
                    != printed(&kept.book, &kept.standing, &kept.alerts)
                {
                    problems.push(format!(
                        "customer {customer}: the book kept in memory at version {} is not the \
                         one stored",
                        kept.version
                    ));
                }
            }
        }
        Ok(problems)
    }

    /// One customer's book as of `now`, without writing. `None` when the customer is unknown.
    pub async fn view(
        &self,
        customer_id: &CustomerId,
        now: Timestamp,
    ) -> Result<Option<(Book, Standing)>> {
        let customer_id = customer_id.as_str();
        Ok(self
            .view_many(&[customer_id.to_owned()], now)
            .await?
            .remove(customer_id))
    }

    /// The customer owning a hold and the hold's status, if the hold exists.
    pub async fn hold_status(&self, hold_id: &str) -> Result<Option<(String, HoldStatus)>> {
        let Some(row) = holds::Entity::find_by_id(hold_id.to_owned())
            .by_key(self.connection())
            .await?
        else {
            return Ok(None);
        };
        let status = HoldStatus::parse(&row.status)
            .ok_or_else(|| Error::Internal(format!("hold status {:?}", row.status)))?;
        Ok(Some((row.customer_id, status)))
    }

    /// Customers with a hold or a grant due to expire at `now`: the work of the expiry job.
    pub async fn customers_due(&self, now: Timestamp, limit: u64) -> Result<Vec<String>> {
        use sea_orm::Order;
        let now = time(now);
        let mut ids: Vec<String> = holds::Entity::find()
            .select_only()
            .column(holds::Column::CustomerId)
            .distinct()
            .filter(holds::Column::Status.eq(HoldStatus::Held.as_str()))
            .filter(holds::Column::ExpiresAt.lte(now))
            .order_by(holds::Column::CustomerId, Order::Asc)
            .limit(limit)
            .into_tuple()
            .all(self.connection())
            .await?;
        let grant_ids: Vec<String> = grants::Entity::find()
            .select_only()
            .column(grants::Column::CustomerId)
            .distinct()
            .filter(grants::Column::Expired.eq(false))
            .filter(grants::Column::ExpiresAt.lte(now))
            .order_by(grants::Column::CustomerId, Order::Asc)
            .limit(limit)
            .into_tuple()
            .all(self.connection())
            .await?;
        ids.extend(grant_ids);
        // Credit cycles whose next grant is due, and (with a default plan) customers with no
        // plan whose default plan's cycle has not started.
        let mut cycles = customers::Entity::find()
            .select_only()
            .column(customers::Column::Id)
            .filter(customers::Column::NextGrantAt.lte(now))
            .order_by(customers::Column::Id, Order::Asc)
            .limit(limit)
            .into_tuple()
            .all(self.connection())
            .await?;
        ids.append(&mut cycles);
        if self.catalog().default_plan.is_some() {
            let mut unstarted = customers::Entity::find()
                .select_only()
                .column(customers::Column::Id)
                .filter(customers::Column::NextGrantAt.is_null())
                .filter(customers::Column::PlanId.is_null())
                .order_by(customers::Column::Id, Order::Asc)
                .limit(limit)
                .into_tuple()
                .all(self.connection())
                .await?;
            ids.append(&mut unstarted);
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Sets the customer's plan (creating the customer), as an admin command.
    pub async fn set_plan(
        &self,
        customer_id: &CustomerId,
        plan_id: Option<&str>,
        now: Timestamp,
        actor: super::operators::OperatorAction,
    ) -> Result<()> {
        let plan = plan_id.map(str::to_owned);
        self.execute(
            Envelope::new(customer_id.clone(), DomainCommand::SetPlan { plan }, now).by(actor),
        )
        .await?;
        Ok(())
    }

    /// Puts a customer under `parent` (or on its own with none), under the locks of both trees,
    /// as a command of its book (`Command::SetParent`): refused when it would make a cycle or a
    /// fourth level, or when the parent does not exist.
    pub async fn set_parent(
        &self,
        customer_id: &CustomerId,
        parent: Option<CustomerId>,
        now: Timestamp,
        actor: super::operators::OperatorAction,
    ) -> Result<()> {
        self.execute(
            Envelope::new(
                customer_id.clone(),
                DomainCommand::SetParent { parent },
                now,
            )
            .by(actor),
        )
        .await?;
        Ok(())
    }

    /// The customers whose parent is one of `parents`, by parent, in id order: the console's
    /// tree and the reads of a customer and those below it.
    pub async fn children_of(&self, parents: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
        let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for chunk in in_lists(parents, ROWS_PER_STATEMENT) {
            let rows: Vec<(String, Option<String>)> = customers::Entity::find()
                .select_only()
                .column(customers::Column::Id)
                .column(customers::Column::ParentId)
                .filter(customers::Column::ParentId.is_in(chunk.iter().cloned()))
                .order_by_asc(customers::Column::Id)
                .into_tuple()
                .all(self.connection())
                .await?;
            for (id, parent) in rows {
                children
                    .entry(parent.unwrap_or_default())
                    .or_default()
                    .push(id);
            }
        }
        Ok(children)
    }

    /// The customers above `customer`, nearest first (its parent, then its grandparent).
    pub async fn line_above(&self, customer: &CustomerId) -> Result<Vec<String>> {
        let mut line: Vec<String> = Vec::new();
        let mut at = customer.to_string();
        while line.len() < usize::from(organization::MAX_LEVELS_ABOVE) {
            let parent: Option<Option<String>> = customers::Entity::find_by_id(at.clone())
                .select_only()
                .column(customers::Column::ParentId)
                .into_tuple()
                .by_key(self.connection())
                .await?;
            match parent.flatten() {
                Some(p) if p != customer.as_str() && !line.contains(&p) => {
                    line.push(p.clone());
                    at = p;
                }
                _ => break,
            }
        }
        Ok(line)
    }

    /// Sets (or, with none, turns off) a customer's auto top-up, under its lock and in a batch
    /// like any change of its book: set below its threshold, a charge starts at once. `None`
    /// when there is no customer.
    pub async fn set_auto_topup(
        &self,
        customer: &CustomerId,
        setting: Option<crate::domain::autotopup::Setting>,
        now: Timestamp,
        actor: super::operators::OperatorAction,
    ) -> Result<Option<super::autotopup::AutoTopupState>> {
        let set = self
            .execute(
                Envelope::new(
                    customer.clone(),
                    DomainCommand::SetAutoTopup { setting },
                    now,
                )
                .by(actor),
            )
            .await;
        match set {
            Ok(_) => self.auto_topup(customer).await,
            Err(Error::CustomerNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Credits the customer spent (used, overage included) this UTC month before `now`, by action
/// and member: today and earlier. One grouped query over the customer's entries of the month.
pub(crate) async fn spent_this_month<C: ConnectionTrait>(
    db: &C,
    customer: &str,
    now: Timestamp,
) -> Result<SpentThisMonth> {
    let month = time(Period::Month.window_start(now));
    let day = time(Period::Day.window_start(now));
    let backend = db.get_database_backend();
    let (consume, overage) = (EntryKind::Consume.as_str(), EntryKind::Overage.as_str());
    let spent = format!("CASE WHEN kind = '{overage}' THEN overage ELSE -credits END");
    let sql = format!(
        "SELECT action, subject, \
         CAST(SUM(CASE WHEN recorded_at >= {day} THEN {spent} ELSE 0 END) AS BIGINT) AS today, \
         CAST(SUM(CASE WHEN recorded_at < {day} THEN {spent} ELSE 0 END) AS BIGINT) AS earlier \
         FROM ledger_entries WHERE customer_id = {p1} AND kind IN ('{consume}', '{overage}') \
         AND recorded_at >= {month} GROUP BY action, subject",
        p1 = match backend {
            sea_orm::DbBackend::Postgres => "$1",
            _ => "?",
        },
    );
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [customer.into()],
        ))
        .await?;
    let mut spent = Vec::with_capacity(rows.len());
    for row in rows {
        spent.push(SpentRow {
            action: row.try_get::<Option<String>>("", "action")?,
            subject: row
                .try_get::<Option<String>>("", "subject")?
                .map(Subject::known),
            today: Credits::from_micros(row.try_get("", "today")?),
            earlier: Credits::from_micros(row.try_get("", "earlier")?),
        });
    }
    Ok(SpentThisMonth { rows: spent })
}
