//! Exact amounts. Credits and money are `rust_decimal::Decimal` with at most [`SCALE`] decimal
//! places; the store keeps them as integers of that scale so both databases round-trip them.

use rust_decimal::Decimal;
use std::fmt;

/// Decimal places kept for credits and money.
pub const SCALE: u32 = 6;

/// The largest amount of credits one request may name: a limit on everything, and far below what
/// an `i64` of scale 6 can hold (9.2e12), so that sums of a few of them still fit.
pub fn max_credits_per_request() -> Decimal {
    Decimal::from(1_000_000_000_000_i64)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must be greater than zero")]
    NotPositive,
    #[error("has more than {SCALE} decimal places")]
    TooPrecise,
    #[error("is larger than the limit of {0}")]
    TooLarge(Decimal),
    #[error("is out of the storable range")]
    OutOfRange,
}

/// A signed, exact number of credits with at most [`SCALE`] decimal places.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Credits(Decimal);

impl Credits {
    /// An amount named in a request: positive, scale <= 6, at most the per-request limit.
    pub fn positive(value: Decimal) -> Result<Self, AmountError> {
        if value <= Decimal::ZERO {
            return Err(AmountError::NotPositive);
        }
        if value > max_credits_per_request() {
            return Err(AmountError::TooLarge(max_credits_per_request()));
        }
        Self::new(value)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.normalize())
    }
}

/// An amount of money, signed and exact, in a currency kept beside it (a lot's, a journal
/// line's, a report row's), with at most [`SCALE`] decimal places: stored at the scale of
/// credits, shown to the currency's minor unit. Kept apart from [`Credits`] so that a price is
/// never spent and a balance never booked: the two meet only where the domain converts one into
/// the other at a price (`revrec::share`, `ledger::Book::claw_back`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(Decimal);

impl Money {
    /// As accountants read it: rounded to `currency`'s minor unit (half away from zero), and
    /// written with exactly that many places. For showing only: sums are taken before.
    pub fn shown(self, currency: &str) -> Money {
        let mut value = self.0;
        value.rescale(currency_minor_units(currency));
        Money(value)
    }

    /// To `currency`'s minor unit at least, keeping finer places it has (a vendor's cost).
    pub fn exact(self, currency: &str) -> Money {
        let minor = currency_minor_units(currency);
        let mut value = self.0.normalize();
        if value.scale() < minor {
            value.rescale(minor);
        }
        Money(value)
    }
}

