//! Per-customer overrides (README, Overrides and trials): an operator switches a feature on or
//! off, prices an action differently, or gives a customer its own overage rule, for good or until
//! a date (a trial ends by itself). An override in force decides whatever the plan or catalog
//! says; once it lapses, they decide again. The latest override of a subject (a feature, an
//! action, the overage rule) replaces the one before.

use super::Timestamp;
use super::catalog::{Action, Overage};
use super::money::{Credits, SCALE};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// What an override changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A feature on (a plan-only feature without the plan, a trial) or off.
    Feature { feature: String, enabled: bool },
    /// An action's credits per unit for this customer; `None` gives back the catalog's.
    Price {
        action: String,
        credits_per_unit: Option<Credits>,
    },
    /// The customer's overage rule; `None` gives back the plan's.
    Overage(Option<Overage>),
}

/// What an override is about: a later override of the same subject replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Subject<'a> {
    Feature(&'a str),
    Price(&'a str),
    Overage,
}

impl Change {
    fn subject(&self) -> Subject<'_> {
        match self {
            Change::Feature { feature, .. } => Subject::Feature(feature),
            Change::Price { action, .. } => Subject::Price(action),
            Change::Overage(_) => Subject::Overage,
        }
    }

    /// `feature`, `price` or `overage`: the kind as stored and shown.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Feature { .. } => "feature",
            Change::Price { .. } => "price",
            Change::Overage(_) => "overage",
        }
    }
}

/// The most an overage price per credit may be, in the accounting currency.
pub const MAX_OVERAGE_PRICE: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// Why a price or overage override cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("has {0} decimal places; this action's price allows at most {1}")]
    PriceTooPrecise(u32, u32),
    #[error(
        "must be greater than zero and at most {MAX_OVERAGE_PRICE}, with at most {SCALE} decimal places"
    )]
    OveragePrice,
    #[error("is required with overage = {0:?}")]
    Required(&'static str),
}

impl Change {
    /// An action priced at `credits_per_unit` for one customer. The price may have no more
    /// decimal places than the catalog's price of the action at `now`, so every quantity the
    /// catalog's price accepts still has an exact cost.
    pub fn price(
        action: &Action,
        credits_per_unit: Option<Credits>,
        now: Timestamp,
    ) -> Result<Change, ChangeError> {
        if let Some(price) = credits_per_unit {
            let allowed = action.at(now).credits.value().normalize().scale();
            let places = price.value().normalize().scale();
            if places > allowed {
                return Err(ChangeError::PriceTooPrecise(places, allowed));
            }
        }
        Ok(Change::Price {
            action: action.id.clone(),
            credits_per_unit,
        })
    }

    /// An overage rule for one customer: `allow` needs its limit, `bill` its price per credit;
    /// `None` gives back the plan's rule.
    pub fn overage(
        rule: Option<OverageKind>,
        limit: Option<Credits>,
        price: Option<Decimal>,
    ) -> Result<Change, (&'static str, ChangeError)> {
        let rule = match rule {
            None => None,
            Some(OverageKind::Block) => Some(Overage::Block),
            Some(OverageKind::Allow) => Some(Overage::Allow {
                limit: limit.ok_or(("overage_limit", ChangeError::Required("allow")))?,
            }),
            Some(OverageKind::Bill) => {
                let price = price.ok_or(("overage_price", ChangeError::Required("bill")))?;
                if price <= Decimal::ZERO
                    || price > MAX_OVERAGE_PRICE
                    || price.normalize().scale() > SCALE
                {
                    return Err(("overage_price", ChangeError::OveragePrice));
                }
                Some(Overage::Bill {
                    price: price.normalize(),
                })
            }
        };
        Ok(Change::Overage(rule))
    }
}

/// The three overage rules, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverageKind {
    Block,
    Allow,
    Bill,
}

