//! The edge: JSON bodies, API keys and the small value types requests are parsed into.

use super::AppState;
use crate::error::Error;
use crate::store::keys::Scope;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use std::str::FromStr;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `axum::Json` whose rejections are problem+json errors. `LIMIT` is the body limit the route is
/// served with (its `DefaultBodyLimit`), named in the `payload_too_large` problem.
pub struct ApiJson<T, const LIMIT: usize = MAX_BODY_BYTES>(pub T);

impl<T: DeserializeOwned, S: Send + Sync, const LIMIT: usize> FromRequest<S> for ApiJson<T, LIMIT> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(e) => Error::invalid("body", e.body_text()),
                JsonRejection::JsonSyntaxError(e) => Error::MalformedJson(e.body_text()),
                JsonRejection::MissingJsonContentType(_) => Error::UnsupportedMediaType,
                JsonRejection::BytesRejection(e)
                    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
                {
                    Error::PayloadTooLarge(LIMIT)
                }
                other => Error::MalformedJson(other.body_text()),
            }),
        }
    }
}

/// A caller authenticated with a key of one scope.
pub struct Caller(pub Scope);

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(Error::Unauthorized)?;
        let key = header
            .strip_prefix("Bearer ")
            .ok_or(Error::Unauthorized)?
            .trim();
        let scope = state
            .store
            .authenticate(key)
            .await?
            .ok_or(Error::Unauthorized)?;
        Ok(Caller(scope))
    }
}

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<(), Error> {
        if self.0 == scope {
            Ok(())
        } else {
            Err(Error::InsufficientScope(scope.as_str()))
        }
    }
}

/// A decimal from a JSON string ("1.5") or integer (3). JSON numbers with a fraction are refused:
/// they are binary floats on most clients, and credits must be exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount(pub Decimal);

impl<'de> serde::Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Amount;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a decimal string such as \"1.5\", or an integer")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Amount, E> {
                let trimmed = s.trim();
                if trimmed.is_empty() || trimmed.len() > 40 || trimmed.contains(['e', 'E']) {
                    return Err(E::custom(format!("{s:?} is not a plain decimal number")));
                }
                Decimal::from_str_exact(trimmed).map(Amount).map_err(|_| {
                    E::custom(format!(
                        "{s:?} is not a decimal number of at most 28 digits"
                    ))
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Amount, E> {
                Ok(Amount(Decimal::from(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Amount, E> {
                Ok(Amount(Decimal::from(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Amount, E> {
                Err(E::custom(format!(
                    "{v} is a JSON float; send decimals as strings"
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl FromStr for Amount {
    type Err = rust_decimal::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal::from_str_exact(s).map(Amount)
    }
}

/// Longest identifier (customer, idempotency key) accepted.
pub const MAX_ID_LENGTH: usize = 255;

/// An identifier supplied by a caller: 1 to 255 characters, no control characters.
pub fn identifier(field: &str, value: &str) -> Result<String, Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LENGTH {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_ID_LENGTH} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// A hex SHA-256 of the parts of a request that define it, for idempotency conflicts.
pub fn request_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.len().to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(hasher.finalize())
}
