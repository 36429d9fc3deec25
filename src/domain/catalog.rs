//! The product catalog: features, priced actions, plans and top-up packs. Built once from the
//! validated config and trusted from then on.

use super::money::{Credits, Money, Quantity, SCALE, max_credits_per_request};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct Feature {
    pub id: String,
    /// Needs a plan that lists it; other features are open to anyone with credits.
    pub plan_only: bool,
}

#[derive(Debug, Clone)]
pub struct Action {
    pub id: String,
    pub feature: String,
    /// Credits per unit.
    pub credits: Credits,
    /// What one unit costs us at the model vendor, in the accounting currency (informational).
    pub vendor_cost: Option<Decimal>,
}

/// Why a quantity of an action has no cost creditbook can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    /// More decimal places than the action allows: its cost would need more than six.
    #[error("has more than {0} decimal places, the most this action allows")]
    TooPrecise(u32),
    /// More units than the action allows: its cost would pass the per-request limit.
    #[error("is larger than {0}, the most this action allows")]
    TooLarge(Decimal),
}

impl Action {
    /// Decimal places a quantity of this action may have: six less those of its credits per
    /// unit, so that every cost is exact to the credit's six places and none is rounded
    /// (rounding happens only in revenue postings). 0.5 credits per unit takes quantities to
    /// 0.00001; 0.000001 per unit, whole quantities.
    pub fn quantity_decimals(&self) -> u32 {
        SCALE.saturating_sub(self.credits.value().normalize().scale())
    }

    /// The most units one request may name: the quantity limit, or, for an action whose credits
    /// per unit would pass the per-request limit of credits before it, the largest power of ten
    /// whose cost stays within it.
    pub fn max_quantity(&self) -> Decimal {
        let per_unit = self.credits.value();
        let mut max = Quantity::max();
        while max > Decimal::ONE && max * per_unit > max_credits_per_request() {
            max /= Decimal::TEN;
        }
        max
    }

    /// Credits for `quantity` units, exact: a quantity with more decimal places than
    /// [`Self::quantity_decimals`] or above [`Self::max_quantity`] is refused.
    pub fn cost(&self, quantity: Quantity) -> Result<Credits, CostError> {
        if quantity.value().normalize().scale() > self.quantity_decimals() {
            return Err(CostError::TooPrecise(self.quantity_decimals()));
        }
        if quantity.value() > self.max_quantity() {
            return Err(CostError::TooLarge(self.max_quantity()));
        }
        let credits = Credits::new(self.credits.value() * quantity.value())
            .expect("quantity decimals keep the cost within six places");
        debug_assert!(credits.value() <= max_credits_per_request());
        Ok(credits)
    }
}

/// What happens when a customer's credits run out (README, The ledger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overage {
    /// Refuse.
    Block,
    /// Let available credits go negative, down to `-limit`.
    Allow { limit: Credits },
    /// Go on; the excess is recorded as billable at `price` per credit.
    Bill { price: Decimal },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breakage {
    Remote,
    Proportional { expected_unused: Decimal },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub id: String,
    pub stripe_prices: Vec<String>,
    /// Per period; per seat when `per_seat`.
    pub credits: Credits,
    pub per_seat: bool,
    pub features: Vec<String>,
    pub rollover_max: Credits,
    pub overage: Overage,
    pub platform_share: Decimal,
    pub breakage: Breakage,
    pub priority: i32,
    /// Its own low-balance thresholds, when it has any.
    pub low_balance: Option<super::alerts::LowBalance>,
}

#[derive(Debug, Clone)]
pub struct Pack {
    pub id: String,
    pub stripe_prices: Vec<String>,
    pub credits: Credits,
    pub price: Money,
    pub expires_after_days: Option<u32>,
    pub breakage: Breakage,
    pub priority: i32,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub currency: String,
    pub features: BTreeMap<String, Feature>,
    pub actions: BTreeMap<String, Action>,
    pub plans: BTreeMap<String, Plan>,
    pub packs: BTreeMap<String, Pack>,
    /// When balances are low and grants about to expire (`[alerts]`).
    pub alerts: super::alerts::AlertRule,
    /// Who is told of what (`[[webhooks]]`, without their secrets).
    pub webhooks: Vec<super::outbound::Subscription>,
}

