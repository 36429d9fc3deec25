//! Organizations (README, Organizations): a customer may have a parent, up to three levels,
//! and spends its own grants, then its parent's shared grants, then its grandparent's. This
//! module says which trees may be made, and lends a customer's book its ancestors' shared grants
//! for a decision ([`lend`], through `Book::borrow_from`) and gives them back ([`give_back`]).

use super::Timestamp;
use super::customer::CustomerId;
use super::ledger::Book;

/// Levels of an organization at most: a customer, its parent and its grandparent.
pub const MAX_LEVELS: usize = 3;

/// Levels above a customer whose grants it may spend.
pub const MAX_LEVELS_ABOVE: u8 = 2;

/// Why a parent is refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParentRefusal {
    #[error("a customer cannot be its own parent")]
    Itself,
    #[error("customer {parent} is below customer {child}: the organization would be a cycle")]
    Cycle {
        child: CustomerId,
        parent: CustomerId,
    },
    #[error(
        "an organization has at most {MAX_LEVELS} levels; under this parent it would have {levels}"
    )]
    TooDeep { levels: usize },
    #[error("no customer has the id {0}: a parent must exist first")]
    UnknownParent(CustomerId),
    /// Holds made on the pools above would be left with no way back to their grants.
    #[error(
        "{holds} open holds of this customer or of those below it reserve credits of the \
         organization above it: capture or void them (or let them expire) first"
    )]
    HoldsOnPools { holds: usize },
}

/// A new parent as the unit of work reads it under the locks of both customers' trees: the
/// parent and its own ancestors, nearest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Above {
    pub parent: CustomerId,
    pub ancestors: Vec<CustomerId>,
}

/// May `child`, whose customers below reach `levels_below` levels down (0 without children),
/// take `parent`? None removes its parent, which is always allowed.
pub fn check_parent(
    child: &CustomerId,
    parent: Option<&Above>,
    levels_below: usize,
) -> Result<(), ParentRefusal> {
    let Some(above) = parent else {
        return Ok(());
    };
    if &above.parent == child {
        return Err(ParentRefusal::Itself);
    }
    if above.ancestors.contains(child) {
        return Err(ParentRefusal::Cycle {
            child: child.clone(),
            parent: above.parent.clone(),
        });
    }
    let levels = above.ancestors.len() + 2 + levels_below;
    if levels > MAX_LEVELS {
        return Err(ParentRefusal::TooDeep { levels });
    }
    Ok(())
}

/// The ancestors of `customer` whose grants it may spend, nearest first (at most
/// [`MAX_LEVELS_ABOVE`]), by `parent_of` (which answers for the customers it knows). Stops at a
/// cycle (never made).
pub fn ancestors(
    customer: &CustomerId,
    parent_of: impl Fn(&CustomerId) -> Option<CustomerId>,
) -> Vec<CustomerId> {
    let mut chain: Vec<CustomerId> = Vec::new();
    let mut at = customer.clone();
    while chain.len() < usize::from(MAX_LEVELS_ABOVE) {
        match parent_of(&at) {
            Some(up) if up != *customer && !chain.contains(&up) => {
                chain.push(up.clone());
                at = up;
            }
            _ => break,
        }
    }
    chain
}

/// `book` with the shared grants of the books `above` it lent (`above[0]` its parent's,
/// `above[1]` its grandparent's), and what others hold on every grant noted: the book a
/// customer of an organization decides or is viewed on.
pub fn lend(book: &Book, above: &[&Book]) -> Book {
    assert!(
        above.len() <= usize::from(MAX_LEVELS_ABOVE),
        "a customer spends its own, its parent's and its grandparent's grants"
    );
    let mut lent = book.clone();
    for (level, owner) in (1u8..).zip(above) {
        lent.borrow_from(owner, level);
    }
    lent.note_holds_elsewhere();
    lent
}

