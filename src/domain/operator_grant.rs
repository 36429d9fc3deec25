//! A grant an operator asks for (`POST /v1/customers/{id}/grants`): what it may carry by kind,
//! and what it takes from the catalog when the request leaves it out (a pack's credits, price,
//! expiry and priority; a plan's credits and priority).

use super::Timestamp;
use super::catalog::Catalog;
use super::ledger::{Grant, GrantKind, GrantSource, Paid};
use super::money::{Credits, Price};
use rust_decimal::Decimal;

/// Longest memo kept with an operator's grant, in characters.
pub const MAX_MEMO_LENGTH: usize = 500;

/// Lowest and highest priority an operator may give a grant.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;

/// What the operator sent, as parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantAsked {
    pub kind: GrantKind,
    pub credits: Option<Decimal>,
    pub price: Option<Decimal>,
    pub currency: Option<String>,
    pub pack: Option<String>,
    pub plan: Option<String>,
    pub expires_at: Option<Timestamp>,
    pub priority: Option<i32>,
    /// Why; may be empty.
    pub memo: String,
    /// The request's idempotency key: with the memo, the grant's source.
    pub key: String,
}

/// Why a grant is refused; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantRefused {
    /// `(field, why)`.
    Invalid(&'static str, String),
    /// The pack or plan named is not in the catalog.
    UnknownItem { kind: &'static str, id: String },
}

fn invalid(field: &'static str, why: impl Into<String>) -> GrantRefused {
    GrantRefused::Invalid(field, why.into())
}

/// The grant `asked` makes, as `id`, at `now`.
pub fn grant(
    asked: &GrantAsked,
    catalog: &Catalog,
    id: String,
    now: Timestamp,
) -> Result<Grant, GrantRefused> {
    let memo = &asked.memo;
    if memo.chars().count() > MAX_MEMO_LENGTH || memo.chars().any(char::is_control) {
        return Err(invalid(
            "memo",
            format!("at most {MAX_MEMO_LENGTH} characters, no control characters"),
        ));
    }
    let source = (
        GrantSource::Admin,
        if memo.is_empty() {
            asked.key.clone()
        } else {
            format!("{}: {memo}", asked.key)
        },
    );
    let (grant, default_expiry) = by_kind(asked, catalog, id, source, now)?;
    let expires_at = asked.expires_at.or(default_expiry);
    if expires_at.is_some_and(|at| at <= now) {
        return Err(invalid("expires_at", "must be in the future"));
    }
    let priority = asked.priority.unwrap_or(grant.priority);
    if !PRIORITY_RANGE.contains(&priority) {
        return Err(invalid(
            "priority",
            format!(
                "must be between {} and {}",
                PRIORITY_RANGE.start(),
                PRIORITY_RANGE.end()
            ),
        ));
    }
    Ok(grant.expiring(expires_at).at_priority(priority))
}

fn positive(amount: Decimal, what: &str) -> Result<Credits, GrantRefused> {
    Credits::positive(amount).map_err(|e| invalid("credits", format!("{what}{e}")))
}

/// The grant of `asked.kind` at its kind's (or catalog item's) priority, and the expiry its
/// catalog item gives when the request names none.
// Long: one arm per kind of grant, each saying what that kind may carry and fills in.
fn by_kind(
    asked: &GrantAsked,
    catalog: &Catalog,
    id: String,
    source: (GrantSource, String),
    now: Timestamp,
) -> Result<(Grant, Option<Timestamp>), GrantRefused> {
    let price = |amount: Decimal, currency: &str| {
        let price = Price::new(amount, currency).map_err(|r| invalid("price", r))?;
        Ok::<_, GrantRefused>(Paid {
            price: price.money(),
            currency: price.currency,
        })
    };
    match asked.kind {
        GrantKind::Promotional | GrantKind::Adjustment => {
            if asked.pack.is_some() || asked.plan.is_some() || asked.price.is_some() {
                return Err(invalid(
                    "kind",
                    "promotional and adjustment grants carry no pack, plan or price",
                ));
            }
            let credits = asked
                .credits
                .ok_or_else(|| invalid("credits", "is required"))?;
            let credits = positive(credits, &format!("{credits} "))?;
            let grant = if asked.kind == GrantKind::Promotional {
                Grant::promotional(id, credits, source, now)
            } else {
                Grant::adjustment(id, credits, source, now)
            };
            Ok((grant, None))
        }
        GrantKind::Pack => {
            let pack_id = asked
                .pack
                .as_deref()
                .ok_or_else(|| invalid("pack", "is required with kind pack"))?;
            let pack = catalog
                .pack(pack_id)
                .ok_or_else(|| GrantRefused::UnknownItem {
                    kind: "pack",
                    id: pack_id.to_owned(),
                })?;
            let credits = match asked.credits {
                Some(c) => positive(c, &format!("{c} "))?,
                None => pack.credits,
            };
            // The pack's own price unless the request names one (in its currency, else the
            // pack's).
            let currency = asked.currency.as_deref().unwrap_or(&pack.price.currency);
            let paid = match asked.price {
                Some(amount) => price(amount, currency)?,
                None => price(pack.price.amount, &pack.price.currency)?,
            };
            let expiry = pack
                .expires_after_days
                .map(|d| now + chrono::Duration::days(i64::from(d)));
            let grant = Grant::pack(id, pack_id, credits, paid, source, now);
            Ok((grant.at_priority(pack.priority), expiry))
        }
        GrantKind::Plan => {
            let plan_id = asked
                .plan
                .as_deref()
                .ok_or_else(|| invalid("plan", "is required with kind plan"))?;
            let plan = catalog
                .plan(plan_id)
                .ok_or_else(|| GrantRefused::UnknownItem {
                    kind: "plan",
                    id: plan_id.to_owned(),
                })?;
            let credits = match asked.credits {
                Some(c) => positive(c, &format!("{c} "))?,
                None => positive(plan.credits.value(), "the plan's ")?,
            };
            let currency = asked.currency.as_deref().unwrap_or(&catalog.currency);
            let paid = asked.price.map(|p| price(p, currency)).transpose()?;
            let grant = Grant::plan(id, plan_id, credits, paid, None, source, now);
            Ok((grant.at_priority(plan.priority), None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::{Breakage, PROMOTIONAL_PRIORITY, Pack, Plan};
    use std::str::FromStr;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn now() -> Timestamp {
        chrono::DateTime::from_timestamp(1_767_225_600, 0).unwrap()
    }

    /// Pack `small`: 500 credits for 5.00 USD, 30 days, priority 20; plan `pro`: 1,000 credits,
    /// priority 15.
    fn catalog() -> Catalog {
        let small = Pack {
            id: "small".into(),
            stripe_prices: vec![],
            credits: Credits::new(dec("500")).unwrap(),
            price: Price::new(dec("5"), "usd").unwrap(),
            expires_after_days: Some(30),
            breakage: Breakage::Remote,
            priority: 20,
            low_balance: None,
            top_up_url: None,
        };
        let pro = Plan {
            credits: Credits::new(dec("1000")).unwrap(),
            priority: 15,
            ..Plan::bare("pro")
        };
        Catalog {
            currency: "eur".into(),
            packs: [("small".to_string(), small)].into(),
            plans: [
                ("pro".to_string(), pro),
                ("free".to_string(), Plan::bare("free")),
            ]
            .into(),
            ..Default::default()
        }
    }

    fn asked(kind: GrantKind) -> GrantAsked {
        GrantAsked {
            kind,
            credits: None,
            price: None,
            currency: None,
            pack: None,
            plan: None,
            expires_at: None,
            priority: None,
            memo: String::new(),
            key: "k1".into(),
        }
    }

    fn granted(asked: &GrantAsked) -> Result<Grant, GrantRefused> {
        grant(asked, &catalog(), "g1".into(), now())
    }

    #[test]
    fn a_promotional_grant_needs_its_credits_and_carries_nothing_else() {
        let grant = granted(&GrantAsked {
            credits: Some(dec("25")),
            memo: "welcome".into(),
            ..asked(GrantKind::Promotional)
        })
        .unwrap();
        assert_eq!(grant.id, "g1");
        assert_eq!(grant.credits.value(), dec("25"));
        assert_eq!(grant.priority, PROMOTIONAL_PRIORITY);
        assert_eq!((grant.price, grant.expires_at), (None, None));
        assert_eq!(grant.source_type, GrantSource::Admin);
        assert_eq!(grant.source_id, "k1: welcome");
        assert_eq!(
            granted(&asked(GrantKind::Promotional)),
            Err(GrantRefused::Invalid("credits", "is required".into()))
        );
        let priced = GrantAsked {
            credits: Some(dec("25")),
            price: Some(dec("1")),
            ..asked(GrantKind::Adjustment)
        };
        assert!(matches!(
            granted(&priced),
            Err(GrantRefused::Invalid("kind", _))
        ));
        let negative = GrantAsked {
            credits: Some(dec("-5")),
            ..asked(GrantKind::Adjustment)
        };
        assert!(matches!(
            granted(&negative),
            Err(GrantRefused::Invalid("credits", why)) if why.starts_with("-5 ")
        ));
    }

    #[test]
    fn a_pack_grant_takes_what_the_request_leaves_out_from_the_pack() {
        let grant = granted(&GrantAsked {
            pack: Some("small".into()),
            ..asked(GrantKind::Pack)
        })
        .unwrap();
        assert_eq!(grant.credits.value(), dec("500"));
        assert_eq!(grant.price.map(|p| p.value()), Some(dec("5")));
        assert_eq!(grant.currency.as_deref(), Some("usd"));
        assert_eq!(grant.expires_at, Some(now() + chrono::Duration::days(30)));
        assert_eq!(grant.priority, 20);
        assert_eq!(grant.pack_id.as_deref(), Some("small"));
        // What the request says wins; a currency alone does not reprice the pack.
        let grant = granted(&GrantAsked {
            pack: Some("small".into()),
            credits: Some(dec("100")),
            currency: Some("gbp".into()),
            priority: Some(-3),
            ..asked(GrantKind::Pack)
        })
        .unwrap();
        assert_eq!(grant.credits.value(), dec("100"));
        assert_eq!(grant.currency.as_deref(), Some("usd"));
        assert_eq!(grant.priority, -3);
        let repriced = granted(&GrantAsked {
            pack: Some("small".into()),
            price: Some(dec("4.50")),
            currency: Some("gbp".into()),
            ..asked(GrantKind::Pack)
        })
        .unwrap();
        assert_eq!(
            (
                repriced.price.map(|p| p.value()),
                repriced.currency.as_deref()
            ),
            (Some(dec("4.5")), Some("gbp"))
        );
        assert_eq!(
            granted(&GrantAsked {
                pack: Some("huge".into()),
                ..asked(GrantKind::Pack)
            }),
            Err(GrantRefused::UnknownItem {
                kind: "pack",
                id: "huge".into()
            })
        );
        assert!(matches!(
            granted(&asked(GrantKind::Pack)),
            Err(GrantRefused::Invalid("pack", _))
        ));
        let yen_cents = GrantAsked {
            pack: Some("small".into()),
            price: Some(dec("1.5")),
            currency: Some("jpy".into()),
            ..asked(GrantKind::Pack)
        };
        assert!(matches!(
            granted(&yen_cents),
            Err(GrantRefused::Invalid("price", _))
        ));
    }

    #[test]
    fn a_plan_grant_takes_the_plan_s_credits_and_is_free_unless_priced() {
        let grant = granted(&GrantAsked {
            plan: Some("pro".into()),
            ..asked(GrantKind::Plan)
        })
        .unwrap();
        assert_eq!(grant.credits.value(), dec("1000"));
        assert_eq!((grant.price, grant.priority), (None, 15));
        let priced = granted(&GrantAsked {
            plan: Some("pro".into()),
            price: Some(dec("9.99")),
            ..asked(GrantKind::Plan)
        })
        .unwrap();
        assert_eq!(priced.currency.as_deref(), Some("eur"), "the catalog's");
        // A plan of no credits needs the request to say how many.
        assert!(matches!(
            granted(&GrantAsked {
                plan: Some("free".into()),
                ..asked(GrantKind::Plan)
            }),
            Err(GrantRefused::Invalid("credits", why)) if why.starts_with("the plan's ")
        ));
    }

    #[test]
    fn expiry_priority_and_memo_are_bounded() {
        let base = GrantAsked {
            credits: Some(dec("1")),
            ..asked(GrantKind::Promotional)
        };
        let past = GrantAsked {
            expires_at: Some(now()),
            ..base.clone()
        };
        assert!(matches!(
            granted(&past),
            Err(GrantRefused::Invalid("expires_at", _))
        ));
        for priority in [-1001, 1001] {
            let out_of_range = GrantAsked {
                priority: Some(priority),
                ..base.clone()
            };
            assert!(matches!(
                granted(&out_of_range),
                Err(GrantRefused::Invalid("priority", _))
            ));
        }
        for memo in ["x".repeat(MAX_MEMO_LENGTH + 1), "a\nb".into()] {
            let bad = GrantAsked {
                memo,
                ..base.clone()
            };
            assert!(matches!(
                granted(&bad),
                Err(GrantRefused::Invalid("memo", _))
            ));
        }
        let longest = GrantAsked {
            memo: "é".repeat(MAX_MEMO_LENGTH),
            ..base
        };
        assert!(granted(&longest).is_ok());
    }
}
