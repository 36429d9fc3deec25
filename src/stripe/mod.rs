//! Stripe: webhook signature verification (more of the Stripe sync builds on it).

pub mod event;
pub mod signature;
