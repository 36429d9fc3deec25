//! Billing rules that turn what Stripe reports into credits: plan credits per invoice line (with
//! seats and proration), money in minor units, subscription and dispute states. Pure.

use super::catalog::Plan;
use super::money::{Credits, SCALE, currency_minor_units};
use rust_decimal::{Decimal, RoundingStrategy};

/// An amount Stripe sends in the currency's minor units, as money in major units (exact).
pub fn money_from_minor(amount_minor: i64, currency: &str) -> Credits {
    let value = Decimal::new(amount_minor, currency_minor_units(currency));
    Credits::new(value).expect("a currency has at most 3 minor digits, within the credit scale")
}

/// Money in major units, as the currency's minor units (exact for amounts of that currency).
pub fn money_to_minor(money: Credits, currency: &str) -> i64 {
    let scaled = money.value() * Decimal::from(10_i64.pow(currency_minor_units(currency)));
    i64::try_from(scaled.round()).unwrap_or(i64::MAX)
}

/// Credits to a per-credit scale, rounded down: a customer is never granted a fraction of a
/// micro-credit that was not paid for.
fn round_down(value: Decimal) -> Credits {
    Credits::new(value.round_dp_with_strategy(SCALE, RoundingStrategy::ToZero))
        .expect("rounded to the credit scale")
}

/// Credits a whole period of `plan` gives for `quantity` (seats count only for per-seat plans).
pub fn period_credits(plan: &Plan, quantity: i64) -> Credits {
    let seats = if plan.per_seat { quantity.max(1) } else { 1 };
    Credits::new(plan.credits.value() * Decimal::from(seats)).expect("credits times seats")
}

/// Credits for a proration line that charges for part of a period: the period's credits in the
/// proportion the line's amount bears to a whole period's (unit amount x quantity). This is the
/// proration rule: credits follow money, as on the customer's invoice. Capped at a whole period.
pub fn prorated_credits(
    plan: &Plan,
    quantity: i64,
    amount_minor: i64,
    unit_amount_minor: Decimal,
) -> Credits {
    let whole = period_credits(plan, quantity);
    let period_amount = unit_amount_minor * Decimal::from(quantity.max(1));
    if period_amount <= Decimal::ZERO || amount_minor <= 0 {
        return Credits::ZERO;
    }
    let share = (Decimal::from(amount_minor) / period_amount).min(Decimal::ONE);
    round_down(whole.value() * share)
}

/// Subscription statuses under which the plan's features and overage rule apply (a `past_due`
/// one only within its grace).
pub fn subscription_grants_plan(status: &str) -> bool {
    matches!(status, "active" | "trialing" | "past_due")
}

/// A status no later event can undo.
pub fn subscription_is_final(status: &str) -> bool {
    matches!(status, "canceled" | "incomplete_expired")
}

/// What a renewal may still carry over of the period before it: the plan's `rollover_max` less
/// what was carried already, by however many events the period's grants arrived in. A renewal
/// whose carried total is not known (`None`) has none left.
pub fn rollover_room(rollover_max: Credits, carried: Option<Credits>) -> Credits {
    match carried {
        Some(carried) => (rollover_max - carried).max(Credits::ZERO),
        None => Credits::ZERO,
    }
}

/// Dispute statuses after which the dispute is over.
pub fn dispute_is_closed(status: &str) -> bool {
    matches!(status, "won" | "lost" | "warning_closed" | "prevented")
}

