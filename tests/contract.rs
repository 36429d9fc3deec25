//! The API contract against the live server: Schemathesis (from PyPI) reads `/openapi.json` and
//! runs its checks over every phase (examples, coverage, fuzzing, stateful), once with each
//! scope's key, on SQLite and on PostgreSQL, with every check, positive and negative data
//! included. Any failure fails the test. The hooks and settings it runs with are in
//! `tests/contract/` (rules of time a JSON Schema cannot state, and Stripe's signature).

mod common;

use common::{Engine, TestApp};
use std::path::PathBuf;
use std::process::Command;

/// A program of the test venv (Schemathesis, openapi-python-client, its Python), installed by
/// `scripts/test` beside the Stripe library.
fn venv_program(name: &str) -> PathBuf {
    let python = std::env::var("CREDITBOOK_TEST_STRIPE_PYTHON")
        .expect("CREDITBOOK_TEST_STRIPE_PYTHON: run the tests with scripts/test");
    let bin = PathBuf::from(python)
        .parent()
        .expect("a venv's bin directory")
        .join(name);
    assert!(bin.exists(), "{} missing: run scripts/test", bin.display());
    bin
}

fn schemathesis() -> PathBuf {
    venv_program("schemathesis")
}

async fn run(app: &TestApp, scope: &str, key: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract");
    let url = format!("{}/openapi.json", app.address);
    let header = format!("Authorization: Bearer {key}");
    let output = tokio::task::spawn_blocking({
        let (dir, url) = (dir.clone(), url.clone());
        move || {
            Command::new(schemathesis())
                .current_dir(&dir)
                .env("SCHEMATHESIS_HOOKS", "hooks")
                .env("PYTHONPATH", &dir)
                .env("CREDITBOOK_CONTRACT_WEBHOOK_SECRET", common::WEBHOOK_SECRET)
                .args(["--config-file", "schemathesis.toml", "run", &url])
                .args(["-H", &header, "--checks", "all"])
                .args(["--phases", "examples,coverage,fuzzing,stateful"])
                .args(["--max-examples", "25", "--seed", "20261123"])
                .args(["--generation-database", "none", "--no-color"])
                .args(["--workers", "1"])
                .output()
                .expect("schemathesis runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the contract run with the {scope} key found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Tested: 36"),
        "every operation is tested ({scope}):\n{stdout}"
    );
}

async fn the_contract_holds(engine: Engine) {
    let app = common::spawn_app(engine).await;
    for (scope, key) in [
        ("app", app.app_key.clone()),
        ("admin", app.admin_key.clone()),
        ("finance", app.finance_key.clone()),
    ] {
        run(&app, scope, &key).await;
    }
    app.assert_audit_clean().await;
}

for_each_engine!(the_contract_holds);

/// A client generated from the document (openapi-python-client) works: it grants, sets a plan,
/// checks, authorizes, captures, voids, spends, reads a customer and a report, each answer
/// parsed into its generated type, and a refusal into `Problem`. What it saw equals what the
/// server says.
async fn a_generated_client_works(engine: Engine) {
    let app = common::spawn_app(engine).await;
    let contract = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/contract");
    let out =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("generated-client-{engine:?}"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let (_, document) = app
        .call(reqwest::Method::GET, "/openapi.json", None, None)
        .await;
    let path = out.join("openapi.json");
    std::fs::write(&path, document.to_string()).unwrap();
    let customer = "generated_client";
    let (app_key, admin_key, finance_key) = (
        app.app_key.clone(),
        app.admin_key.clone(),
        app.finance_key.clone(),
    );
    let address = app.address.clone();
    let output = tokio::task::spawn_blocking(move || {
        let generated = Command::new(venv_program("openapi-python-client"))
            .args(["generate", "--meta", "none", "--overwrite"])
            .arg("--config")
            .arg(contract.join("client.yaml"))
            .arg("--path")
            .arg(&path)
            .arg("--output-path")
            .arg(out.join("creditbook_client"))
            .output()
            .expect("openapi-python-client runs");
        assert!(
            generated.status.success()
                && out.join("creditbook_client/api/gate/authorize.py").exists(),
            "the client is generated:\n{}\n{}",
            String::from_utf8_lossy(&generated.stdout),
            String::from_utf8_lossy(&generated.stderr)
        );
        Command::new(venv_program("python"))
            .env("PYTHONPATH", &out)
            .arg(contract.join("client_check.py"))
            .args([&address, &app_key, &admin_key, &finance_key, customer])
            .output()
            .expect("the generated client runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the generated client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["grant_kind"], "promotional");
    assert_eq!(seen["check_allowed"], true);
    assert_eq!(seen["hold_status"], "held");
    assert_eq!(seen["hold_credits"], "2");
    assert_eq!(seen["captured_credits"], "1");
    assert_eq!(seen["voided_status"], "voided");
    assert_eq!(seen["usage_credits"], "0.000005");
    assert_eq!(seen["refused_type"], "invalid_request");
    assert_eq!(seen["refused_field"], "quantity");
    assert_eq!(seen["rollforward"], "RollforwardReport");
    // 100 granted and the 2,000 of the plan the client set, 1 captured, 0.000005 spent: as
    // the server itself says.
    let (balance, _, available) = app.balances(customer).await;
    assert_eq!(available, "2098.999995");
    assert_eq!(seen["available"], available.as_str());
    assert_eq!(seen["balance"], balance.as_str());
    app.assert_audit_clean().await;
}

for_each_engine!(a_generated_client_works);
