//! What a payment's refunds and lost disputes take back, and how that moves its grants (README,
//! Stripe events): the money Stripe reports taken back, less what was already taken, is taken
//! from the grants oldest first; money taken for refunds that later failed or were canceled is
//! given back newest first. Pure.

use super::billing::price_share_of_refund;
use super::customer::CustomerId;
use super::money::{Credits, Money};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// A refund's state as Stripe reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundStatus {
    Pending,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
}

impl RefundStatus {
    /// Stripe's name; an unknown one (a newer API version) is treated as pending: nothing is
    /// taken for it until it succeeds.
    pub fn parse(status: Option<&str>) -> RefundStatus {
        match status {
            Some("succeeded") => RefundStatus::Succeeded,
            Some("failed") => RefundStatus::Failed,
            Some("canceled") => RefundStatus::Canceled,
            Some("requires_action") => RefundStatus::RequiresAction,
            _ => RefundStatus::Pending,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::RequiresAction => "requires_action",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
            RefundStatus::Canceled => "canceled",
        }
    }

    /// A refund that failed or was canceled: its money went back to the customer's payment.
    pub fn is_undone(self) -> bool {
        matches!(self, RefundStatus::Failed | RefundStatus::Canceled)
    }

    /// Whether a refund recorded as `self` takes the state `next`. A refund moves forward only
    /// (pending → succeeded → failed or canceled), so a state delivered late never undoes a
    /// later one, whatever order the events arrive in.
    pub fn is_superseded_by(self, next: RefundStatus) -> bool {
        let rank = |s: RefundStatus| match s {
            RefundStatus::Pending | RefundStatus::RequiresAction => 0,
            RefundStatus::Succeeded => 1,
            RefundStatus::Failed | RefundStatus::Canceled => 2,
        };
        rank(next) > rank(self)
    }
}

impl<'de> Deserialize<'de> for RefundStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(Some(&String::deserialize(d)?)))
    }
}

stripe_names! {
    /// A dispute's state as Stripe reports it. One Stripe adds later counts as open.
    pub enum DisputeStatus {
        WarningNeedsResponse = "warning_needs_response",
        WarningUnderReview = "warning_under_review",
        WarningClosed = "warning_closed",
        NeedsResponse = "needs_response",
        UnderReview = "under_review",
        Won = "won",
        Lost = "lost",
        Prevented = "prevented",
    }
}

impl DisputeStatus {
    /// Over: the customer is no longer frozen for it.
    pub fn is_closed(&self) -> bool {
        matches!(
            self,
            Self::Won | Self::Lost | Self::WarningClosed | Self::Prevented
        )
    }

    /// Lost: its amount is taken back like a refund.
    pub fn is_lost(&self) -> bool {
        *self == Self::Lost
    }
}

/// Whether a dispute recorded as `known` (with its event's `created`) takes the state `next`:
/// a closed dispute stays closed; otherwise a state of the same second or newer wins.
pub fn dispute_moves(known: (&DisputeStatus, i64), next: (&DisputeStatus, i64)) -> bool {
    let ((known_status, known_at), (_, next_at)) = (known, next);
    !known_status.is_closed() && next_at >= known_at
}

/// What Stripe has said about the money taken back from one payment, in its minor units.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PaymentRefunds {
    /// The largest `amount_refunded` reported for the payment's charges.
    pub charge_refunded_minor: i64,
    /// Refunds known one by one that succeeded.
    pub succeeded_minor: i64,
    /// Refunds known one by one that failed or were canceled.
    pub undone_minor: i64,
    /// Disputes lost.
    pub lost_minor: i64,
}

impl PaymentRefunds {
    /// Money taken back: the larger of the charge's refunded total (less refunds that failed or
    /// were canceled since) and the succeeded refunds, so the same refund seen both ways counts
    /// once; plus lost disputes.
    pub fn taken_back_minor(&self) -> i64 {
        let by_charge = (self.charge_refunded_minor - self.undone_minor).max(0);
        by_charge.max(self.succeeded_minor).max(0) + self.lost_minor.max(0)
    }

