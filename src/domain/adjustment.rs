//! Operator adjustments: a signed change of a customer's credits, with a reason. A positive
//! change adds an `adjustment` grant (no price, no revenue). A negative one takes free credits
//! back ([`Book::take_back`]): never below zero available, from unpaid grants before paid ones.
//! Credits taken from a paid grant while the money is kept are forfeited: their share of the
//! price leaves the deferral as breakage (`Lot::forfeit`).

use super::Timestamp;
use super::ledger::{Book, Grant, GrantSource, Rejection};
use super::money::{AmountError, Credits};
use rust_decimal::Decimal;

/// Longest reason kept with an adjustment, in characters.
pub const MAX_REASON_CHARS: usize = 500;

/// Why an operator changed a customer's credits: at most [`MAX_REASON_CHARS`] characters as
/// sent, not only blanks, no control characters; kept with surrounding blanks trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    pub fn parse(text: &str) -> Result<Reason, String> {
        if text.chars().count() > MAX_REASON_CHARS || text.chars().any(char::is_control) {
            return Err(format!(
                "must be at most {MAX_REASON_CHARS} characters with no control characters"
            ));
        }
        let text = text.trim();
        if text.is_empty() {
            return Err("is required: say why the credits change".into());
        }
        Ok(Reason(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The direction and size of an adjustment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add(Credits),
    TakeBack(Credits),
}

impl Change {
    /// A signed amount of credits: zero changes nothing and is refused, like an amount beyond
    /// the per-request limit or the credit scale.
    pub fn parse(amount: Decimal) -> Result<Change, AmountError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            Credits::positive(-amount).map(Change::TakeBack)
        } else {
            Credits::positive(amount).map(Change::Add)
        }
    }

    /// Credits may be added to a customer not seen before; none can be taken from one.
    pub fn may_create_customer(self) -> bool {
        matches!(self, Change::Add(_))
    }

    /// The change of the balance: positive when credits are added.
    pub fn signed(self) -> Credits {
        match self {
            Change::Add(credits) => credits,
            Change::TakeBack(credits) => -credits,
        }
    }
}

