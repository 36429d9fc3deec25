//! Cost and margin (README, Cost and margin): what each usage or capture consumed and what it cost
//! at the model vendor, recorded when it happens at the terms in force then; and the margin
//! report's rule, which sets the journal's usage revenue beside those costs.

use super::Timestamp;
use super::catalog::{Action, Plan};
use super::customer::Subject;
use super::money::{Credits, Money, Quantity};
use std::collections::BTreeMap;

/// One usage or capture that used credits: what the margin report sets its revenue against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumption {
    /// The hold captured; none for a one-shot usage (its id is the command's source).
    pub hold_id: Option<String>,
    pub action: String,
    pub feature: String,
    /// The plan in force when the credits were used.
    pub plan: Option<String>,
    /// Units used, when known (a capture may name credits only).
    pub quantity: Option<Quantity>,
    pub credits: Credits,
    /// What it cost at the vendor, in the accounting currency; none when the action has no cost.
    pub vendor_cost: Option<Money>,
    pub at: Timestamp,
    /// Who inside the customer used it.
    pub subject: Option<Subject>,
}

impl Consumption {
    /// `credits` of `action` (priced at the terms in force when it was used), `quantity` units
    /// of it when known, under `plan`, by `subject`.
    pub fn of(
        action: &Action,
        quantity: Option<Quantity>,
        credits: Credits,
        plan: Option<&Plan>,
        (hold_id, subject): (Option<&str>, Option<&Subject>),
        at: Timestamp,
    ) -> Consumption {
        let vendor_cost = match quantity {
            Some(q) => action.vendor_cost_of(q),
            None => action.vendor_cost_of_credits(credits),
        };
        Consumption {
            hold_id: hold_id.map(str::to_owned),
            action: action.id.clone(),
            feature: action.feature.clone(),
            plan: plan.map(|p| p.id.clone()),
            quantity,
            credits,
            vendor_cost,
            at,
            subject: subject.cloned(),
        }
    }
}

/// What the margin report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarginBy {
    Action,
    Feature,
    Plan,
    Customer,
    Subject,
}

impl MarginBy {
    pub fn as_str(self) -> &'static str {
        match self {
            MarginBy::Action => "action",
            MarginBy::Feature => "feature",
            MarginBy::Plan => "plan",
            MarginBy::Customer => "customer",
            MarginBy::Subject => "subject",
        }
    }

    pub fn parse(text: &str) -> Option<MarginBy> {
        [
            MarginBy::Action,
            MarginBy::Feature,
            MarginBy::Plan,
            MarginBy::Customer,
            MarginBy::Subject,
        ]
        .into_iter()
        .find(|b| b.as_str() == text)
    }
}

/// Which row of a month a sum belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Group {
    /// A group: an action, a feature, a plan or a customer.
    Of(String),
    /// Consumption with no value to group by (no plan was in force).
    Without,
    /// Usage revenue the journal recognized for no recorded consumption: an overdraft paid off by
    /// a later grant, a changed breakage estimate, or consumption recorded before costs were.
    Unattributed,
}

/// The journal's usage revenue of one month, currency and group: from grants consumed
/// (`usage`) and from billed overage (`overage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevenueSum {
    pub month: String,
    pub currency: String,
    pub group: Group,
    pub usage: Money,
    pub overage: Money,
}

/// What the consumptions of one month and group used and cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostSum {
    pub month: String,
    pub group: Group,
    pub credits: Credits,
    pub vendor_cost: Money,
    /// Credits of actions with no vendor cost: their cost is not in `vendor_cost`.
    pub uncosted_credits: Credits,
}

/// One row of the margin report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarginRow {
    pub month: String,
    pub currency: String,
    pub group: Group,
    pub credits: Credits,
    pub uncosted_credits: Credits,
    /// Usage revenue recognized from the grants consumed, at their price per credit.
    pub revenue: Money,
    /// Overage billed in arrears.
    pub overage: Money,
    pub vendor_cost: Money,
    /// revenue + overage - vendor_cost.
    pub margin: Money,
}

