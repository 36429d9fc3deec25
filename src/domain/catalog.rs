//! The product catalog: features, priced actions, plans and top-up packs. Built once from the
//! validated config and trusted from then on.

use super::Timestamp;
use super::money::{Credits, Money, Price, Quantity, SCALE, max_credits_per_request};
use chrono::{Duration, Months};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
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
    /// What one unit costs us at the model vendor, in the accounting currency.
    pub vendor_cost: Option<Decimal>,
    /// Later prices and costs, each in force from its date, in date order (`[[actions.changes]]`).
    pub changes: Vec<ActionChange>,
}

/// A change to an action's credits or vendor cost from a date on: what was used before it keeps
/// the terms it was used at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionChange {
    pub from: Timestamp,
    /// New credits per unit; unchanged when absent.
    pub credits: Option<Credits>,
    /// New vendor cost per unit; unchanged when absent.
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
    /// The action as priced at `at`: its credits and vendor cost after every change in force by
    /// then.
    pub fn at(&self, at: Timestamp) -> Action {
        let mut priced = Action {
            changes: Vec::new(),
            ..self.clone()
        };
        for change in self.changes.iter().take_while(|c| c.from <= at) {
            if let Some(credits) = change.credits {
                priced.credits = credits;
            }
            if let Some(cost) = change.vendor_cost {
                priced.vendor_cost = Some(cost);
            }
        }
        priced
    }

    /// What `quantity` units cost at the vendor: quantity × cost per unit, rounded half away
    /// from zero to six places; none when the action has no vendor cost.
    pub fn vendor_cost_of(&self, quantity: Quantity) -> Option<Money> {
        self.vendor_cost
            .map(|cost| cost_to_six_places(cost * quantity.value()))
    }

    /// What `credits` of the action cost at the vendor, when only the credits are known (a
    /// capture that named credits): credits / credits per unit × cost per unit, rounded as
    /// [`Self::vendor_cost_of`].
    pub fn vendor_cost_of_credits(&self, credits: Credits) -> Option<Money> {
        let per_unit = self.credits.value();
        self.vendor_cost
            .and_then(|cost| (credits.value() * cost).checked_div(per_unit))
            .map(cost_to_six_places)
    }

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

/// Money to six places, half away from zero: the scale vendor costs are kept at.
fn cost_to_six_places(amount: Decimal) -> Money {
    Money::new(amount.round_dp_with_strategy(SCALE, RoundingStrategy::MidpointAwayFromZero))
        .expect("rounded to the money scale")
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

/// How often a plan's credits are granted (`[[plans]] credits_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditsInterval {
    Day,
    Week,
    #[default]
    Month,
    Year,
    /// Each billing period of the plan's Stripe price; a month outside Stripe.
    BillingPeriod,
}

impl CreditsInterval {
    pub const ALL: [CreditsInterval; 5] = [
        CreditsInterval::Day,
        CreditsInterval::Week,
        CreditsInterval::Month,
        CreditsInterval::Year,
        CreditsInterval::BillingPeriod,
    ];

    pub fn parse(text: &str) -> Option<CreditsInterval> {
        CreditsInterval::ALL
            .into_iter()
            .find(|i| i.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CreditsInterval::Day => "day",
            CreditsInterval::Week => "week",
            CreditsInterval::Month => "month",
            CreditsInterval::Year => "year",
            CreditsInterval::BillingPeriod => "billing_period",
        }
    }

    /// The interval of a cycle outside Stripe, where there is no billing period: a month.
    pub fn outside_stripe(self) -> CreditsInterval {
        match self {
            CreditsInterval::BillingPeriod => CreditsInterval::Month,
            other => other,
        }
    }