    /// Of the money taken back, the price's share, given what was paid and its tax (minor
    /// units) when known: Stripe counts refunds tax included, and the tax is never taken back
    /// as if it were price.
    pub fn price_taken_back_minor(&self, paid_and_tax: Option<(i64, i64)>) -> i64 {
        let taken = self.taken_back_minor();
        match paid_and_tax {
            Some((paid, tax)) => price_share_of_refund(taken, paid, tax),
            None => taken,
        }
    }
}

/// One grant a payment paid for, as far as its refunds are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidShare {
    pub grant_id: String,
    pub price: Money,
    /// Money refunded on the grant by any payment's refunds.
    pub refunded: Money,
    /// Money this payment's refunds took from the grant and that was not given back.
    pub clawed_back: Money,
    /// The start of a credit period bought ahead (README, Credit cycles); none for a grant
    /// spendable when bought.
    pub starts_at: Option<super::Timestamp>,
}

/// The order a payment's refunds take from its grants (`grants` oldest first): credit periods
/// bought ahead first, the latest first, so a refund gives up months not yet used before the
/// month in use; then the rest, oldest first. Reversals give back in the opposite order.
fn refund_order(grants: &[PaidShare]) -> Vec<&PaidShare> {
    let mut ordered: Vec<&PaidShare> = grants.iter().collect();
    ordered.sort_by_key(|g| (g.starts_at.is_none(), std::cmp::Reverse(g.starts_at)));
    ordered
}

/// How a payment's grants move so that what they gave up equals what Stripe says was taken back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Already in line.
    Settled,
    /// Money to take back, per grant, oldest first, each up to its price less what was refunded.
    TakeBack(Vec<(String, Money)>),
    /// Money to give back (refunds that failed or were canceled), per grant, newest first, each
    /// up to what this payment took from it.
    GiveBack(Vec<(String, Money)>),
}

/// Brings `grants` (oldest first) in line with `target`, the money taken back from their
/// payment, in [`refund_order`].
pub fn settle(grants: &[PaidShare], target: Money) -> Settlement {
    let applied: Money = grants.iter().map(|g| g.clawed_back).sum();
    let grants = refund_order(grants);
    if target > applied {
        let plan = spread(grants.iter().copied(), target - applied, |g| {
            g.price - g.refunded
        });
        if plan.is_empty() {
            Settlement::Settled
        } else {
            Settlement::TakeBack(plan)
        }
    } else if target < applied {
        Settlement::GiveBack(spread(
            grants.iter().copied().rev(),
            applied - target,
            |g| g.clawed_back,
        ))
    } else {
        Settlement::Settled
    }
}

/// Splits `money` over `grants` in their order, each up to its `room`.
fn spread<'a>(
    grants: impl Iterator<Item = &'a PaidShare>,
    money: Money,
    room: impl Fn(&PaidShare) -> Money,
) -> Vec<(String, Money)> {
    let mut left = money;
    let mut plan = Vec::new();
    for g in grants {
        if !left.is_positive() {
            break;
        }
        let take = room(g).min(left);
        if take.is_positive() {
            plan.push((g.grant_id.clone(), take));
            left -= take;
        }
    }
    plan
}

/// A grant a payment bought, with its owner and currency, as a payment's settlement reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoughtGrant {
    pub customer: CustomerId,
    pub currency: String,
    pub share: PaidShare,
}

/// What is known of one payment when its refunds and disputes are settled.
#[derive(Debug, Clone, Copy)]
pub struct PaymentFacts<'a> {
    pub refunds: &'a PaymentRefunds,
    /// The currency Stripe's refunds name, when they name one.
    pub refund_currency: Option<&'a str>,
    /// A dispute on the payment is open: what it bought stays frozen.
    pub dispute_open: bool,
    /// What the payment paid and its tax (minor units), when known.
    pub paid_and_tax: Option<(i64, i64)>,
    /// The grants it bought, oldest first.
    pub grants: &'a [BoughtGrant],
    /// Of those grants, the credits clawbacks took so far (what a give-back may return).
    pub clawed: &'a BTreeMap<String, Credits>,
}

