//! Auto top-up (README, Auto top-up): a customer who opts in is charged for a pack off-session
//! when its available credits fall below its threshold. At most one charge is in flight; at most
//! `monthly_limit` charges start per calendar month (UTC), a failed one not counted; after a
//! failure none starts until the customer sets its auto top-up again. The credits arrive like any
//! purchase, from Stripe's `payment_intent.succeeded`.

use super::Timestamp;
use super::catalog::{Catalog, Pack};
use super::customer::CustomerId;
use super::money::{Credits, Money};
use super::outbound::{EventType, Message};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The most automatic purchases a month a customer may allow.
pub const MAX_MONTHLY_LIMIT: u32 = 100;
/// Longest failure reason kept (Stripe's messages are a sentence).
const MAX_REASON_CHARS: usize = 300;

/// What a customer opted into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// A charge starts when available credits fall below this.
    pub threshold: Credits,
    /// The pack bought each time (its catalog price, in its currency).
    pub pack: String,
    /// Charges started per calendar month (UTC) at most; failed ones are not counted.
    pub monthly_limit: u32,
}

/// Why a setting is refused, and which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSetting {
    pub field: &'static str,
    pub reason: String,
}

impl Setting {
    /// A setting from a request: a threshold above 0, a pack of the catalog with a price, a
    /// monthly limit from 1 to [`MAX_MONTHLY_LIMIT`].
    pub fn of(
        threshold: Decimal,
        pack: &str,
        monthly_limit: i64,
        catalog: &Catalog,
    ) -> Result<Setting, BadSetting> {
        let bad = |field, reason: String| BadSetting { field, reason };
        let threshold = Credits::positive(threshold)
            .map_err(|e| bad("threshold", format!("{threshold} {e}")))?;
        let known = catalog
            .packs
            .get(pack)
            .ok_or_else(|| bad("pack", format!("unknown pack {pack:?}")))?;
        if known.price.amount <= Decimal::ZERO {
            return Err(bad("pack", format!("pack {pack:?} has no price to charge")));
        }
        let monthly_limit = u32::try_from(monthly_limit)
            .ok()
            .filter(|n| (1..=MAX_MONTHLY_LIMIT).contains(n))
            .ok_or_else(|| {
                bad(
                    "monthly_limit",
                    format!("{monthly_limit} is not from 1 to {MAX_MONTHLY_LIMIT}"),
                )
            })?;
        Ok(Setting {
            threshold,
            pack: pack.to_owned(),
            monthly_limit,
        })
    }
}

/// Why auto top-up stopped: the attempt that failed, and what Stripe (or creditbook) said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopped {
    pub attempt: String,
    pub reason: String,
    pub code: Option<String>,
    pub at: Timestamp,
}

/// A customer's auto top-up, as kept on the customer: the setting (none once turned off) and
/// where it stands. The count of attempts survives turning it off, so attempt ids never repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoTopup {
    #[serde(default)]
    pub setting: Option<Setting>,
    /// How many times it was set: a change tells a batch that the customer set it.
    #[serde(default)]
    pub times_set: u64,
    /// The attempt whose charge is not settled yet.
    #[serde(default)]
    pub in_flight: Option<String>,
    #[serde(default)]
    pub stopped: Option<Stopped>,
    /// The month (`YYYY-MM`, UTC) `started_this_month` counts.
    #[serde(default)]
    pub month: Option<String>,
    #[serde(default)]
    pub started_this_month: u32,
    /// Attempts ever started: the sequence of attempt ids.
    #[serde(default)]
    pub attempts: u64,
}

/// A charge to start: written with the change of balance that calls for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub attempt: String,
    pub customer: CustomerId,
    pub pack: String,
    pub credits: Credits,
    /// The pack's price, in its currency.
    pub price: Money,
    pub currency: String,
    pub at: Timestamp,
}

/// What is asked of Stripe for one attempt (the outbox row's body): the pack's price in the
/// currency's minor units.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Charge {
    pub attempt: String,
    pub customer: CustomerId,
    pub pack: String,
    pub amount_minor: i64,
    pub currency: String,
}