/// The grants `book` borrowed, as its decisions left them, back in the books `above` it (each
/// owner's entries take what lapsed there); `book` keeps its own grants. Which of `above`
/// changed.
pub fn give_back(book: &mut Book, above: &mut [&mut Book], now: Timestamp) -> Vec<bool> {
    let changed = above
        .iter_mut()
        .map(|owner| book.give_back(owner, now))
        .collect();
    book.return_lent();
    book.note_holds_elsewhere();
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> CustomerId {
        CustomerId::known(s)
    }

    fn above(parent: &str, ancestors: &[&str]) -> Above {
        Above {
            parent: id(parent),
            ancestors: ancestors.iter().map(|a| id(a)).collect(),
        }
    }

    use crate::domain::catalog::Overage;
    use crate::domain::gate::Standing;
    use crate::domain::ledger::{EntryKind, Grant, GrantSource, Usage};
    use crate::domain::money::Credits;

    fn credits(s: &str) -> Credits {
        s.parse().unwrap()
    }

    fn at(minutes: i64) -> Timestamp {
        chrono::DateTime::UNIX_EPOCH + chrono::Duration::minutes(minutes)
    }

    fn book(customer: &str, grants: &[(&str, &str, bool)]) -> Book {
        let mut book = Book::new(id(customer));
        for (grant, amount, shared) in grants {
            let made = Grant::promotional(
                *grant,
                credits(amount),
                (GrantSource::Test, "t".into()),
                at(0),
            )
            .expiring(Some(at(100)));
            book.add_grant(if *shared { made } else { made.unshared() }, at(0));
        }
        book.entries.clear();
        book
    }

    fn remaining(book: &Book, grant: &str) -> Credits {
        book.grants
            .iter()
            .find(|g| g.id == grant)
            .unwrap()
            .remaining
    }

    #[test]
    fn a_customer_spends_its_own_grants_then_each_level_s_shared_ones_in_turn() {
        let acme = book(
            "acme",
            &[("acme-shared", "100", true), ("acme-own", "50", false)],
        );
        let eu = book("eu", &[("eu-shared", "20", true)]);
        let team = book("team", &[("team-own", "5", true)]);
        let mut lent = lend(&team, &[&eu, &acme]);
        assert_eq!(
            lent.available(),
            credits("125"),
            "the unshared grant is not lent"
        );
        lent.debit(credits("30"), &Usage::default(), &Overage::Block, at(1))
            .unwrap();
        let drawn: Vec<(String, Credits)> = lent
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Consume)
            .map(|e| (e.grant_id.clone().unwrap(), -e.credits))
            .collect();
        assert_eq!(
            drawn,
            [
                ("team-own".to_owned(), credits("5")),
                ("eu-shared".to_owned(), credits("20")),
                ("acme-shared".to_owned(), credits("5"))
            ]
        );
        lent.check_invariants().unwrap();
        let (mut eu, mut acme) = (eu, acme);
        let touched = give_back(&mut lent, &mut [&mut eu, &mut acme], at(1));
        assert_eq!(touched, [true, true]);
        assert_eq!(lent.grants.len(), 1, "the lent grants went back");
        assert_eq!(remaining(&eu, "eu-shared"), Credits::ZERO);
        assert_eq!(remaining(&acme, "acme-shared"), credits("95"));
        assert_eq!(remaining(&acme, "acme-own"), credits("50"));
        // More than the pool has is refused, with what the pool has.
        let mut lent = lend(&lent, &[&eu, &acme]);
        assert_eq!(
            lent.debit(credits("96"), &Usage::default(), &Overage::Block, at(2)),
            Err(crate::domain::ledger::Rejection::InsufficientCredits {
                required: credits("96"),
                available: credits("95")
            })
        );
    }

    #[test]
    fn holds_below_are_left_to_their_books_by_the_owner_s_invariants() {
        let mut acme = book("acme", &[("acme-shared", "100", true)]);
        let team = book("team", &[]);
        let mut lent = lend(&team, &[&acme]);
        lent.authorize(
            "h1",
            &Usage::default(),
            credits("30"),
            &Overage::Block,
            at(50),
            at(1),
        )
        .unwrap();
        lent.check_invariants().unwrap();
        let mut team = lent;
        give_back(&mut team, &mut [&mut acme], at(1));
        // The owner's book: 30 held by a hold it does not have.
        acme.check_invariants().unwrap();
        assert_eq!(acme.available(), credits("70"));
        acme.debit(credits("70"), &Usage::default(), &Overage::Block, at(2))
            .unwrap();
        acme.check_invariants().unwrap();
        // Without the note, the owner's invariants would not hold.
        let mut unnoted = acme.clone();
        unnoted.held_elsewhere.clear();
        assert!(unnoted.check_invariants().is_err());
        // The hold captured below for less gives the rest back to the owner.
        let mut lent = lend(&team, &[&acme]);
        lent.capture("h1", credits("10"), None, &Overage::Block, at(3))
            .unwrap();
        lent.check_invariants().unwrap();
        give_back(&mut lent, &mut [&mut acme], at(3));
        acme.check_invariants().unwrap();
        assert_eq!(
            (acme.balance(), acme.held(), acme.available()),
            (credits("20"), Credits::ZERO, credits("20"))
        );
    }

    #[test]
    fn a_lent_grant_expires_and_lapses_in_its_owner_s_book() {
        let catalog = crate::domain::catalog::Catalog::default();
        let mut acme = book("acme", &[("acme-shared", "100", true)]);
        let mut acme_standing = Standing::default();
        let mut lent = lend(&book("team", &[]), &[&acme]);
        lent.authorize(
            "h1",
            &Usage::default(),
            credits("5"),
            &Overage::Block,
            at(200),
            at(1),
        )
        .unwrap();
        let mut team = lent;
        give_back(&mut team, &mut [&mut acme], at(1));
        // At minute 150 the pool settles first: the grant expires there, its held part kept.
        crate::domain::command::settle_above(
            &catalog,
            &mut [(&mut acme, &mut acme_standing)],
            at(150),
        );
        let expired: Vec<Credits> = acme
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Expire)
            .map(|e| e.credits)
            .collect();
        assert_eq!(expired, [credits("-95")]);
        acme.entries.clear();
        // Lent to the hold's book though expired (the hold reserves on it); voided there, what
        // it gives back lapses in the owner's book.
        let mut lent = lend(&team, &[&acme]);
        assert_eq!(lent.available(), Credits::ZERO);
        lent.void("h1", at(150)).unwrap();
        assert!(lent.entries.iter().all(|e| e.kind != EntryKind::Expire));
        give_back(&mut lent, &mut [&mut acme], at(150));
        let lapsed: Vec<Credits> = acme.entries.iter().map(|e| e.credits).collect();
        assert_eq!(lapsed, [credits("-5")]);
        acme.check_invariants().unwrap();
        assert_eq!(acme.balance(), Credits::ZERO);
    }

    #[test]
    fn three_levels_are_allowed_and_a_fourth_is_not() {
        let team = id("team");
        assert_eq!(check_parent(&team, Some(&above("acme", &[])), 0), Ok(()));
        assert_eq!(
            check_parent(&team, Some(&above("eu", &["acme"])), 0),
            Ok(())
        );
        assert_eq!(
            check_parent(&team, Some(&above("eu", &["acme"])), 1),
            Err(ParentRefusal::TooDeep { levels: 4 })
        );
        assert_eq!(
            check_parent(&team, Some(&above("acme", &[])), 2),
            Err(ParentRefusal::TooDeep { levels: 4 })
        );
        assert_eq!(check_parent(&team, Some(&above("acme", &[])), 1), Ok(()));
        assert_eq!(check_parent(&team, None, 2), Ok(()));
    }

    #[test]
    fn a_customer_cannot_be_above_itself() {
        let acme = id("acme");
        assert_eq!(
            check_parent(&acme, Some(&above("acme", &[])), 0),
            Err(ParentRefusal::Itself)
        );
        assert_eq!(
            check_parent(&acme, Some(&above("team", &["acme"])), 0),
            Err(ParentRefusal::Cycle {
                child: acme.clone(),
                parent: id("team")
            })
        );
    }

    #[test]
    fn ancestors_are_nearest_first_and_stop_at_a_cycle() {
        let parents = |c: &CustomerId| match c.as_str() {
            "a" => Some(id("b")),
            "b" => Some(id("c")),
            "x" => Some(id("y")),
            "y" => Some(id("x")),
            _ => None,
        };
        assert_eq!(ancestors(&id("a"), parents), vec![id("b"), id("c")]);
        assert_eq!(ancestors(&id("c"), parents), Vec::<CustomerId>::new());
        assert_eq!(ancestors(&id("x"), parents), vec![id("y")]);
    }
}
