//! One customer's credits: grants (lots), two-phase holds and the entries that move them.
//!
//! A [`Book`] is loaded by the store under the customer's row lock, changed here by pure
//! functions that append [`Entry`] values, checked against the invariants in the README (The ledger), and
//! written back in the same transaction. Nothing in this module reads a clock or does I/O.

use super::Timestamp;
use super::catalog::Overage;
use super::customer::{CustomerId, Subject};
use super::money::{Credits, Money};
use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    Plan,
    Pack,
    Promotional,
    Adjustment,
}

impl GrantKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantKind::Plan => "plan",
            GrantKind::Pack => "pack",
            GrantKind::Promotional => "promotional",
            GrantKind::Adjustment => "adjustment",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "plan" => Some(GrantKind::Plan),
            "pack" => Some(GrantKind::Pack),
            "promotional" => Some(GrantKind::Promotional),
            "adjustment" => Some(GrantKind::Adjustment),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub id: String,
    pub kind: GrantKind,
    pub credits: Credits,
    pub remaining: Credits,
    /// Part of `remaining` reserved by open holds.
    pub held: Credits,
    /// Price net of tax, in `currency`, for paid grants.
    pub price: Option<Money>,
    pub currency: Option<String>,
    pub expires_at: Option<Timestamp>,
    /// Once expired, only the held part remains, until its holds resolve.
    pub expired: bool,
    pub priority: i32,
    pub plan_id: Option<String>,
    pub pack_id: Option<String>,
    pub source_type: GrantSource,
    pub source_id: String,
    pub created_at: Timestamp,
    /// Money refunded on this grant so far, in `currency` (never more than `price`).
    pub refunded: Money,
    /// Start of the period a plan grant pays for: its revenue schedule is set from it when the
    /// grant is first written. Not kept on the grant afterwards (the lot keeps the schedule).
    pub period_start: Option<Timestamp>,
    /// The payment that bought it is disputed: its free credits cannot be spent until the
    /// dispute closes (README, Disputes). What holds reserved on it before stays reserved.
    pub frozen: bool,
    /// The first instant its credits may be spent: one month of a plan paid for several
    /// (README, Credit cycles) is bought with the invoice and starts with its month.
    pub starts_at: Option<Timestamp>,
    /// Not started yet (`starts_at` in the future): in the balance, neither available nor
    /// drawn. Kept with the grant until [`Book::settle_due`] clears it once the start has come,
    /// so a path that forgets to settle fails closed.
    #[serde(default)]
    pub scheduled: bool,
    /// Spent by the customers below its owner too, after their own grants (README,
    /// Organizations). Made so unless the grant was made with `"shared": false`.
    #[serde(default = "shared_by_default")]
    pub shared: bool,
    /// Lent to the book of a customer below its owner for a decision: whose it is and how many
    /// levels up. Never written with the borrower's book.
    #[serde(skip)]
    pub lent: Option<Lender>,
}

fn shared_by_default() -> bool {
    true
}

/// Which grants a draw reaches: a spend reaches the pools above (README, Organizations); a
/// debt's settlement or an operator's take-back only the book's own grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Draw {
    Pool,
    Own,
}

/// Whose a grant lent to a book below its owner is (README, Organizations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lender {
    pub owner: CustomerId,
    /// 1 for the parent, 2 for the grandparent.
    pub level: u8,
}

/// Where a grant's credits come from, kept as its `source_type` (its `source_id` says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    /// An admin request (its idempotency key and memo).
    Admin,
    /// A Stripe object (its effect key).
    Stripe,
    /// Credits moved from another customer's grant (that grant's id).
    Transfer,
    /// Made by a test or a benchmark.
    Test,
    /// A plan's credit cycle outside Stripe (its grant's id names the period).
    Cycle,
}

impl GrantSource {
    pub const ALL: [GrantSource; 5] = [
        GrantSource::Admin,
        GrantSource::Stripe,
        GrantSource::Transfer,
        GrantSource::Test,
        GrantSource::Cycle,
    ];

    pub fn parse(text: &str) -> Option<GrantSource> {
        GrantSource::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GrantSource::Admin => "admin",
            GrantSource::Stripe => "stripe",
            GrantSource::Transfer => "transfer",
            GrantSource::Test => "test",
            GrantSource::Cycle => "cycle",
        }
    }
}

impl std::fmt::Display for GrantSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The price of a paid grant, net of tax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paid {
    pub price: Money,
    pub currency: String,
}

impl Grant {
    /// Not expired, with credits left or held: a grant the customer still has.
    pub fn is_live(&self) -> bool {
        !self.expired && (self.remaining.is_positive() || self.held.is_positive())
    }

    /// A grant of `kind` with nothing spent from it. The named constructors below are the ways
    /// grants come to be; `expiring` and `at_priority` finish them.
    fn new(
        id: impl Into<String>,
        kind: GrantKind,
        credits: Credits,
        paid: Option<Paid>,
        source: (GrantSource, String),
        now: Timestamp,
    ) -> Grant {
        let (price, currency) = paid.map(|p| (p.price, p.currency)).unzip();
        Grant {
            id: id.into(),
            kind,
            credits,
            remaining: credits,
            held: Credits::ZERO,
            price,
            currency,
            expires_at: None,
            expired: false,
            priority: match kind {
                GrantKind::Promotional => super::catalog::PROMOTIONAL_PRIORITY,
                GrantKind::Adjustment => super::catalog::ADJUSTMENT_PRIORITY,
                GrantKind::Plan => super::catalog::DEFAULT_PLAN_PRIORITY,
                GrantKind::Pack => super::catalog::DEFAULT_PACK_PRIORITY,
            },
            plan_id: None,
            pack_id: None,
            source_type: source.0,
            source_id: source.1,
            created_at: now,
            refunded: Money::ZERO,
            period_start: None,
            frozen: false,
            starts_at: None,
            scheduled: false,
            shared: true,
            lent: None,
        }
    }

    /// Free credits, carrying no price and no revenue.
    pub fn promotional(
        id: impl Into<String>,
        credits: Credits,
        source: (GrantSource, String),
        now: Timestamp,
    ) -> Grant {
        Grant::new(id, GrantKind::Promotional, credits, None, source, now)
    }

    /// Credits added by an operator to correct a balance.
    pub fn adjustment(
        id: impl Into<String>,
        credits: Credits,
        source: (GrantSource, String),
        now: Timestamp,
    ) -> Grant {
        Grant::new(id, GrantKind::Adjustment, credits, None, source, now)
    }

