//! Balance alerts (README, Alerts): when a customer's credits run low, run out, and come back.
//! Each alert fires once per arming; `credit.balance_recovered` re-arms both.

use super::Timestamp;
use super::customer::CustomerId;
use super::ledger::{Book, Grant};
use super::money::Credits;
use super::outbound::{EventType, Message};
use rust_decimal::Decimal;

pub use super::thresholds::{AlertRule, BadThreshold, LowBalance};

/// Which alerts have fired since the customer's balance last recovered, kept on the customer.
/// `arming` counts recoveries: it makes each arming's messages distinct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Armed {
    pub low_sent: bool,
    pub depleted_sent: bool,
    pub arming: i64,
}

/// What an alert looks at: the credits of the live grants (unexpired, with credits left or
/// held) and what is available of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub live_credits: Credits,
    pub available: Credits,
}

/// The pack whose thresholds apply to a customer: that of its newest live pack grant (the last
/// pack bought that still has credits left or held).
pub fn current_pack(book: &Book) -> Option<&str> {
    book.grants
        .iter()
        .filter(|g| g.is_live())
        .filter_map(|g| Some((g.created_at, &g.id, g.pack_id.as_deref()?)))
        .max()
        .map(|(_, _, pack)| pack)
}

impl Balance {
    pub fn of(book: &Book) -> Balance {
        Balance {
            live_credits: book
                .grants
                .iter()
                .filter(|g| g.is_live())
                .map(|g| g.credits)
                .sum(),
            available: book.available(),
        }
    }

    /// The share of the live grants' credits no longer available (1 when there are none), as
    /// exact as a decimal divides.
    fn consumed(&self) -> Decimal {
        let live = self.live_credits.value();
        if live <= Decimal::ZERO {
            return Decimal::ONE;
        }
        ((live - self.available.value()) / live).clamp(Decimal::ZERO, Decimal::ONE)
    }

    /// The consumed share as messages say it: to 4 places.
    pub fn consumed_share(&self) -> Decimal {
        self.consumed().round_dp(4)
    }

    /// Low is decided on the unrounded share: 79.996% consumed is not 80%.
    pub fn is_low(&self, rule: &AlertRule) -> bool {
        self.available <= Credits::ZERO
            || self.consumed() >= rule.low_consumed_share
            || rule.low_credits.is_some_and(|c| self.available <= c)
    }
}

/// Decides the alerts of a change of balance from `before` to `after` (one command or batch on
/// one customer): `credit.balance_low` and `credit.balance_depleted` when the balance fell into
/// them and they are armed; `credit.balance_recovered` when it rose out of low after either
/// fired. Returns the new arming and the messages, in the order they happened.
pub fn balance_alerts(
    customer: &CustomerId,
    armed: Armed,
    before: Balance,
    after: Balance,
    rule: &AlertRule,
    now: Timestamp,
) -> (Armed, Vec<Message>) {
    let mut next = armed;
    let mut messages = Vec::new();
    let message = |event_type: EventType, arming: i64| {
        let mut data = serde_json::Map::new();
        data.insert("available".into(), after.available.to_string().into());
        data.insert("live_credits".into(), after.live_credits.to_string().into());
        data.insert(
            "consumed_share".into(),
            after.consumed_share().normalize().to_string().into(),
        );
        Message {
            event_type,
            customer: customer.clone(),
            at: now,
            data,
            cause: format!("{customer}\n{arming}"),
        }
    };
    if after.available < before.available {
        if after.is_low(rule) && !next.low_sent {
            next.low_sent = true;
            messages.push(message(EventType::BalanceLow, armed.arming));
        }
        if after.available <= Credits::ZERO && !next.depleted_sent {
            next.depleted_sent = true;
            messages.push(message(EventType::BalanceDepleted, armed.arming));
        }
    } else if after.available > before.available
        && !after.is_low(rule)
        && (armed.low_sent || armed.depleted_sent)
    {
        next = Armed {
            low_sent: false,
            depleted_sent: false,
            arming: armed.arming + 1,
        };
        messages.push(message(EventType::BalanceRecovered, armed.arming));
    }
    (next, messages)
}

