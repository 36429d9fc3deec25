//! The pages' routes, merged by the server beside the API's.

use crate::http::AppState;
use axum::Router;
use axum::routing::{get, post};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal", get(super::portal::page))
        .route(
            "/login",
            get(super::session::login_form).post(super::session::login),
        )
        .route("/logout", post(super::session::logout))
        .route("/admin", get(super::consoles::admin))
        .route("/admin/stripe-events", get(super::consoles::stripe_events))
        .route(
            "/admin/customers/{id}",
            get(super::consoles::admin_customer),
        )
        .route("/admin/customers/{id}/grant", post(super::actions::grant))
        .route("/admin/customers/{id}/adjust", post(super::actions::adjust))
        .route("/admin/customers/{id}/plan", post(super::actions::plan))
        .route("/admin/customers/{id}/parent", post(super::actions::parent))
        .route("/admin/customers/{id}/limits", post(super::actions::limits))
        .route(
            "/admin/customers/{id}/override",
            post(super::actions::make_override),
        )
        .route("/admin/keys", get(super::actions::keys))
        .route("/admin/keys/{id}/revoke", post(super::actions::revoke))
        .route("/finance", get(super::finance::finance))
        .route("/finance/close", post(super::finance::close))
        .route("/finance/export/{file}", get(super::finance::export))
        .route("/finance/grants", get(super::finance::grants))
        .route("/finance/grants/{id}", get(super::finance::schedule))
        .route(
            "/finance/grants/{id}/schedule.csv",
            get(super::finance::schedule_download),
        )
        .route("/assets/creditbook.css", get(super::stylesheet))
}