    /// A top-up pack bought for `paid`.
    pub fn pack(
        id: impl Into<String>,
        pack_id: &str,
        credits: Credits,
        paid: Paid,
        source: (GrantSource, String),
        now: Timestamp,
    ) -> Grant {
        Grant {
            pack_id: Some(pack_id.to_owned()),
            ..Grant::new(id, GrantKind::Pack, credits, Some(paid), source, now)
        }
    }

    /// A plan's credits for one period, paid for by `paid` when sold (a plan grant without a
    /// price carries no revenue); its revenue schedule starts at `period_start`.
    pub fn plan(
        id: impl Into<String>,
        plan_id: &str,
        credits: Credits,
        paid: Option<Paid>,
        period_start: Option<Timestamp>,
        source: (GrantSource, String),
        now: Timestamp,
    ) -> Grant {
        Grant {
            plan_id: Some(plan_id.to_owned()),
            period_start,
            ..Grant::new(id, GrantKind::Plan, credits, paid, source, now)
        }
    }

    /// `credits` moved here from grant `from` of another customer, keeping its kind, expiry,
    /// priority and catalog item, at `price` (their share of what `from` was paid).
    pub fn transferred(
        id: impl Into<String>,
        from: &Grant,
        credits: Credits,
        price: Option<Money>,
        now: Timestamp,
    ) -> Grant {
        let paid = price
            .zip(from.currency.clone())
            .map(|(price, currency)| Paid { price, currency });
        Grant {
            expires_at: from.expires_at,
            // A month bought ahead stays scheduled until its start, wherever it moves.
            starts_at: from.starts_at,
            scheduled: from.scheduled,
            priority: from.priority,
            plan_id: from.plan_id.clone(),
            pack_id: from.pack_id.clone(),
            ..Grant::new(
                id,
                from.kind,
                credits,
                paid,
                (GrantSource::Transfer, from.id.clone()),
                now,
            )
        }
    }

    pub fn expiring(self, expires_at: Option<Timestamp>) -> Grant {
        Grant { expires_at, ..self }
    }

    /// Spendable from `starts_at` only (none: at once).
    pub fn starting(self, starts_at: Option<Timestamp>) -> Grant {
        Grant {
            starts_at,
            scheduled: starts_at.is_some(),
            ..self
        }
    }

    /// Not shared with the customers below its owner: only the owner spends it.
    pub fn unshared(self) -> Grant {
        Grant {
            shared: false,
            ..self
        }
    }

    /// 0 for the book's own grants; the levels up to the owner of a lent one.
    pub fn level(&self) -> u8 {
        self.lent.as_ref().map_or(0, |l| l.level)
    }

    pub fn at_priority(self, priority: i32) -> Grant {
        Grant { priority, ..self }
    }

    /// Credits that may be spent or taken: none of an expired grant, nor of a frozen or a
    /// scheduled one.
    pub fn free(&self) -> Credits {
        if self.expired || self.frozen || self.scheduled {
            Credits::ZERO
        } else {
            self.remaining - self.held
        }
    }

    /// Credits not held on a grant frozen by a dispute: in the balance, not available.
    pub fn frozen_credits(&self) -> Credits {
        if self.frozen && !self.expired && !self.scheduled {
            self.remaining - self.held
        } else {
            Credits::ZERO
        }
    }

    /// Credits that may be taken away (refunded, moved): the free ones, or all of a month not
    /// started yet.
    fn takeable(&self) -> Credits {
        if self.scheduled && !self.expired {
            self.remaining
        } else {
            self.free()
        }
    }

    /// Credits of a grant not started yet: in the balance, not available.
    pub fn scheduled_credits(&self) -> Credits {
        if self.scheduled && !self.expired {
            self.remaining
        } else {
            Credits::ZERO
        }
    }

    /// README, The ledger: own grants before lent ones, level by level (README, Organizations);
    /// then lowest priority, then soonest expiry (none last), then oldest, then id.
    pub fn consumption_order(a: &Grant, b: &Grant) -> Ordering {
        a.level()
            .cmp(&b.level())
            .then_with(|| a.priority.cmp(&b.priority))
            .then_with(|| match (a.expires_at, b.expires_at) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => Ordering::Equal,
            })
            .then_with(|| a.created_at.cmp(&b.created_at))
            .then_with(|| a.id.cmp(&b.id))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Held,
    Captured,
    Voided,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Held => "held",
            HoldStatus::Captured => "captured",
            HoldStatus::Voided => "voided",
            HoldStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "held" => Some(HoldStatus::Held),
            "captured" => Some(HoldStatus::Captured),
            "voided" => Some(HoldStatus::Voided),
            "expired" => Some(HoldStatus::Expired),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: String,
    pub action: String,
    pub quantity: String,
    pub credits: Credits,
    /// Reserved per grant, in the consumption order used when the hold was made.
    pub allocations: Vec<(String, Credits)>,
    /// Part of `credits` backed by no grant (allowed or billed overage).
    pub overdraft: Credits,
    pub status: HoldStatus,
    pub expires_at: Timestamp,
    pub captured: Option<Credits>,
    pub created_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    /// Who inside the customer holds it; its capture is spent by the same member.
    pub subject: Option<Subject>,
}

impl Hold {
    /// What one unit of the held action cost when the hold was made: its credits over its
    /// quantity, exact (the credits were the quantity times that price). None for a hold
    /// without a quantity.
    pub fn credits_per_unit(&self) -> Option<Credits> {
        let quantity: rust_decimal::Decimal = self.quantity.parse().ok()?;
        let per_unit = self.credits.value().checked_div(quantity)?;
        let per_unit = Credits::new(per_unit).ok()?;
        debug_assert_eq!(
            per_unit.value() * quantity,
            self.credits.value(),
            "a hold's credits are its quantity times a price of six places"
        );
        Some(per_unit).filter(|c| c.is_positive())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Credits granted.
    Grant,
    /// Credits reserved by a hold.
    Hold,
    /// A reservation given back (void, expiry, or the unused part of a capture).
    Release,
    /// Credits used, from a grant, or from no grant (overdraft under `allow`).
    Consume,
    /// Credits used beyond every grant under `bill`: recorded as billable, not as debt.
    Overage,
    /// Credits left on a grant when it expired.
    Expire,
    /// An `allow` overdraft paid off by a new grant.
    Settle,
    /// Credits taken back because the money that paid for them was refunded or lost in a
    /// dispute; the entry carries the money.
    Clawback,
    /// Credits given back because a refund that took them failed or was canceled; the entry
    /// carries the money returned.
    ClawbackReversal,
    /// Unused plan credits carried into the next paid period (their expiry moves with them).
    Rollover,
    /// Credits moved to another customer when a Stripe customer is linked to an account later.
    Transfer,
    /// Credits an operator took back (a negative adjustment); the entry carries the reason.
    Adjustment,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Grant => "grant",
            EntryKind::Hold => "hold",
            EntryKind::Release => "release",
            EntryKind::Consume => "consume",
            EntryKind::Overage => "overage",
            EntryKind::Expire => "expire",
            EntryKind::Settle => "settle",
            EntryKind::Clawback => "clawback",
            EntryKind::ClawbackReversal => "clawback_reversal",
            EntryKind::Rollover => "rollover",
            EntryKind::Transfer => "transfer",
            EntryKind::Adjustment => "adjustment",
        }
    }
}