    /// The start of period `k` of a cycle anchored at `anchor` (period 0 starts at the anchor).
    /// Months and years are calendar months from the anchor, as Stripe counts them (the 31st
    /// gives the last day of a shorter month); `None` past the representable range.
    pub fn boundary(self, anchor: Timestamp, k: u32) -> Option<Timestamp> {
        match self.outside_stripe() {
            CreditsInterval::Day => anchor.checked_add_signed(Duration::try_days(i64::from(k))?),
            CreditsInterval::Week => anchor.checked_add_signed(Duration::try_weeks(i64::from(k))?),
            CreditsInterval::Month => anchor.checked_add_months(Months::new(k)),
            CreditsInterval::Year => anchor.checked_add_months(Months::new(k.checked_mul(12)?)),
            CreditsInterval::BillingPeriod => unreachable!("a month outside Stripe"),
        }
    }

    /// The credit periods a paid billing period `[start, end)` holds: one for `billing_period`,
    /// else one per interval counted from `start`, the last ending at `end`. A piece shorter
    /// than [`SHORTEST_PIECE_DAYS`] joins the one before it (Stripe keeps a month's anchor day,
    /// so 28 Feb to 31 Mar is one month), and there are never more than [`MAX_CREDIT_PERIODS`].
    pub fn periods_within(self, start: Timestamp, end: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        if self == CreditsInterval::BillingPeriod || end <= start {
            return vec![(start, end)];
        }
        let last_cut = end - Duration::days(SHORTEST_PIECE_DAYS);
        let mut cuts = vec![start];
        for k in 1..MAX_CREDIT_PERIODS {
            match self.boundary(start, k) {
                Some(cut) if cut < last_cut => cuts.push(cut),
                _ => break,
            }
        }
        cuts.push(end);
        cuts.windows(2).map(|w| (w[0], w[1])).collect()
    }
}

/// A piece of a billing period shorter than this many days is not a credit period of its own.
pub const SHORTEST_PIECE_DAYS: i64 = 4;

/// The most credit periods one paid billing period is split into (three years of months).
pub const MAX_CREDIT_PERIODS: u32 = 36;

#[derive(Debug, Clone)]
pub struct Plan {
    pub id: String,
    pub stripe_prices: Vec<String>,
    /// Per credit period; per seat when `per_seat`.
    pub credits: Credits,
    /// How often `credits` are granted (`credits_interval`).
    pub credits_interval: CreditsInterval,
    pub per_seat: bool,
    pub features: Vec<String>,
    pub rollover_max: Credits,
    pub overage: Overage,
    pub platform_share: Decimal,
    pub breakage: Breakage,
    pub priority: i32,
    /// Its own low-balance thresholds, when it has any.
    pub low_balance: Option<super::thresholds::LowBalance>,
    /// The Stripe meter its billed overage is reported to (`bill` only).
    pub overage_meter: Option<OverageMeter>,
    /// Credits a Stripe subscription starting on a trial gets instead of its $0 invoice's
    /// allowance, once per customer and plan (README, Credit cycles).
    pub trial_credits: Option<Credits>,
}

#[cfg(test)]
impl Plan {
    /// A plan for unit tests: no credits, no prices, no features, overage blocked.
    pub fn bare(id: &str) -> Plan {
        Plan {
            id: id.into(),
            stripe_prices: vec![],
            credits: Credits::ZERO,
            credits_interval: CreditsInterval::Month,
            per_seat: false,
            features: vec![],
            rollover_max: Credits::ZERO,
            overage: Overage::Block,
            platform_share: Decimal::ZERO,
            breakage: Breakage::Remote,
            priority: 10,
            low_balance: None,
            overage_meter: None,
            trial_credits: None,
        }
    }
}

/// Where a plan's billed overage goes in Stripe: the meter's event name, and the metered price
/// whose invoice lines pay for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverageMeter {
    pub event_name: String,
    pub stripe_price: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Pack {
    pub id: String,
    pub stripe_prices: Vec<String>,
    pub credits: Credits,
    pub price: Price,
    pub expires_after_days: Option<u32>,
    pub breakage: Breakage,
    pub priority: i32,
    /// Low-balance thresholds of customers whose newest live grant is this pack's, unless their
    /// plan or they set their own.
    pub low_balance: Option<super::thresholds::LowBalance>,
    /// Where a customer buys this pack (a Stripe payment link or checkout URL), shown on the
    /// customer's page (`top_up_url`).
    pub top_up_url: Option<String>,
}

