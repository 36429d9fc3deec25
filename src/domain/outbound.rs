//! What creditbook tells the outside world (README, Outbound webhooks): the event types, who
//! receives each, the body and stable id of a message, and when a failed delivery is tried again.

use super::Timestamp;
use super::customer::CustomerId;
use serde::Serialize;
use std::collections::BTreeSet;

/// The types of outbound events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    BalanceLow,
    BalanceDepleted,
    BalanceRecovered,
    GrantExpiring,
    SpendLimitReached,
    AutoTopupFailed,
    OverageReported,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        EventType::BalanceLow,
        EventType::BalanceDepleted,
        EventType::BalanceRecovered,
        EventType::GrantExpiring,
        EventType::SpendLimitReached,
        EventType::AutoTopupFailed,
        EventType::OverageReported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::BalanceLow => "credit.balance_low",
            EventType::BalanceDepleted => "credit.balance_depleted",
            EventType::BalanceRecovered => "credit.balance_recovered",
            EventType::GrantExpiring => "credit.grant_expiring",
            EventType::SpendLimitReached => "spend_limit.reached",
            EventType::AutoTopupFailed => "auto_topup.failed",
            EventType::OverageReported => "overage.reported",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// An endpoint's subscription: its URL and the types it takes (every type when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub url: String,
    pub events: Option<BTreeSet<EventType>>,
}

impl Subscription {
    pub fn takes(&self, event_type: EventType) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(&event_type))
    }
}

/// One event to tell: its type, when it happened (business time), the customer and the rest of
/// its data, and the key of what caused it, from which its id is made (so that the same cause
/// always makes the same message, and a receiver can drop a second delivery by id).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event_type: EventType,
    pub customer: CustomerId,
    pub at: Timestamp,
    /// Fields of `data` besides `customer`.
    pub data: serde_json::Map<String, serde_json::Value>,
    pub cause: String,
}

impl Message {
    /// `msg_` and 32 hex digits of a SHA-256 of the type and the cause.
    pub fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{}\n{}", self.event_type.as_str(), self.cause));
        format!("msg_{}", hex::encode(&digest[..16]))
    }

    /// The body every endpoint receives: `{type, timestamp, data: {customer, ...}}`.
    pub fn body(&self) -> String {
        #[derive(Serialize)]
        struct Body {
            #[serde(rename = "type")]
            event_type: &'static str,
            timestamp: String,
            data: serde_json::Map<String, serde_json::Value>,
        }
        let mut data = serde_json::Map::new();
        data.insert("customer".into(), self.customer.to_string().into());
        data.extend(self.data.clone());
        serde_json::to_string(&Body {
            event_type: self.event_type.as_str(),
            timestamp: self.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            data,
        })
        .expect("a map of JSON values serialises")
    }
}

/// The endpoints that receive `event_type`, in configuration order.
pub fn destinations(subscriptions: &[Subscription], event_type: EventType) -> Vec<&str> {
    subscriptions
        .iter()
        .filter(|s| s.takes(event_type))
        .map(|s| s.url.as_str())
        .collect()
}

/// How failed deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failure; it doubles with each failure after.
    pub first_retry_ms: u64,
    /// The longest wait between two attempts.
    pub max_retry_ms: u64,
    /// After this long since the message was written, a failed delivery is given up (`dead`).
    pub dead_after_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_retry_ms: 5_000,
            max_retry_ms: 3_600_000,
            dead_after_ms: 3 * 86_400_000,
        }
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again this many milliseconds from now.
    RetryInMs(u64),
    /// Give up: the message is dead until an operator replays it.
    Dead,
}

