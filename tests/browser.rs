//! The pages in a real headless Chromium, driven over WebDriver (Debian's chromium and
//! chromium-driver, installed by scripts/test): a customer opens its credits page from a portal
//! link, an admin and a finance person sign in, click through, close a month and sign out. The
//! numbers shown are the API's; each page is photographed at phone and desktop widths into
//! `target/screenshots/` for a person to look at.

mod common;

use axum::http::StatusCode;
use common::{Engine, TestApp};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::process::{Child, Command, Stdio};

/// chromedriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser() -> (Driver, Client) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (scripts/test installs Debian's chromium-driver)");
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: profile,
    };
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--window-size=1280,900",
            format!("--user-data-dir={}", driver._profile.path().display()),
        ]}),
    );
    let mut last = None;
    for _ in 0..100 {
        // chromedriver is on loopback: plain HTTP, no TLS stack.
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&driver.url)
            .await
        {
            Ok(client) => return (driver, client),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start: {last:?}");
}

/// Photographs the page at phone and desktop widths into `target/screenshots/NAME-*.png`.
async fn photograph(client: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    for (width, height, suffix) in [(390, 844, "phone"), (1280, 900, "desktop")] {
        client.set_window_size(width, height).await.unwrap();
        let png = client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(dir.join(format!("{name}-{suffix}.png")), png).unwrap();
    }
}

async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

/// Where the link `css` goes.
async fn href(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .attr("href")
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{css} has no href"))
}

/// Clicks what navigates, and waits until the browser is at `to` (a path and query).
async fn follow(client: &Client, css: &str, to: &str) {
    click(client, css).await;
    arrive(client, to).await;
}

async fn arrive(client: &Client, to: &str) {
    for _ in 0..200 {
        if path(client).await == to {
            // The new document is loaded once its `main` is there.
            if client.find(Locator::Css("main")).await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("never reached {to}: at {}", path(client).await);
}

async fn path(client: &Client) -> String {
    let url = client.current_url().await.unwrap();
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

async fn sign_in(client: &Client, app: &TestApp, key: &str) {
    client
        .goto(&format!("{}/login", app.address))
        .await
        .unwrap();
    client
        .find(Locator::Css("#key"))
        .await
        .unwrap()
        .send_keys(key)
        .await
        .unwrap();
    click(client, "#sign-in").await;
}

async fn seeded() -> TestApp {
    let app = common::spawn_app_at(
        Engine::Sqlite,
        "2026-03-10T12:00:00Z".parse().unwrap(),
        |_| {},
    )
    .await;
    app.grant(
        "acme",
        json!({"kind": "pack", "pack": "topup_small", "price": "10.00", "currency": "usd",
               "expires_at": "2026-03-15T00:00:00Z"}),
    )
    .await;
    app.promo("acme", "5000").await;
    app.promo("beta", "40").await;
    for day in 0..24 {
        let action = ["chat.request", "image.standard", "image.hd"][day % 3];
        let at = format!("2026-03-{:02}T0{}:00:00Z", 1 + day % 9, day % 10);
        let (status, used) = app
            .post_app(
                "/v1/usage",
                json!({"customer": "acme", "action": action, "quantity": 2 + day,
                       "idempotency_key": format!("u{day}"), "occurred_at": at}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{used}");
    }
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_opens_its_credits_page_and_people_sign_in_to_theirs() {
    let app = seeded().await;
    let (_driver, client) = browser().await;

    // The customer's page, from a portal link.
    let (status, link) = app
        .post_app("/v1/customers/acme/portal-links", json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let url = link["url"].as_str().unwrap();
    let portal = format!("{}{}", app.address, &url[url.find("/portal").unwrap()..]);
    client.goto(&portal).await.unwrap();
    let view = app.customer("acme").await;
    for field in ["available", "held", "balance"] {
        assert_eq!(
            text(&client, &format!("#{field}")).await,
            view[field].as_str().unwrap()
        );
    }
    // The stylesheet applied under the page's Content-Security-Policy.
    let radius = client
        .execute(
            "return getComputedStyle(document.querySelector('.figure')).borderTopLeftRadius",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(radius, json!("6px"));
    assert!(
        text(&client, "#grants")
            .await
            .contains("expires within 7 days")
    );
    photograph(&client, "portal").await;
    let older = href(&client, "#older").await;
    follow(&client, "#older", &older).await;
    let newest = href(&client, "#newest").await;
    follow(&client, "#newest", &newest).await;
    assert!(!newest.contains("before="));
    // A changed link opens nothing.
    client.goto(&format!("{portal}x")).await.unwrap();
    assert!(text(&client, "main").await.contains("not valid"));
    assert!(!text(&client, "main").await.contains("acme"));

    // The console: sign in, find a customer, open it, sign out.
    client
        .goto(&format!("{}/admin", app.address))
        .await
        .unwrap();
    assert_eq!(path(&client).await, "/login", "no session: sent to sign in");
    photograph(&client, "login").await;
    sign_in(&client, &app, &app.admin_key).await;
    arrive(&client, "/admin").await;
    let table = text(&client, "#customers").await;
    assert!(table.contains("acme") && table.contains("beta"), "{table}");
    photograph(&client, "admin").await;
    client
        .find(Locator::Css("#q"))
        .await
        .unwrap()
        .send_keys("acm")
        .await
        .unwrap();
    follow(&client, "#search", "/admin?q=acm").await;
    let table = text(&client, "#customers").await;
    assert!(table.contains("acme") && !table.contains("beta"), "{table}");
    follow(&client, "#customers a", "/admin/customers/acme").await;
    assert_eq!(
        text(&client, "#available").await,
        view["available"].as_str().unwrap()
    );
    photograph(&client, "admin-customer").await;
    follow(&client, "#sign-out", "/login").await;
    client
        .goto(&format!("{}/admin", app.address))
        .await
        .unwrap();
    assert_eq!(path(&client).await, "/login", "signed out");

    // Finance: the roll-forward, and closing February once confirmed.
    sign_in(&client, &app, &app.finance_key).await;
    arrive(&client, "/finance").await;
    assert!(text(&client, "#rollforward").await.contains("2026-03"));
    photograph(&client, "finance").await;
    let period = client.find(Locator::Css("#period")).await.unwrap();
    period.clear().await.unwrap();
    period.send_keys("2026-02").await.unwrap();
    // Without the box ticked, the server refuses and says why.
    follow(&client, "#close", "/finance/close").await;
    assert!(text(&client, "#message").await.contains("confirm"));
    click(&client, "#confirm").await;
    follow(&client, "#close", "/finance?closed=2026-02").await;
    assert_eq!(text(&client, "#message").await, "2026-02 is closed.");
    client.close().await.unwrap();
}
