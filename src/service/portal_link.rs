//! Portal links: a customer id and an expiry, signed with the pages' key (HMAC-SHA256). A link
//! opens that customer's page, and no other, until it expires; a changed byte makes it refused.

use crate::domain::Timestamp;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: &str = "v1";

/// Why a portal token opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a token this server made, or changed since.
    Invalid,
    Expired,
}

fn mac(key: &[u8], customer: &str, expires: i64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(format!("portal\n{VERSION}\n{customer}\n{expires}").as_bytes());
    mac
}

/// The token of a link to `customer`'s page until `expires_at`.
pub fn sign(key: &[u8], customer: &str, expires_at: Timestamp) -> String {
    let expires = expires_at.timestamp();
    let tag = mac(key, customer, expires).finalize().into_bytes();
    format!(
        "{VERSION}.{}.{expires}.{}",
        URL_SAFE_NO_PAD.encode(customer),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// The customer a token opens at `now`.
pub fn verify(key: &[u8], token: &str, now: Timestamp) -> Result<String, Refused> {
    let mut parts = token.split('.');
    let (Some(VERSION), Some(customer), Some(expires), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(Refused::Invalid);
    };
    let customer = URL_SAFE_NO_PAD
        .decode(customer)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(Refused::Invalid)?;
    let expires: i64 = expires.parse().map_err(|_| Refused::Invalid)?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| Refused::Invalid)?;
    mac(key, &customer, expires)
        .verify_slice(&tag)
        .map_err(|_| Refused::Invalid)?;
    if now.timestamp() >= expires {
        return Err(Refused::Expired);
    }
    Ok(customer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_its_customer_until_it_expires_and_not_once_changed() {
        let key = b"0123456789abcdef0123456789abcdef";
        let now: Timestamp = "2026-03-10T12:00:00Z".parse().unwrap();
        let token = sign(key, "acme <1>", now + chrono::Duration::minutes(15));
        assert_eq!(verify(key, &token, now), Ok("acme <1>".to_owned()));
        assert_eq!(
            verify(key, &token, now + chrono::Duration::minutes(15)),
            Err(Refused::Expired)
        );
        assert_eq!(
            verify(b"another key of thirty-two bytes!", &token, now),
            Err(Refused::Invalid)
        );
        // Another customer or a later expiry under the same tag is refused.
        let parts: Vec<&str> = token.split('.').collect();
        let other = format!(
            "v1.{}.{}.{}",
            URL_SAFE_NO_PAD.encode("beta"),
            parts[2],
            parts[3]
        );
        assert_eq!(verify(key, &other, now), Err(Refused::Invalid));
        let later = format!(
            "v1.{}.{}.{}",
            parts[1],
            parts[2].parse::<i64>().unwrap() + 60,
            parts[3]
        );
        assert_eq!(verify(key, &later, now), Err(Refused::Invalid));
        for bad in ["", "v1", "v2.a.b.c", "v1.!!.1.x", &format!("{token}.x")] {
            assert_eq!(verify(key, bad, now), Err(Refused::Invalid), "{bad}");
        }
    }
}
