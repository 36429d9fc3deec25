//! What a payment's refunds and lost disputes take back, and how that moves its grants (README,
//! Stripe events): the money Stripe reports taken back, less what was already taken, is taken
//! from the grants oldest first; money taken for refunds that later failed or were canceled is
//! given back newest first. Pure.

use super::money::Credits;

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
}

/// One grant a payment paid for, as far as its refunds are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidShare {
    pub grant_id: String,
    pub price: Credits,
    /// Money refunded on the grant by any payment's refunds.
    pub refunded: Credits,
    /// Money this payment's refunds took from the grant and that was not given back.
    pub clawed_back: Credits,
}

/// How a payment's grants move so that what they gave up equals what Stripe says was taken back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Already in line.
    Settled,
    /// Money to take back, per grant, oldest first, each up to its price less what was refunded.
    TakeBack(Vec<(String, Credits)>),
    /// Money to give back (refunds that failed or were canceled), per grant, newest first, each
    /// up to what this payment took from it.
    GiveBack(Vec<(String, Credits)>),
}

/// Brings `grants` (oldest first) in line with `target`, the money taken back from their payment.
pub fn settle(grants: &[PaidShare], target: Credits) -> Settlement {
    let applied: Credits = grants.iter().map(|g| g.clawed_back).sum();
    if target > applied {
        let plan = spread(grants.iter(), target - applied, |g| g.price - g.refunded);
        if plan.is_empty() {
            Settlement::Settled
        } else {
            Settlement::TakeBack(plan)
        }
    } else if target < applied {
        Settlement::GiveBack(spread(grants.iter().rev(), applied - target, |g| {
            g.clawed_back
        }))
    } else {
        Settlement::Settled
    }
}

/// Splits `money` over `grants` in their order, each up to its `room`.
fn spread<'a>(
    grants: impl Iterator<Item = &'a PaidShare>,
    money: Credits,
    room: impl Fn(&PaidShare) -> Credits,
) -> Vec<(String, Credits)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn c(s: &str) -> Credits {
        Credits::new(rust_decimal::Decimal::from_str(s).unwrap()).unwrap()
    }

    fn share(id: &str, price: &str, refunded: &str, clawed_back: &str) -> PaidShare {
        PaidShare {
            grant_id: id.into(),
            price: c(price),
            refunded: c(refunded),
            clawed_back: c(clawed_back),
        }
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
            settle(&grants, Credits::ZERO),
            Settlement::GiveBack(vec![("b".into(), c("3")), ("a".into(), c("10"))])
        );
    }
}