/// What one owner's grants of a payment undergo: `Command::SettlePayment`'s fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSettlement {
    pub customer: CustomerId,
    /// The owner's grants the payment bought: thawed, then frozen again when `freeze`.
    pub grant_ids: Vec<String>,
    /// Money per grant to take back (or give back, when `giving_back`).
    pub money: Vec<(String, Money)>,
    /// When giving back: what clawbacks took from each grant named in the payment's plan.
    pub clawed: BTreeMap<String, Credits>,
    pub giving_back: bool,
    pub freeze: bool,
}

/// A payment's refunds and disputes settled (README, Refunds and Disputes): the price's share of
/// the money Stripe says was taken back (tax is never taken back as price), spread over the grants
/// it bought, per owner; what is frozen while a dispute is open. A refund in another currency
/// than the grants' takes nothing (the caller says so): the second value is false then.
pub fn settle_payment(facts: &PaymentFacts<'_>) -> (Vec<OwnerSettlement>, bool) {
    let Some(first) = facts.grants.first() else {
        return (Vec::new(), true);
    };
    let currency = first.currency.as_str();
    let same_currency = facts
        .refund_currency
        .is_none_or(|c| c.eq_ignore_ascii_case(currency));
    let target_minor = facts.refunds.price_taken_back_minor(facts.paid_and_tax);
    let target = super::billing::money_from_minor(target_minor, currency);
    let shares: Vec<PaidShare> = facts.grants.iter().map(|g| g.share.clone()).collect();
    let (plan, giving_back) = match settle(&shares, target) {
        _ if !same_currency => (Vec::new(), false),
        Settlement::Settled => (Vec::new(), false),
        Settlement::TakeBack(plan) => (plan, false),
        Settlement::GiveBack(plan) => (plan, true),
    };
    let clawed: BTreeMap<String, Credits> = if giving_back {
        plan.iter()
            .filter_map(|(id, _)| facts.clawed.get(id).map(|c| (id.clone(), *c)))
            .collect()
    } else {
        BTreeMap::new()
    };
    let owners: std::collections::BTreeSet<&CustomerId> =
        facts.grants.iter().map(|g| &g.customer).collect();
    let settled = owners
        .into_iter()
        .map(|customer| {
            let grant_ids: Vec<String> = facts
                .grants
                .iter()
                .filter(|g| &g.customer == customer)
                .map(|g| g.share.grant_id.clone())
                .collect();
            OwnerSettlement {
                customer: customer.clone(),
                money: plan
                    .iter()
                    .filter(|(id, _)| grant_ids.contains(id))
                    .cloned()
                    .collect(),
                grant_ids,
                clawed: clawed.clone(),
                giving_back,
                freeze: facts.dispute_open,
            }
        })
        .collect();
    (settled, same_currency)
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

    /// Rows `charge.dispute.created` / `.updated` and `charge.dispute.closed`: open freezes,
    /// `won` and `lost` close (lost takes its amount back), and a closed dispute stays closed
    /// whatever arrives after.
    #[test]
    fn a_closed_dispute_stays_closed() {
        use DisputeStatus::*;
        for s in [
            "warning_needs_response",
            "warning_under_review",
            "warning_closed",
            "needs_response",
            "under_review",
            "won",
            "lost",
            "prevented",
            "new_one",
        ] {
            assert_eq!(DisputeStatus::parse(s).as_str(), s);
        }
        assert!(!NeedsResponse.is_closed() && !UnderReview.is_closed());
        assert!(!DisputeStatus::parse("new_one").is_closed());
        assert!(Won.is_closed() && Lost.is_closed() && Lost.is_lost() && !Won.is_lost());
        // Open: a newer or same-second state moves it, an older one does not.
        assert!(dispute_moves((&NeedsResponse, 10), (&UnderReview, 10)));
        assert!(dispute_moves((&UnderReview, 10), (&Lost, 11)));
        assert!(!dispute_moves((&UnderReview, 10), (&NeedsResponse, 9)));
        // Closed: nothing moves it, not even a newer open state.
        assert!(!dispute_moves((&Won, 10), (&NeedsResponse, 20)));
        assert!(!dispute_moves((&Lost, 10), (&Won, 20)));
        // A lost dispute takes its amount back like a refund.
        let lost = PaymentRefunds {
            lost_minor: 2_000,
            ..Default::default()
        };
        assert_eq!(lost.taken_back_minor(), 2_000);
    }

    /// Row `charge.refunded` / `refund.*`: only the price's share of a refund is taken back.
    #[test]
    fn the_price_share_is_taken_back_never_the_tax() {
        let facts = PaymentRefunds {
            succeeded_minor: 550,
            ..Default::default()
        };
        assert_eq!(facts.price_taken_back_minor(Some((1_100, 100))), 500);
        assert_eq!(facts.price_taken_back_minor(Some((1_100, 0))), 550);
        assert_eq!(facts.price_taken_back_minor(None), 550);
    }

    fn share(id: &str, price: &str, refunded: &str, clawed_back: &str) -> PaidShare {
        PaidShare {
            grant_id: id.into(),
            price: c(price),
            refunded: c(refunded),
            clawed_back: c(clawed_back),
            starts_at: None,
        }
    }

    #[test]
    fn a_refund_of_months_bought_ahead_takes_the_latest_first_and_gives_back_the_earliest_first() {
        let month = |k: i64| Some(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(30 * k));
        let year = [
            PaidShare {
                starts_at: None,
                ..share("m1", "10", "0", "0")
            },
            PaidShare {
                starts_at: month(1),
                ..share("m2", "10", "0", "0")
            },
            PaidShare {
                starts_at: month(2),
                ..share("m3", "10", "0", "0")
            },
        ];
        assert_eq!(
            settle(&year, c("25")),
            Settlement::TakeBack(vec![
                ("m3".into(), c("10")),
                ("m2".into(), c("10")),
                ("m1".into(), c("5"))
            ])
        );
        let taken = [
            PaidShare {
                clawed_back: c("5"),
                refunded: c("5"),
                ..year[0].clone()
            },
            PaidShare {
                clawed_back: c("10"),
                refunded: c("10"),
                ..year[1].clone()
            },
            PaidShare {
                clawed_back: c("10"),
                refunded: c("10"),
                ..year[2].clone()
            },
        ];
        assert_eq!(
            settle(&taken, c("10")),
            Settlement::GiveBack(vec![("m1".into(), c("5")), ("m2".into(), c("10"))])
        );
    }

    #[test]
    fn the_same_refund_seen_twice_counts_once() {
        let seen = PaymentRefunds {
            charge_refunded_minor: 400,
            succeeded_minor: 400,
            ..PaymentRefunds::default()
        };
        assert_eq!(seen.taken_back_minor(), 400);
        // Known only through the charge, or only as refund objects.
        let by_charge = PaymentRefunds {
            charge_refunded_minor: 400,
            ..PaymentRefunds::default()
        };
        assert_eq!(by_charge.taken_back_minor(), 400);
        let lost = PaymentRefunds {
            succeeded_minor: 100,
            lost_minor: 900,
            ..PaymentRefunds::default()
        };
        assert_eq!(lost.taken_back_minor(), 1000);
    }

    #[test]
    fn a_failed_refund_is_no_longer_taken_back() {
        // charge.refunded said 400, then the refund failed.
        let failed = PaymentRefunds {
            charge_refunded_minor: 400,
            undone_minor: 400,
            ..PaymentRefunds::default()
        };
        assert_eq!(failed.taken_back_minor(), 0);
        // Another refund of 100 on the same charge still stands.
        let partly = PaymentRefunds {
            charge_refunded_minor: 500,
            succeeded_minor: 100,
            undone_minor: 400,
            ..PaymentRefunds::default()
        };
        assert_eq!(partly.taken_back_minor(), 100);
        // The failure learnt before the charge: never below zero.
        let early = PaymentRefunds {
            undone_minor: 400,
            ..PaymentRefunds::default()
        };
        assert_eq!(early.taken_back_minor(), 0);
    }

    #[test]
    fn refund_states_only_move_forward() {
        use RefundStatus::*;
        assert!(Pending.is_superseded_by(Succeeded));
        assert!(Succeeded.is_superseded_by(Failed));
        assert!(Pending.is_superseded_by(Canceled));
        assert!(!Failed.is_superseded_by(Succeeded));
        assert!(!Succeeded.is_superseded_by(Pending));
        assert!(!Canceled.is_superseded_by(Failed));
        assert_eq!(RefundStatus::parse(Some("failed")), Failed);
        assert_eq!(RefundStatus::parse(Some("something_new")), Pending);
        assert_eq!(RefundStatus::parse(None), Pending);
        assert!(Canceled.is_undone() && !Succeeded.is_undone());
    }

    #[test]
    fn refunds_take_oldest_first_up_to_each_price() {
        let grants = [share("a", "10", "8", "0"), share("b", "10", "0", "0")];
        assert_eq!(
            settle(&grants, c("5")),
            Settlement::TakeBack(vec![("a".into(), c("2")), ("b".into(), c("3"))])
        );
        // Nothing left to take: settled.
        let spent = [share("a", "10", "10", "0")];
        assert_eq!(settle(&spent, c("5")), Settlement::Settled);
    }

    #[test]
    fn what_was_taken_is_not_taken_again() {
        let grants = [share("a", "10", "4", "4")];
        assert_eq!(settle(&grants, c("4")), Settlement::Settled);
        assert_eq!(
            settle(&grants, c("6")),
            Settlement::TakeBack(vec![("a".into(), c("2"))])
        );
    }

    #[test]
    fn undone_refunds_give_back_newest_first_up_to_what_was_taken() {
        // This payment took 10 from a and 3 from b; b also lost 2 to another payment's refund.
        let grants = [share("a", "10", "10", "10"), share("b", "10", "5", "3")];
        assert_eq!(
            settle(&grants, c("8")),
            Settlement::GiveBack(vec![("b".into(), c("3")), ("a".into(), c("2"))])
        );
        assert_eq!(
            settle(&grants, Money::ZERO),
            Settlement::GiveBack(vec![("b".into(), c("3")), ("a".into(), c("10"))])
        );
    }

    /// The payment rows of the event table, fixture in, effects out: a refund takes back the
    /// price's share oldest grant first; a refund that failed gives back newest first; an open
    /// dispute freezes whatever moves; a refund in another currency takes nothing.
    #[test]
    fn a_payments_refunds_settle_per_owner() {
        let grant = |customer: &str, id: &str, clawed_back: &str| BoughtGrant {
            customer: CustomerId::known(customer),
            currency: "usd".into(),
            share: PaidShare {
                grant_id: id.into(),
                price: c("10"),
                refunded: Money::ZERO,
                clawed_back: c(clawed_back),
                starts_at: None,
            },
        };
        let fresh = [grant("a", "g1", "0"), grant("b", "g2", "0")];
        let refunded = PaymentRefunds {
            succeeded_minor: 1_500,
            ..PaymentRefunds::default()
        };
        let none = BTreeMap::new();
        let facts = |refunds, currency, dispute_open, grants| PaymentFacts {
            refunds,
            refund_currency: currency,
            dispute_open,
            paid_and_tax: Some((2_000, 0)),
            grants,
            clawed: &none,
        };
        // $15 of $20 refunded: g1 gives its $10, g2 $5; each owner settles its own.
        let (owners, same) = settle_payment(&facts(&refunded, Some("USD"), false, &fresh));
        assert!(same);
        assert_eq!(owners.len(), 2);
        assert_eq!(owners[0].customer, "a");
        assert_eq!(owners[0].money, vec![("g1".to_owned(), c("10"))]);
        assert_eq!(owners[1].money, vec![("g2".to_owned(), c("5"))]);
        assert!(owners.iter().all(|o| !o.giving_back && !o.freeze));
        // The same refund again: already in line, nothing moves.
        let taken = [grant("a", "g1", "10"), grant("b", "g2", "5")];
        let (owners, _) = settle_payment(&facts(&refunded, None, false, &taken));
        assert!(owners.iter().all(|o| o.money.is_empty()));
        // The refund failed: given back newest first, with what each clawback took.
        let undone = PaymentRefunds {
            succeeded_minor: 0,
            undone_minor: 1_500,
            charge_refunded_minor: 1_500,
            lost_minor: 0,
        };
        let clawed = BTreeMap::from([("g1".to_owned(), c("100")), ("g2".to_owned(), c("50"))]);
        let given = PaymentFacts {
            clawed: &clawed,
            ..facts(&undone, None, false, &taken)
        };
        let (owners, _) = settle_payment(&given);
        assert!(owners.iter().all(|o| o.giving_back));
        assert_eq!(owners[1].money, vec![("g2".to_owned(), c("5"))]);
        assert_eq!(owners[0].money, vec![("g1".to_owned(), c("10"))]);
        assert_eq!(owners[0].clawed, clawed);
        // An open dispute with nothing lost yet: nothing taken, everything frozen.
        let nothing = PaymentRefunds::default();
        let (owners, _) = settle_payment(&facts(&nothing, None, true, &fresh));
        assert!(owners.iter().all(|o| o.freeze && o.money.is_empty()));
        assert_eq!(owners[0].grant_ids, vec!["g1".to_owned()]);
        // Refunded in euros, bought in dollars: nothing is taken.
        let (owners, same) = settle_payment(&facts(&refunded, Some("eur"), false, &fresh));
        assert!(!same);
        assert!(owners.iter().all(|o| o.money.is_empty()));
        // No grant known: nothing to settle.
        assert_eq!(
            settle_payment(&facts(&refunded, None, false, &[])).0,
            vec![]
        );
    }

    mod settling {
        use super::super::*;
        use proptest::prelude::*;

        /// Applies a settlement to the grants, as the ledger's clawbacks and give-backs do
        /// (`Book::claw_back` moves the grant's `refunded` with it).
        fn apply(grants: &mut [BoughtGrant], owners: &[OwnerSettlement]) {
            for owner in owners {
                for (id, money) in &owner.money {
                    let grant = grants.iter_mut().find(|g| g.share.grant_id == *id).unwrap();
                    // The grant's refunded money moves with what this payment took.
                    if owner.giving_back {
                        grant.share.clawed_back -= *money;
                        grant.share.refunded -= *money;
                    } else {
                        grant.share.clawed_back += *money;
                        grant.share.refunded += *money;
                    }
                }
            }
        }

        proptest! {
            /// Whatever Stripe says in whatever order, one settlement brings the grants in
            /// line: settling again moves nothing; no grant gives more than its price less
            /// what other payments refunded, and none gets back more than was taken from it.
            #[test]
            fn one_settlement_brings_a_payment_in_line(
                prices in proptest::collection::vec(1_i64..5_000, 1..4),
                states in proptest::collection::vec((0_i64..6_000, 0_i64..6_000, 0_i64..3_000), 1..6),
            ) {
                let mut grants: Vec<BoughtGrant> = prices
                    .iter()
                    .enumerate()
                    .map(|(i, cents)| BoughtGrant {
                        customer: CustomerId::known(format!("c{}", i % 2)),
                        currency: "usd".into(),
                        share: PaidShare {
                            grant_id: format!("g{i}"),
                            price: Money::from_micros(cents * 10_000),
                            refunded: Money::ZERO,
                            clawed_back: Money::ZERO,
                            starts_at: None,
                        },
                    })
                    .collect();
                let none = BTreeMap::new();
                for (succeeded, undone, lost) in states {
                    let refunds = PaymentRefunds {
                        charge_refunded_minor: succeeded,
                        succeeded_minor: succeeded,
                        undone_minor: undone.min(succeeded),
                        lost_minor: lost,
                    };
                    let settle = |grants: &[BoughtGrant]| {
                        settle_payment(&PaymentFacts {
                            refunds: &refunds,
                            refund_currency: None,
                            dispute_open: false,
                            paid_and_tax: None,
                            grants,
                            clawed: &none,
                        })
                    };
                    let (owners, _) = settle(&grants);
                    apply(&mut grants, &owners);
                    for g in &grants {
                        prop_assert!(!g.share.clawed_back.is_negative(), "{g:?}");
                        prop_assert!(g.share.clawed_back <= g.share.price, "{g:?}");
                    }
                    let again = settle(&grants);
                    prop_assert!(again.0.iter().all(|o| o.money.is_empty()), "{again:?}");
                }
            }
        }
    }
}