/// One line of the ledger. `credits` moves the balance of `grant_id` (or of the overdraft when
/// `grant_id` is none); `held` moves what is reserved there; `overage` is billable credits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub grant_id: Option<String>,
    pub hold_id: Option<String>,
    pub action: Option<String>,
    pub quantity: Option<String>,
    pub credits: Credits,
    pub held: Credits,
    pub overage: Credits,
    pub effective_at: Timestamp,
    /// Money moved with the entry (a clawback's refund), in the grant's currency.
    pub money: Option<Money>,
    /// Why an operator adjusted the credits (the entries of an adjustment only).
    pub reason: Option<String>,
    /// Who inside the customer spent (the entries of a hold, a capture or a usage).
    pub subject: Option<Subject>,
}

/// Why a command is refused. Nothing is written when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("insufficient credits: {required} required, {available} available")]
    InsufficientCredits {
        required: Credits,
        available: Credits,
    },
    #[error("hold not found")]
    HoldNotFound,
    #[error("hold already {0}")]
    HoldResolved(&'static str),
    #[error("hold expired")]
    HoldExpired,
    #[error("cannot take back {requested} credits: {available} available")]
    ExceedsAvailable {
        requested: Credits,
        available: Credits,
    },
    #[error("ledger invariant violated: {0}")]
    InvariantViolated(String),
}

/// What a command is about, copied onto its entries.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub action: Option<String>,
    pub quantity: Option<String>,
    /// Who inside the customer spent.
    pub subject: Option<Subject>,
}

#[derive(Debug, Clone)]
pub struct Book {
    pub customer_id: CustomerId,
    pub grants: Vec<Grant>,
    /// Open holds (status `held`) and the ones resolved in this command.
    pub holds: Vec<Hold>,
    /// Credits used beyond every grant under `allow`, owed by the customer (>= 0).
    pub overdraft: Credits,
    /// Sum of the open holds' `overdraft` parts.
    pub overdraft_held: Credits,
    /// Entries appended by the commands applied to this book since it was loaded.
    pub entries: Vec<Entry>,
    /// What the usages and captures applied since it was loaded consumed, and what it cost.
    pub consumed: Vec<super::margin::Consumption>,
    /// Per grant, what holds of other books reserve on it (holds of customers below its owner,
    /// or the owner's own on a lent grant): noted before a decision
    /// ([`Book::note_holds_elsewhere`]), left to them by this book's invariants.
    pub held_elsewhere: std::collections::BTreeMap<String, Credits>,
}

impl Book {
    pub fn new(customer_id: CustomerId) -> Self {
        Book {
            customer_id,
            grants: Vec::new(),
            holds: Vec::new(),
            overdraft: Credits::ZERO,
            overdraft_held: Credits::ZERO,
            entries: Vec::new(),
            consumed: Vec::new(),
            held_elsewhere: std::collections::BTreeMap::new(),
        }
    }

    /// Remaining credits on every grant, less the overdraft.
    pub fn balance(&self) -> Credits {
        self.grants.iter().map(|g| g.remaining).sum::<Credits>() - self.overdraft
    }

    pub fn held(&self) -> Credits {
        self.grants.iter().map(|g| g.held).sum::<Credits>() + self.overdraft_held
    }

    /// What may be spent now: the balance less what holds reserve, what disputes freeze and
    /// what has not started yet.
    pub fn available(&self) -> Credits {
        self.balance() - self.held() - self.frozen() - self.scheduled()
    }

    /// Credits of grants not started yet (later months of a plan paid for several).
    pub fn scheduled(&self) -> Credits {
        self.grants.iter().map(Grant::scheduled_credits).sum()
    }

    /// Credits frozen by open disputes on the payments that bought them.
    pub fn frozen(&self) -> Credits {
        self.grants.iter().map(Grant::frozen_credits).sum()
    }

    /// Freezes (a dispute opened on the payment that bought it) or thaws (the dispute closed) a
    /// grant's credits. Nothing moves: no entry is written; `available` changes.
    pub fn set_frozen(&mut self, grant_id: &str, frozen: bool) {
        self.grant_mut(grant_id).frozen = frozen;
    }

    /// Free credits of its own grants (lent ones are the owners' to settle debts with).
    fn free_own(&self) -> Credits {
        self.grants
            .iter()
            .filter(|g| g.lent.is_none())
            .map(Grant::free)
            .sum()
    }

    /// What may be spent now of its own grants alone: [`Book::available`] less what is lent.
    pub fn own_available(&self) -> Credits {
        let mut own = self.clone();
        own.return_lent();
        own.available()
    }

