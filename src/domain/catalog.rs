//! The product catalog: features, priced actions, plans and top-up packs. Built once from the
//! validated config and trusted from then on.

use super::money::{AmountError, Credits, Money, Quantity};
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

impl Action {
    /// Credits for `quantity` units. Refused, not rounded, when the product needs more than six
    /// decimal places: rounding happens only in revenue postings (README, The ledger).
    pub fn cost(&self, quantity: Quantity) -> Result<Credits, AmountError> {
        let credits = Credits::new(self.credits.value() * quantity.value())?;
        if credits.value() > super::money::max_credits_per_request() {
            return Err(AmountError::TooLarge(
                super::money::max_credits_per_request(),
            ));
        }
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
