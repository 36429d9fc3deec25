//! Pure logic: no I/O and no clock reads. Time comes in as an argument.

/// An enum of the names Stripe gives a status or kind: the known ones as variants, and any
/// other (a name a later API version adds) kept as it came in `Other`, so it round-trips.
macro_rules! stripe_names {
    ($(#[$meta:meta])* pub enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal,)*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            Other(String),
        }

        impl $name {
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }

            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(other) => other,
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self::parse(&<String as serde::Deserialize>::deserialize(d)?))
            }
        }
    };
}

pub mod adjustment;
pub mod alerts;
pub mod autotopup;
pub mod billing;
pub mod catalog;
pub mod checkout;
pub mod command;
pub mod customer;
pub mod cycle;
pub mod gate;
pub mod invoice;
pub mod journal;
pub mod ledger;
pub mod limits;
pub mod margin;
pub mod money;
pub mod operator_grant;
pub mod organization;
pub mod outbound;
pub mod overage;
pub mod overrides;
pub mod refunds;
pub mod reports;
pub mod revrec;
pub mod stripe_run;
pub mod subscription;
pub mod summary;
pub mod thresholds;

pub use money::{Credits, Quantity};

/// Points in time are UTC; the caller supplies "now".
pub type Timestamp = chrono::DateTime<chrono::Utc>;