/// How a charge ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Succeeded,
    Failed {
        reason: String,
        code: Option<String>,
    },
}

/// `atu_` and 24 hex digits of a SHA-256 of the customer and the attempt's number: the same on
/// every retry (it is Stripe's idempotency key), never the same for two attempts.
pub fn attempt_id(customer: &CustomerId, number: u64) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("creditbook.auto_topup\n{customer}\n{number}"));
    format!("atu_{}", hex::encode(&digest[..12]))
}

fn month_of(at: Timestamp) -> String {
    at.format("%Y-%m").to_string()
}

/// Where a customer's auto top-up stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Not set, or turned off.
    Off,
    /// Set; no charge in flight.
    Active,
    /// A charge is in flight.
    Charging,
    /// A charge failed: nothing starts until the customer sets it again.
    Stopped,
}

impl AutoTopup {
    pub fn status(&self) -> Status {
        match (&self.setting, &self.in_flight, &self.stopped) {
            (_, Some(_), _) => Status::Charging,
            (None, None, _) => Status::Off,
            (Some(_), None, Some(_)) => Status::Stopped,
            (Some(_), None, None) => Status::Active,
        }
    }

    pub fn is_unset(&self) -> bool {
        *self == AutoTopup::default()
    }

    /// The customer sets (or, with none, turns off) its auto top-up: a stop after a failure is
    /// lifted (the customer acted); a charge in flight and the month's count are kept.
    pub fn set(&mut self, setting: Option<Setting>) {
        self.setting = setting;
        self.times_set += 1;
        self.stopped = None;
    }

    /// Whether the customer set it between `before` and `self`.
    pub fn set_since(&self, before: &AutoTopup) -> bool {
        self.times_set != before.times_set
    }

    /// Starts a charge when the balance calls for one: available below the threshold after a
    /// fall (or just after the customer set it), nothing in flight, not stopped, the month's
    /// limit not reached, the pack still in the catalog.
    pub fn start_if_due(
        &mut self,
        customer: &CustomerId,
        just_set: bool,
        before: Credits,
        after: Credits,
        catalog: &Catalog,
        now: Timestamp,
    ) -> Option<Start> {
        let setting = self.setting.as_ref()?;
        if self.in_flight.is_some() || self.stopped.is_some() || after >= setting.threshold {
            return None;
        }
        if !(just_set || after < before) {
            return None;
        }
        let pack: &Pack = catalog.packs.get(&setting.pack)?;
        let month = month_of(now);
        let started = if self.month.as_deref() == Some(month.as_str()) {
            self.started_this_month
        } else {
            0
        };
        if started >= setting.monthly_limit {
            return None;
        }
        self.month = Some(month);
        self.started_this_month = started + 1;
        self.attempts += 1;
        let attempt = attempt_id(customer, self.attempts);
        self.in_flight = Some(attempt.clone());
        Some(Start {
            attempt,
            customer: customer.clone(),
            pack: pack.id.clone(),
            credits: pack.credits,
            price: pack.price.money(),
            currency: pack.price.currency.clone(),
            at: now,
        })
    }

    /// Settles `attempt` (started at `started_at`). A failure of the attempt in flight stops
    /// auto top-up and gives back its place in the month's count. Returns whether anything
    /// changed.
    pub fn settle(
        &mut self,
        attempt: &str,
        started_at: Timestamp,
        settled: &Settled,
        now: Timestamp,
    ) -> bool {
        if self.in_flight.as_deref() != Some(attempt) {
            return false;
        }
        self.in_flight = None;
        if let Settled::Failed { reason, code } = settled {
            if self.month.as_deref() == Some(month_of(started_at).as_str()) {
                self.started_this_month = self.started_this_month.saturating_sub(1);
            }
            self.stopped = Some(Stopped {
                attempt: attempt.to_owned(),
                reason: reason.chars().take(MAX_REASON_CHARS).collect(),
                code: code.clone(),
                at: now,
            });
        }
        true
    }