/// A grant whose credits left expire within the rule's `grant_expiring_days` of `now`: what
/// `credit.grant_expiring` warns of (for paid grants) and the customer's page flags (for all).
pub fn expires_soon(grant: &Grant, rule: &AlertRule, now: Timestamp) -> bool {
    let window = chrono::Duration::days(i64::from(rule.grant_expiring_days));
    grant.expires_at.is_some_and(|expires_at| {
        !grant.expired
            && grant.remaining.is_positive()
            && now < expires_at
            && expires_at <= now + window
    })
}

/// `credit.grant_expiring`: a paid grant with credits left expires within the rule's days of
/// `now`. Said once per expiry: `warned_for` is the expiry it was last said for (a rollover that
/// moves the expiry warns again).
pub fn grant_expiring(
    customer: &CustomerId,
    grant: &Grant,
    warned_for: Option<Timestamp>,
    rule: &AlertRule,
    now: Timestamp,
) -> Option<Message> {
    let expires_at = grant.expires_at?;
    let due =
        grant.price.is_some() && expires_soon(grant, rule, now) && warned_for != Some(expires_at);
    if !due {
        return None;
    }
    let mut data = serde_json::Map::new();
    data.insert("grant".into(), grant.id.clone().into());
    data.insert("remaining".into(), grant.remaining.to_string().into());
    data.insert(
        "expires_at".into(),
        expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            .into(),
    );
    data.insert(
        "pack".into(),
        grant
            .pack_id
            .clone()
            .map_or(serde_json::Value::Null, Into::into),
    );
    data.insert(
        "plan".into(),
        grant
            .plan_id
            .clone()
            .map_or(serde_json::Value::Null, Into::into),
    );
    Some(Message {
        event_type: EventType::GrantExpiring,
        customer: customer.clone(),
        at: now,
        data,
        cause: format!("{}\n{}", grant.id, expires_at.timestamp_micros()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The customer these tests are about.
    fn customer() -> CustomerId {
        CustomerId::known("a")
    }

    fn balance(live: i64, available: i64) -> Balance {
        Balance {
            live_credits: Credits::new(live.into()).unwrap(),
            available: Credits::new(available.into()).unwrap(),
        }
    }

    fn types(messages: &[Message]) -> Vec<EventType> {
        messages.iter().map(|m| m.event_type).collect()
    }

    fn now() -> Timestamp {
        "2026-03-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn low_fires_once_when_the_share_is_crossed() {
        let rule = AlertRule::default();
        let (armed, m) = balance_alerts(
            &customer(),
            Armed::default(),
            balance(100, 30),
            balance(100, 21),
            &rule,
            now(),
        );
        assert!(m.is_empty(), "79% consumed is not low");
        let (armed, m) = balance_alerts(
            &customer(),
            armed,
            balance(100, 21),
            balance(100, 20),
            &rule,
            now(),
        );
        assert_eq!(types(&m), [EventType::BalanceLow]);
        assert_eq!(m[0].data["consumed_share"], "0.8");
        // Falling further is the same crossing.
        let (armed, m) = balance_alerts(
            &customer(),
            armed,
            balance(100, 20),
            balance(100, 5),
            &rule,
            now(),
        );
        assert!(m.is_empty());
        assert!(armed.low_sent && !armed.depleted_sent);
    }

    #[test]
    fn depleted_follows_low_and_a_top_up_recovers_and_rearms() {
        let rule = AlertRule::default();
        let (armed, m) = balance_alerts(
            &customer(),
            Armed::default(),
            balance(100, 50),
            balance(0, 0),
            &rule,
            now(),
        );
        assert_eq!(
            types(&m),
            [EventType::BalanceLow, EventType::BalanceDepleted]
        );
        let first_low = m[0].id();
        // A small top-up that leaves the balance low recovers nothing.
        let (armed, m) = balance_alerts(
            &customer(),
            armed,
            balance(0, 0),
            balance(10, 1),
            &rule,
            now(),
        );
        assert!(m.is_empty());
        let (armed, m) = balance_alerts(
            &customer(),
            armed,
            balance(10, 1),
            balance(110, 101),
            &rule,
            now(),
        );
        assert_eq!(types(&m), [EventType::BalanceRecovered]);
        assert_eq!(
            armed,
            Armed {
                low_sent: false,
                depleted_sent: false,
                arming: 1
            }
        );
        // The next crossing is a new message, with a new id.
        let (_, m) = balance_alerts(
            &customer(),
            armed,
            balance(110, 101),
            balance(110, 2),
            &rule,
            now(),
        );
        assert_eq!(types(&m), [EventType::BalanceLow]);
        assert_ne!(m[0].id(), first_low);
    }

    #[test]
    fn a_rise_without_an_alert_or_a_fall_within_the_share_says_nothing() {
        let rule = AlertRule::default();
        let (armed, m) = balance_alerts(
            &customer(),
            Armed::default(),
            balance(100, 90),
            balance(200, 190),
            &rule,
            now(),
        );
        assert!(m.is_empty());
        assert_eq!(armed, Armed::default());
        // An unchanged balance never fires, even when low.
        let (_, m) = balance_alerts(
            &customer(),
            armed,
            balance(100, 0),
            balance(100, 0),
            &rule,
            now(),
        );
        assert!(m.is_empty());
    }

    #[test]
    fn the_share_is_compared_unrounded() {
        let rule = AlertRule::default();
        let share = |available: &str| Balance {
            live_credits: Credits::new(100_000.into()).unwrap(),
            available: Credits::new(available.parse().unwrap()).unwrap(),
        };
        // 79.996% consumed rounds to 0.8 but is not 80%.
        assert!(!share("20004").is_low(&rule));
        assert_eq!(
            share("20004").consumed_share().normalize().to_string(),
            "0.8"
        );
        assert!(share("20000").is_low(&rule));
    }

    #[test]
    fn a_plan_s_thresholds_replace_the_defaults_it_names() {
        let rule = AlertRule::default();
        let plan = LowBalance {
            consumed_share: Some(Decimal::new(95, 2)),
            credits: None,
        };
        let on_plan = rule.with(Some(&plan));
        assert_eq!(on_plan.low_consumed_share, Decimal::new(95, 2));
        assert_eq!(on_plan.low_credits, None);
        assert_eq!(rule.with(None), rule);
        let (_, m) = balance_alerts(
            &customer(),
            Armed::default(),
            balance(100, 30),
            balance(100, 10),
            &on_plan,
            now(),
        );
        assert!(m.is_empty(), "90% is not low on a plan that says 95%");
        let (_, m) = balance_alerts(
            &customer(),
            Armed::default(),
            balance(100, 10),
            balance(100, 5),
            &on_plan,
            now(),
        );
        assert_eq!(types(&m), [EventType::BalanceLow]);
    }

    #[test]
    fn an_absolute_threshold_is_low_too() {
        let rule = AlertRule {
            low_credits: Some(Credits::new(50.into()).unwrap()),
            ..AlertRule::default()
        };
        let (_, m) = balance_alerts(
            &customer(),
            Armed::default(),
            balance(1000, 60),
            balance(1000, 50),
            &rule,
            now(),
        );
        assert_eq!(types(&m), [EventType::BalanceLow]);
    }

    #[test]
    fn a_paid_grant_with_credits_left_warns_once_per_expiry_within_the_window() {
        use crate::domain::ledger::{GrantSource, Paid};
        let rule = AlertRule::default();
        let bought = now();
        let expires = bought + chrono::Duration::days(30);
        let credits = |n: i64| Credits::new(n.into()).unwrap();
        let paid = Grant::pack(
            "g",
            "topup",
            credits(100),
            Paid {
                price: "10".parse().unwrap(),
                currency: "usd".into(),
            },
            (GrantSource::Test, "t".into()),
            bought,
        )
        .expiring(Some(expires));
        let eight_days_before = expires - chrono::Duration::days(8);
        let seven_days_before = expires - chrono::Duration::days(7);
        assert!(grant_expiring(&customer(), &paid, None, &rule, eight_days_before).is_none());
        let said = grant_expiring(&customer(), &paid, None, &rule, seven_days_before).unwrap();
        assert_eq!(said.event_type, EventType::GrantExpiring);
        assert_eq!(said.data["remaining"], "100");
        assert!(
            grant_expiring(&customer(), &paid, Some(expires), &rule, seven_days_before).is_none()
        );
        // A moved expiry warns again; an expired, spent or free grant never does.
        let moved = paid
            .clone()
            .expiring(Some(expires + chrono::Duration::days(1)));
        let later = seven_days_before + chrono::Duration::days(1);
        let again = grant_expiring(&customer(), &moved, Some(expires), &rule, later).unwrap();
        assert_ne!(again.id(), said.id());
        assert!(grant_expiring(&customer(), &paid, None, &rule, expires).is_none());
        let mut spent = paid.clone();
        spent.remaining = Credits::ZERO;
        assert!(grant_expiring(&customer(), &spent, None, &rule, seven_days_before).is_none());
        let free = Grant::promotional("f", credits(5), (GrantSource::Test, "t".into()), bought)
            .expiring(Some(expires));
        assert!(grant_expiring(&customer(), &free, None, &rule, seven_days_before).is_none());
    }

    #[test]
    fn the_current_pack_is_the_newest_with_credits_left() {
        use crate::domain::ledger::{GrantSource, Paid};
        let credits = |n: i64| Credits::new(n.into()).unwrap();
        let pack = |id: &str, pack: &str, at: Timestamp| {
            let paid = Paid {
                price: "10".parse().unwrap(),
                currency: "usd".into(),
            };
            Grant::pack(
                id,
                pack,
                credits(100),
                paid,
                (GrantSource::Test, "t".into()),
                at,
            )
        };
        let mut book = Book::new(CustomerId::known("a"));
        assert_eq!(current_pack(&book), None);
        let later = now() + chrono::Duration::days(1);
        book.add_grant(pack("g1", "small", now()), now());
        book.add_grant(
            Grant::promotional("p", credits(5), (GrantSource::Test, "t".into()), later),
            later,
        );
        assert_eq!(current_pack(&book), Some("small"));
        book.add_grant(pack("g2", "large", later), later);
        assert_eq!(current_pack(&book), Some("large"));
        // Spent, it is no longer the customer's pack.
        book.grants[2].remaining = Credits::ZERO;
        assert_eq!(current_pack(&book), Some("small"));
    }

    #[test]
    fn a_customer_s_thresholds_win_over_its_plan_s() {
        let d = |t: &str| t.parse::<Decimal>().unwrap();
        assert_eq!(LowBalance::of(None, None), Ok(None));
        for (share, credits, field) in [
            (Some("0"), None, "low_balance_consumed_share"),
            (Some("1.5"), None, "low_balance_consumed_share"),
            (Some("0.0000001"), None, "low_balance_consumed_share"),
            (None, Some("-1"), "low_balance_credits"),
            (None, Some("0"), "low_balance_credits"),
        ] {
            let bad = LowBalance::of(share.map(d), credits.map(d)).unwrap_err();
            assert_eq!(bad.field, field);
        }
        let plan = LowBalance::of(Some(d("0.9")), Some(d("500"))).unwrap();
        let own = LowBalance::of(Some(d("0.5")), None).unwrap();
        let pack = LowBalance::of(Some(d("0.95")), Some(d("50"))).unwrap();
        let rule = AlertRule::default().for_customer(pack.as_ref(), plan.as_ref(), own.as_ref());
        // The customer's share, the plan's credits.
        assert_eq!(rule.low_consumed_share, d("0.5"));
        assert_eq!(rule.low_credits.map(|c| c.value()), Some(d("500")));
        // Without a plan's, the pack's.
        let rule = AlertRule::default().for_customer(pack.as_ref(), None, None);
        assert_eq!(rule.low_consumed_share, d("0.95"));
        assert_eq!(rule.low_credits.map(|c| c.value()), Some(d("50")));
        let rule = AlertRule::default().for_customer(None, None, None);
        assert_eq!(rule, AlertRule::default());
    }
}