/// Applies `change` to `book`: the new grant is `grant_id` when credits are added. Every entry
/// the adjustment appends carries `reason`. Returns the credits moved per grant, signed
/// (taken-back credits are negative), in the order moved.
pub fn apply(
    book: &mut Book,
    change: Change,
    grant_id: &str,
    reason: &Reason,
    source: (GrantSource, String),
    now: Timestamp,
) -> Result<Vec<(String, Credits)>, Rejection> {
    let first = book.entries.len();
    let moved = match change {
        Change::Add(credits) => {
            book.add_grant(Grant::adjustment(grant_id, credits, source, now), now);
            vec![(grant_id.to_owned(), credits)]
        }
        Change::TakeBack(credits) => book
            .take_back(credits, now)?
            .into_iter()
            .map(|(grant, taken)| (grant, -taken))
            .collect(),
    };
    for entry in &mut book.entries[first..] {
        entry.reason = Some(reason.as_str().to_owned());
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Overage;
    use crate::domain::customer::CustomerId;
    use crate::domain::journal::{Moved, Revenue, needs, post};
    use crate::domain::ledger::{EntryKind, Paid, Usage};
    use crate::domain::money::Money;
    use crate::domain::revrec::{Account, PostingKind};
    use std::str::FromStr;

    /// Credits or money, whichever the place asks for.
    fn c<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap()
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn reason() -> Reason {
        Reason::parse("duplicate grant").unwrap()
    }

    fn source() -> (GrantSource, String) {
        (GrantSource::Test, "adj".into())
    }

    /// A book with a promotional grant of 10, a paid pack of 100 (price 10.00 USD) and an
    /// adjustment grant of 5, all unspent.
    fn book() -> Book {
        let now = t("2026-01-01T00:00:00Z");
        let mut book = Book::new(CustomerId::known("cus"));
        book.add_grant(Grant::promotional("promo", c("10"), source(), now), now);
        let paid = Paid {
            price: c("10"),
            currency: "USD".into(),
        };
        book.add_grant(
            Grant::pack("pack", "p", c("100"), paid, source(), now).at_priority(-5),
            now,
        );
        book.add_grant(Grant::adjustment("adj", c("5"), source(), now), now);
        book.entries.clear();
        book
    }

    #[test]
    fn a_change_is_signed_and_never_zero() {
        assert_eq!(
            Change::parse(Decimal::from(-3)),
            Ok(Change::TakeBack(c("3")))
        );
        assert_eq!(Change::parse(Decimal::from(3)), Ok(Change::Add(c("3"))));
        assert_eq!(Change::parse(Decimal::ZERO), Err(AmountError::NotPositive));
        assert!(matches!(
            Change::parse(Decimal::from_str("-1e13").unwrap()),
            Err(AmountError::TooLarge(_))
        ));
        assert_eq!(
            Change::parse(Decimal::from_str("-0.0000001").unwrap()),
            Err(AmountError::TooPrecise)
        );
        assert_eq!(Change::TakeBack(c("2")).signed(), c("-2"));
        assert!(Change::Add(c("1")).may_create_customer());
        assert!(!Change::TakeBack(c("1")).may_create_customer());
    }

    #[test]
    fn a_reason_is_required_short_and_printable() {
        assert!(Reason::parse("  ").is_err());
        assert!(Reason::parse("a\nb").is_err());
        assert!(Reason::parse(&"x".repeat(MAX_REASON_CHARS + 1)).is_err());
        assert_eq!(Reason::parse(" typo ").unwrap().as_str(), "typo");
    }

    #[test]
    fn adding_credits_makes_an_adjustment_grant_with_the_reason() {
        let mut book = Book::new(CustomerId::known("cus"));
        let now = t("2026-01-01T00:00:00Z");
        let moved = apply(
            &mut book,
            Change::Add(c("7")),
            "g1",
            &reason(),
            source(),
            now,
        )
        .unwrap();
        assert_eq!(moved, vec![("g1".to_owned(), c("7"))]);
        assert_eq!(book.available(), c("7"));
        assert_eq!(book.entries.len(), 1);
        assert_eq!(book.entries[0].kind, EntryKind::Grant);
        assert_eq!(book.entries[0].reason.as_deref(), Some("duplicate grant"));
    }

    #[test]
    fn credits_come_back_from_unpaid_grants_before_paid_ones() {
        let mut book = book();
        let now = t("2026-01-02T00:00:00Z");
        // The pack comes first in consumption order (priority -5), yet it is taken from last.
        let moved = apply(
            &mut book,
            Change::TakeBack(c("20")),
            "unused",
            &reason(),
            source(),
            now,
        )
        .unwrap();
        assert_eq!(
            moved,
            vec![
                ("promo".to_owned(), c("-10")),
                ("adj".to_owned(), c("-5")),
                ("pack".to_owned(), c("-5")),
            ]
        );
        assert_eq!(book.available(), c("95"));
        assert!(
            book.entries
                .iter()
                .all(|e| e.kind == EntryKind::Adjustment && e.reason.is_some())
        );
        let (credits, held) = book.entries_delta();
        assert_eq!((credits, held), (c("-20"), Credits::ZERO));
        book.check_invariants().unwrap();
    }

    #[test]
    fn held_credits_stay_and_nothing_goes_below_zero_available() {
        let mut book = book();
        let now = t("2026-01-02T00:00:00Z");
        book.authorize(
            "h1",
            &Usage::default(),
            c("100"),
            &Overage::Block,
            t("2026-01-02T00:15:00Z"),
            now,
        )
        .unwrap();
        let before = book.clone();
        let refused = apply(
            &mut book,
            Change::TakeBack(c("15.000001")),
            "x",
            &reason(),
            source(),
            now,
        );
        assert_eq!(
            refused,
            Err(Rejection::ExceedsAvailable {
                requested: c("15.000001"),
                available: c("15"),
            })
        );
        assert_eq!(book.entries, before.entries, "a refusal appends nothing");
        let moved = apply(
            &mut book,
            Change::TakeBack(c("15")),
            "x",
            &reason(),
            source(),
            now,
        )
        .unwrap();
        assert_eq!(moved.iter().map(|m| -m.1).sum::<Credits>(), c("15"));
        assert_eq!(book.available(), Credits::ZERO);
        assert_eq!(book.held(), c("100"));
        book.check_invariants().unwrap();
    }

    #[test]
    fn an_overdraft_leaves_nothing_to_take_back() {
        let mut book = Book::new(CustomerId::known("cus"));
        let now = t("2026-01-01T00:00:00Z");
        book.debit(
            c("4"),
            &Usage::default(),
            &Overage::Allow { limit: c("10") },
            now,
        )
        .unwrap();
        assert_eq!(
            book.take_back(c("1"), now),
            Err(Rejection::ExceedsAvailable {
                requested: c("1"),
                available: Credits::ZERO,
            })
        );
    }

    #[test]
    fn paid_credits_taken_back_are_forfeited_as_breakage() {
        let mut book = book();
        let opened = t("2026-01-01T00:00:00Z");
        let now = t("2026-01-02T00:00:00Z");
        // Open the pack's lot as the store would when it was granted.
        let mut revenue = Revenue::default();
        let (lot, _) = crate::domain::revrec::Lot::pack(
            "pack",
            "USD",
            c("10"),
            c("100"),
            crate::domain::catalog::Breakage::Remote,
            opened,
        );
        revenue.lots.insert("pack".into(), lot);
        apply(
            &mut book,
            Change::TakeBack(c("40")),
            "x",
            &reason(),
            source(),
            now,
        )
        .unwrap();
        let moved = Moved {
            customer: &CustomerId::known("cus"),
            grants: &book.grants,
            entries: &book.entries,
            source: None,
            recognize: &[],
            now,
        };
        let needs = needs(&moved).expect("a paid grant moved");
        assert!(needs.lots.contains("pack"));
        let catalog = crate::domain::catalog::Catalog::default();
        let outcome = post(&catalog, &moved, &mut revenue).unwrap();
        assert_eq!(outcome.effects.len(), 1, "only the paid grant posts");
        let posting = &outcome.effects[0].posting;
        assert_eq!(posting.kind, PostingKind::Forfeiture);
        assert!(posting.memo.ends_with("reason: duplicate grant"));
        // 25 of the pack's 100 credits (40 - 5 - 10) at 0.10 each.
        let line = |account: Account| {
            posting
                .lines
                .iter()
                .find(|l| l.account == account)
                .map(|l| (l.debit, l.credit))
        };
        assert_eq!(
            line(Account::ContractLiability),
            Some((c("2.5"), Money::ZERO))
        );
        assert_eq!(
            line(Account::BreakageRevenue),
            Some((Money::ZERO, c("2.5")))
        );
        let lot = &revenue.lots["pack"];
        assert_eq!(lot.forfeited, c("25"));
        assert_eq!(lot.deferred(), c("7.5"));
        lot.check().unwrap();
    }
}
