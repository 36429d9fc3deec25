//! The command line: config errors name the file, the key and the reason; keys are printed once
//! and stored only as their SHA-256.

mod common;

use sea_orm::EntityTrait;
use sha2::{Digest, Sha256};
use std::path::Path;

fn run(config: &Path, args: &[&str]) -> (bool, String, String) {
    let output = common::run_cli(config, args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_config_fails_with_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[plans]]\nid = \"pro\"\ncredits = \"10\"\noverage = \"allow\"\n",
            "plans[0].overage_limit: is required with overage = \"allow\"",
        ),
        (
            "[server]\nlisten = 8080\n",
            "server.listen: invalid type: integer `8080`, expected a string",
        ),
        (
            "[[features]]\nid = \"chat\"\n[[actions]]\nid = \"a\"\nfeature = \"chat\"\ncredits = \"0\"\n",
            "actions[0].credits: 0 must be greater than zero",
        ),
        (
            "[accounting]\ncurrency = \"euros\"\n",
            "accounting.currency: currency \"euros\" is not a three-letter ISO 4217 code",
        ),
        ("[serverr]\n", "unknown field `serverr`"),
        (
            "[server]\nshutdown_timeout_seconds = 0\n",
            "server.shutdown_timeout_seconds: must be between 1 and 3600",
        ),
        (
            "[server]\nmax_connections = 1001\n",
            "server.max_connections: must be between 1 and 1000",
        ),
        (
            "[server]\nacquire_timeout_seconds = 301\n",
            "server.acquire_timeout_seconds: must be between 1 and 300",
        ),
        ("[server]\nlog_format = \"xml\"\n", "server.log_format"),
    ];
    for (text, expected) in cases {
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, text).unwrap();
        let (ok, _, stderr) = run(&file, &["migrate"]);
        assert!(!ok, "{text} was accepted");
        assert!(
            stderr.contains(&format!("{}: ", file.display())),
            "names the file: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
    }
    let (ok, _, stderr) = run(&dir.path().join("missing.toml"), &["migrate"]);
    assert!(!ok);
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[tokio::test]
async fn keys_are_printed_once_and_stored_as_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}/keys.db?mode=rwc", dir.path().display());
    let config = common::write_example_config(dir.path(), &database_url);
    let (ok, stdout, stderr) = run(&config, &["keys", "create", "--scope", "finance"]);
    assert!(ok, "{stderr}");
    let key = stdout.lines().last().unwrap();
    assert!(
        key.starts_with("cb_finance_") && !key.contains(' '),
        "{stdout}"
    );
    let (ok, _, stderr) = run(&config, &["keys", "create", "--scope", "root"]);
    assert!(!ok && stderr.contains("root"), "{stderr}");

    let store = creditbook::store::Store::connect(&database_url)
        .await
        .unwrap();
    let rows = entity::api_keys::Entity::find()
        .all(store.connection())
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].key_hash,
        hex::encode(Sha256::digest(key.as_bytes()))
    );
    assert_eq!(rows[0].scope, "finance");
    assert_eq!(
        store.authenticate(key).await.unwrap(),
        Some(creditbook::store::keys::Scope::Finance)
    );
    assert_eq!(
        store
            .authenticate(&key.replace("cb_", "cc_"))
            .await
            .unwrap(),
        None
    );
}
