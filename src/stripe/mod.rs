//! Stripe: webhook signature verification (more of the Stripe sync builds on it).

pub mod api;
pub mod apply;
pub mod event;
pub mod signature;
pub mod sync;
