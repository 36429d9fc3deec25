//! The gate's one decision (README, The ledger): is this customer entitled to this action now, under
//! which overage rule, and what does the book do. `check`, `authorize`, `capture`, `void`,
//! `usage` and the customer view all decide here; handlers parse and translate, the store loads
//! and writes.

use super::Timestamp;
use super::catalog::{Action, Catalog, CostError, Feature, Overage, Plan};
use super::customer::Subject;
use super::ledger::{Book, Rejection, Usage};
use super::limits::{Exceeded, Limits};
use super::margin::Consumption;
use super::money::{Credits, Quantity};
use super::overrides::Overrides;

/// What the gate knows of a customer besides its credits, as stored on the customer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    pub plan_id: Option<String>,
    /// Frozen while a dispute is open.
    pub frozen: bool,
    /// Since when the customer's subscription is past due, if it is.
    pub past_due_since: Option<Timestamp>,
    /// End of the current subscription period.
    pub renews_at: Option<Timestamp>,
    /// Spend limits and what was spent in their windows.
    pub limits: Limits,
    /// Features switched on or off for this customer.
    pub overrides: Overrides,
    /// The customer's own low-balance thresholds, when it has any.
    pub low_balance: Option<super::alerts::LowBalance>,
    /// The customer's auto top-up and where it stands.
    pub auto_topup: super::autotopup::AutoTopup,
    /// The credit cycle of its plan outside Stripe, if it has one.
    pub cycle: Option<super::cycle::Cycle>,
    /// The customer whose shared grants it spends after its own (README, Organizations).
    pub parent: Option<super::customer::CustomerId>,
}

/// The rules of the gate that come from configuration rather than from the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long a past-due subscription keeps its plan (`[stripe] past_due_grace_seconds`).
    pub past_due_grace_seconds: u64,
}

impl Default for Policy {
    /// Three days of grace.
    fn default() -> Self {
        Policy {
            past_due_grace_seconds: 3 * 86_400,
        }
    }
}

impl Standing {
    /// The plan whose features and overage rule apply at `now`: none once a past-due
    /// subscription has outlived its grace.
    pub fn plan_in_force(&self, now: Timestamp, policy: Policy) -> Option<&str> {
        let grace = i64::try_from(policy.past_due_grace_seconds)
            .ok()
            .and_then(chrono::Duration::try_seconds);
        match (self.past_due_since, grace) {
            (Some(since), Some(grace)) if now >= since + grace => None,
            // A grace too long to represent never runs out.
            _ => self.plan_id.as_deref(),
        }
    }
}

/// Why the gate refuses. Nothing is written when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the customer's plan does not include the feature of action {0:?}")]
    FeatureNotEntitled(String),
    #[error("the customer is frozen by an open dispute")]
    CustomerFrozen,
    /// A hold names an action the catalog no longer has.
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    /// The quantity has no exact cost within the limits (too many decimals, too large).
    #[error("{field} {error}")]
    Cost {
        field: &'static str,
        error: CostError,
    },
    /// A hard spend limit would be passed.
    #[error("the customer's {} spend limit of {} credits would be passed", .0.limit.period.as_str(), .0.limit.credits)]
    SpendLimitReached(Box<Exceeded>),
    /// A parent that would make a cycle, a fourth level, or that does not exist.
    #[error(transparent)]
    Parent(super::organization::ParentRefusal),
    #[error(transparent)]
    Book(#[from] Rejection),
}

/// What a customer may do at `now`: the plan in force, its features and its overage rule.
#[derive(Debug, Clone)]
pub struct Terms<'c> {
    pub plan: Option<&'c Plan>,
    pub overage: Overage,
    catalog: &'c Catalog,
    frozen: bool,
    overrides: &'c Overrides,
    now: Timestamp,
}

impl<'c> Terms<'c> {
    pub fn of(
        catalog: &'c Catalog,
        standing: &'c Standing,
        now: Timestamp,
        policy: Policy,
    ) -> Self {
        // A customer with no plan in force is on the default plan, if there is one.
        let plan = standing
            .plan_in_force(now, policy)
            .or(catalog.default_plan.as_deref())
            .and_then(|id| catalog.plan(id));
        Terms {
            plan,
            // The customer's own rule first, then its plan's; no plan blocks.
            overage: standing
                .overrides
                .overage(now)
                .or(plan.map(|p| &p.overage))
                .cloned()
                .unwrap_or(Overage::Block),
            catalog,
            frozen: standing.frozen,
            overrides: &standing.overrides,
            now,
        }
    }