    /// Lends this book the grants `owner`'s book shares with the customers below it, `level`
    /// levels up (README, Organizations): its live shared grants, and any this book's open holds
    /// reserve credits on. They are spent after the book's own grants, level by level.
    pub fn borrow_from(&mut self, owner: &Book, level: u8) {
        assert!(level > 0, "a book lends to the books below it");
        let reserved: std::collections::BTreeSet<&str> = self
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Held)
            .flat_map(|h| h.allocations.iter().map(|(g, _)| g.as_str()))
            .collect();
        let lent: Vec<Grant> = owner
            .grants
            .iter()
            .filter(|g| g.lent.is_none())
            .filter(|g| (g.shared && g.is_live()) || reserved.contains(g.id.as_str()))
            .map(|g| Grant {
                lent: Some(Lender {
                    owner: owner.customer_id.clone(),
                    level,
                }),
                ..g.clone()
            })
            .collect();
        self.grants.extend(lent);
    }

    /// Drops the grants lent to it (before lending afresh, or before storing the book).
    pub fn return_lent(&mut self) {
        self.grants.retain(|g| g.lent.is_none());
    }

    /// The grants `owner` lent to this book, as this book's decisions left them, back in the
    /// owner's book; credits a released hold gave back to an expired one lapse there. Whether
    /// anything changed.
    pub fn give_back(&self, owner: &mut Book, now: Timestamp) -> bool {
        let mut changed = false;
        let owner_id = owner.customer_id.clone();
        for lent in self
            .grants
            .iter()
            .filter(|g| g.lent.as_ref().is_some_and(|l| l.owner == owner_id))
        {
            let back = Grant {
                lent: None,
                ..lent.clone()
            };
            let mine = owner.grant_mut(&back.id);
            if *mine != back {
                *mine = back;
                changed = true;
                owner.lapse_if_expired(&lent.id, now);
            }
        }
        owner.note_holds_elsewhere();
        changed
    }

    /// Notes, per grant, what is held on it beyond what this book's open holds reserve: the
    /// holds of other books (see [`Book::held_elsewhere`]).
    pub fn note_holds_elsewhere(&mut self) {
        let mut reserved: std::collections::BTreeMap<&str, Credits> = Default::default();
        for (grant, credits) in self
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Held)
            .flat_map(|h| h.allocations.iter())
        {
            *reserved.entry(grant.as_str()).or_default() += *credits;
        }
        self.held_elsewhere = self
            .grants
            .iter()
            .map(|g| {
                let mine = reserved.get(g.id.as_str()).copied().unwrap_or_default();
                (g.id.clone(), g.held - mine)
            })
            .filter(|(_, elsewhere)| !elsewhere.is_zero())
            .collect();
    }

    pub fn hold(&self, id: &str) -> Option<&Hold> {
        self.holds.iter().find(|h| h.id == id)
    }

    fn grant_mut(&mut self, id: &str) -> &mut Grant {
        self.grants
            .iter_mut()
            .find(|g| g.id == id)
            .expect("a hold's allocations name grants loaded with the book")
    }

    fn push(
        &mut self,
        kind: EntryKind,
        grant: Option<&str>,
        hold: Option<&str>,
        usage: &Usage,
    ) -> &mut Entry {
        self.entries.push(Entry {
            kind,
            grant_id: grant.map(str::to_owned),
            hold_id: hold.map(str::to_owned),
            action: usage.action.clone(),
            quantity: usage.quantity.clone(),
            credits: Credits::ZERO,
            held: Credits::ZERO,
            overage: Credits::ZERO,
            effective_at: chrono::DateTime::UNIX_EPOCH,
            money: None,
            reason: None,
            subject: usage.subject.clone(),
        });
        self.entries.last_mut().expect("just pushed")
    }

    /// Applies everything due at `now`, in the order it fell due: holds past their expiry are
    /// released, grants past theirs expire (their held part stays until its holds resolve). At
    /// the same instant a grant expires before a hold is released, so nothing a hold gives back
    /// outlives its grant. Grants bought ahead start (after any expiring at that instant), and
    /// pay off an `allow` overdraft. Entries carry the due time. Returns the grants started.
    pub fn settle_due(&mut self, now: Timestamp) -> Vec<String> {
        const GRANT: u8 = 0;
        const HOLD: u8 = 1;
        const START: u8 = 2;
        let mut due: Vec<(Timestamp, u8, String)> = self
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Held && h.expires_at <= now)
            .map(|h| (h.expires_at, HOLD, h.id.clone()))
            // A lent grant expires and starts in its owner's book, settled first.
            .chain(
                self.grants
                    .iter()
                    .filter(|g| !g.expired && g.lent.is_none())
                    .filter_map(|g| {
                        g.expires_at
                            .filter(|e| *e <= now)
                            .map(|e| (e, GRANT, g.id.clone()))
                    }),
            )
            .chain(
                self.grants
                    .iter()
                    .filter(|g| g.scheduled && g.lent.is_none())
                    .filter_map(|g| {
                        g.starts_at
                            .filter(|s| *s <= now)
                            .map(|s| (s, START, g.id.clone()))
                    }),
            )
            .collect();
        due.sort();
        let mut started = Vec::new();
        for (at, kind, id) in due {
            match kind {
                GRANT => self.expire_grant(&id, at),
                HOLD => self.release_hold(&id, HoldStatus::Expired, at),
                _ => {
                    self.grant_mut(&id).scheduled = false;
                    self.settle_overdraft(at);
                    started.push(id);
                }
            }
        }
        started
    }

    fn expire_grant(&mut self, id: &str, at: Timestamp) {
        let grant = self.grant_mut(id);
        grant.expired = true;
        let lapsing = grant.remaining - grant.held;
        grant.remaining = grant.held;
        if lapsing.is_positive() {
            let entry = self.push(EntryKind::Expire, Some(id), None, &Usage::default());
            entry.credits = -lapsing;
            entry.effective_at = at;
        }
    }

    /// Adds a grant; an `allow` overdraft is paid off from it first.
    pub fn add_grant(&mut self, grant: Grant, now: Timestamp) {
        assert!(grant.credits.is_positive(), "a grant adds credits");
        let id = grant.id.clone();
        let credits = grant.credits;
        self.grants.push(Grant {
            remaining: credits,
            held: Credits::ZERO,
            expired: false,
            scheduled: grant.starts_at.is_some_and(|s| s > now),
            ..grant
        });
        let entry = self.push(EntryKind::Grant, Some(&id), None, &Usage::default());
        entry.credits = credits;
        entry.effective_at = now;
        self.settle_overdraft(now);
    }

    /// An `allow` overdraft is paid off from free credits as soon as there are any: from a new
    /// grant, or from credits a hold gives back. The balance does not move; the debt does.
    fn settle_overdraft(&mut self, now: Timestamp) {
        if !self.overdraft.is_positive() {
            return;
        }
        let (draws, _) = self.draw_in(self.overdraft, Draw::Own, Grant::consumption_order);
        for (grant_id, take) in draws {
            self.overdraft -= take;
            self.grant_mut(&grant_id).remaining -= take;
            let from_grant = self.push(EntryKind::Settle, Some(&grant_id), None, &Usage::default());
            from_grant.credits = -take;
            from_grant.effective_at = now;
            let to_overdraft = self.push(EntryKind::Settle, None, None, &Usage::default());
            to_overdraft.credits = take;
            to_overdraft.effective_at = now;
        }
    }

    /// Free credits per grant in consumption order, up to `amount`; and what they fall short by.
    /// Spending draws on lent grants too, after the book's own.
    fn plan_draw(&self, amount: Credits) -> (Vec<(String, Credits)>, Credits) {
        self.draw_in(amount, Draw::Pool, Grant::consumption_order)
    }

    /// Free credits per grant in `order`, up to `amount` (of the grants `draw` reaches); and
    /// what they fall short by.
    fn draw_in(
        &self,
        amount: Credits,
        draw: Draw,
        order: impl Fn(&Grant, &Grant) -> Ordering,
    ) -> (Vec<(String, Credits)>, Credits) {
        let mut open: Vec<&Grant> = self
            .grants
            .iter()
            .filter(|g| draw == Draw::Pool || g.lent.is_none())
            .filter(|g| g.free().is_positive())
            .collect();
        open.sort_by(|a, b| order(a, b));
        let mut rest = amount;
        let mut draws = Vec::new();
        for grant in open {
            if !rest.is_positive() {
                break;
            }
            let take = grant.free().min(rest);
            draws.push((grant.id.clone(), take));
            rest -= take;
        }
        (draws, rest)
    }

    /// May `amount` be spent beyond every grant, by the overage rule? `available` is before it.
    fn overage_allowed(
        &self,
        overage: &Overage,
        required: Credits,
        shortfall: Credits,
    ) -> Result<(), Rejection> {
        if !shortfall.is_positive() {
            return Ok(());
        }
        let available = self.available();
        match overage {
            Overage::Block => Err(Rejection::InsufficientCredits {
                required,
                available,
            }),
            Overage::Allow { limit } if available - required < -*limit => {
                Err(Rejection::InsufficientCredits {
                    required,
                    available: available + *limit,
                })
            }
            Overage::Allow { .. } | Overage::Bill { .. } => Ok(()),
        }
    }

    /// Reserves `credits` for a new hold.
    pub fn authorize(
        &mut self,
        hold_id: &str,
        usage: &Usage,
        credits: Credits,
        overage: &Overage,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<(), Rejection> {
        assert!(credits.is_positive(), "a hold reserves credits");
        let (draws, shortfall) = self.plan_draw(credits);
        self.overage_allowed(overage, credits, shortfall)?;
        for (grant_id, take) in &draws {
            self.grant_mut(grant_id).held += *take;
            let entry = self.push(EntryKind::Hold, Some(grant_id), Some(hold_id), usage);
            entry.held = *take;
            entry.effective_at = now;
        }
        if shortfall.is_positive() {
            self.overdraft_held += shortfall;
            let entry = self.push(EntryKind::Hold, None, Some(hold_id), usage);
            entry.held = shortfall;
            entry.effective_at = now;
        }
        self.holds.push(Hold {
            id: hold_id.to_owned(),
            action: usage.action.clone().unwrap_or_default(),
            quantity: usage.quantity.clone().unwrap_or_default(),
            credits,
            allocations: draws,
            overdraft: shortfall,
            status: HoldStatus::Held,
            expires_at,
            captured: None,
            created_at: now,
            resolved_at: None,
            subject: usage.subject.clone(),
        });
        Ok(())
    }

    fn open_hold_index(&self, hold_id: &str) -> Result<usize, Rejection> {
        let index = self
            .holds
            .iter()
            .position(|h| h.id == hold_id)
            .ok_or(Rejection::HoldNotFound)?;
        match self.holds[index].status {
            HoldStatus::Held => Ok(index),
            HoldStatus::Expired => Err(Rejection::HoldExpired),
            other => Err(Rejection::HoldResolved(other.as_str())),
        }
    }

    /// Posts the actual cost of a hold. Less than held: the rest is released. More: the excess is
    /// debited like a usage under the overage rule, or the whole capture is refused.
    /// `quantity` is the quantity actually used, when the capture named one; it is recorded on
    /// the entries instead of the quantity authorized.
    pub fn capture(
        &mut self,
        hold_id: &str,
        credits: Credits,
        quantity: Option<String>,
        overage: &Overage,
        now: Timestamp,
    ) -> Result<(), Rejection> {
        assert!(!credits.is_negative(), "a capture is not negative");
        let index = self.open_hold_index(hold_id)?;
        let hold = self.holds[index].clone();
        let usage = Usage {
            action: Some(hold.action.clone()),
            quantity,
            subject: hold.subject.clone(),
        };
        let mut rest = credits;
        for (grant_id, reserved) in &hold.allocations {
            let reserved = *reserved;
            let take = reserved.min(rest);
            rest -= take;
            let grant = self.grant_mut(grant_id);
            grant.held -= reserved;
            grant.remaining -= take;
            if take.is_positive() {
                let entry = self.push(EntryKind::Consume, Some(grant_id), Some(hold_id), &usage);
                entry.credits = -take;
                entry.held = -take;
                entry.effective_at = now;
            }
            if reserved > take {
                let entry = self.push(EntryKind::Release, Some(grant_id), Some(hold_id), &usage);
                entry.held = -(reserved - take);
                entry.effective_at = now;
            }
            self.lapse_if_expired(grant_id, now);
        }
        if hold.overdraft.is_positive() {
            let take = hold.overdraft.min(rest);
            rest -= take;
            self.overdraft_held -= hold.overdraft;
            if take.is_positive() {
                self.spend_beyond_grants(take, overage, Some(hold_id), &usage, true, now);
            }
            if hold.overdraft > take {
                let entry = self.push(EntryKind::Release, None, Some(hold_id), &usage);
                entry.held = -(hold.overdraft - take);
                entry.effective_at = now;
            }
        }
        let hold = &mut self.holds[index];
        hold.status = HoldStatus::Captured;
        hold.captured = Some(credits);
        hold.resolved_at = Some(now);
        if rest.is_positive() {
            self.debit_free(rest, overage, Some(hold_id), &usage, now)?;
        }
        self.settle_overdraft(now);
        Ok(())
    }

    /// Releases a hold without using it.
    pub fn void(&mut self, hold_id: &str, now: Timestamp) -> Result<(), Rejection> {
        self.open_hold_index(hold_id)?;
        self.release_hold(hold_id, HoldStatus::Voided, now);
        Ok(())
    }

    fn release_hold(&mut self, hold_id: &str, status: HoldStatus, at: Timestamp) {
        let index = self
            .holds
            .iter()
            .position(|h| h.id == hold_id && h.status == HoldStatus::Held)
            .expect("releasing an open hold");
        let hold = self.holds[index].clone();
        let usage = Usage {
            action: Some(hold.action.clone()),
            quantity: Some(hold.quantity.clone()),
            subject: hold.subject.clone(),
        };
        for (grant_id, reserved) in &hold.allocations {
            self.grant_mut(grant_id).held -= *reserved;
            let entry = self.push(EntryKind::Release, Some(grant_id), Some(hold_id), &usage);
            entry.held = -*reserved;
            entry.effective_at = at;
            self.lapse_if_expired(grant_id, at);
        }
        if hold.overdraft.is_positive() {
            self.overdraft_held -= hold.overdraft;
            let entry = self.push(EntryKind::Release, None, Some(hold_id), &usage);
            entry.held = -hold.overdraft;
            entry.effective_at = at;
        }
        let hold = &mut self.holds[index];
        hold.status = status;
        hold.resolved_at = Some(at);
        self.settle_overdraft(at);
    }

    /// Credits released onto a grant that expired meanwhile expire at once.
    fn lapse_if_expired(&mut self, grant_id: &str, at: Timestamp) {
        let grant = self.grant_mut(grant_id);
        // A lent grant lapses in its owner's book, when it is given back.
        if grant.lent.is_none() && grant.expired && grant.remaining > grant.held {
            let lapsing = grant.remaining - grant.held;
            grant.remaining = grant.held;
            let entry = self.push(EntryKind::Expire, Some(grant_id), None, &Usage::default());
            entry.credits = -lapsing;
            entry.effective_at = at;
        }
    }

    /// A one-shot debit (usage), or the excess of a capture over its hold.
    pub fn debit(
        &mut self,
        credits: Credits,
        usage: &Usage,
        overage: &Overage,
        now: Timestamp,
    ) -> Result<(), Rejection> {
        assert!(credits.is_positive(), "a debit takes credits");
        self.debit_free(credits, overage, None, usage, now)
    }

    fn debit_free(
        &mut self,
        credits: Credits,
        overage: &Overage,
        hold_id: Option<&str>,
        usage: &Usage,
        now: Timestamp,
    ) -> Result<(), Rejection> {
        let (draws, shortfall) = self.plan_draw(credits);
        self.overage_allowed(overage, credits, shortfall)?;
        for (grant_id, take) in &draws {
            self.grant_mut(grant_id).remaining -= *take;
            let entry = self.push(EntryKind::Consume, Some(grant_id), hold_id, usage);
            entry.credits = -*take;
            entry.effective_at = now;
        }
        if shortfall.is_positive() {
            self.spend_beyond_grants(shortfall, overage, hold_id, usage, false, now);
        }
        Ok(())
    }

    /// Credits used beyond every grant: owed under `allow` (and under `block`, only for the
    /// overdraft part of a hold approved when the plan allowed it), billable under `bill`.
    fn spend_beyond_grants(
        &mut self,
        amount: Credits,
        overage: &Overage,
        hold_id: Option<&str>,
        usage: &Usage,
        from_hold: bool,
        now: Timestamp,
    ) {
        let held = if from_hold { -amount } else { Credits::ZERO };
        match overage {
            Overage::Bill { price } => {
                // Billed money at the overage price, to the credit scale; the journal rounds the
                // running total to the currency.
                let money = Money::new((amount.value() * *price).round_dp_with_strategy(
                    super::money::SCALE,
                    rust_decimal::RoundingStrategy::MidpointAwayFromZero,
                ))
                .expect("rounded to the credit scale");
                let entry = self.push(EntryKind::Overage, None, hold_id, usage);
                entry.held = held;
                entry.overage = amount;
                entry.money = Some(money);
                entry.effective_at = now;
            }
            Overage::Allow { .. } | Overage::Block => {
                self.overdraft += amount;
                let entry = self.push(EntryKind::Consume, None, hold_id, usage);
                entry.credits = -amount;
                entry.held = held;
                entry.effective_at = now;
            }
        }
    }

    /// Takes back credits paid for by `money` that was refunded (or lost in a dispute), per
    /// README, Revenue recognition: the remaining credits fall by `money` / price per credit, rounded down to
    /// the credit scale, and never below what is free (credits already used or held stay used).
    /// Returns the credits taken. `money` must not exceed what is left unrefunded.
    pub fn claw_back(&mut self, grant_id: &str, money: Money, now: Timestamp) -> Credits {
        assert!(money.is_positive(), "a clawback moves money");
        let grant = self.grant_mut(grant_id);
        let price = grant.price.expect("only paid grants are clawed back");
        assert!(
            grant.refunded + money <= price,
            "a grant is never refunded beyond its price"
        );
        let take = credits_for_money(money, grant.credits, price).min(grant.takeable());
        grant.remaining -= take;
        grant.refunded += money;
        let entry = self.push(EntryKind::Clawback, Some(grant_id), None, &Usage::default());
        entry.credits = -take;
        entry.money = Some(money);
        entry.effective_at = now;
        take
    }

    /// Gives back what a clawback took when the refund behind it fails or is canceled: the
    /// grant's refunded money falls by `money`, and its credits rise by `money` / price per credit
    /// (rounded down to the credit scale), never by more than `clawed` (the credits clawbacks
    /// took from it and no reversal has given back yet). Credits given back to a grant that has
    /// expired lapse at once; an `allow` overdraft is paid off from them first. Returns the
    /// credits given back.
    pub fn reverse_claw_back(
        &mut self,
        grant_id: &str,
        money: Money,
        clawed: Credits,
        now: Timestamp,
    ) -> Credits {
        assert!(money.is_positive(), "a reversal moves money");
        assert!(!clawed.is_negative(), "clawbacks take credits");
        let grant = self.grant_mut(grant_id);
        let price = grant.price.expect("only paid grants are clawed back");
        assert!(
            money <= grant.refunded,
            "a reversal never gives back more money than was refunded"
        );
        let give = credits_for_money(money, grant.credits, price).min(clawed);
        grant.remaining += give;
        grant.refunded -= money;
        let expired = grant.expired;
        let entry = self.push(
            EntryKind::ClawbackReversal,
            Some(grant_id),
            None,
            &Usage::default(),
        );
        entry.credits = give;
        entry.money = Some(money);
        entry.effective_at = now;
        if expired && give.is_positive() {
            // The grant expired meanwhile: what comes back lapses as it would have.
            self.grant_mut(grant_id).remaining -= give;
            let entry = self.push(EntryKind::Expire, Some(grant_id), None, &Usage::default());
            entry.credits = -give;
            entry.effective_at = now;
        } else {
            self.settle_overdraft(now);
        }
        give
    }

    /// Takes back `credits` that are free (neither used nor held), never taking available credits
    /// below zero: from grants that carry no price first (promotional, adjustment, unpaid plan
    /// credits), then from paid grants, each group in consumption order, so that a correction
    /// disturbs the revenue books only when free credits do not cover it. Returns the credits
    /// taken per grant, in the order taken.
    pub fn take_back(
        &mut self,
        credits: Credits,
        now: Timestamp,
    ) -> Result<Vec<(String, Credits)>, Rejection> {
        assert!(credits.is_positive(), "a take-back takes credits");
        let available = self.own_available();
        if credits > available {
            return Err(Rejection::ExceedsAvailable {
                requested: credits,
                available: available.max(Credits::ZERO),
            });
        }
        let (draws, short) = self.draw_in(credits, Draw::Own, |a, b| {
            a.price
                .is_some()
                .cmp(&b.price.is_some())
                .then_with(|| Grant::consumption_order(a, b))
        });
        assert!(short.is_zero(), "available credits are free credits");
        for (grant_id, take) in &draws {
            self.grant_mut(grant_id).remaining -= *take;
            let entry = self.push(
                EntryKind::Adjustment,
                Some(grant_id),
                None,
                &Usage::default(),
            );
            entry.credits = -*take;
            entry.effective_at = now;
        }
        Ok(draws)
    }

    /// Carries unused credits of the plan grants that ended at a period boundary into the next
    /// period, up to `room` in total, in consumption order (README, Revenue recognition, rollover). A grant
    /// that already expired at the boundary gets back what lapsed then (`lapsed`, by grant); one
    /// not yet expired (the renewal was paid early) keeps what fits and the rest expires now.
    /// Either way the grant's expiry moves to `new_expires_at`. Returns the credits carried.
    pub fn roll_over(
        &mut self,
        lapsed: &[(String, Credits)],
        mut room: Credits,
        new_expires_at: Timestamp,
        now: Timestamp,
    ) -> Credits {
        let mut order: Vec<(Grant, Credits)> = lapsed
            .iter()
            .filter_map(|(id, amount)| {
                self.grants
                    .iter()
                    .find(|g| &g.id == id)
                    .map(|g| (g.clone(), *amount))
            })
            .collect();
        order.sort_by(|a, b| Grant::consumption_order(&a.0, &b.0));
        let mut carried = Credits::ZERO;
        for (grant, lapsed) in order {
            let id = grant.id.as_str();
            // What lapsed at the boundary: as stored, plus what this command's settling expired.
            let lapsed_here: Credits = self
                .entries
                .iter()
                .filter(|e| e.kind == EntryKind::Expire && e.grant_id.as_deref() == Some(id))
                .filter(|e| Some(e.effective_at) == grant.expires_at)
                .map(|e| -e.credits)
                .sum();
            let unused = if grant.expired {
                lapsed + lapsed_here
            } else {
                grant.free()
            };
            let carry = unused.min(room);
            room -= carry;
            carried += carry;
            if !carry.is_positive() {
                if !grant.expired {
                    self.expire_grant(id, now);
                }
                continue;
            }
            let g = self.grant_mut(id);
            if g.expired {
                g.expired = false;
                g.remaining += carry;
            } else if unused > carry {
                g.remaining -= unused - carry;
                let entry = self.push(EntryKind::Expire, Some(id), None, &Usage::default());
                entry.credits = -(unused - carry);
                entry.effective_at = now;
            }
            let g = self.grant_mut(id);
            g.expires_at = Some(new_expires_at);
            let entry = self.push(EntryKind::Rollover, Some(id), None, &Usage::default());
            entry.credits = if grant.expired { carry } else { Credits::ZERO };
            entry.effective_at = now;
        }
        carried
    }

    /// Moves a grant's free credits (and those of a month not started yet) out of this book, to
    /// be granted to another customer. Returns the grant as it was and the credits moved; none
    /// when nothing is free.
    pub fn transfer_out(&mut self, grant_id: &str, now: Timestamp) -> Option<(Grant, Credits)> {
        let grant = self.grant_mut(grant_id);
        let free = grant.takeable();
        if !free.is_positive() {
            return None;
        }
        let before = grant.clone();
        grant.remaining -= free;
        let entry = self.push(EntryKind::Transfer, Some(grant_id), None, &Usage::default());
        entry.credits = -free;
        entry.effective_at = now;
        Some((before, free))
    }

    /// The invariants (README, The ledger) that one customer's book must keep. Checked after every
    /// command, before anything is written.
    pub fn check_invariants(&self) -> Result<(), Rejection> {
        let fail = |what: String| Err(Rejection::InvariantViolated(what));
        for g in &self.grants {
            if g.held.is_negative() || g.held > g.remaining || g.remaining > g.credits {
                return fail(format!(
                    "grant {}: need 0 <= held ({}) <= remaining ({}) <= credits ({})",
                    g.id, g.held, g.remaining, g.credits
                ));
            }
            if g.refunded.is_negative() || g.price.is_some_and(|p| g.refunded > p) {
                return fail(format!(
                    "grant {}: refunded {} outside 0..=price",
                    g.id, g.refunded
                ));
            }
            if g.expired && g.remaining != g.held {
                return fail(format!("expired grant {} keeps unheld credits", g.id));
            }
            if g.scheduled && (g.held.is_positive() || g.starts_at.is_none()) {
                return fail(format!(
                    "grant {} not started is held or has no start",
                    g.id
                ));
            }
            let reserved: Credits = self
                .holds
                .iter()
                .filter(|h| h.status == HoldStatus::Held)
                .flat_map(|h| h.allocations.iter())
                .filter(|(grant, _)| grant == &g.id)
                .map(|(_, c)| *c)
                .sum();
            let elsewhere = self.held_elsewhere.get(&g.id).copied().unwrap_or_default();
            if elsewhere.is_negative() || reserved + elsewhere != g.held {
                return fail(format!(
                    "grant {}: held {} but open holds reserve {} here and {} elsewhere",
                    g.id, g.held, reserved, elsewhere
                ));
            }
        }
        if self.overdraft.is_negative() || self.overdraft_held.is_negative() {
            return fail("negative overdraft".into());
        }
        let overdraft_reserved: Credits = self
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Held)
            .map(|h| h.overdraft)
            .sum();
        if overdraft_reserved != self.overdraft_held {
            return fail("overdraft held differs from the open holds".into());
        }
        if self.overdraft.is_positive() && self.free_own().is_positive() {
            return fail("an overdraft stands beside free credits".into());
        }
        for h in self.holds.iter().filter(|h| h.status == HoldStatus::Held) {
            let reserved: Credits =
                h.allocations.iter().map(|(_, c)| *c).sum::<Credits>() + h.overdraft;
            if reserved != h.credits {
                return fail(format!(
                    "hold {} reserves {} of {}",
                    h.id, reserved, h.credits
                ));
            }
        }
        Ok(())
    }

    /// Sum of the entries appended since load: what they moved the balance and held by.
    pub fn entries_delta(&self) -> (Credits, Credits) {
        let credits = self.entries.iter().map(|e| e.credits).sum();
        let held = self.entries.iter().map(|e| e.held).sum();
        (credits, held)
    }
}