impl OverageKind {
    pub fn of(overage: &Overage) -> Self {
        match overage {
            Overage::Block => OverageKind::Block,
            Overage::Allow { .. } => OverageKind::Allow,
            Overage::Bill { .. } => OverageKind::Bill,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OverageKind::Block => "block",
            OverageKind::Allow => "allow",
            OverageKind::Bill => "bill",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [OverageKind::Block, OverageKind::Allow, OverageKind::Bill]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

/// One override as made: what it changes, who made it, why and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Flat", into = "Flat")]
pub struct Override {
    pub id: String,
    pub change: Change,
    /// When it lapses by itself, if it does.
    pub until: Option<Timestamp>,
    pub reason: String,
    /// The API key that made it.
    pub actor: String,
    pub at: Timestamp,
}

impl Override {
    pub fn in_force(&self, now: Timestamp) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// An override with every field of every kind, absent where it does not apply: how it is kept on
/// the customer's row and in the history, and shown. A feature override made before prices and
/// overage rules could be overridden reads as one (it has no `kind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flat {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits_per_unit: Option<Credits>,
    /// `block`, `allow`, `bill`, or `plan` (the plan's rule again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage_limit: Option<Credits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage_price: Option<Decimal>,
    pub until: Option<Timestamp>,
    pub reason: String,
    pub actor: String,
    pub at: Timestamp,
}

/// The `overage` of an override that gives back the plan's rule.
pub const PLAN_RULE: &str = "plan";

impl From<Override> for Flat {
    fn from(o: Override) -> Flat {
        let mut flat = Flat {
            id: o.id,
            kind: Some(o.change.kind().to_owned()),
            feature: None,
            enabled: None,
            action: None,
            credits_per_unit: None,
            overage: None,
            overage_limit: None,
            overage_price: None,
            until: o.until,
            reason: o.reason,
            actor: o.actor,
            at: o.at,
        };
        match o.change {
            Change::Feature { feature, enabled } => {
                flat.feature = Some(feature);
                flat.enabled = Some(enabled);
            }
            Change::Price {
                action,
                credits_per_unit,
            } => {
                flat.action = Some(action);
                flat.credits_per_unit = credits_per_unit;
            }
            Change::Overage(rule) => {
                flat.overage = Some(
                    rule.as_ref()
                        .map_or(PLAN_RULE, |r| OverageKind::of(r).as_str())
                        .to_owned(),
                );
                match rule {
                    Some(Overage::Allow { limit }) => flat.overage_limit = Some(limit),
                    Some(Overage::Bill { price }) => flat.overage_price = Some(price),
                    _ => {}
                }
            }
        }
        flat
    }
}

impl TryFrom<Flat> for Override {
    type Error = String;

    fn try_from(f: Flat) -> Result<Override, String> {
        let change = match f.kind.as_deref().unwrap_or("feature") {
            "feature" => Change::Feature {
                feature: f.feature.ok_or("a feature override without its feature")?,
                enabled: f.enabled.ok_or("a feature override without enabled")?,
            },
            "price" => Change::Price {
                action: f.action.ok_or("a price override without its action")?,
                credits_per_unit: f.credits_per_unit,
            },
            "overage" => {
                let rule = f.overage.ok_or("an overage override without its rule")?;
                let kind = match rule.as_str() {
                    PLAN_RULE => None,
                    other => Some(
                        OverageKind::parse(other)
                            .ok_or_else(|| format!("unknown overage rule {other:?}"))?,
                    ),
                };
                Change::overage(kind, f.overage_limit, f.overage_price)
                    .map_err(|(field, e)| format!("{field} {e}"))?
            }
            other => return Err(format!("unknown override kind {other:?}")),
        };
        Ok(Override {
            id: f.id,
            change,
            until: f.until,
            reason: f.reason,
            actor: f.actor,
            at: f.at,
        })
    }
}

/// A customer's overrides: the latest one per subject.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Overrides {
    latest: Vec<Override>,
}

impl Overrides {
    /// Makes `new` its subject's override, replacing the one before; lapsed ones are dropped.
    pub fn set(&mut self, new: Override) {
        let now = new.at;
        let subject = new.change.subject();
        self.latest
            .retain(|o| o.change.subject() != subject && o.in_force(now));
        self.latest.push(new);
        self.latest
            .sort_by(|a, b| a.change.subject().cmp(&b.change.subject()));
    }

    /// Whether an override switches `feature` on (`Some(true)`) or off at `now`.
    pub fn decides(&self, feature: &str, now: Timestamp) -> Option<bool> {
        self.find(Subject::Feature(feature), now)
            .and_then(|change| match change {
                Change::Feature { enabled, .. } => Some(*enabled),
                _ => None,
            })
    }

    /// The customer's credits per unit of `action` at `now`, when an override prices it.
    pub fn price(&self, action: &str, now: Timestamp) -> Option<Credits> {
        self.find(Subject::Price(action), now)
            .and_then(|change| match change {
                Change::Price {
                    credits_per_unit, ..
                } => *credits_per_unit,
                _ => None,
            })
    }

    /// The customer's own overage rule at `now`, when an override gives one.
    pub fn overage(&self, now: Timestamp) -> Option<&Overage> {
        self.find(Subject::Overage, now)
            .and_then(|change| match change {
                Change::Overage(rule) => rule.as_ref(),
                _ => None,
            })
    }

    fn find(&self, subject: Subject<'_>, now: Timestamp) -> Option<&Change> {
        self.latest
            .iter()
            .find(|o| o.change.subject() == subject && o.in_force(now))
            .map(|o| &o.change)
    }

    /// The overrides in force at `now`, by subject.
    pub fn in_force(&self, now: Timestamp) -> impl Iterator<Item = &Override> {
        self.latest.iter().filter(move |o| o.in_force(now))
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn credits(text: &str) -> Credits {
        Credits::new(text.parse().unwrap()).unwrap()
    }

    fn made_change(change: Change, until: Option<&str>, when: &str) -> Override {
        Override {
            id: format!("ovr_{}_{when}", change.kind()),
            change,
            until: until.map(at),
            reason: "trial".into(),
            actor: "key_1".into(),
            at: at(when),
        }
    }

    fn made(feature: &str, enabled: bool, until: Option<&str>, when: &str) -> Override {
        made_change(
            Change::Feature {
                feature: feature.into(),
                enabled,
            },
            until,
            when,
        )
    }

    #[test]
    fn a_trial_ends_by_itself_and_the_latest_override_wins() {
        let mut o = Overrides::default();
        o.set(made(
            "agents",
            true,
            Some("2026-03-15T00:00:00Z"),
            "2026-03-01T00:00:00Z",
        ));
        assert_eq!(o.decides("agents", at("2026-03-14T23:59:59Z")), Some(true));
        assert_eq!(o.decides("agents", at("2026-03-15T00:00:00Z")), None);
        assert_eq!(o.decides("chat", at("2026-03-02T00:00:00Z")), None);
        o.set(made("agents", false, None, "2026-03-02T00:00:00Z"));
        assert_eq!(o.decides("agents", at("2026-03-03T00:00:00Z")), Some(false));
        assert_eq!(o.in_force(at("2026-03-03T00:00:00Z")).count(), 1);
    }

    #[test]
    fn lapsed_overrides_are_dropped_when_another_is_set() {
        let mut o = Overrides::default();
        o.set(made(
            "chat",
            false,
            Some("2026-03-02T00:00:00Z"),
            "2026-03-01T00:00:00Z",
        ));
        o.set(made("agents", true, None, "2026-03-05T00:00:00Z"));
        assert_eq!(o.latest.len(), 1);
        assert_eq!(o.decides("agents", at("2026-03-05T00:00:00Z")), Some(true));
    }

    #[test]
    fn a_price_and_an_overage_rule_are_overridden_apart_from_features() {
        let mut o = Overrides::default();
        let price = |per_unit: Option<&str>| Change::Price {
            action: "chat.message".into(),
            credits_per_unit: per_unit.map(credits),
        };
        o.set(made_change(
            price(Some("0.5")),
            Some("2026-04-01T00:00:00Z"),
            "2026-03-01T00:00:00Z",
        ));
        o.set(made_change(
            Change::Overage(Some(Overage::Allow {
                limit: credits("100"),
            })),
            None,
            "2026-03-01T00:00:00Z",
        ));
        o.set(made("chat", true, None, "2026-03-01T00:00:00Z"));
        let march = at("2026-03-10T00:00:00Z");
        assert_eq!(o.price("chat.message", march), Some(credits("0.5")));
        assert_eq!(o.price("image.generate", march), None);
        assert_eq!(
            o.overage(march),
            Some(&Overage::Allow {
                limit: credits("100")
            })
        );
        assert_eq!(o.decides("chat", march), Some(true));
        assert_eq!(o.in_force(march).count(), 3);
        // The price lapses by itself; the catalog's is back.
        assert_eq!(o.price("chat.message", at("2026-04-01T00:00:00Z")), None);
        // A later override without a price or rule gives back the catalog's and the plan's.
        o.set(made_change(price(None), None, "2026-03-11T00:00:00Z"));
        o.set(made_change(
            Change::Overage(None),
            None,
            "2026-03-11T00:00:00Z",
        ));
        assert_eq!(o.price("chat.message", at("2026-03-12T00:00:00Z")), None);
        assert_eq!(o.overage(at("2026-03-12T00:00:00Z")), None);
        assert_eq!(o.decides("chat", at("2026-03-12T00:00:00Z")), Some(true));
    }

    #[test]
    fn a_price_keeps_the_catalog_s_places_and_a_rule_needs_its_limit_or_price() {
        let action = Action {
            id: "chat.message".into(),
            feature: "chat".into(),
            credits: credits("1.5"),
            vendor_cost: None,
            changes: Vec::new(),
        };
        let now = at("2026-03-01T00:00:00Z");
        assert!(Change::price(&action, Some(credits("0.7")), now).is_ok());
        assert_eq!(
            Change::price(&action, Some(credits("0.75")), now),
            Err(ChangeError::PriceTooPrecise(2, 1))
        );
        assert!(Change::price(&action, None, now).is_ok());
        assert_eq!(
            Change::overage(Some(OverageKind::Allow), None, None),
            Err(("overage_limit", ChangeError::Required("allow")))
        );
        assert_eq!(
            Change::overage(Some(OverageKind::Bill), None, None),
            Err(("overage_price", ChangeError::Required("bill")))
        );
        for bad in ["0", "-1", "1000000.01", "0.0000001"] {
            assert_eq!(
                Change::overage(Some(OverageKind::Bill), None, Some(bad.parse().unwrap())),
                Err(("overage_price", ChangeError::OveragePrice)),
                "{bad}"
            );
        }
        assert_eq!(
            Change::overage(
                Some(OverageKind::Bill),
                None,
                Some("0.0100".parse().unwrap())
            ),
            Ok(Change::Overage(Some(Overage::Bill {
                price: "0.01".parse().unwrap()
            })))
        );
    }

    #[test]
    fn overrides_kept_before_kinds_existed_read_as_feature_overrides() {
        let kept = r#"[{"id":"ovr_1","feature":"agents","enabled":true,"until":null,
            "reason":"trial","actor":"key_1","at":"2026-03-01T00:00:00Z"}]"#;
        let o: Overrides = serde_json::from_str(kept).unwrap();
        assert_eq!(o.decides("agents", at("2026-03-02T00:00:00Z")), Some(true));
        let mut again = o.clone();
        again.set(made_change(
            Change::Overage(Some(Overage::Bill {
                price: "0.02".parse().unwrap(),
            })),
            None,
            "2026-03-02T00:00:00Z",
        ));
        let round: Overrides =
            serde_json::from_str(&serde_json::to_string(&again).unwrap()).unwrap();
        assert_eq!(round, again);
    }
}