    /// An override in force decides; otherwise a `plan_only` feature needs the plan in force to
    /// list it, and any other is open to all.
    pub fn includes(&self, feature: &Feature) -> bool {
        self.overrides
            .decides(&feature.id, self.now)
            .unwrap_or_else(|| {
                !feature.plan_only || self.plan.is_some_and(|p| p.features.contains(&feature.id))
            })
    }

    /// The features the customer may use now, in catalog order.
    pub fn features(&self) -> impl Iterator<Item = &'c Feature> + '_ {
        self.catalog.features.values().filter(|f| self.includes(f))
    }

    /// `action` as this customer pays for it: at its own price when an override gives one.
    pub fn priced(&self, action: &Action) -> Action {
        match self.overrides.price(&action.id, self.now) {
            Some(credits) => Action {
                credits,
                ..action.clone()
            },
            None => action.clone(),
        }
    }

    /// What `quantity` units of `action` cost this customer, exactly.
    pub fn cost(&self, action: &Action, quantity: Quantity) -> Result<Credits, Refusal> {
        self.priced(action)
            .cost(quantity)
            .map_err(|error| Refusal::Cost {
                field: "quantity",
                error,
            })
    }

    /// May the customer spend on `action` at all (credits aside)?
    pub fn entitle(&self, action: &Action) -> Result<(), Refusal> {
        if self.frozen {
            return Err(Refusal::CustomerFrozen);
        }
        let feature = self
            .catalog
            .features
            .get(&action.feature)
            .expect("config validation ties every action to a known feature");
        if self.includes(feature) {
            Ok(())
        } else {
            Err(Refusal::FeatureNotEntitled(action.id.clone()))
        }
    }
}

/// What a capture says was actually used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actual {
    /// Nothing: the whole hold is released.
    Nothing,
    /// Units of the held action.
    Quantity(Quantity),
    Credits(Credits),
}

/// One gate command, parsed at the edge.
#[derive(Debug, Clone)]
pub enum Spend<'a> {
    /// Would an authorization of `quantity` units of `action` pass? Decided on a copy; nothing is
    /// kept. Each spend on an action is priced here, at the customer's terms.
    Check {
        action: &'a Action,
        quantity: Quantity,
        subject: Option<&'a Subject>,
    },
    Authorize {
        action: &'a Action,
        quantity: Quantity,
        subject: Option<&'a Subject>,
        hold_id: &'a str,
        expires_at: Timestamp,
    },
    Capture {
        hold_id: &'a str,
        actual: Actual,
    },
    Void {
        hold_id: &'a str,
    },
    /// A one-shot debit, spent now against what is available now, dated `occurred_at`.
    Usage {
        action: &'a Action,
        quantity: Quantity,
        subject: Option<&'a Subject>,
        occurred_at: Timestamp,
    },
}

/// The gate's answer: the credits the command moved and what is available after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decided {
    pub credits: Credits,
    pub available: Credits,
}

/// The gate's one decision. Runs on the customer's book and standing as loaded under its lock
/// (or on copies, for `check`) after everything due at `now` was settled. Entitlement first, then
/// the customer's hard spend limits (held credits count), then credits. On refusal the book and
/// standing may be partly changed: the caller discards them.
pub fn decide(
    catalog: &Catalog,
    standing: &mut Standing,
    policy: Policy,
    book: &mut Book,
    spend: &Spend<'_>,
    now: Timestamp,
) -> Result<Decided, Refusal> {
    let mut limits = std::mem::take(&mut standing.limits);
    let decided = decide_within(catalog, standing, policy, &mut limits, book, spend, now);
    standing.limits = limits;
    decided
}

/// The feature an action's spend counts towards in spend limits.
fn feature_of(action: &Action) -> Option<&str> {
    Some(action.feature.as_str())
}