/// Priorities of grants an admin creates, unless the request names one. Lower is consumed first:
/// free credits before paid ones, so customers get the most out of what they bought.
pub const PROMOTIONAL_PRIORITY: i32 = 0;
pub const ADJUSTMENT_PRIORITY: i32 = 10;
pub const DEFAULT_PLAN_PRIORITY: i32 = 10;
pub const DEFAULT_PACK_PRIORITY: i32 = 20;

impl Catalog {
    pub fn action(&self, id: &str) -> Option<&Action> {
        self.actions.get(id)
    }

    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.get(id)
    }

    pub fn pack(&self, id: &str) -> Option<&Pack> {
        self.packs.get(id)
    }

    /// The plan a Stripe price belongs to.
    pub fn plan_for_price(&self, price: &str) -> Option<&Plan> {
        self.plans
            .values()
            .find(|p| p.stripe_prices.iter().any(|s| s == price))
    }

    /// The pack a Stripe price belongs to.
    pub fn pack_for_price(&self, price: &str) -> Option<&Pack> {
        self.packs
            .values()
            .find(|p| p.stripe_prices.iter().any(|s| s == price))
    }

    /// The overage rule of a customer's plan; no plan means `block`.
    pub fn overage_for(&self, plan: Option<&str>) -> Overage {
        plan.and_then(|p| self.plans.get(p))
            .map(|p| p.overage.clone())
            .unwrap_or(Overage::Block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn action(credits: &str) -> Action {
        Action {
            id: "a".into(),
            feature: "f".into(),
            credits: Credits::new(Decimal::from_str(credits).unwrap()).unwrap(),
            vendor_cost: None,
        }
    }

    fn q(value: &str) -> Quantity {
        Quantity::try_from(Decimal::from_str(value).unwrap()).unwrap()
    }

    #[test]
    fn a_quantity_has_as_many_places_as_its_cost_allows() {
        let speech = action("0.5");
        assert_eq!(speech.quantity_decimals(), 5);
        assert_eq!(speech.cost(q("0.00001")).unwrap().to_string(), "0.000005");
        // 0.000002 × 0.5 is exact, yet refused: the rule is on the quantity alone, so a client
        // knows it from the action's price.
        assert_eq!(speech.cost(q("0.000002")), Err(CostError::TooPrecise(5)));
        assert_eq!(speech.cost(q("0.000005")), Err(CostError::TooPrecise(5)));
        // Trailing zeros are not places.
        assert_eq!(action("0.50").quantity_decimals(), 5);
        assert_eq!(action("5").quantity_decimals(), 6);
        assert_eq!(action("0.000001").quantity_decimals(), 0);
        assert_eq!(
            action("0.000001").cost(q("1.0")).unwrap().to_string(),
            "0.000001"
        );
        assert_eq!(
            action("0.000001").cost(q("1.5")),
            Err(CostError::TooPrecise(0))
        );
    }

    #[test]
    fn a_quantity_never_costs_more_than_one_request_may_spend() {
        assert_eq!(action("1000").max_quantity(), Quantity::max());
        let costly = action("5000");
        assert_eq!(costly.max_quantity(), Decimal::from(100_000_000));
        assert_eq!(
            costly.cost(q("100000000")).unwrap().value(),
            Decimal::from(500_000_000_000_i64)
        );
        assert_eq!(
            costly.cost(q("100000000.5")),
            Err(CostError::TooLarge(Decimal::from(100_000_000)))
        );
        let most = action("1000000000000");
        assert_eq!(most.max_quantity(), Decimal::ONE);
        assert_eq!(
            most.cost(q("1")).unwrap().value(),
            max_credits_per_request()
        );
    }
}
