//! Low-balance thresholds: the `[alerts]` rule, a plan's, a pack's or a customer's own, and
//! which one wins. Configuration, read by the catalog and by the balance alerts.

use super::money::Credits;
use rust_decimal::Decimal;

/// When a balance is low (`[alerts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertRule {
    /// Low once this share of the credits of the live grants is consumed (0 < share <= 1).
    pub low_consumed_share: Decimal,
    /// Also low once available credits are at or below this, whatever the share.
    pub low_credits: Option<Credits>,
    /// `credit.grant_expiring` this many days before a paid grant with credits left expires.
    pub grant_expiring_days: u32,
}

impl Default for AlertRule {
    fn default() -> Self {
        AlertRule {
            low_consumed_share: Decimal::new(8, 1),
            low_credits: None,
            grant_expiring_days: 7,
        }
    }
}

/// Low-balance thresholds of a plan (`[[plans]] low_balance_consumed_share`,
/// `low_balance_credits`) or of one customer: each one given replaces, for the plan's customers
/// or the customer, the one it would otherwise have (a customer's over its plan's, a plan's over
/// `[alerts]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct LowBalance {
    pub consumed_share: Option<Decimal>,
    pub credits: Option<Credits>,
}

/// Why thresholds are refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadThreshold {
    pub field: &'static str,
    pub reason: &'static str,
}

impl LowBalance {
    /// Thresholds from their parts: a share above 0 and at most 1 (six places at most), credits
    /// above 0; none when neither is given.
    pub fn of(
        consumed_share: Option<Decimal>,
        credits: Option<Decimal>,
    ) -> Result<Option<LowBalance>, BadThreshold> {
        if consumed_share.is_none() && credits.is_none() {
            return Ok(None);
        }
        if let Some(share) = consumed_share
            && (share <= Decimal::ZERO
                || share > Decimal::ONE
                || share.normalize().scale() > super::money::SCALE)
        {
            return Err(BadThreshold {
                field: "low_balance_consumed_share",
                reason: "must be above 0 and at most 1, with at most 6 decimal places",
            });
        }
        let credits = credits
            .map(|c| {
                Credits::positive(c).map_err(|_| BadThreshold {
                    field: "low_balance_credits",
                    reason: "must be above 0, with at most 6 decimal places",
                })
            })
            .transpose()?;
        Ok(Some(LowBalance {
            consumed_share,
            credits,
        }))
    }
}

impl AlertRule {
    /// The rule for a customer with its own thresholds `own`, on a plan with `plan`'s, whose
    /// newest live pack has `pack`'s: each threshold the customer sets wins over its plan's, a
    /// plan's over its pack's, and a pack's over this rule's.
    pub fn for_customer(
        &self,
        pack: Option<&LowBalance>,
        plan: Option<&LowBalance>,
        own: Option<&LowBalance>,
    ) -> AlertRule {
        self.with(pack).with(plan).with(own)
    }

    /// The rule with `low` thresholds replacing its own (none: this rule).
    pub fn with(&self, low: Option<&LowBalance>) -> AlertRule {
        let Some(low) = low else {
            return *self;
        };
        AlertRule {
            low_consumed_share: low.consumed_share.unwrap_or(self.low_consumed_share),
            low_credits: low.credits.or(self.low_credits),
            ..*self
        }
    }
}