impl RetryPolicy {
    /// After the `failures`-th failed attempt (1 for the first), `age_ms` after the message was
    /// written: exponential backoff with jitter (`jitter` in 0..=1000 picks a wait between half
    /// and all of the backoff), at least what the receiver asked in `Retry-After`, and dead once
    /// the next attempt would come after `dead_after_ms`.
    pub fn after_failure(
        &self,
        failures: u32,
        age_ms: u64,
        retry_after_ms: Option<u64>,
        jitter: u16,
    ) -> AfterFailure {
        let doublings = failures.saturating_sub(1).min(40);
        let backoff = self
            .first_retry_ms
            .saturating_mul(1_u64 << doublings)
            .min(self.max_retry_ms);
        let jittered = backoff / 2 + backoff / 2 * u64::from(jitter.min(1000)) / 1000;
        let wait = jittered.max(retry_after_ms.unwrap_or(0));
        if age_ms.saturating_add(wait) > self.dead_after_ms {
            AfterFailure::Dead
        } else {
            AfterFailure::RetryInMs(wait)
        }
    }
}

/// Stripe honours an idempotency key (a meter event's identifier, an automatic top-up's attempt
/// id) for 24 hours from its first use; past that, the same request is a new one.
pub const STRIPE_IDEMPOTENCY_WINDOW_MS: u64 = 24 * 3_600_000;
/// A Stripe write is tried again only until this long after its first attempt: an hour inside
/// Stripe's window, so that every retry is surely answered as the first attempt.
pub const STRIPE_RETRY_WINDOW_MS: u64 = 23 * 3_600_000;

/// What follows a failed attempt at a Stripe write, first attempted `since_first_ms` ago: as
/// for any message, but never a retry that could land outside Stripe's idempotency window.
pub fn after_stripe_failure(
    policy: &RetryPolicy,
    failures: u32,
    age_ms: u64,
    since_first_ms: u64,
    retry_after_ms: Option<u64>,
    jitter: u16,
) -> AfterFailure {
    match policy.after_failure(failures, age_ms, retry_after_ms, jitter) {
        AfterFailure::RetryInMs(wait)
            if since_first_ms.saturating_add(wait) <= STRIPE_RETRY_WINDOW_MS =>
        {
            AfterFailure::RetryInMs(wait)
        }
        _ => AfterFailure::Dead,
    }
}

/// A Stripe write's delivery as far as creditbook knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeWrite {
    /// Being tried.
    Pending,
    /// Stripe acknowledged it.
    Delivered,
    /// Given up; first attempted `first_attempt_ms_ago` ago, if it ever was.
    GivenUp { first_attempt_ms_ago: Option<u64> },
}

/// Why a Stripe write may not be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayRefusal {
    /// Stripe acknowledged it: sending it again could bill twice.
    Delivered,
    /// It may have reached Stripe and the idempotency window has closed: only someone who has
    /// checked Stripe knows whether it is there.
    Unconfirmed,
}