impl Pack {
    /// The pack's top-up link for `customer`: its URL with `client_reference_id` naming the
    /// customer, which Stripe copies into the checkout session that grants the pack.
    pub fn top_up_link(&self, customer: &str) -> Option<String> {
        let url = self.top_up_url.as_deref()?;
        let separator = if url.contains('?') { '&' } else { '?' };
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_reference_id", customer)
            .finish();
        Some(format!("{url}{separator}{query}"))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub currency: String,
    pub features: BTreeMap<String, Feature>,
    pub actions: BTreeMap<String, Action>,
    pub plans: BTreeMap<String, Plan>,
    pub packs: BTreeMap<String, Pack>,
    /// The plan of every customer that has no other (`[customers] default_plan`).
    pub default_plan: Option<String>,
    /// When balances are low and grants about to expire (`[alerts]`).
    pub alerts: super::thresholds::AlertRule,
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

    /// The action as priced at `at` (see [`Action::at`]).
    pub fn action_at(&self, id: &str, at: Timestamp) -> Option<Action> {
        self.actions.get(id).map(|a| a.at(at))
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

    /// The plan whose billed overage a Stripe (metered) price charges for.
    pub fn plan_for_overage_price(&self, price: &str) -> Option<&Plan> {
        self.plans.values().find(|p| {
            p.overage_meter
                .as_ref()
                .and_then(|m| m.stripe_price.as_deref())
                == Some(price)
        })
    }

    /// The pack a Stripe price belongs to.
    pub fn pack_for_price(&self, price: &str) -> Option<&Pack> {
        self.packs
            .values()
            .find(|p| p.stripe_prices.iter().any(|s| s == price))
    }

    /// The low-balance rule of a customer on plan `plan`, whose newest live pack is `pack`, with
    /// its own thresholds `own`: each level's thresholds replace the one below (see
    /// [`super::thresholds::AlertRule::for_customer`]).
    pub fn alert_rule(
        &self,
        plan: Option<&str>,
        pack: Option<&str>,
        own: Option<&super::thresholds::LowBalance>,
    ) -> super::thresholds::AlertRule {
        self.alerts.for_customer(
            pack.and_then(|p| self.packs.get(p))
                .and_then(|p| p.low_balance.as_ref()),
            plan.and_then(|p| self.plans.get(p))
                .and_then(|p| p.low_balance.as_ref()),
            own,
        )
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

    #[test]
    fn a_top_up_link_names_the_customer_encoded() {
        let mut pack = Pack {
            id: "p".into(),
            stripe_prices: vec![],
            credits: Credits::new(Decimal::TEN).unwrap(),
            price: Price::new(Decimal::ONE, "usd").unwrap(),
            expires_after_days: None,
            breakage: Breakage::Remote,
            priority: 0,
            low_balance: None,
            top_up_url: None,
        };
        assert_eq!(pack.top_up_link("acme"), None);
        pack.top_up_url = Some("https://buy.stripe.com/test_x".into());
        assert_eq!(
            pack.top_up_link("a&b c").as_deref(),
            Some("https://buy.stripe.com/test_x?client_reference_id=a%26b+c")
        );
        pack.top_up_url = Some("https://pay.example.com/c?plan=1".into());
        assert_eq!(
            pack.top_up_link("acme").as_deref(),
            Some("https://pay.example.com/c?plan=1&client_reference_id=acme")
        );
    }
    use std::str::FromStr;

    fn ymd(y: i32, m: u32, d: u32) -> Timestamp {
        use chrono::TimeZone;
        chrono::Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).unwrap()
    }

    #[test]
    fn a_paid_year_holds_twelve_monthly_credit_periods_and_a_month_holds_one() {
        let year = CreditsInterval::Month.periods_within(ymd(2027, 1, 31), ymd(2028, 1, 31));
        assert_eq!(year.len(), 12);
        assert_eq!(year[0], (ymd(2027, 1, 31), ymd(2027, 2, 28)));
        assert_eq!(year[1], (ymd(2027, 2, 28), ymd(2027, 3, 31)));
        assert_eq!(year[11], (ymd(2027, 12, 31), ymd(2028, 1, 31)));
        assert!(year.windows(2).all(|w| w[0].1 == w[1].0), "contiguous");
        // Stripe keeps the anchor day: 28 Feb to 31 Mar is one month, not a month and 3 days.
        let month = CreditsInterval::Month.periods_within(ymd(2027, 2, 28), ymd(2027, 3, 31));
        assert_eq!(month, vec![(ymd(2027, 2, 28), ymd(2027, 3, 31))]);
        let billing =
            CreditsInterval::BillingPeriod.periods_within(ymd(2027, 1, 1), ymd(2028, 1, 1));
        assert_eq!(billing.len(), 1);
        // A limit on everything: a long period is never cut into more than the cap.
        let long = CreditsInterval::Month.periods_within(ymd(2027, 1, 1), ymd(2037, 1, 1));
        assert_eq!(long.len(), MAX_CREDIT_PERIODS as usize);
        assert_eq!(long.last().unwrap().1, ymd(2037, 1, 1));
    }

    fn action(credits: &str) -> Action {
        Action {
            id: "a".into(),
            feature: "f".into(),
            credits: Credits::new(Decimal::from_str(credits).unwrap()).unwrap(),
            vendor_cost: None,
            changes: Vec::new(),
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

    fn day(d: u32) -> Timestamp {
        use chrono::TimeZone;
        chrono::Utc.with_ymd_and_hms(2027, 1, d, 0, 0, 0).unwrap()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn changes_apply_from_their_date_and_leave_the_rest() {
        let mut chat = action("2");
        chat.vendor_cost = Some(dec("0.01"));
        chat.changes = vec![
            ActionChange {
                from: day(10),
                credits: None,
                vendor_cost: Some(dec("0.008")),
            },
            ActionChange {
                from: day(20),
                credits: Some(Credits::new(dec("3")).unwrap()),
                vendor_cost: None,
            },
        ];
        let before = chat.at(day(9));
        assert_eq!(
            (before.credits.value(), before.vendor_cost),
            (dec("2"), Some(dec("0.01")))
        );
        // The first change's own instant is under it.
        let cheaper = chat.at(day(10));
        assert_eq!(
            (cheaper.credits.value(), cheaper.vendor_cost),
            (dec("2"), Some(dec("0.008")))
        );
        // The second changes only the credits: the cost of the first stays.
        let dearer = chat.at(day(25));
        assert_eq!(
            (dearer.credits.value(), dearer.vendor_cost),
            (dec("3"), Some(dec("0.008")))
        );
        assert!(dearer.changes.is_empty());
    }

    #[test]
    fn vendor_cost_is_exact_to_six_places() {
        let money = |s: &str| s.parse::<Money>().unwrap();
        let mut speech = action("0.5");
        assert_eq!(speech.vendor_cost_of(q("10")), None);
        speech.vendor_cost = Some(dec("0.000015"));
        assert_eq!(speech.vendor_cost_of(q("3")), Some(money("0.000045")));
        // 0.0000015 × 1 rounds half away from zero.
        speech.vendor_cost = Some(dec("0.0000015"));
        assert_eq!(speech.vendor_cost_of(q("1")), Some(money("0.000002")));
        // Credits alone: 1 credit is 2 units at 0.5 per unit.
        speech.vendor_cost = Some(dec("0.000015"));
        assert_eq!(
            speech.vendor_cost_of_credits(Credits::new(dec("1")).unwrap()),
            Some(money("0.00003"))
        );
        // 1 credit of an action at 3 credits per unit and 0.01 per unit: 0.00333…, rounded.
        let mut third = action("3");
        third.vendor_cost = Some(dec("0.01"));
        assert_eq!(
            third.vendor_cost_of_credits(Credits::new(dec("1")).unwrap()),
            Some(money("0.003333"))
        );
    }
}
