//! Which journal postings ledger entries cause (README, Revenue recognition): each entry on a paid grant moves
//! the grant's lot, and billed overage accrues to the customer's receivable. Pure: the store reads
//! what [`needs`] names for a whole batch, runs [`post`] for each command in order on the one
//! [`Revenue`] it read, and writes what changed. A command that posts nothing (a hold, a void, a
//! promotional grant) needs nothing read.

use super::Timestamp;
use super::catalog::{Breakage, Catalog};
use super::customer::CustomerId;
use super::ledger::{Entry, EntryKind, Grant, GrantKind, GrantSource};
use super::money::Money;
use super::revrec::{Lot, OverageAccrual, Posting, share};
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet};

/// One command's ledger movements, as the journal sees them.
#[derive(Debug, Clone, Copy)]
pub struct Moved<'a> {
    pub customer: &'a CustomerId,
    /// The customer's grants after the command (new grants included).
    pub grants: &'a [Grant],
    /// The command's new entries, in order.
    pub entries: &'a [Entry],
    /// The usage id, when the command is a usage (a hold's id and a grant's source are taken
    /// from the entry).
    pub source: Option<&'a str>,
    /// Lots whose time-driven revenue is due at `now` (the revenue job's).
    pub recognize: &'a [String],
    pub now: Timestamp,
}

/// What must be read before a command's postings can be decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// Lots of paid grants the entries move (and of grants credits were moved from).
    pub lots: BTreeSet<String>,
    /// The customer's overage accrual.
    pub overage: bool,
}

/// A lot opened by a command: what the store records beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub customer: CustomerId,
    /// `plan:ID` or `pack:ID` (the entry its breakage estimate follows), or the grant's kind.
    pub catalog_item: String,
    pub at: Timestamp,
}

/// The lots and accruals a batch read, as its commands move them.
#[derive(Debug, Clone, Default)]
pub struct Revenue {
    pub lots: BTreeMap<String, Lot>,
    pub opened: BTreeMap<String, Opened>,
    /// Overage accruals by customer (one currency: the catalog's).
    pub accruals: BTreeMap<String, OverageAccrual>,
}

/// A posting with what the journal says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effect {
    pub posting: Posting,
    /// The lot it concerns, if any.
    pub grant_id: Option<String>,
    /// The hold, usage or grant source that caused it.
    pub source: Option<String>,
}

/// What one command posts, and the paid grants it could not post for: grants paid before
/// revenue recognition was installed have no lot, so their history is outside the journal
/// (spending must not fail on that; the audit lists them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub effects: Vec<Effect>,
    pub unposted: Vec<String>,
}

/// The grant an entry is on, when that grant is paid.
fn paid<'g>(grants: &'g [Grant], entry: &Entry) -> Option<&'g Grant> {
    let id = entry.grant_id.as_deref()?;
    grants
        .iter()
        .find(|g| g.id == id)
        .filter(|g| g.price.is_some() && g.currency.is_some())
}

/// Whether an entry on a paid grant moves its lot: holds and releases only reserve credits.
fn moves_a_lot(entry: &Entry) -> bool {
    match entry.kind {
        EntryKind::Grant
        | EntryKind::Consume
        | EntryKind::Settle
        | EntryKind::Expire
        | EntryKind::Transfer
        | EntryKind::Adjustment => true,
        EntryKind::Rollover => entry.credits.is_positive(),
        EntryKind::Clawback | EntryKind::ClawbackReversal => {
            entry.money.is_some_and(|m| m.is_positive())
        }
        EntryKind::Hold | EntryKind::Release | EntryKind::Overage => false,
    }
}

/// What [`post`] will read for `moved`; `None` when it posts nothing.
pub fn needs(moved: &Moved<'_>) -> Option<Needs> {
    let mut needs = Needs::default();
    let mut posts = false;
    for entry in moved.entries {
        if entry.kind == EntryKind::Overage {
            if entry.money.is_some() {
                needs.overage = true;
                posts = true;
            }
            continue;
        }
        let Some(grant) = paid(moved.grants, entry).filter(|_| moves_a_lot(entry)) else {
            continue;
        };
        posts = true;
        if entry.kind != EntryKind::Grant {
            needs.lots.insert(grant.id.clone());
        } else if grant.source_type == GrantSource::Transfer {
            needs.lots.insert(grant.source_id.clone());
        }
    }
    if !moved.recognize.is_empty() {
        posts = true;
        needs.lots.extend(moved.recognize.iter().cloned());
    }
    posts.then_some(needs)
}