/// With the places it holds: a shown amount keeps its minor unit ("12.50").
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What credits and money share: construction with the scale checked, the stored form, exact
/// arithmetic that keeps values normalized, a string in
/// JSON, and parsing that refuses more than [`SCALE`] places.
macro_rules! exact_amount {
    ($t:ident) => {
        impl $t {
            pub const ZERO: $t = $t(Decimal::ZERO);

            /// Any amount of scale <= 6 (sign unchecked): for values computed inside the domain.
            pub fn new(value: Decimal) -> Result<$t, AmountError> {
                let value = value.normalize();
                if value.scale() > SCALE {
                    return Err(AmountError::TooPrecise);
                }
                Ok($t(value))
            }

            /// Fixed-point integer of scale 6, as stored.
            pub fn from_micros(micros: i64) -> $t {
                $t(Decimal::new(micros, SCALE).normalize())
            }

            /// Fixed-point integer of scale 6, as stored.
            pub fn to_micros(self) -> Result<i64, AmountError> {
                let scaled = self.0 * Decimal::from(1_000_000_i64);
                debug_assert!(scaled.fract().is_zero(), "an amount has scale <= 6");
                i64::try_from(scaled.trunc()).map_err(|_| AmountError::OutOfRange)
            }

            pub fn value(self) -> Decimal {
                self.0
            }

            pub fn is_zero(self) -> bool {
                self.0.is_zero()
            }

            pub fn is_positive(self) -> bool {
                self.0 > Decimal::ZERO
            }

            pub fn is_negative(self) -> bool {
                self.0 < Decimal::ZERO
            }

            pub fn min(self, other: $t) -> $t {
                if self <= other { self } else { other }
            }

            pub fn max(self, other: $t) -> $t {
                if self >= other { self } else { other }
            }
        }

        impl std::ops::Add for $t {
            type Output = $t;
            fn add(self, other: $t) -> $t {
                $t((self.0 + other.0).normalize())
            }
        }

        impl std::ops::Sub for $t {
            type Output = $t;
            fn sub(self, other: $t) -> $t {
                $t((self.0 - other.0).normalize())
            }
        }

        impl std::ops::Neg for $t {
            type Output = $t;
            fn neg(self) -> $t {
                $t(-self.0)
            }
        }

        impl std::ops::AddAssign for $t {
            fn add_assign(&mut self, other: $t) {
                *self = *self + other;
            }
        }

        impl std::ops::SubAssign for $t {
            fn sub_assign(&mut self, other: $t) {
                *self = *self - other;
            }
        }

        impl std::iter::Sum for $t {
            fn sum<I: Iterator<Item = $t>>(iter: I) -> $t {
                iter.fold($t::ZERO, |a, b| a + b)
            }
        }

        /// A string, as every amount in the API.
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        /// A string or number of at most [`SCALE`] places.
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let value = <Decimal as serde::Deserialize>::deserialize(d)?;
                $t::new(value).map_err(serde::de::Error::custom)
            }
        }

        /// A decimal of at most [`SCALE`] places, as written in config and tests ("12.5").
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let value: Decimal = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
                $t::new(value).map_err(|e| format!("{s:?} {e}"))
            }
        }

        impl Micros for $t {
            fn to_micros(self) -> Result<i64, AmountError> {
                $t::to_micros(self)
            }
        }
    };
}

exact_amount!(Credits);
exact_amount!(Money);

/// An amount kept as a fixed-point integer of scale 6: credits and money, as the store keeps them.
pub trait Micros: Copy + fmt::Display {
    fn to_micros(self) -> Result<i64, AmountError>;
}

/// How many units of an action: positive, scale <= 6, at most one billion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(Decimal);

impl Quantity {
    pub fn max() -> Decimal {
        Decimal::from(1_000_000_000_i64)
    }

    pub fn value(self) -> Decimal {
        self.0
    }
}

impl TryFrom<Decimal> for Quantity {
    type Error = AmountError;
    fn try_from(value: Decimal) -> Result<Self, AmountError> {
        if value <= Decimal::ZERO {
            return Err(AmountError::NotPositive);
        }
        if value > Quantity::max() {
            return Err(AmountError::TooLarge(Quantity::max()));
        }
        let value = value.normalize();
        if value.scale() > SCALE {
            return Err(AmountError::TooPrecise);
        }
        Ok(Quantity(value))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Money has the same storage scale as credits; its precision is bounded by its currency.
pub fn currency_minor_units(currency: &str) -> u32 {
    match currency.to_ascii_uppercase().as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "JPY" | "KMF" | "KRW" | "MGA" | "PYG" | "RWF" | "UGX"
        | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "JOD" | "KWD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// A price: a non-negative amount in a three-letter currency, exact to the currency's minor unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub amount: Decimal,
    pub currency: String,
}

impl Price {
    pub fn new(amount: Decimal, currency: &str) -> Result<Self, String> {
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!(
                "currency {currency:?} is not a three-letter ISO 4217 code"
            ));
        }
        if amount < Decimal::ZERO {
            return Err("price must not be negative".into());
        }
        if amount > max_credits_per_request() {
            return Err(format!(
                "price exceeds the limit of {}",
                max_credits_per_request()
            ));
        }
        let amount = amount.normalize();
        let minor = currency_minor_units(currency);
        if amount.scale() > minor {
            return Err(format!(
                "price {amount} has more decimal places than {} allows ({minor})",
                currency.to_ascii_uppercase()
            ));
        }
        Ok(Price {
            amount,
            currency: currency.to_ascii_lowercase(),
        })
    }