/// The margin report: each month's revenue and cost side by side per group. Revenue is the
/// journal's, line for line, so a month's rows sum to its usage revenue; costs are in the
/// accounting currency (`currency`), and a group with revenue in another currency gets a row of
/// its own. Rows come in month, currency and group order.
pub fn margin_rows(
    revenue: Vec<RevenueSum>,
    costs: Vec<CostSum>,
    currency: &str,
) -> Vec<MarginRow> {
    type Rows = BTreeMap<(String, String, Group), MarginRow>;
    fn row<'r>(
        rows: &'r mut Rows,
        month: &str,
        currency: &str,
        group: &Group,
    ) -> &'r mut MarginRow {
        rows.entry((month.to_owned(), currency.to_owned(), group.clone()))
            .or_insert_with(|| MarginRow {
                month: month.to_owned(),
                currency: currency.to_owned(),
                group: group.clone(),
                credits: Credits::ZERO,
                uncosted_credits: Credits::ZERO,
                revenue: Money::ZERO,
                overage: Money::ZERO,
                vendor_cost: Money::ZERO,
                margin: Money::ZERO,
            })
    }
    let mut rows = Rows::new();
    for r in revenue {
        let target = row(&mut rows, &r.month, &r.currency, &r.group);
        target.revenue += r.usage;
        target.overage += r.overage;
    }
    for c in costs {
        let target = row(&mut rows, &c.month, currency, &c.group);
        target.credits += c.credits;
        target.uncosted_credits += c.uncosted_credits;
        target.vendor_cost += c.vendor_cost;
    }
    rows.into_values()
        .map(|mut r| {
            r.margin = r.revenue + r.overage - r.vendor_cost;
            r
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Credits or money, whichever the place asks for.
    fn c<T: std::str::FromStr>(text: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        text.parse().unwrap()
    }

    fn action(vendor_cost: Option<&str>) -> Action {
        Action {
            id: "chat.request".into(),
            feature: "chat".into(),
            credits: c("2"),
            vendor_cost: vendor_cost.map(c),
            changes: Vec::new(),
        }
    }

    #[test]
    fn a_consumption_costs_its_quantity_or_its_credits() {
        let at = chrono::DateTime::UNIX_EPOCH;
        let three = Quantity::try_from(c::<rust_decimal::Decimal>("3")).unwrap();
        let used = Consumption::of(
            &action(Some("0.01")),
            Some(three),
            c("6"),
            None,
            (None, None),
            at,
        );
        assert_eq!(used.vendor_cost, Some(c("0.03")));
        assert_eq!(
            (used.feature.as_str(), used.plan.as_deref()),
            ("chat", None)
        );
        // A capture that named credits: 5 credits are 2.5 units.
        let captured = Consumption::of(
            &action(Some("0.01")),
            None,
            c("5"),
            None,
            (Some("h"), None),
            at,
        );
        assert_eq!(captured.vendor_cost, Some(c("0.025")));
        assert_eq!(captured.hold_id.as_deref(), Some("h"));
        let free = Consumption::of(&action(None), Some(three), c("6"), None, (None, None), at);
        assert_eq!(free.vendor_cost, None);
    }

    #[test]
    fn rows_set_revenue_beside_cost_and_keep_the_unattributed() {
        let chat = Group::Of("chat".into());
        let rows = margin_rows(
            vec![
                RevenueSum {
                    month: "2027-01".into(),
                    currency: "usd".into(),
                    group: chat.clone(),
                    usage: c("1.25"),
                    overage: c("0.5"),
                },
                RevenueSum {
                    month: "2027-01".into(),
                    currency: "usd".into(),
                    group: Group::Unattributed,
                    usage: c("0.10"),
                    overage: Money::ZERO,
                },
            ],
            vec![
                CostSum {
                    month: "2027-01".into(),
                    group: chat.clone(),
                    credits: c("30"),
                    vendor_cost: c("0.301"),
                    uncosted_credits: c("5"),
                },
                CostSum {
                    month: "2027-02".into(),
                    group: Group::Without,
                    credits: c("1"),
                    vendor_cost: c("0.002"),
                    uncosted_credits: Credits::ZERO,
                },
            ],
            "usd",
        );
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].group, chat);
        assert_eq!(rows[0].margin, c("1.449"));
        assert_eq!(rows[0].uncosted_credits, c("5"));
        assert_eq!(rows[1].group, Group::Unattributed);
        assert_eq!((rows[1].revenue, rows[1].margin), (c("0.10"), c("0.10")));
        // A month with cost and no revenue: the margin is the loss.
        assert_eq!(
            (rows[2].month.as_str(), rows[2].margin),
            ("2027-02", c("-0.002"))
        );
        // The month's revenue is the journal's, whatever the grouping.
        let january: Money = rows
            .iter()
            .filter(|r| r.month == "2027-01")
            .map(|r| r.revenue)
            .sum();
        assert_eq!(january, c("1.35"));
    }
}
