//! Signing in to the finance and admin pages: an API key of that scope starts a session kept in
//! the database; the browser holds only a random token in an HttpOnly, SameSite=Strict cookie
//! (Secure over HTTPS). A session ends at logout, after `[pages] session_idle_minutes` unused, or
//! when its key is revoked. Every form posts the session's own token back (CSRF).

use super::Render;
use crate::error::{Error, Result};
use crate::http::AppState;
use crate::store::keys::Scope;
use crate::store::sessions::Session;
use askama::Template;
use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

const COOKIE: &str = "creditbook_session";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    problem: Option<&'static str>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// The session token the request's cookie carries.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn cookie(state: &AppState, value: &str, max_age: Option<u64>) -> HeaderValue {
    let mut text = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if state.pages.secure_cookies {
        text.push_str("; Secure");
    }
    HeaderValue::from_str(&text).expect("a token of base64url characters")
}

/// `GET /login`: the sign-in form.
pub async fn login_form(State(state): State<AppState>) -> Result<Response> {
    state
        .pages
        .page(StatusCode::OK, &LoginPage { problem: None })
}

/// `POST /login`: a finance or admin key starts a session and goes to its pages. An address
/// that failed `MAX_FAILED_SIGN_INS` times within `SIGN_IN_WINDOW` waits (429); every failure is
/// logged with the address (never the key).
pub async fn login(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    Form(form): Form<LoginForm>,
) -> Result<Response> {
    let address = peer.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.0.0.ip());
    let now = std::time::Instant::now();
    if let Some(seconds) = state.sign_ins.wait(address, now) {
        tracing::warn!(target: "creditbook::audit", %address, "sign-in refused: too many failures from this address");
        let mut response = state.pages.page(
            StatusCode::TOO_MANY_REQUESTS,
            &LoginPage {
                problem: Some(
                    "Too many failed sign-ins from this address: wait a few minutes, then try again.",
                ),
            },
        )?;
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&seconds.to_string()).expect("digits"),
        );
        return Ok(response);
    }
    let principal = state.store.authenticate(form.key.trim()).await?;
    let Some(principal) = principal else {
        state.sign_ins.failed(address, now);
        tracing::warn!(target: "creditbook::audit", %address, "failed sign-in: the key is not known or was revoked");
        return state.pages.page(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                problem: Some("That key is not known, or was revoked."),
            },
        );
    };
    state.sign_ins.succeeded(address);
    let home = match principal.scope {
        Scope::Finance => "/finance",
        Scope::Admin => "/admin",
        Scope::App => {
            return state.pages.page(
                StatusCode::FORBIDDEN,
                &LoginPage {
                    problem: Some("An app key cannot sign in: use a finance or admin key."),
                },
            );
        }
    };
    let token = state
        .store
        .start_session(&principal.key_id, principal.scope, state.clock.now())
        .await?;
    let mut response = Redirect::to(home).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, &token, None));
    Ok(response)
}

/// `POST /logout`: ends the session (with its form token) and forgets the cookie.
pub async fn logout(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Form(form): Form<CsrfForm>,
) -> Result<Response> {
    signed_in.check_csrf(&form.csrf)?;
    state
        .store
        .end_session(&signed_in.token, state.clock.now())
        .await?;
    let mut response = Redirect::to("/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&state, "", Some(0)));
    Ok(response)
}

/// A request from a signed-in person; without a live session, the answer is the way to sign in.
pub struct SignedIn {
    pub session: Session,
    token: String,
}

impl SignedIn {
    /// Pages of `scope` only: the page that says so, for a session of another scope.
    pub fn refusal(&self, state: &AppState, scope: Scope) -> Option<Response> {
        if self.session.scope == scope {
            return None;
        }
        Some(state
            .pages
            .page(
                StatusCode::FORBIDDEN,
                &super::Message {
                    title: "Not for this key",
                    message: "This page needs a session of another scope: sign out, and sign in with a key of that scope.",
                },
            )
            .unwrap_or_else(IntoResponse::into_response))
    }

    /// A form's token must be the session's.
    pub fn check_csrf(&self, presented: &str) -> Result<()> {
        use subtle::ConstantTimeEq;
        if bool::from(presented.as_bytes().ct_eq(self.session.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(Error::FormTokenInvalid)
        }
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Response> {
        let Some(token) = cookie_token(&parts.headers) else {
            return Err(Redirect::to("/login").into_response());
        };
        match state
            .store
            .session(
                &token,
                state.pages.session_idle_seconds,
                state.pages.session_max_seconds,
                state.clock.now(),
            )
            .await
        {
            Ok(Some(session)) => Ok(SignedIn { session, token }),
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(e) => Err(e.into_response()),
        }
    }
}