/// The breakage method the catalog now configures for a grant's plan or pack; none for other
/// grants, and for a plan or pack no longer in the catalog.
fn configured_breakage(catalog: &Catalog, grant: &Grant) -> Option<Breakage> {
    match grant.kind {
        GrantKind::Plan => grant
            .plan_id
            .as_deref()
            .and_then(|id| catalog.plan(id))
            .map(|p| p.breakage.clone()),
        GrantKind::Pack => grant
            .pack_id
            .as_deref()
            .and_then(|id| catalog.pack(id))
            .map(|p| p.breakage.clone()),
        _ => None,
    }
}

/// The breakage method configured for a grant's plan or pack (`remote` when neither is known).
fn breakage_of(catalog: &Catalog, grant: &Grant) -> Breakage {
    configured_breakage(catalog, grant).unwrap_or(Breakage::Remote)
}

/// The time-driven revenue of a lot at `now`: the platform part's days ended by then, and the
/// catch-up to the breakage estimate the catalog now configures while credits remain.
fn recognize(
    catalog: &Catalog,
    lot: &mut Lot,
    grant: Option<&Grant>,
    now: Timestamp,
) -> Vec<Posting> {
    let mut postings = lot.recognize_platform(now);
    if let Some(breakage) = grant.and_then(|g| configured_breakage(catalog, g))
        && breakage != lot.breakage
        && lot.remaining().is_positive()
    {
        postings.extend(lot.reestimate(breakage, now));
    }
    postings
}

/// The catalog entry a grant's breakage estimate comes from.
fn catalog_item(grant: &Grant) -> String {
    match grant.kind {
        GrantKind::Plan => format!("plan:{}", grant.plan_id.as_deref().unwrap_or("")),
        GrantKind::Pack => format!("pack:{}", grant.pack_id.as_deref().unwrap_or("")),
        other => other.as_str().to_owned(),
    }
}