/// The part of money taken back from a payment (a refund or a lost dispute, which Stripe counts
/// tax included) that was price: the same share as the price is of what was paid, rounded to
/// the minor unit, half away from zero, never above the price. Tax is the tax authority's, not
/// revenue, so it is never taken back as if it were price. Without a known tax, all of it.
pub fn price_share_of_refund(refunded_minor: i64, paid_minor: i64, tax_minor: i64) -> i64 {
    if refunded_minor <= 0 || paid_minor <= 0 || tax_minor <= 0 {
        return refunded_minor.max(0);
    }
    let price = (paid_minor - tax_minor).max(0);
    let share = Decimal::from(refunded_minor) * Decimal::from(price) / Decimal::from(paid_minor);
    let rounded = share.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    i64::try_from(rounded.mantissa()).map_or(price, |v| v.min(price))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::{Breakage, Overage};
    use std::str::FromStr;

    fn plan(credits: &str, per_seat: bool) -> Plan {
        Plan {
            id: "p".into(),
            stripe_prices: vec![],
            credits: Credits::new(Decimal::from_str(credits).unwrap()).unwrap(),
            per_seat,
            features: vec![],
            rollover_max: Credits::ZERO,
            overage: Overage::Block,
            platform_share: Decimal::ZERO,
            breakage: Breakage::Remote,
            priority: 10,
        }
    }

    #[test]
    fn minor_units_follow_the_currency() {
        assert_eq!(money_from_minor(4999, "cad").to_string(), "49.99");
        assert_eq!(money_from_minor(500, "jpy").to_string(), "500");
        assert_eq!(money_from_minor(1234, "kwd").to_string(), "1.234");
        assert_eq!(money_to_minor(money_from_minor(2990, "brl"), "brl"), 2990);
    }

    #[test]
    fn seats_multiply_only_per_seat_plans() {
        assert_eq!(period_credits(&plan("5000", true), 3).to_string(), "15000");
        assert_eq!(period_credits(&plan("2000", false), 3).to_string(), "2000");
    }

    #[test]
    fn proration_follows_money_and_rounds_down() {
        // Half a period of 3 seats at 30.00 a seat: 45.00 of 90.00.
        let p = plan("5000", true);
        let unit = Decimal::from(3000);
        assert_eq!(prorated_credits(&p, 3, 4500, unit).to_string(), "7500");
        // A third of a period: 10000/3 credits, rounded down at the sixth place.
        let p = plan("10000", false);
        assert_eq!(
            prorated_credits(&p, 1, 1000, unit).to_string(),
            "3333.333333"
        );
        // Never more than a whole period, never negative.
        assert_eq!(prorated_credits(&p, 1, 9000, unit).to_string(), "10000");
        assert_eq!(prorated_credits(&p, 1, -1000, unit), Credits::ZERO);
    }

    #[test]
    fn rollover_room_is_shared_by_the_grants_of_one_boundary() {
        let max = Credits::new(Decimal::from(1000)).unwrap();
        let c = |n: i64| Credits::new(Decimal::from(n)).unwrap();
        assert_eq!(rollover_room(max, Some(Credits::ZERO)), c(1000));
        assert_eq!(rollover_room(max, Some(c(600))), c(400));
        assert_eq!(rollover_room(max, Some(c(1000))), Credits::ZERO);
        // A smaller maximum configured since: nothing more, never negative.
        assert_eq!(rollover_room(c(500), Some(c(600))), Credits::ZERO);
        // Rolled over before the carried total was kept: its room counts as used.
        assert_eq!(rollover_room(max, None), Credits::ZERO);
    }

    #[test]
    fn a_refunds_tax_share_is_not_price() {
        // 11.00 paid, 1.00 of it tax: a refund of 5.50 gives back 5.00 of price.
        assert_eq!(price_share_of_refund(550, 1100, 100), 500);
        assert_eq!(price_share_of_refund(1100, 1100, 100), 1000);
        // Half away from zero: 1 of 3 paid (tax 1) is 0.67 of price, rounded to 1.
        assert_eq!(price_share_of_refund(1, 3, 1), 1);
        // No tax, or not known: all of it is price.
        assert_eq!(price_share_of_refund(550, 1100, 0), 550);
        assert_eq!(price_share_of_refund(550, 0, 0), 550);
        // Never above the price, never negative.
        assert_eq!(price_share_of_refund(5_000, 1100, 100), 1000);
        assert_eq!(price_share_of_refund(-5, 1100, 100), 0);
    }
}
