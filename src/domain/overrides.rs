//! Feature overrides (README, Overrides and trials): an operator switches a feature on or off for
//! one customer, for good or until a date (a trial ends by itself). An override in force decides
//! the feature whatever the plan says; once it lapses, the plan decides again.

use super::Timestamp;
use serde::{Deserialize, Serialize};

/// One override as made: who made it, why and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub id: String,
    pub feature: String,
    pub enabled: bool,
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

/// A customer's overrides: the latest one per feature.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Overrides {
    latest: Vec<Override>,
}

impl Overrides {
    /// Makes `new` the feature's override, replacing the one before; lapsed ones are dropped.
    pub fn set(&mut self, new: Override) {
        let now = new.at;
        self.latest
            .retain(|o| o.feature != new.feature && o.in_force(now));
        self.latest.push(new);
        self.latest.sort_by(|a, b| a.feature.cmp(&b.feature));
    }

    /// Whether an override switches `feature` on (`Some(true)`) or off at `now`.
    pub fn decides(&self, feature: &str, now: Timestamp) -> Option<bool> {
        self.latest
            .iter()
            .find(|o| o.feature == feature && o.in_force(now))
            .map(|o| o.enabled)
    }

    /// The overrides in force at `now`, by feature.
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

    fn made(feature: &str, enabled: bool, until: Option<&str>, when: &str) -> Override {
        Override {
            id: format!("ovr_{feature}_{when}"),
            feature: feature.into(),
            enabled,
            until: until.map(at),
            reason: "trial".into(),
            actor: "key_1".into(),
            at: at(when),
        }
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
        assert_eq!(o.latest[0].feature, "agents");
    }
}
