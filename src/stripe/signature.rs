//! `Stripe-Signature` verification on the raw body (README, Stripe): HMAC-SHA256 of
//! `t + "." + body`, keyed by the whole `whsec_...` string, compared in constant time against every
//! `v1`; `v0` and unknown schemes are ignored; several secrets are accepted for rotation. Pure:
//! the caller supplies "now".

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest header accepted, and most `v1` signatures read from it: a limit on everything.
pub const MAX_HEADER_BYTES: usize = 4096;
pub const MAX_SIGNATURES: usize = 16;

pub use crate::error::SignatureError;

struct Parsed {
    timestamp: i64,
    signatures: Vec<[u8; 32]>,
}

fn parse(header: &str) -> Result<Parsed, SignatureError> {
    if header.trim().is_empty() {
        return Err(SignatureError::Missing);
    }
    if header.len() > MAX_HEADER_BYTES {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed);
                }
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            "v1" => {
                // A v1 that is not 32 bytes of hex can match nothing; skip it like Stripe's
                // libraries do, rather than refuse the other signatures beside it.
                let mut bytes = [0_u8; 32];
                if hex::decode_to_slice(value, &mut bytes).is_ok()
                    && signatures.len() < MAX_SIGNATURES
                {
                    signatures.push(bytes);
                }
            }
            _ => {} // v0 and future schemes
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(Parsed {
        timestamp,
        signatures,
    })
}

/// A `Stripe-Signature` header whose shape and timestamp are good: what is checked before the
/// body is read, so a request that cannot verify costs no read and no hashing.
#[derive(Debug, Clone)]
pub struct CheckedHeader {
    timestamp: i64,
    signatures: Vec<[u8; 32]>,
}

/// Checks `header` at `now_unix_seconds`: secrets configured, well formed, a `v1` signature, the
/// timestamp within the tolerance.
pub fn check_header(
    header: &str,
    secrets: &[String],
    tolerance_seconds: u64,
    now_unix_seconds: i64,
) -> Result<CheckedHeader, SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let parsed = parse(header)?;
    let age = now_unix_seconds.saturating_sub(parsed.timestamp);
    let tolerance = i64::try_from(tolerance_seconds).unwrap_or(i64::MAX);
    if age > tolerance || age < -tolerance {
        return Err(SignatureError::OutsideTolerance);
    }
    Ok(CheckedHeader {
        timestamp: parsed.timestamp,
        signatures: parsed.signatures,
    })
}

impl CheckedHeader {
    /// Verifies `body` against the header's signatures: one HMAC per secret, each compared in
    /// constant time with every `v1`. Returns the signed timestamp.
    pub fn verify_body(&self, body: &[u8], secrets: &[String]) -> Result<i64, SignatureError> {
        use subtle::ConstantTimeEq;
        let signed = self.timestamp.to_string();
        for secret in secrets {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .expect("HMAC takes keys of any length");
            mac.update(signed.as_bytes());
            mac.update(b".");
            mac.update(body);
            let expected = mac.finalize().into_bytes();
            let matched = self
                .signatures
                .iter()
                .fold(subtle::Choice::from(0), |any, signature| {
                    any | expected[..].ct_eq(&signature[..])
                });
            if bool::from(matched) {
                return Ok(self.timestamp);
            }
        }
        Err(SignatureError::NoMatch)
    }
}

/// Verifies `header` for `body` at `now_unix_seconds`; returns the signed timestamp.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[String],
    tolerance_seconds: u64,
    now_unix_seconds: i64,
) -> Result<i64, SignatureError> {
    check_header(header, secrets, tolerance_seconds, now_unix_seconds)?.verify_body(body, secrets)
}

/// A `Stripe-Signature` header for `body`, as Stripe makes them: for tests and local tools.
pub fn sign(body: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN_BODY: &[u8] = include_bytes!("../../tests/fixtures/golden/payload.raw");
    const GOLDEN_HEADER: &str = "t=1746757390,v1=bc889a3926c751e3ea753efc027f6adbb11d224b57ebae9e86c0da62461e9f35,v0=537d1b7f8ebf0452111cafdcd6ee4cf80eb1b1ba62bc2ded7569289edfa0a2b0";
    const GOLDEN_SECRET: &str =
        "whsec_750e601a79a762e75cf1ec30b41b2e6f88daafcc644b3a9f29e735b4453ebb9a";
    const SIGNED_AT: i64 = 1_746_757_390;

    fn secrets(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_golden_real_delivery_verifies_at_its_time() {
        let result = verify(
            GOLDEN_HEADER,
            GOLDEN_BODY,
            &secrets(&[GOLDEN_SECRET]),
            300,
            SIGNED_AT + 60,
        );
        assert_eq!(result, Ok(SIGNED_AT));
    }

    #[test]
    fn rotation_accepts_any_configured_secret() {
        let list = secrets(&["whsec_old", GOLDEN_SECRET]);
        assert_eq!(
            verify(GOLDEN_HEADER, GOLDEN_BODY, &list, 300, SIGNED_AT),
            Ok(SIGNED_AT)
        );
    }

    #[test]
    fn forged_stale_and_garbled_deliveries_are_refused() {
        let ok = secrets(&[GOLDEN_SECRET]);
        let mut tampered = GOLDEN_BODY.to_vec();
        tampered[20] ^= 1;
        assert_eq!(
            verify(GOLDEN_HEADER, &tampered, &ok, 300, SIGNED_AT),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(GOLDEN_HEADER, &GOLDEN_BODY[..100], &ok, 300, SIGNED_AT),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(
                GOLDEN_HEADER,
                GOLDEN_BODY,
                &secrets(&["whsec_wrong"]),
                300,
                SIGNED_AT
            ),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(GOLDEN_HEADER, GOLDEN_BODY, &ok, 300, SIGNED_AT + 301),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify(GOLDEN_HEADER, GOLDEN_BODY, &ok, 300, SIGNED_AT - 301),
            Err(SignatureError::OutsideTolerance)
        );
        let v0_only =
            "t=1746757390,v0=537d1b7f8ebf0452111cafdcd6ee4cf80eb1b1ba62bc2ded7569289edfa0a2b0";
        assert_eq!(
            verify(v0_only, GOLDEN_BODY, &ok, 300, SIGNED_AT),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(
            verify("", GOLDEN_BODY, &ok, 300, SIGNED_AT),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify("garbage", GOLDEN_BODY, &ok, 300, SIGNED_AT),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("t=abc,v1=00", GOLDEN_BODY, &ok, 300, SIGNED_AT),
            Err(SignatureError::Malformed)
        );
        let twice = format!("t=1,{GOLDEN_HEADER}");
        assert_eq!(
            verify(&twice, GOLDEN_BODY, &ok, 300, SIGNED_AT),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(GOLDEN_HEADER, GOLDEN_BODY, &[], 300, SIGNED_AT),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn every_v1_is_tried() {
        let body = b"{}";
        let good = sign(body, "whsec_x", 100);
        let v1 = good.split_once("v1=").unwrap().1;
        let header = format!("t=100,v1={},v1=nothex,v1={v1}", "0".repeat(64));
        assert_eq!(
            verify(&header, body, &secrets(&["whsec_x"]), 300, 100),
            Ok(100)
        );
    }
}