    /// Charges started in `now`'s month.
    pub fn started_in(&self, now: Timestamp) -> u32 {
        if self.month.as_deref() == Some(month_of(now).as_str()) {
            self.started_this_month
        } else {
            0
        }
    }
}

/// `auto_topup.failed`: said once per attempt (its id is the cause).
pub fn failed_message(
    customer: &CustomerId,
    attempt: &str,
    pack: &str,
    settled_reason: &str,
    code: Option<&str>,
    now: Timestamp,
) -> Message {
    let mut data = serde_json::Map::new();
    data.insert("attempt".into(), attempt.into());
    data.insert("pack".into(), pack.into());
    data.insert(
        "reason".into(),
        settled_reason
            .chars()
            .take(MAX_REASON_CHARS)
            .collect::<String>()
            .into(),
    );
    data.insert("code".into(), code.map(str::to_owned).into());
    Message {
        event_type: EventType::AutoTopupFailed,
        customer: customer.clone(),
        at: now,
        data,
        cause: attempt.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Breakage;
    use crate::domain::money::Price;

    /// The customer these tests are about.
    fn customer() -> CustomerId {
        CustomerId::known("a")
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Credits or money, whichever the place asks for.
    fn c<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().unwrap()
    }

    fn catalog() -> Catalog {
        let mut catalog = Catalog::default();
        catalog.packs.insert(
            "small".into(),
            Pack {
                id: "small".into(),
                stripe_prices: vec!["price_small".into()],
                credits: c("1000"),
                price: Price::new("10.00".parse().unwrap(), "usd").unwrap(),
                expires_after_days: None,
                breakage: Breakage::Remote,
                priority: 20,
                low_balance: None,
                top_up_url: None,
            },
        );
        catalog
    }

    fn opted_in(limit: u32) -> AutoTopup {
        let mut auto = AutoTopup::default();
        auto.set(Some(
            Setting::of("100".parse().unwrap(), "small", limit.into(), &catalog()).unwrap(),
        ));
        auto
    }

    #[test]
    fn a_setting_is_checked_field_by_field() {
        let catalog = catalog();
        let field = |threshold: &str, pack: &str, limit: i64| {
            Setting::of(threshold.parse().unwrap(), pack, limit, &catalog)
                .err()
                .map(|e| e.field)
        };
        assert_eq!(field("100", "small", 3), None);
        assert_eq!(field("0", "small", 3), Some("threshold"));
        assert_eq!(field("-1", "small", 3), Some("threshold"));
        assert_eq!(field("0.0000001", "small", 3), Some("threshold"));
        assert_eq!(field("100", "large", 3), Some("pack"));
        assert_eq!(field("100", "small", 0), Some("monthly_limit"));
        assert_eq!(field("100", "small", 101), Some("monthly_limit"));
        assert_eq!(field("100", "small", -1), Some("monthly_limit"));
    }

    #[test]
    fn a_fall_below_the_threshold_starts_one_charge_at_a_time() {
        let catalog = catalog();
        let now = t("2026-11-10T00:00:00Z");
        let mut auto = opted_in(5);
        // Above the threshold, or not a fall: nothing.
        assert!(
            auto.start_if_due(&customer(), false, c("300"), c("150"), &catalog, now)
                .is_none()
        );
        assert!(
            auto.start_if_due(&customer(), false, c("50"), c("50"), &catalog, now)
                .is_none()
        );
        let start = auto
            .start_if_due(&customer(), false, c("150"), c("99.5"), &catalog, now)
            .unwrap();
        assert_eq!(start.attempt, attempt_id(&customer(), 1));
        assert_eq!((start.credits, start.price), (c("1000"), c("10.00")));
        assert_eq!(auto.in_flight.as_deref(), Some(start.attempt.as_str()));
        // In flight: no second charge however far it falls.
        assert!(
            auto.start_if_due(&customer(), false, c("99.5"), c("0"), &catalog, now)
                .is_none()
        );
        assert!(auto.settle(&start.attempt, now, &Settled::Succeeded, now));
        assert!(!auto.settle(&start.attempt, now, &Settled::Succeeded, now));
        let next = auto
            .start_if_due(&customer(), false, c("60"), c("40"), &catalog, now)
            .unwrap();
        assert_ne!(next.attempt, start.attempt);
        assert_eq!(auto.started_in(now), 2);
    }

    #[test]
    fn setting_it_below_the_threshold_starts_at_once() {
        let catalog = catalog();
        let now = t("2026-11-10T00:00:00Z");
        let mut auto = opted_in(1);
        assert!(
            auto.start_if_due(&customer(), true, c("20"), c("20"), &catalog, now)
                .is_some()
        );
    }

    #[test]
    fn the_monthly_limit_counts_started_charges_and_resets_each_month() {
        let catalog = catalog();
        let nov = t("2026-11-30T23:00:00Z");
        let mut auto = opted_in(1);
        let first = auto
            .start_if_due(&customer(), false, c("150"), c("50"), &catalog, nov)
            .unwrap();
        auto.settle(&first.attempt, nov, &Settled::Succeeded, nov);
        assert!(
            auto.start_if_due(&customer(), false, c("50"), c("40"), &catalog, nov)
                .is_none()
        );
        let dec = t("2026-12-01T00:00:00Z");
        assert_eq!(auto.started_in(dec), 0);
        assert!(
            auto.start_if_due(&customer(), false, c("40"), c("30"), &catalog, dec)
                .is_some()
        );
    }

    #[test]
    fn a_failure_stops_until_the_customer_sets_it_again_and_is_not_counted() {
        let catalog = catalog();
        let now = t("2026-11-10T00:00:00Z");
        let mut auto = opted_in(1);
        let start = auto
            .start_if_due(&customer(), false, c("150"), c("50"), &catalog, now)
            .unwrap();
        let failed = Settled::Failed {
            reason: "Your card was declined.".into(),
            code: Some("card_declined".into()),
        };
        assert_eq!(auto.status(), Status::Charging);
        assert!(auto.settle(&start.attempt, now, &failed, now));
        assert_eq!(auto.status(), Status::Stopped);
        assert_eq!(auto.stopped.as_ref().unwrap().attempt, start.attempt);
        assert_eq!(auto.started_in(now), 0);
        assert!(
            auto.start_if_due(&customer(), false, c("50"), c("10"), &catalog, now)
                .is_none()
        );
        // A second report of the same failure changes nothing.
        assert!(!auto.settle(&start.attempt, now, &failed, now));
        let (before, setting) = (auto.clone(), auto.setting.clone());
        auto.set(setting);
        assert!(auto.set_since(&before));
        let again = auto
            .start_if_due(&customer(), true, c("10"), c("10"), &catalog, now)
            .unwrap();
        assert_eq!(again.attempt, attempt_id(&customer(), 2));
    }

    #[test]
    fn turned_off_it_starts_nothing_and_ids_never_repeat() {
        let catalog = catalog();
        let now = t("2026-11-10T00:00:00Z");
        let mut auto = opted_in(5);
        let first = auto
            .start_if_due(&customer(), false, c("150"), c("50"), &catalog, now)
            .unwrap();
        auto.set(None);
        assert!(auto.settle(&first.attempt, now, &Settled::Succeeded, now));
        assert_eq!(auto.status(), Status::Off);
        assert!(
            auto.start_if_due(&customer(), false, c("50"), c("10"), &catalog, now)
                .is_none()
        );
        auto.set(opted_in(5).setting);
        let next = auto
            .start_if_due(&customer(), true, c("10"), c("10"), &catalog, now)
            .unwrap();
        assert_eq!(next.attempt, attempt_id(&customer(), 2));
        assert_ne!(
            attempt_id(&customer(), 2),
            attempt_id(&CustomerId::known("b"), 2)
        );
    }
}
