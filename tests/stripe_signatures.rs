//! Our `Stripe-Signature` verifier against Stripe's own library (the `stripe` package from PyPI,
//! installed by scripts/test): headers Stripe's code makes verify here, and headers made here
//! verify there.

use creditbook::stripe::signature::{SignatureError, sign, verify};
use std::path::Path;
use std::process::Command;

const SECRET: &str = "whsec_test_5f1c0b2e9a7d4c3b8e6f0a1d2c3b4a59";

fn stripe_python() -> String {
    std::env::var("CREDITBOOK_TEST_STRIPE_PYTHON")
        .expect("CREDITBOOK_TEST_STRIPE_PYTHON is not set: run the tests with scripts/test, which installs Stripe's library")
}

fn python(script: &str, args: &[&str]) -> String {
    let output = Command::new(stripe_python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn stripe_header(payload: &Path, secret: &str, timestamp: i64) -> String {
    python(
        "import sys, stripe\n\
         payload = open(sys.argv[1], encoding='utf-8').read()\n\
         print(stripe.WebhookSignature.generate_signature_header(payload, sys.argv[2], int(sys.argv[3])))",
        &[payload.to_str().unwrap(), secret, &timestamp.to_string()],
    )
}

fn payloads() -> Vec<std::path::PathBuf> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap().keep();
    let unicode = dir.join("unicode.json");
    std::fs::write(
        &unicode,
        r#"{"id":"evt_1","object":"event","data":{"object":{"name":"Zoë — 東京 ✓"}}}"#,
    )
    .unwrap();
    vec![fixtures.join("golden/payload.raw"), unicode]
}

#[test]
fn headers_made_by_stripes_library_verify() {
    for payload in payloads() {
        let body = std::fs::read(&payload).unwrap();
        let now = 1_800_000_000;
        let header = stripe_header(&payload, SECRET, now - 10);
        assert_eq!(
            verify(&header, &body, &[SECRET.to_owned()], 300, now),
            Ok(now - 10),
            "{}",
            payload.display()
        );
        // The same header on another body, with another secret, or too late: refused.
        let mut tampered = body.clone();
        tampered.push(b' ');
        assert_eq!(
            verify(&header, &tampered, &[SECRET.to_owned()], 300, now),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&header, &body, &["whsec_other".to_owned()], 300, now),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&header, &body, &[SECRET.to_owned()], 300, now + 400),
            Err(SignatureError::OutsideTolerance)
        );
    }
}

#[test]
fn headers_made_here_verify_with_stripes_library() {
    let now = chrono::Utc::now().timestamp();
    for payload in payloads() {
        let body = std::fs::read(&payload).unwrap();
        let header = sign(&body, SECRET, now);
        let verdict = python(
            "import sys, stripe\n\
             payload = open(sys.argv[1], encoding='utf-8').read()\n\
             try:\n\
             \x20   stripe.WebhookSignature.verify_header(payload, sys.argv[2], sys.argv[3], 300)\n\
             \x20   print('ok')\n\
             except stripe.error.SignatureVerificationError as e:\n\
             \x20   print('refused: ' + str(e))",
            &[payload.to_str().unwrap(), &header, SECRET],
        );
        assert_eq!(verdict, "ok", "{}", payload.display());
    }
}
