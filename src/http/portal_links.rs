//! Portal links: an app asks for a signed link to its customer's credits page.

use super::AppState;
use super::extract::{Caller, customer_id};
use crate::error::{Error, Result};
use crate::service::portal_link as link;
use crate::store::keys::Scope;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Serialize, Deserialize, ToSchema)]
pub struct PortalLink {
    /// Opens the customer's credits page, and no other, until `expires_at`.
    url: String,
    expires_at: DateTime<Utc>,
}

/// A link to the customer's credits page, signed, that expires after `[pages]
/// portal_link_minutes`: for an app to embed or send to its customer.
#[utoipa::path(post, path = "/v1/customers/{id}/portal-links", params(("id" = String, Path)),
    responses((status = 201, body = PortalLink), (status = 404)), security(("bearer" = [])))]
pub async fn create_link(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<PortalLink>)> {
    caller.require(Scope::App)?;
    let customer = customer_id("id", &id)?;
    let now = state.clock.now();
    if state.store.view(&customer, now).await?.is_none() {
        return Err(Error::CustomerNotFound(customer.to_string()));
    }
    let expires_at = now + chrono::Duration::seconds(state.pages.portal_link_seconds as i64);
    let token = link::sign(state.pages.key(), customer.as_str(), expires_at);
    Ok((
        StatusCode::CREATED,
        Json(PortalLink {
            url: format!("{}/portal?token={token}", state.pages.public_url),
            expires_at,
        }),
    ))
}