    /// The amount as money: exact, since a price has at most three places.
    pub fn money(&self) -> Money {
        Money::new(self.amount).expect("a price has at most three decimal places")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn micros_round_trip_exactly() {
        let c = Credits::new(Decimal::from_str("123456789012.123456").unwrap()).unwrap();
        assert_eq!(c.to_micros().unwrap(), 123_456_789_012_123_456);
        assert_eq!(Credits::from_micros(c.to_micros().unwrap()), c);
    }

    #[test]
    fn too_precise_and_non_positive_are_refused() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert_eq!(
            Credits::positive(d("0.0000001")),
            Err(AmountError::TooPrecise)
        );
        assert_eq!(Credits::positive(d("0")), Err(AmountError::NotPositive));
        assert_eq!(Credits::positive(d("-1")), Err(AmountError::NotPositive));
        assert!(matches!(
            Credits::positive(d("1e13")),
            Err(AmountError::TooLarge(_))
        ));
        assert!(Credits::positive(d("1.500000")).is_ok());
    }

    #[test]
    fn money_respects_the_currency_minor_unit() {
        let d = |s| Decimal::from_str(s).unwrap();
        assert!(Price::new(d("9.99"), "usd").is_ok());
        assert!(Price::new(d("9.999"), "usd").is_err());
        assert!(Price::new(d("1000"), "JPY").is_ok());
        assert!(Price::new(d("10.5"), "jpy").is_err());
        assert!(Price::new(d("1"), "dollars").is_err());
    }

    #[test]
    fn money_is_shown_to_its_currency_minor_unit() {
        let m = Money::from_micros(12_345_678);
        assert_eq!(m.shown("usd").to_string(), "12.35");
        assert_eq!(m.shown("jpy").to_string(), "12");
        assert_eq!(m.shown("kwd").to_string(), "12.346");
        assert_eq!((-m).shown("usd").to_string(), "-12.35");
        assert_eq!(Money::ZERO.shown("usd").to_string(), "0.00");
        assert_eq!(
            Money::from_micros(1_500_000).exact("usd").to_string(),
            "1.50"
        );
        assert_eq!(
            Money::from_micros(1_234_567).exact("usd").to_string(),
            "1.234567"
        );
        assert_eq!(
            serde_json::to_string(&Money::from_micros(2_500_000).shown("eur")).unwrap(),
            "\"2.50\""
        );
        let sum: Money = [Money::from_micros(1), Money::from_micros(2)]
            .into_iter()
            .sum();
        assert_eq!(sum, Money::from_micros(3));
    }

    #[test]
    fn money_is_exact_and_refuses_more_than_six_places() {
        let m = |s: &str| s.parse::<Money>();
        assert_eq!(m("12.50").unwrap(), Money::from_micros(12_500_000));
        assert_eq!(m("12.50").unwrap().to_micros().unwrap(), 12_500_000);
        assert!(m("0.0000001").unwrap_err().contains("decimal places"));
        assert!(m("ten").is_err());
        // As credits are: sums are written without trailing zeros until shown.
        let sum = m("10.5").unwrap() - m("0.5").unwrap();
        assert_eq!(sum.to_string(), "10");
        assert_eq!(sum.shown("usd").to_string(), "10.00");
        assert_eq!(
            serde_json::from_str::<Money>("\"1.25\"").unwrap(),
            m("1.25").unwrap()
        );
        assert!(serde_json::from_str::<Money>("\"1.2500001\"").is_err());
        assert!(m("-3").unwrap().is_negative() && m("3").unwrap().is_positive());
        assert_eq!(m("3").unwrap().min(m("2").unwrap()), m("2").unwrap());
        assert_eq!(m("3").unwrap().max(m("2").unwrap()), m("3").unwrap());
    }

    #[test]
    fn a_price_is_money_of_its_amount() {
        let price = Price::new(Decimal::new(999, 2), "usd").unwrap();
        assert_eq!(price.money(), "9.99".parse::<Money>().unwrap());
    }
}