/// The credits `money` pays for at a grant's price per credit (`price` for `credits`), rounded
/// down to the credit scale; none when the grant was free.
fn credits_for_money(money: Money, credits: Credits, price: Money) -> Credits {
    if !price.is_positive() {
        return Credits::ZERO;
    }
    let exact = money.value() * credits.value() / price.value();
    Credits::new(
        exact.round_dp_with_strategy(super::money::SCALE, rust_decimal::RoundingStrategy::ToZero),
    )
    .expect("rounded to the credit scale")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credits or money, whichever the place asks for.
    fn c<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap()
    }

    fn at(minutes: i64) -> Timestamp {
        chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(minutes)
    }

    /// A book with one pack of `credits` paid `price`, expiring at minute 100.
    fn paid_book(credits: &str, price: &str) -> Book {
        let mut book = Book::new(CustomerId::known("c"));
        book.add_grant(
            Grant {
                id: "g".into(),
                kind: GrantKind::Pack,
                credits: c(credits),
                remaining: c(credits),
                held: Credits::ZERO,
                price: Some(c(price)),
                currency: Some("usd".into()),
                expires_at: Some(at(100)),
                expired: false,
                priority: 10,
                plan_id: None,
                pack_id: Some("p".into()),
                source_type: GrantSource::Stripe,
                source_id: "pi".into(),
                created_at: at(0),
                refunded: Money::ZERO,
                period_start: None,
                frozen: false,
                starts_at: None,
                scheduled: false,
                shared: true,
                lent: None,
            },
            at(0),
        );
        book
    }

    #[test]
    fn a_grant_bought_ahead_is_in_the_balance_but_spendable_only_from_its_start() {
        let mut book = Book::new(CustomerId::known("c"));
        let source = || (GrantSource::Test, "t".to_owned());
        book.add_grant(
            Grant::promotional("now", c("10"), source(), at(0)).expiring(Some(at(50))),
            at(0),
        );
        let ahead = Grant::promotional("ahead", c("100"), source(), at(0))
            .expiring(Some(at(100)))
            .starting(Some(at(50)));
        book.add_grant(ahead, at(0));
        assert_eq!((book.balance(), book.available()), (c("110"), c("10")));
        assert_eq!(book.scheduled(), c("100"));
        // Nothing is drawn from it before its start, even under an overage rule.
        let refused = book.authorize(
            "h",
            &Usage::default(),
            c("11"),
            &Overage::Block,
            at(60),
            at(1),
        );
        assert!(matches!(
            refused,
            Err(Rejection::InsufficientCredits { .. })
        ));
        book.check_invariants().unwrap();
        // At its start (the grant before it expiring at the same instant) it becomes spendable.
        assert_eq!(book.settle_due(at(49)), Vec::<String>::new());
        assert_eq!(book.settle_due(at(50)), vec!["ahead".to_owned()]);
        assert_eq!((book.balance(), book.available()), (c("100"), c("100")));
        assert_eq!(book.scheduled(), Credits::ZERO);
        book.check_invariants().unwrap();
    }

    #[test]
    fn a_month_not_started_moves_whole_and_stays_scheduled() {
        let mut from = Book::new(CustomerId::known("old"));
        let ahead = Grant::promotional("m2", c("100"), (GrantSource::Test, "t".into()), at(0))
            .expiring(Some(at(100)))
            .starting(Some(at(50)));
        from.add_grant(ahead, at(0));
        let (before, moved) = from.transfer_out("m2", at(1)).expect("moved");
        assert_eq!(moved, c("100"));
        let mut to = Book::new(CustomerId::known("new"));
        to.add_grant(Grant::transferred("n2", &before, moved, None, at(1)), at(1));
        assert_eq!((to.available(), to.scheduled()), (Credits::ZERO, c("100")));
        to.settle_due(at(50));
        assert_eq!(to.available(), c("100"));
        from.check_invariants().unwrap();
        to.check_invariants().unwrap();
    }

    #[test]
    fn a_refund_takes_back_credits_not_started_yet() {
        let mut book = Book::new(CustomerId::known("c"));
        let paid = Paid {
            price: c("10"),
            currency: "usd".into(),
        };
        let ahead = Grant::plan(
            "m2",
            "pro",
            c("1000"),
            Some(paid),
            None,
            (GrantSource::Test, "t".into()),
            at(0),
        )
        .expiring(Some(at(100)))
        .starting(Some(at(50)));
        book.add_grant(ahead, at(0));
        assert_eq!(book.claw_back("m2", c("5"), at(1)), c("500"));
        assert_eq!((book.balance(), book.scheduled()), (c("500"), c("500")));
        book.check_invariants().unwrap();
    }

    #[test]
    fn a_clawback_takes_only_free_credits_and_its_reversal_gives_back_what_it_took() {
        let mut book = paid_book("1000", "10");
        book.grant_mut("g").remaining = c("100"); // 900 used
        let taken = book.claw_back("g", c("10"), at(1));
        assert_eq!(taken, c("100"));
        assert_eq!(book.balance(), Credits::ZERO);
        // The refund fails: the money comes back, and the 100 credits, not the 1,000 it paid for.
        let given = book.reverse_claw_back("g", c("10"), taken, at(2));
        assert_eq!(given, c("100"));
        assert_eq!(book.balance(), c("100"));
        assert_eq!(book.grants[0].refunded, Money::ZERO);
        let last = book.entries.last().unwrap();
        assert_eq!(
            (last.kind, last.credits, last.money),
            (EntryKind::ClawbackReversal, c("100"), Some(c("10")))
        );
    }

    #[test]
    fn credits_given_back_to_an_expired_grant_lapse_at_once() {
        let mut book = paid_book("1000", "10");
        let taken = book.claw_back("g", c("4"), at(1));
        assert_eq!(taken, c("400"));
        book.settle_due(at(200));
        assert_eq!(book.balance(), Credits::ZERO);
        let given = book.reverse_claw_back("g", c("4"), taken, at(201));
        assert_eq!(given, c("400"));
        assert_eq!(book.balance(), Credits::ZERO);
        let kinds: Vec<EntryKind> = book.entries.iter().rev().take(2).map(|e| e.kind).collect();
        assert_eq!(kinds, [EntryKind::Expire, EntryKind::ClawbackReversal]);
    }

    #[test]
    #[should_panic(expected = "never gives back more money than was refunded")]
    fn a_reversal_never_exceeds_the_refund() {
        let mut book = paid_book("1000", "10");
        book.claw_back("g", c("1"), at(1));
        book.reverse_claw_back("g", c("2"), c("100"), at(2));
    }
}
