//! The pages people look at, rendered on the server from `templates/` (askama, checked when
//! compiled): no script, every value escaped, a strict Content-Security-Policy on every answer.

pub mod actions;
pub mod chart;
pub mod consoles;
pub mod finance;
pub mod notice;
pub mod portal;
pub mod routes;
pub mod session;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

pub use crate::service::pages::Pages;

/// Pages rendered with the headers every page carries.
pub trait Render {
    /// A page answer. No site may frame it.
    fn page(
        &self,
        status: StatusCode,
        template: &impl askama::Template,
    ) -> crate::error::Result<Response>;

    /// The customer's page: as `page`, but the `[pages] embed_origins` may frame it. The
    /// console, the finance pages and sign-in are never framed, whatever that setting says.
    fn embeddable_page(
        &self,
        status: StatusCode,
        template: &impl askama::Template,
    ) -> crate::error::Result<Response>;
}

impl Render for Pages {
    fn page(
        &self,
        status: StatusCode,
        template: &impl askama::Template,
    ) -> crate::error::Result<Response> {
        render(status, template, "'none'")
    }

    fn embeddable_page(
        &self,
        status: StatusCode,
        template: &impl askama::Template,
    ) -> crate::error::Result<Response> {
        render(status, template, &self.frame_ancestors)
    }
}

fn render(
    status: StatusCode,
    template: &impl askama::Template,
    frame_ancestors: &str,
) -> crate::error::Result<Response> {
    let html = template
        .render()
        .map_err(|e| crate::error::Error::Internal(format!("template: {e}")))?;
    Ok(respond(status, html, frame_ancestors))
}

/// A rendered page with the headers every page carries; `frame_ancestors` who may frame it.
fn respond(status: StatusCode, html: String, frame_ancestors: &str) -> Response {
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    let policy = format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
         base-uri 'none'; frame-ancestors {frame_ancestors}"
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&policy).expect("origins are checked printable"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A time as the pages show it: to the minute, in UTC.
pub fn when(t: crate::domain::Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The plan's next grant as the pages say it: its credits, when, and what rolls over into it.
pub fn next_grant(summary: &crate::domain::summary::Summary<'_>) -> Option<String> {
    let at = summary.next_grant_at?;
    let credits = summary
        .allowance
        .map_or_else(String::new, |c| format!("{c} credits "));
    let carried = if summary.rolls_over.is_positive() {
        format!(" ({} rolling over)", summary.rolls_over)
    } else {
        String::new()
    };
    Some(format!("{credits}on {}{carried}", when(at)))
}

/// A page that only says something: a refusal, a link that opens nothing.
#[derive(askama::Template)]
#[template(path = "refused.html")]
pub struct Message {
    pub title: &'static str,
    pub message: &'static str,
}

/// The one stylesheet, served from the binary.
pub async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../assets/creditbook.css"),
    )
        .into_response()
}