// Long: the gate's one decision (entitlement, price, limits, overage, then the hold or the debit), kept whole so its checks read in the order they apply.
fn decide_within(
    catalog: &Catalog,
    standing: &Standing,
    policy: Policy,
    limits: &mut Limits,
    book: &mut Book,
    spend: &Spend<'_>,
    now: Timestamp,
) -> Result<Decided, Refusal> {
    let terms = Terms::of(catalog, standing, now, policy);
    let usage = |action: &Action, quantity: Quantity, subject: Option<&Subject>| Usage {
        action: Some(action.id.clone()),
        quantity: Some(quantity.to_string()),
        subject: subject.cloned(),
    };
    let admit = |limits: &mut Limits, book: &Book, spender, credits| {
        limits
            .admit(book, catalog, spender, credits, now)
            .map_err(Refusal::SpendLimitReached)
    };
    let credits = match *spend {
        Spend::Check {
            action,
            quantity,
            subject,
        } => {
            terms.entitle(action)?;
            let credits = terms.cost(action, quantity)?;
            admit(limits, book, (feature_of(action), subject), credits)?;
            book.authorize(
                "check",
                &usage(action, quantity, subject),
                credits,
                &terms.overage,
                now,
                now,
            )?;
            credits
        }
        Spend::Authorize {
            action,
            quantity,
            subject,
            hold_id,
            expires_at,
        } => {
            terms.entitle(action)?;
            let credits = terms.cost(action, quantity)?;
            admit(limits, book, (feature_of(action), subject), credits)?;
            book.authorize(
                hold_id,
                &usage(action, quantity, subject),
                credits,
                &terms.overage,
                expires_at,
                now,
            )?;
            credits
        }
        Spend::Usage {
            action,
            quantity,
            subject,
            occurred_at,
        } => {
            terms.entitle(action)?;
            let credits = terms.cost(action, quantity)?;
            admit(limits, book, (feature_of(action), subject), credits)?;
            book.debit(
                credits,
                &usage(action, quantity, subject),
                &terms.overage,
                occurred_at,
            )?;
            limits.record((feature_of(action), subject), credits, now);
            book.consumed.push(Consumption::of(
                action,
                Some(quantity),
                credits,
                terms.plan,
                (None, subject),
                occurred_at,
            ));
            credits
        }
        Spend::Capture { hold_id, actual } => {
            let hold = book.hold(hold_id).ok_or(Rejection::HoldNotFound)?;
            let held = hold.credits;
            let subject = hold.subject.clone();
            let feature = catalog.action(&hold.action).map(|a| a.feature.as_str());
            // Priced at the terms in force when the hold was made: the catalog's then, at the
            // customer's price then (what the hold's credits say a unit cost).
            let action = catalog
                .action_at(&hold.action, hold.created_at)
                .map(|action| match hold.credits_per_unit() {
                    Some(credits) => Action { credits, ..action },
                    None => action,
                });
            let (credits, quantity) = match actual {
                Actual::Nothing => (Credits::ZERO, None),
                Actual::Credits(c) => (c, None),
                Actual::Quantity(q) => {
                    let action = action
                        .as_ref()
                        .ok_or_else(|| Refusal::UnknownAction(hold.action.clone()))?;
                    let credits = action.cost(q).map_err(|error| Refusal::Cost {
                        field: "quantity",
                        error,
                    })?;
                    (credits, Some(q))
                }
            };
            // The entitlement was decided when the hold was made: an approved hold can always
            // be captured up to its amount. The excess follows the overage rule in force now,
            // and may not pass a hard spend limit (the hold, now captured, no longer counts as
            // held).
            let described = match actual {
                Actual::Nothing => Some("0".to_owned()),
                _ => quantity.map(|q| q.to_string()),
            };
            book.capture(hold_id, credits, described, &terms.overage, now)?;
            if credits > held {
                admit(limits, book, (feature, subject.as_ref()), credits)?;
            }
            limits.record((feature, subject.as_ref()), credits, now);
            // An action since removed from the catalog has no feature or cost to record: its
            // revenue is reported unattributed.
            if let Some(action) = action.filter(|_| credits.is_positive()) {
                book.consumed.push(Consumption::of(
                    &action,
                    quantity,
                    credits,
                    terms.plan,
                    (Some(hold_id), subject.as_ref()),
                    now,
                ));
            }
            credits
        }
        Spend::Void { hold_id } => {
            book.void(hold_id, now)?;
            Credits::ZERO
        }
    };
    Ok(Decided {
        credits,
        available: book.available(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Overage;
    use crate::domain::customer::CustomerId;
    use crate::domain::ledger::{Grant, HoldStatus};
    use chrono::{TimeZone, Utc};
    use rust_decimal::Decimal;
    use std::collections::BTreeMap;

    fn credits(n: i64) -> Credits {
        Credits::new(Decimal::from(n)).unwrap()
    }

    fn at(minute: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 3, 1, 0, minute, 0).unwrap()
    }

    const POLICY: Policy = Policy {
        past_due_grace_seconds: 3600,
    };

    fn catalog() -> Catalog {
        let mut features = BTreeMap::new();
        for (id, plan_only) in [("chat", false), ("agents", true)] {
            features.insert(
                id.to_owned(),
                Feature {
                    id: id.into(),
                    plan_only,
                },
            );
        }
        let mut actions = BTreeMap::new();
        for (id, feature, cost) in [("chat.request", "chat", 1), ("agent.run", "agents", 10)] {
            actions.insert(
                id.to_owned(),
                Action {
                    id: id.into(),
                    feature: feature.into(),
                    credits: credits(cost),
                    vendor_cost: None,
                    changes: Vec::new(),
                },
            );
        }
        let mut plans = BTreeMap::new();
        plans.insert(
            "pro".to_owned(),
            Plan {
                credits: credits(100),
                features: vec!["agents".into()],
                overage: Overage::Allow { limit: credits(50) },
                ..Plan::bare("pro")
            },
        );
        Catalog {
            currency: "usd".into(),
            features,
            actions,
            plans,
            packs: BTreeMap::new(),
            ..Default::default()
        }
    }

    fn book(free: i64) -> Book {
        let mut book = Book::new(CustomerId::known("c"));
        book.add_grant(
            Grant::promotional(
                "g1",
                credits(free),
                (crate::domain::ledger::GrantSource::Test, "test".into()),
                at(0),
            ),
            at(0),
        );
        book
    }

    fn pro() -> Standing {
        Standing {
            plan_id: Some("pro".into()),
            ..Standing::default()
        }
    }

    fn usage<'a>(catalog: &'a Catalog, action: &str, n: i64) -> Spend<'a> {
        let action = catalog.action(action).unwrap();
        let quantity = Quantity::try_from(Decimal::from(n)).unwrap();
        Spend::Usage {
            subject: None,
            action,
            quantity,
            occurred_at: at(1),
        }
    }

    #[test]
    fn plan_only_features_need_the_plan_in_force() {
        let catalog = catalog();
        let spend = usage(&catalog, "agent.run", 1);
        let refused = decide(
            &catalog,
            &mut Standing::default(),
            POLICY,
            &mut book(100),
            &spend,
            at(1),
        );
        assert_eq!(
            refused,
            Err(Refusal::FeatureNotEntitled("agent.run".into()))
        );
        let decided = decide(&catalog, &mut pro(), POLICY, &mut book(100), &spend, at(1)).unwrap();
        assert_eq!(decided.available, credits(90));
    }

    #[test]
    fn a_past_due_plan_lapses_after_its_grace_and_takes_its_overage_rule_with_it() {
        let catalog = catalog();
        let standing = Standing {
            past_due_since: Some(at(0)),
            ..pro()
        };
        let within = at(59);
        let after = at(0) + chrono::Duration::seconds(3600);
        assert_eq!(standing.plan_in_force(within, POLICY), Some("pro"));
        assert_eq!(standing.plan_in_force(after, POLICY), None);
        // Within the grace, `allow` lets the customer go 5 below zero.
        let spend = usage(&catalog, "chat.request", 15);
        let mut b = book(10);
        assert_eq!(
            decide(
                &catalog,
                &mut standing.clone(),
                POLICY,
                &mut b,
                &spend,
                within
            )
            .unwrap()
            .available,
            credits(-5)
        );
        // After it, the open feature still works but under `block`.
        let refused = decide(
            &catalog,
            &mut standing.clone(),
            POLICY,
            &mut book(10),
            &spend,
            after,
        );
        assert!(matches!(
            refused,
            Err(Refusal::Book(Rejection::InsufficientCredits { .. }))
        ));
        let terms = Terms::of(&catalog, &standing, after, POLICY);
        let features: Vec<&str> = terms.features().map(|f| f.id.as_str()).collect();
        assert_eq!(features, ["chat"]);
    }

    #[test]
    fn a_frozen_customer_is_refused_everything_but_resolving_its_holds() {
        let catalog = catalog();
        let mut b = book(10);
        let action = catalog.action("chat.request").unwrap();
        let quantity = Quantity::try_from(Decimal::ONE).unwrap();
        let hold = Spend::Authorize {
            subject: None,
            action,
            quantity,
            hold_id: "h1",
            expires_at: at(15),
        };
        decide(&catalog, &mut pro(), POLICY, &mut b, &hold, at(1)).unwrap();
        let frozen = Standing {
            frozen: true,
            ..pro()
        };
        assert_eq!(
            decide(
                &catalog,
                &mut frozen.clone(),
                POLICY,
                &mut b.clone(),
                &hold,
                at(2)
            ),
            Err(Refusal::CustomerFrozen)
        );
        let capture = Spend::Capture {
            hold_id: "h1",
            actual: Actual::Quantity(quantity),
        };
        let decided = decide(
            &catalog,
            &mut frozen.clone(),
            POLICY,
            &mut b,
            &capture,
            at(2),
        )
        .unwrap();
        assert_eq!(decided.credits, credits(1));
        assert_eq!(b.hold("h1").unwrap().status, HoldStatus::Captured);
    }

    #[test]
    fn a_capture_prices_its_quantity_at_the_held_action() {
        let catalog = catalog();
        let mut b = book(100);
        let action = catalog.action("agent.run").unwrap();
        let one = Quantity::try_from(Decimal::ONE).unwrap();
        let hold = Spend::Authorize {
            subject: None,
            action,
            quantity: one,
            hold_id: "h1",
            expires_at: at(15),
        };
        decide(&catalog, &mut pro(), POLICY, &mut b, &hold, at(1)).unwrap();
        let half = Quantity::try_from(Decimal::new(5, 1)).unwrap();
        let capture = Spend::Capture {
            hold_id: "h1",
            actual: Actual::Quantity(half),
        };
        let decided = decide(&catalog, &mut pro(), POLICY, &mut b, &capture, at(2)).unwrap();
        assert_eq!(decided.credits, credits(5));
        assert_eq!(decided.available, credits(95));
    }

    #[test]
    fn a_hard_limit_refuses_holds_usage_and_a_capture_past_its_hold() {
        use crate::domain::limits::{Limit, Mode, Period};
        let catalog = catalog();
        let mut standing = pro();
        standing.limits.replace(
            vec![Limit {
                members: Default::default(),
                period: Period::Day,
                feature: None,
                credits: credits(25),
                mode: Mode::Hard,
            }],
            &crate::domain::limits::SpentThisMonth::default(),
            &catalog,
            at(0),
        );
        let mut b = book(100);
        let action = catalog.action("agent.run").unwrap();
        let one = Quantity::try_from(Decimal::ONE).unwrap();
        let hold = |id| Spend::Authorize {
            subject: None,
            action,
            quantity: one,
            hold_id: id,
            expires_at: at(15),
        };
        decide(&catalog, &mut standing, POLICY, &mut b, &hold("h1"), at(1)).unwrap();
        decide(&catalog, &mut standing, POLICY, &mut b, &hold("h2"), at(1)).unwrap();
        // 20 held: a third hold of 10 would pass 25.
        let refused = decide(
            &catalog,
            &mut standing.clone(),
            POLICY,
            &mut b.clone(),
            &hold("h3"),
            at(1),
        );
        let Err(Refusal::SpendLimitReached(exceeded)) = refused else {
            panic!("expected a spend limit refusal, got {refused:?}");
        };
        assert_eq!(
            (exceeded.spent, exceeded.held),
            (Credits::ZERO, credits(20))
        );
        // A capture up to its hold always passes; past it, only within the cap.
        let capture = |id, c| Spend::Capture {
            hold_id: id,
            actual: Actual::Credits(credits(c)),
        };
        let refused = decide(
            &catalog,
            &mut standing.clone(),
            POLICY,
            &mut b.clone(),
            &capture("h1", 16),
            at(2),
        );
        assert!(matches!(refused, Err(Refusal::SpendLimitReached(_))));
        decide(
            &catalog,
            &mut standing,
            POLICY,
            &mut b,
            &capture("h1", 15),
            at(2),
        )
        .unwrap();
        let s = standing.limits.states(&b, &catalog, at(2));
        assert_eq!(
            (s[0].spent, s[0].held, s[0].remaining),
            (credits(15), credits(10), Credits::ZERO)
        );
        let usage = usage(&catalog, "chat.request", 1);
        assert!(matches!(
            decide(
                &catalog,
                &mut standing.clone(),
                POLICY,
                &mut b.clone(),
                &usage,
                at(3)
            ),
            Err(Refusal::SpendLimitReached(_))
        ));
        // Voiding the other hold frees its 10.
        decide(
            &catalog,
            &mut standing,
            POLICY,
            &mut b,
            &Spend::Void { hold_id: "h2" },
            at(3),
        )
        .unwrap();
        decide(&catalog, &mut standing, POLICY, &mut b, &usage, at(3)).unwrap();
    }

    #[test]
    fn an_override_opens_a_plan_only_feature_until_it_lapses_or_closes_an_open_one() {
        use crate::domain::overrides::{Change, Override};
        let catalog = catalog();
        let mut standing = Standing::default();
        let run = usage(&catalog, "agent.run", 1);
        let chat = usage(&catalog, "chat.request", 1);
        for (feature, enabled) in [("agents", true), ("chat", false)] {
            standing.overrides.set(Override {
                id: feature.into(),
                change: Change::Feature {
                    feature: feature.into(),
                    enabled,
                },
                until: Some(at(10)),
                reason: "trial".into(),
                actor: "key".into(),
                at: at(0),
            });
        }
        let decide_at = |spend: &Spend<'_>, now| {
            decide(
                &catalog,
                &mut standing.clone(),
                POLICY,
                &mut book(100),
                spend,
                now,
            )
        };
        assert!(decide_at(&run, at(9)).is_ok());
        assert_eq!(
            decide_at(&chat, at(9)),
            Err(Refusal::FeatureNotEntitled("chat.request".into()))
        );
        assert_eq!(
            decide_at(&run, at(10)),
            Err(Refusal::FeatureNotEntitled("agent.run".into()))
        );
        assert!(decide_at(&chat, at(10)).is_ok());
    }

    #[test]
    fn a_customer_s_own_price_and_overage_rule_decide_and_a_capture_keeps_the_hold_s_price() {
        use crate::domain::overrides::{Change, Override};
        let catalog = catalog();
        let mut standing = pro();
        let made = |change, until: Option<Timestamp>, when| Override {
            id: "ovr".into(),
            change,
            until,
            reason: "enterprise deal".into(),
            actor: "key".into(),
            at: when,
        };
        standing.overrides.set(made(
            Change::Price {
                action: "agent.run".into(),
                credits_per_unit: Some(credits(4)),
            },
            Some(at(10)),
            at(0),
        ));
        standing
            .overrides
            .set(made(Change::Overage(Some(Overage::Block)), None, at(0)));
        let mut b = book(10);
        let terms = Terms::of(&catalog, &standing, at(1), POLICY);
        assert_eq!(
            terms.overage,
            Overage::Block,
            "the customer's rule, not pro's allow"
        );
        let two = Quantity::try_from(Decimal::TWO).unwrap();
        let run = catalog.action("agent.run").unwrap();
        assert_eq!(terms.cost(run, two), Ok(credits(8)));
        let hold = Spend::Authorize {
            subject: None,
            action: run,
            quantity: two,
            hold_id: "h1",
            expires_at: at(15),
        };
        let held = decide(&catalog, &mut standing, POLICY, &mut b, &hold, at(1)).unwrap();
        assert_eq!((held.credits, held.available), (credits(8), credits(2)));
        // Blocked: 4 more credits are not there, where pro would allow 50 of overage.
        let refused = decide(
            &catalog,
            &mut standing.clone(),
            POLICY,
            &mut b.clone(),
            &usage(&catalog, "agent.run", 1),
            at(2),
        );
        assert!(matches!(
            refused,
            Err(Refusal::Book(Rejection::InsufficientCredits { .. }))
        ));
        // The price lapses; a capture by quantity still pays the price the hold was made at.
        let capture = Spend::Capture {
            hold_id: "h1",
            actual: Actual::Quantity(Quantity::try_from(Decimal::ONE).unwrap()),
        };
        let captured = decide(&catalog, &mut standing, POLICY, &mut b, &capture, at(11)).unwrap();
        assert_eq!(
            (captured.credits, captured.available),
            (credits(4), credits(6))
        );
        assert_eq!(b.consumed.last().map(|c| c.credits), Some(credits(4)));
        // After it lapsed, the catalog's 10 per run is back.
        let terms = Terms::of(&catalog, &standing, at(11), POLICY);
        assert_eq!(
            terms.cost(run, Quantity::try_from(Decimal::ONE).unwrap()),
            Ok(credits(10))
        );
    }
}
