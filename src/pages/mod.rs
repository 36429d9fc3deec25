//! The pages people look at, rendered on the server from `templates/` (askama, checked when
//! compiled): no script, every value escaped, a strict Content-Security-Policy on every answer.

pub mod chart;
pub mod consoles;
pub mod finance;
pub mod link;
pub mod portal;
pub mod routes;
pub mod session;
pub mod throttle;

use crate::config::PagesConfig;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// What the pages need: where they are reached, the key their links are signed with, and who
/// may embed the customer's page.
#[derive(Clone)]
pub struct Pages {
    pub public_url: String,
    key: Vec<u8>,
    pub portal_link_seconds: u64,
    pub session_idle_seconds: u64,
    pub session_max_seconds: u64,
    /// Session cookies are `Secure` when the pages are reached over HTTPS.
    pub secure_cookies: bool,
    frame_ancestors: String,
}

impl Pages {
    /// From `[pages]`; without a `secret`, a random key that lasts until the process stops.
    pub fn new(config: &PagesConfig, listen: &str) -> Pages {
        let key = config.secret.clone().unwrap_or_else(|| {
            tracing::warn!(
                "no [pages] secret: portal links last until this process stops and open on \
                 this instance only"
            );
            use rand::RngCore;
            let mut key = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            key
        });
        let frame_ancestors = if config.embed_origins.is_empty() {
            "'none'".to_owned()
        } else {
            config.embed_origins.join(" ")
        };
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        Pages {
            secure_cookies: public_url.starts_with("https://"),
            public_url,
            key,
            portal_link_seconds: config.portal_link_seconds,
            session_idle_seconds: config.session_idle_seconds,
            session_max_seconds: config.session_max_seconds,
            frame_ancestors,
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// A page answer: rendered, with the headers every page carries. No site may frame it.
    pub fn page(
        &self,
        status: StatusCode,
        template: &impl askama::Template,
    ) -> crate::error::Result<Response> {
        self.render(status, template, "'none'")
    }

    /// The customer's page: as `page`, but the `[pages] embed_origins` may frame it. The
    /// console, the finance pages and sign-in are never framed, whatever that setting says.
    pub fn embeddable_page(
        &self,
        status: StatusCode,
        template: &impl askama::Template,
    ) -> crate::error::Result<Response> {
        self.render(status, template, &self.frame_ancestors)
    }

    fn render(
        &self,
        status: StatusCode,
        template: &impl askama::Template,
        frame_ancestors: &str,
    ) -> crate::error::Result<Response> {
        let html = template
            .render()
            .map_err(|e| crate::error::Error::Internal(format!("template: {e}")))?;
        Ok(self.respond(status, html, frame_ancestors))
    }

    /// A rendered page with the headers every page carries; `frame_ancestors` who may frame it.
    fn respond(&self, status: StatusCode, html: String, frame_ancestors: &str) -> Response {
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
}

/// A time as the pages show it: to the minute, in UTC.
pub fn when(t: crate::domain::Timestamp) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
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