/// Whether an operator may send a Stripe write again (a replay): a write Stripe acknowledged
/// never; one that may have reached Stripe only while Stripe still honours its key, or once the
/// operator has checked in Stripe that it is not there (`checked_absent`).
pub fn stripe_replay(write: StripeWrite, checked_absent: bool) -> Result<(), ReplayRefusal> {
    match write {
        StripeWrite::Delivered => Err(ReplayRefusal::Delivered),
        StripeWrite::Pending => Ok(()),
        StripeWrite::GivenUp {
            first_attempt_ms_ago: Some(ago),
        } if ago >= STRIPE_RETRY_WINDOW_MS && !checked_absent => Err(ReplayRefusal::Unconfirmed),
        StripeWrite::GivenUp { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stripe_write_is_retried_only_inside_stripe_s_idempotency_window() {
        let p = RetryPolicy {
            first_retry_ms: 1_000,
            max_retry_ms: 3_600_000,
            dead_after_ms: 3 * 86_400_000,
        };
        assert_eq!(
            after_stripe_failure(&p, 1, 0, 0, None, 1000),
            AfterFailure::RetryInMs(1_000)
        );
        // A retry that would come after the window's end: given up instead.
        let late = STRIPE_RETRY_WINDOW_MS - 500;
        assert_eq!(
            after_stripe_failure(&p, 1, late, late, None, 1000),
            AfterFailure::Dead
        );
        // However long the configured retries, never past 23 hours from the first attempt.
        assert_eq!(
            after_stripe_failure(&p, 30, 0, STRIPE_RETRY_WINDOW_MS, None, 0),
            AfterFailure::Dead
        );
        const { assert!(STRIPE_RETRY_WINDOW_MS < STRIPE_IDEMPOTENCY_WINDOW_MS) };
    }

    #[test]
    fn a_stripe_write_is_never_sent_again_once_acknowledged_or_unconfirmable() {
        use StripeWrite::*;
        assert_eq!(
            stripe_replay(Delivered, false),
            Err(ReplayRefusal::Delivered)
        );
        assert_eq!(
            stripe_replay(Delivered, true),
            Err(ReplayRefusal::Delivered)
        );
        assert_eq!(
            stripe_replay(
                GivenUp {
                    first_attempt_ms_ago: None
                },
                false
            ),
            Ok(()),
            "never sent: safe"
        );
        assert_eq!(
            stripe_replay(
                GivenUp {
                    first_attempt_ms_ago: Some(3_600_000)
                },
                false
            ),
            Ok(()),
            "inside the window: Stripe answers a second send as the first"
        );
        let stale = GivenUp {
            first_attempt_ms_ago: Some(STRIPE_RETRY_WINDOW_MS),
        };
        assert_eq!(stripe_replay(stale, false), Err(ReplayRefusal::Unconfirmed));
        assert_eq!(
            stripe_replay(stale, true),
            Ok(()),
            "checked in Stripe: absent"
        );
        assert_eq!(stripe_replay(Pending, false), Ok(()));
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn names_round_trip() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("credit.balance_lo"), None);
    }

    #[test]
    fn the_same_cause_makes_the_same_message() {
        let message = Message {
            event_type: EventType::BalanceLow,
            customer: CustomerId::known("acme"),
            at: at("2026-01-02T03:04:05Z"),
            data: serde_json::Map::new(),
            cause: "acme:1".into(),
        };
        assert_eq!(message.id(), message.clone().id());
        assert!(message.id().starts_with("msg_") && message.id().len() == 36);
        let other = Message {
            cause: "acme:2".into(),
            ..message.clone()
        };
        assert_ne!(message.id(), other.id());
        let body: serde_json::Value = serde_json::from_str(&message.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "credit.balance_low",
                "timestamp": "2026-01-02T03:04:05.000000Z", "data": {"customer": "acme"}})
        );
    }

    #[test]
    fn endpoints_take_the_types_they_name_or_all() {
        let subs = [
            Subscription {
                url: "https://a".into(),
                events: None,
            },
            Subscription {
                url: "https://b".into(),
                events: Some([EventType::BalanceDepleted].into()),
            },
        ];
        assert_eq!(
            destinations(&subs, EventType::BalanceLow),
            vec!["https://a"]
        );
        assert_eq!(
            destinations(&subs, EventType::BalanceDepleted),
            vec!["https://a", "https://b"]
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_honours_retry_after_and_ends() {
        let p = RetryPolicy {
            first_retry_ms: 1_000,
            max_retry_ms: 8_000,
            dead_after_ms: 60_000,
        };
        assert_eq!(
            p.after_failure(1, 0, None, 1000),
            AfterFailure::RetryInMs(1_000)
        );
        assert_eq!(p.after_failure(1, 0, None, 0), AfterFailure::RetryInMs(500));
        assert_eq!(
            p.after_failure(3, 0, None, 1000),
            AfterFailure::RetryInMs(4_000)
        );
        // Capped, however many failures.
        assert_eq!(
            p.after_failure(30, 0, None, 1000),
            AfterFailure::RetryInMs(8_000)
        );
        assert_eq!(
            p.after_failure(u32::MAX, 0, None, 1000),
            AfterFailure::RetryInMs(8_000)
        );
        // The receiver's Retry-After is a floor.
        assert_eq!(
            p.after_failure(1, 0, Some(20_000), 1000),
            AfterFailure::RetryInMs(20_000)
        );
        // Past the bound: dead.
        assert_eq!(p.after_failure(2, 59_000, None, 1000), AfterFailure::Dead);
        assert_eq!(p.after_failure(1, 0, Some(61_000), 0), AfterFailure::Dead);
    }
}
