//! Billed overage reported to Stripe (README, Overage billed through Stripe): what a customer's
//! accrued overage sends to its plan's meter, in whole credits, with an identifier that is the
//! same on every retry; and where in Stripe's window an event's time may fall.

use super::Timestamp;
use super::customer::CustomerId;
use super::money::Credits;
use super::outbound::{EventType, Message};
use rust_decimal::Decimal;
use serde_json::json;

/// How far back Stripe takes a meter event's timestamp (35 days), less an hour of margin for
/// the time a request takes.
pub const STRIPE_WINDOW_BACK_SECONDS: i64 = 35 * 86_400 - 3_600;

/// One report to a Stripe meter: `value` whole overage credits of `customer`, which brings what
/// has been reported to `reported`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterReport {
    pub customer: CustomerId,
    pub stripe_customer: String,
    pub event_name: String,
    pub value: u64,
    pub reported: Credits,
    pub identifier: String,
    pub timestamp: Timestamp,
}

/// The report due for a customer that has accrued `accrued` overage credits and reported
/// `reported` of them: the whole credits not yet reported, or none when less than one is
/// waiting (a fraction waits for the next report). The identifier names the customer and the
/// total reported after it, so the same report is the same identifier, and no two reports of a
/// customer share one.
pub fn meter_report(
    customer: &CustomerId,
    stripe_customer: &str,
    event_name: &str,
    accrued: Credits,
    reported: Credits,
    now: Timestamp,
) -> Option<MeterReport> {
    let whole = accrued.value().floor();
    let value = whole - reported.value();
    if value < Decimal::ONE {
        return None;
    }
    let value = u64::try_from(value).ok()?;
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(customer.as_str().as_bytes());
    Some(MeterReport {
        customer: customer.to_owned(),
        stripe_customer: stripe_customer.to_owned(),
        event_name: event_name.to_owned(),
        value,
        reported: Credits::new(whole).expect("whole credits of an accrual"),
        identifier: format!("creditbook-overage-{}-{whole}", hex::encode(&digest[..8])),
        timestamp: now,
    })
}

impl MeterReport {
    /// The fields of the meter event, as sent (`payload[value]` is whole credits).
    pub fn body(&self) -> serde_json::Value {
        json!({
            "event_name": self.event_name,
            "identifier": self.identifier,
            "timestamp": self.timestamp.timestamp(),
            "payload": {"stripe_customer_id": self.stripe_customer, "value": self.value.to_string()},
        })
    }

    /// `overage.reported`, for the endpoints that take it.
    pub fn message(&self) -> Message {
        let mut data = serde_json::Map::new();
        data.insert(
            "stripe_customer".into(),
            self.stripe_customer.clone().into(),
        );
        data.insert("meter_event".into(), self.event_name.clone().into());
        data.insert("credits".into(), self.value.to_string().into());
        data.insert("reported".into(), self.reported.to_string().into());
        data.insert("identifier".into(), self.identifier.clone().into());
        Message {
            event_type: EventType::OverageReported,
            customer: self.customer.clone(),
            at: self.timestamp,
            data,
            cause: self.identifier.clone(),
        }
    }
}

/// The timestamp a meter event is sent with at `now`: its own, moved into Stripe's window (the
/// past 35 days, nothing ahead of now). A report that waited longer than the window is billed
/// at the window's start rather than lost.
pub fn within_stripe_window(timestamp: i64, now: Timestamp) -> i64 {
    let now = now.timestamp();
    timestamp.clamp(now - STRIPE_WINDOW_BACK_SECONDS, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::str::FromStr;

    /// The customer these tests are about.
    fn customer() -> CustomerId {
        CustomerId::known("acct")
    }

    fn c(text: &str) -> Credits {
        Credits::new(Decimal::from_str(text).unwrap()).unwrap()
    }

    fn at() -> Timestamp {
        chrono::Utc.with_ymd_and_hms(2027, 3, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn whole_credits_are_reported_and_fractions_wait() {
        assert_eq!(
            meter_report(&customer(), "cus_1", "overage", c("0.9"), c("0"), at()),
            None
        );
        let first = meter_report(&customer(), "cus_1", "overage", c("2.5"), c("0"), at()).unwrap();
        assert_eq!((first.value, first.reported), (2, c("2")));
        assert_eq!(
            meter_report(
                &customer(),
                "cus_1",
                "overage",
                c("2.99"),
                first.reported,
                at()
            ),
            None
        );
        let second = meter_report(
            &customer(),
            "cus_1",
            "overage",
            c("3.2"),
            first.reported,
            at(),
        )
        .unwrap();
        assert_eq!((second.value, second.reported), (1, c("3")));
        // The same report has the same identifier; the next one another; so has another customer.
        let again = meter_report(&customer(), "cus_1", "overage", c("2.7"), c("0"), at()).unwrap();
        assert_eq!(again.identifier, first.identifier);
        assert_ne!(second.identifier, first.identifier);
        let other = meter_report(
            &CustomerId::known("acct2"),
            "cus_2",
            "overage",
            c("2.5"),
            c("0"),
            at(),
        )
        .unwrap();
        assert_ne!(other.identifier, first.identifier);
        assert!(first.identifier.len() <= 100);
        assert_eq!(
            first.body()["payload"],
            json!({"stripe_customer_id": "cus_1", "value": "2"})
        );
        assert_eq!(first.message().id(), again.message().id());
    }

    #[test]
    fn timestamps_stay_in_stripes_window() {
        let now = at();
        let t = now.timestamp();
        assert_eq!(within_stripe_window(t - 60, now), t - 60);
        assert_eq!(within_stripe_window(t + 600, now), t);
        assert_eq!(
            within_stripe_window(t - 40 * 86_400, now),
            t - STRIPE_WINDOW_BACK_SECONDS
        );
    }
}