/// The postings `moved` causes, moving `revenue`'s lots and accruals. `revenue` holds what
/// [`needs`] named (an accrual not read is an error, not a zero). Every lot it touches is checked.
// Long: one arm per kind of ledger entry, each the posting its lot makes.
pub fn post(
    catalog: &Catalog,
    moved: &Moved<'_>,
    revenue: &mut Revenue,
) -> Result<Outcome, String> {
    let mut outcome = Outcome::default();
    for entry in moved.entries {
        if entry.kind == EntryKind::Overage {
            let Some(money) = entry.money else { continue };
            let accrual = revenue
                .accruals
                .get_mut(moved.customer.as_str())
                .ok_or_else(|| format!("overage accrual of {} not read", moved.customer))?;
            if let Some(posting) = accrual.accrue(money, entry.overage, entry.effective_at) {
                outcome.effects.push(Effect {
                    posting,
                    grant_id: None,
                    source: entry.hold_id.clone().or(moved.source.map(str::to_owned)),
                });
            }
            continue;
        }
        let Some(grant) = paid(moved.grants, entry).filter(|_| moves_a_lot(entry)) else {
            continue;
        };
        let source = entry
            .hold_id
            .clone()
            .or(moved.source.map(str::to_owned))
            .unwrap_or_else(|| grant.source_id.clone());
        let (price, currency) = (
            grant.price.expect("paid"),
            grant.currency.as_deref().expect("paid"),
        );
        let at = entry.effective_at;
        if entry.kind != EntryKind::Grant && !revenue.lots.contains_key(&grant.id) {
            outcome.unposted.push(grant.id.clone());
            continue;
        }
        let postings: Vec<Posting> = match entry.kind {
            EntryKind::Grant => {
                let breakage = breakage_of(catalog, grant);
                let (lot, posting) = if grant.source_type == GrantSource::Transfer {
                    let Some(old) = revenue.lots.get(&grant.source_id) else {
                        // Moved from a grant paid before revenue recognition was installed:
                        // outside the journal like the grant it came from.
                        outcome.unposted.push(grant.id.clone());
                        continue;
                    };
                    let money = share(old.price, grant.credits, old.credits, currency);
                    Lot::transferred_in(&grant.id, currency, money, grant.credits, breakage, at)
                } else if grant.kind == GrantKind::Plan {
                    let platform_share = grant
                        .plan_id
                        .as_deref()
                        .and_then(|id| catalog.plan(id))
                        .map_or(Decimal::ZERO, |p| p.platform_share);
                    let end = grant.expires_at.unwrap_or(at);
                    let start = grant.period_start.unwrap_or(grant.created_at).min(end);
                    Lot::plan(
                        &grant.id,
                        currency,
                        price,
                        grant.credits,
                        breakage,
                        platform_share,
                        (start, end),
                        at,
                    )
                } else {
                    Lot::pack(&grant.id, currency, price, grant.credits, breakage, at)
                };
                revenue.opened.insert(
                    grant.id.clone(),
                    Opened {
                        customer: moved.customer.clone(),
                        catalog_item: catalog_item(grant),
                        at: moved.now,
                    },
                );
                revenue.lots.insert(grant.id.clone(), lot);
                vec![posting]
            }
            kind => {
                let lot = revenue
                    .lots
                    .get_mut(&grant.id)
                    .expect("present: checked above");
                match kind {
                    EntryKind::Consume | EntryKind::Settle => {
                        lot.consume(-entry.credits, at).into_iter().collect()
                    }
                    EntryKind::Expire => lot.lapse(-entry.credits, at).into_iter().collect(),
                    EntryKind::Rollover if entry.credits.is_positive() => {
                        lot.revive(entry.credits, at).into_iter().collect()
                    }
                    EntryKind::Clawback => {
                        let money = entry.money.unwrap_or(Money::ZERO);
                        if money.is_positive() {
                            vec![lot.refund(money, -entry.credits, at)]
                        } else {
                            Vec::new()
                        }
                    }
                    EntryKind::ClawbackReversal => {
                        let money = entry.money.unwrap_or(Money::ZERO);
                        if money.is_positive() {
                            vec![lot.refund_reversed(money, entry.credits, at)]
                        } else {
                            Vec::new()
                        }
                    }
                    EntryKind::Transfer => vec![lot.transfer_out(-entry.credits, at).0],
                    EntryKind::Adjustment => lot
                        .forfeit(-entry.credits, at)
                        .map(|p| match &entry.reason {
                            Some(reason) => {
                                let memo = format!("{}; reason: {reason}", p.memo);
                                p.with_memo(memo)
                            }
                            None => p,
                        })
                        .into_iter()
                        .collect(),
                    _ => Vec::new(),
                }
            }
        };
        if let Some(lot) = revenue.lots.get(&grant.id) {
            lot.check()?;
        }
        outcome
            .effects
            .extend(postings.into_iter().map(|posting| Effect {
                posting,
                grant_id: Some(grant.id.clone()),
                source: Some(source.clone()),
            }));
    }
    for id in moved.recognize {
        let Some(lot) = revenue.lots.get_mut(id) else {
            continue;
        };
        let grant = moved.grants.iter().find(|g| g.id == *id);
        let postings = recognize(catalog, lot, grant, moved.now);
        lot.check()?;
        outcome
            .effects
            .extend(postings.into_iter().map(|posting| Effect {
                posting,
                grant_id: Some(id.clone()),
                source: Some(id.clone()),
            }));
    }
    for effect in &outcome.effects {
        // Cala's rule: nothing unbalanced is written.
        effect.posting.check()?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Overage;
    use crate::domain::ledger::{Book, Paid, Usage};
    use crate::domain::revrec::PostingKind;
    use std::str::FromStr;

    /// The customer these tests are about (a `Moved` borrows its id).
    static CUS: std::sync::LazyLock<CustomerId> =
        std::sync::LazyLock::new(|| CustomerId::known("cus"));

    /// Credits or money, whichever the place asks for.
    fn c<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap()
    }

    fn t(s: &str) -> Timestamp {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn catalog() -> Catalog {
        Catalog::default()
    }

    fn pack(id: &str, credits: &str, price: &str) -> Grant {
        Grant::pack(
            id,
            "topup",
            c(credits),
            Paid {
                price: c(price),
                currency: "usd".into(),
            },
            (GrantSource::Test, id.into()),
            t("2026-01-01T00:00:00Z"),
        )
    }

    fn moved<'a>(grants: &'a [Grant], entries: &'a [Entry]) -> Moved<'a> {
        Moved {
            customer: &CUS,
            grants,
            entries,
            source: None,
            recognize: &[],
            now: t("2026-01-02T00:00:00Z"),
        }
    }

    #[test]
    fn a_hold_needs_nothing_read_and_posts_nothing() {
        let now = t("2026-01-02T00:00:00Z");
        let mut book = Book::new(CustomerId::known("cus"));
        book.add_grant(pack("g", "100", "10"), now);
        book.entries.clear();
        book.authorize("h", &Usage::default(), c("5"), &Overage::Block, now, now)
            .unwrap();
        let entries = std::mem::take(&mut book.entries);
        assert_eq!(needs(&moved(&book.grants, &entries)), None);
    }

    #[test]
    fn a_pack_opens_its_lot_and_its_use_recognizes_revenue() {
        let mut book = Book::new(CustomerId::known("cus"));
        book.add_grant(pack("g", "100", "10"), t("2026-01-01T00:00:00Z"));
        let granted = std::mem::take(&mut book.entries);
        let needs_grant = needs(&moved(&book.grants, &granted)).expect("a paid grant posts");
        assert!(needs_grant.lots.is_empty(), "a new pack reads no lot");
        let mut revenue = Revenue::default();
        let out = post(&catalog(), &moved(&book.grants, &granted), &mut revenue).unwrap();
        assert_eq!(out.effects.len(), 1);
        assert_eq!(out.effects[0].posting.kind, PostingKind::PackPayment);
        assert_eq!(revenue.opened["g"].catalog_item, "pack:topup");

        let later = t("2026-01-03T00:00:00Z");
        book.debit(c("25"), &Usage::default(), &Overage::Block, later)
            .unwrap();
        let used = std::mem::take(&mut book.entries);
        let read = needs(&moved(&book.grants, &used)).unwrap();
        assert_eq!(read.lots, BTreeSet::from(["g".to_owned()]));
        let out = post(&catalog(), &moved(&book.grants, &used), &mut revenue).unwrap();
        assert_eq!(out.effects.len(), 1);
        assert_eq!(out.effects[0].posting.kind, PostingKind::Consumption);
        assert_eq!(revenue.lots["g"].usage, c("2.5"));
    }

    #[test]
    fn the_revenue_job_catches_a_lot_up_to_the_estimate_now_configured() {
        let mut book = Book::new(CustomerId::known("cus"));
        book.add_grant(pack("g", "100", "10"), t("2026-01-01T00:00:00Z"));
        let granted = std::mem::take(&mut book.entries);
        let mut revenue = Revenue::default();
        post(&catalog(), &moved(&book.grants, &granted), &mut revenue).unwrap();
        assert_eq!(revenue.lots["g"].breakage, Breakage::Remote);
        // Half of it used under the estimate first configured (none expected unused).
        book.debit(
            c("50"),
            &Usage::default(),
            &Overage::Block,
            t("2026-01-02T00:00:00Z"),
        )
        .unwrap();
        let used = std::mem::take(&mut book.entries);
        post(&catalog(), &moved(&book.grants, &used), &mut revenue).unwrap();
        let mut configured = catalog();
        configured.packs.insert(
            "topup".into(),
            crate::domain::catalog::Pack {
                id: "topup".into(),
                stripe_prices: vec![],
                credits: c("100"),
                price: crate::domain::money::Price::new(Decimal::TEN, "usd").unwrap(),
                expires_after_days: None,
                breakage: Breakage::Proportional {
                    expected_unused: Decimal::from_str("0.2").unwrap(),
                },
                priority: 0,
                low_balance: None,
                top_up_url: None,
            },
        );
        let due = ["g".to_owned()];
        let job = Moved {
            recognize: &due,
            ..moved(&book.grants, &[])
        };
        assert_eq!(needs(&job).unwrap().lots, BTreeSet::from(["g".to_owned()]));
        let out = post(&configured, &job, &mut revenue).unwrap();
        assert_eq!(out.effects.len(), 1, "{out:?}");
        assert_eq!(out.effects[0].posting.kind, PostingKind::EstimateChange);
        assert!(matches!(
            revenue.lots["g"].breakage,
            Breakage::Proportional { .. }
        ));
        // Caught up: the job has nothing more to post for it.
        let again = post(&configured, &job, &mut revenue).unwrap();
        assert!(again.effects.is_empty(), "{again:?}");
    }

    #[test]
    fn use_of_a_paid_grant_without_a_lot_is_listed_not_posted() {
        let now = t("2026-01-03T00:00:00Z");
        let mut book = Book::new(CustomerId::known("cus"));
        book.add_grant(pack("old", "100", "10"), now);
        book.entries.clear();
        book.debit(c("1"), &Usage::default(), &Overage::Block, now)
            .unwrap();
        let used = std::mem::take(&mut book.entries);
        let out = post(
            &catalog(),
            &moved(&book.grants, &used),
            &mut Revenue::default(),
        )
        .unwrap();
        assert!(out.effects.is_empty());
        assert_eq!(out.unposted, vec!["old".to_owned()]);
    }

    #[test]
    fn overage_needs_the_accrual_read_first() {
        let entry = Entry {
            subject: None,
            kind: EntryKind::Overage,
            grant_id: None,
            hold_id: None,
            action: None,
            quantity: None,
            credits: c("-3"),
            held: crate::domain::money::Credits::ZERO,
            overage: c("3"),
            effective_at: t("2026-01-03T00:00:00Z"),
            money: Some(c("0.015")),
            reason: None,
        };
        let entries = [entry];
        let m = moved(&[], &entries);
        assert_eq!(
            needs(&m),
            Some(Needs {
                lots: BTreeSet::new(),
                overage: true
            })
        );
        assert!(post(&catalog(), &m, &mut Revenue::default()).is_err());
        let mut revenue = Revenue::default();
        revenue
            .accruals
            .insert("cus".into(), OverageAccrual::new("usd"));
        let out = post(&catalog(), &m, &mut revenue).unwrap();
        assert_eq!(out.effects[0].posting.kind, PostingKind::Overage);
        assert_eq!(revenue.accruals["cus"].posted, c("0.02"));
    }
}
