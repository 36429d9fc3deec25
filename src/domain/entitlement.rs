//! Is a customer entitled to an action's feature? (DESIGN.md §2, Entitlements.)

use super::catalog::{Action, Catalog};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    FeatureNotEntitled,
    CustomerFrozen,
}

/// What the gate knows of a customer besides credits.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    pub plan_id: Option<String>,
    pub frozen: bool,
}

pub fn entitle(catalog: &Catalog, standing: &Standing, action: &Action) -> Result<(), Refusal> {
    if standing.frozen {
        return Err(Refusal::CustomerFrozen);
    }
    let feature = catalog
        .features
        .get(&action.feature)
        .expect("config validation ties every action to a known feature");
    if !feature.plan_only {
        return Ok(());
    }
    let listed = standing
        .plan_id
        .as_deref()
        .and_then(|id| catalog.plan(id))
        .is_some_and(|plan| plan.features.iter().any(|f| f == &feature.id));
    if listed {
        Ok(())
    } else {
        Err(Refusal::FeatureNotEntitled)
    }
}
