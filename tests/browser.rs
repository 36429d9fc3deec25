//! The pages in a real headless Chromium, driven over WebDriver (Debian's chromium and
//! chromium-driver, installed by scripts/test): a customer opens its credits page from a portal
//! link, an admin and a finance person sign in, click through, close a month and sign out. The
//! numbers shown are the API's; each page is photographed at phone and desktop widths into
//! `target/screenshots/` for a person to look at.

mod common;

use axum::http::StatusCode;
use common::{Engine, TestApp};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
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

async fn seeded(engine: Engine) -> TestApp {
    let app = common::spawn_app_at(engine, "2026-03-10T12:00:00Z".parse().unwrap(), |_| {}).await;
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
    // Credits bought and used: revenue recognized in March.
    app.grant(
        "gamma",
        json!({"kind": "pack", "pack": "topup_small", "price": "10.00", "currency": "usd"}),
    )
    .await;
    let (status, _) = app.usage("gamma", "chat.request", json!(150), "g1").await;
    assert_eq!(status, StatusCode::CREATED);
    // A Stripe event whose price no plan or pack lists: it waits for an operator.
    let unmapped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/stripe/synthetic/invoice_paid.json"),
    )
    .unwrap();
    let mut unmapped: serde_json::Value = serde_json::from_str(&unmapped).unwrap();
    unmapped["id"] = json!("evt_unmapped");
    unmapped["created"] = json!(app.now().timestamp());
    common::expect_outcome(&app, &unmapped.to_string(), "unmapped_price").await;
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite() {
    a_customer_opens_its_credits_page_and_people_sign_in_to_theirs(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres() {
    a_customer_opens_its_credits_page_and_people_sign_in_to_theirs(Engine::Postgres).await;
}

async fn a_customer_opens_its_credits_page_and_people_sign_in_to_theirs(engine: Engine) {
    let app = seeded(engine).await;
    // On pro through the API: its credit cycle's next grant shows on both pages.
    app.set_plan("acme", "pro").await;
    let next_grant = "2000 credits on 2026-04-10 12:00 UTC";
    let (_driver, client) = browser().await;
    // The pictures are taken once, on SQLite: the pages are the same on both engines.
    let photograph = |name: &'static str| {
        let client = client.clone();
        async move {
            if engine == Engine::Sqlite {
                photograph(&client, name).await;
            }
        }
    };

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
    assert_eq!(view["next_grant_at"], "2026-04-10T12:00:00Z");
    assert_eq!(text(&client, "#next-grant").await, next_grant);
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
    photograph("portal").await;
    let older = href(&client, "#older").await;
    follow(&client, "#older", &older).await;
    let newest = href(&client, "#newest").await;
    follow(&client, "#newest", &newest).await;
    assert!(!newest.contains("before="));
    // A changed link opens nothing; nor does the link with another customer's id in it.
    client.goto(&format!("{portal}x")).await.unwrap();
    assert!(text(&client, "main").await.contains("not valid"));
    assert!(!text(&client, "main").await.contains("acme"));
    let token = &portal[portal.find("token=").unwrap() + "token=".len()..];
    let mut parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts[1], "YWNtZQ", "acme, base64url");
    parts[1] = "YmV0YQ";
    client
        .goto(&format!("{}/portal?token={}", app.address, parts.join(".")))
        .await
        .unwrap();
    let refused = text(&client, "main").await;
    assert!(
        refused.contains("not valid") && !refused.contains("beta"),
        "{refused}"
    );
    // Expired: 15 minutes on, the same link opens nothing.
    app.advance("2026-03-10T12:15:00Z".parse().unwrap()).await;
    client.goto(&portal).await.unwrap();
    let expired = text(&client, "main").await;
    assert!(
        expired.contains("expired") && !expired.contains("acme"),
        "{expired}"
    );

    // The console: sign in, find a customer, open it, sign out.
    client
        .goto(&format!("{}/admin", app.address))
        .await
        .unwrap();
    assert_eq!(path(&client).await, "/login", "no session: sent to sign in");
    photograph("login").await;
    sign_in(&client, &app, &app.admin_key).await;
    arrive(&client, "/admin").await;
    let table = text(&client, "#customers").await;
    assert!(table.contains("acme") && table.contains("beta"), "{table}");
    photograph("admin").await;
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
    assert_eq!(text(&client, "#next-grant").await, next_grant);
    photograph("admin-customer").await;
    // Stripe events that need an operator, with what to do.
    client
        .goto(&format!("{}/admin", app.address))
        .await
        .unwrap();
    follow(
        &client,
        "#outcome-unmapped_price",
        "/admin/stripe-events?outcome=unmapped_price",
    )
    .await;
    assert!(text(&client, "#events").await.contains("evt_unmapped"));
    assert!(text(&client, "#advice").await.contains("stripe_prices"));
    photograph("admin-events").await;
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
    let (_, waterfall) = app
        .call(
            reqwest::Method::GET,
            "/v1/revenue/waterfall?from=2025-04&to=2026-03",
            Some(&app.finance_key),
            None,
        )
        .await;
    let billed = waterfall["rows"][0]["billed"].as_str().unwrap();
    assert!(
        text(&client, "#waterfall tbody tr").await.contains(billed),
        "{waterfall}"
    );
    // One bar part per month and kind of revenue that is not zero.
    let (_, rollforward) = app
        .call(
            reqwest::Method::GET,
            "/v1/revenue/rollforward?from=2025-04&to=2026-03",
            Some(&app.finance_key),
            None,
        )
        .await;
    let parts = rollforward["rows"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            [
                "usage_recognized",
                "platform_recognized",
                "breakage",
                "revenue_reversed",
            ]
            .map(|k| {
                r[k].as_str()
                    .unwrap()
                    .parse::<rust_decimal::Decimal>()
                    .unwrap()
            })
        })
        .filter(|v| !v.is_zero())
        .count();
    assert_eq!(
        client
            .find_all(Locator::Css("#revenue-chart rect"))
            .await
            .unwrap()
            .len(),
        parts,
        "{rollforward}"
    );
    assert!(parts > 0, "March recognized gamma's usage");
    photograph("finance").await;
    // A paid grant's schedule, found from its customer.
    client
        .goto(&format!("{}/finance/grants", app.address))
        .await
        .unwrap();
    client
        .find(Locator::Css("#customer"))
        .await
        .unwrap()
        .send_keys("acme")
        .await
        .unwrap();
    follow(&client, "#find", "/finance/grants?customer=acme").await;
    click(&client, "#lots a").await;
    for _ in 0..200 {
        if client.find(Locator::Css("#schedule")).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let grant = text(&client, "#grant").await;
    let (_, schedule) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/revenue/grants/{grant}/schedule"),
            Some(&app.finance_key),
            None,
        )
        .await;
    assert_eq!(
        text(&client, "#paid").await,
        schedule["paid"].as_str().unwrap()
    );
    photograph("finance-schedule").await;
    client
        .goto(&format!("{}/finance", app.address))
        .await
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_actions_on_sqlite() {
    an_admin_acts_on_a_customer_from_the_console(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_actions_on_postgres() {
    an_admin_acts_on_a_customer_from_the_console(Engine::Postgres).await;
}

async fn fill(client: &Client, css: &str, value: &str) {
    let field = client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

async fn choose(client: &Client, css: &str, value: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .select_by_value(value)
        .await
        .unwrap();
}

/// Waits until the notice on top of the page says something, and gives it.
async fn notice(client: &Client) -> String {
    for _ in 0..200 {
        if let Ok(found) = client.find(Locator::Css("#notice")).await {
            return found.text().await.unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("no notice at {}", path(client).await);
}

/// An admin grants, adjusts, sets a plan, a limit and an override and revokes a key from the
/// console: each done says so, each refused says the API's problem and changes nothing, and each
/// is recorded with the admin's key and why.
async fn an_admin_acts_on_a_customer_from_the_console(engine: Engine) {
    let app = common::spawn_app_at(engine, "2026-03-10T12:00:00Z".parse().unwrap(), |_| {}).await;
    app.promo("acme", "100").await;
    use creditbook::store::keys::Scope;
    let (admin_id, app_id) = (app.key_id(Scope::Admin).await, app.key_id(Scope::App).await);
    let (_driver, client) = browser().await;
    sign_in(&client, &app, &app.admin_key).await;
    arrive(&client, "/admin").await;
    let page = format!("{}/admin/customers/acme", app.address);
    client.goto(&page).await.unwrap();

    // Granted: said, shown, recorded with who and why.
    fill(&client, "#grant-credits", "250").await;
    fill(&client, "#grant-reason", "goodwill for the outage").await;
    click(&client, "#grant").await;
    arrive(&client, "/admin/customers/acme?done=granted").await;
    assert_eq!(notice(&client).await, "Granted.");
    assert_eq!(text(&client, "#available").await, "350");
    let recorded = text(&client, "#operator-actions").await;
    assert!(
        recorded.contains(&admin_id) && recorded.contains("goodwill for the outage"),
        "{recorded}"
    );
    client
        .execute(
            "document.getElementById('grant-form').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap();
    photograph(&client, "console-actions").await;

    // Refused by the API: its problem in words, and nothing changed.
    fill(&client, "#adjust-credits", "-1000").await;
    fill(&client, "#adjust-reason", "too much").await;
    click(&client, "#adjust").await;
    arrive(&client, "/admin/customers/acme/adjust").await;
    let refused = notice(&client).await;
    assert!(
        refused.starts_with("Refused: cannot take back 1000 credits")
            && refused.contains("adjustment_exceeds_available"),
        "{refused}"
    );
    assert_eq!(app.balances("acme").await.2, "350");
    // Refused for want of a reason.
    client.goto(&page).await.unwrap();
    fill(&client, "#grant-credits", "5").await;
    click(&client, "#grant").await;
    arrive(&client, "/admin/customers/acme/grant").await;
    let refused = notice(&client).await;
    assert!(refused.contains("reason: say why"), "{refused}");
    assert_eq!(app.balances("acme").await.2, "350");
    // An adjustment that takes back what is there.
    client.goto(&page).await.unwrap();
    fill(&client, "#adjust-credits", "-50").await;
    fill(&client, "#adjust-reason", "double grant").await;
    click(&client, "#adjust").await;
    arrive(&client, "/admin/customers/acme?done=adjusted").await;
    assert_eq!(app.balances("acme").await.2, "300");

    // A plan, then a limit on each member, then its removal.
    choose(&client, "#plan-select", "free").await;
    fill(&client, "#plan-reason", "moved to the free tier").await;
    click(&client, "#set-plan").await;
    arrive(&client, "/admin/customers/acme?done=plan").await;
    assert_eq!(app.customer("acme").await["plan"], "free");
    choose(&client, "#limit-period", "month").await;
    fill(&client, "#limit-credits", "40").await;
    click(&client, "#limit-each").await;
    fill(&client, "#limit-reason", "a cap per seat").await;
    click(&client, "#add-limit").await;
    arrive(&client, "/admin/customers/acme?done=limits").await;
    assert_eq!(
        text(&client, "#limit-0").await,
        "hard 40 credits a month on every feature for each member"
    );
    let limits = app.customer("acme").await["limits"].clone();
    assert_eq!(
        (&limits[0]["each_subject"], &limits[0]["credits"]),
        (&json!(true), &json!("40"))
    );
    // A limit the API refuses (a member and each member at once): said, nothing set.
    fill(&client, "#limit-credits", "10").await;
    fill(&client, "#limit-subject", "intern").await;
    click(&client, "#limit-each").await;
    fill(&client, "#limit-reason", "both").await;
    click(&client, "#add-limit").await;
    arrive(&client, "/admin/customers/acme/limits").await;
    let refused = notice(&client).await;
    assert!(refused.contains("not both"), "{refused}");
    assert_eq!(
        app.customer("acme").await["limits"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    client.goto(&page).await.unwrap();
    fill(&client, "#limits input[name=reason]", "no longer needed").await;
    click(&client, "#remove-limit-0").await;
    arrive(&client, "/admin/customers/acme?done=limits").await;
    assert!(
        app.customer("acme").await["limits"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A feature switched off.
    choose(&client, "#override-feature", "chat").await;
    choose(&client, "#override-enabled", "off").await;
    fill(&client, "#override-reason", "abuse report").await;
    click(&client, "#override").await;
    arrive(&client, "/admin/customers/acme?done=override").await;
    assert!(text(&client, "#overrides").await.contains("chat off"));
    let (status, refused) = app
        .post_app(
            "/v1/check",
            json!({"customer": "acme", "action": "chat.request", "quantity": 1}),
        )
        .await;
    assert_eq!(
        (status, &refused["reason"]),
        (StatusCode::OK, &json!("feature_not_entitled"))
    );

    // An action at the customer's own price, and its own overage rule; one the API refuses.
    choose(&client, "#price-action", "image.standard").await;
    fill(&client, "#price-credits", "2").await;
    fill(&client, "#price-reason", "volume deal").await;
    click(&client, "#price").await;
    arrive(&client, "/admin/customers/acme?done=override").await;
    let (_, priced) = app
        .post_app(
            "/v1/check",
            json!({"customer": "acme", "action": "image.standard", "quantity": 3}),
        )
        .await;
    assert_eq!(priced["credits"], "6", "{priced}");
    choose(&client, "#overage-rule", "bill").await;
    fill(&client, "#overage-reason", "billed past zero").await;
    click(&client, "#set-overage").await;
    arrive(&client, "/admin/customers/acme/override").await;
    let refused = notice(&client).await;
    assert!(
        refused.starts_with("Refused:") && refused.contains("overage_price"),
        "{refused}"
    );
    client.goto(&page).await.unwrap();
    choose(&client, "#overage-rule", "allow").await;
    fill(&client, "#overage-limit", "50").await;
    fill(&client, "#overage-reason", "allowed past zero").await;
    click(&client, "#set-overage").await;
    arrive(&client, "/admin/customers/acme?done=override").await;
    assert!(
        text(&client, "#overrides")
            .await
            .contains("overage allow down to -50"),
        "{}",
        text(&client, "#overrides").await
    );

    // A parent set: the tree shows on both pages, the pool beside its own credits. A cycle is
    // refused in the API's words, and nothing changes.
    app.promo("acme-labs", "30").await;
    client
        .goto(&format!("{}/admin/customers/acme-labs", app.address))
        .await
        .unwrap();
    fill(&client, "#parent-id", "acme").await;
    fill(&client, "#parent-reason", "labs is a team of acme").await;
    click(&client, "#set-parent").await;
    arrive(&client, "/admin/customers/acme-labs?done=parent").await;
    assert_eq!(notice(&client).await, "Parent set.");
    assert_eq!(
        text(&client, "#tree").await,
        "Organization: acme › acme-labs"
    );
    let acme_available: rust_decimal::Decimal = app.balances("acme").await.2.parse().unwrap();
    assert_eq!(
        text(&client, "#pool-available").await,
        (acme_available + rust_decimal::Decimal::from(30)).to_string()
    );
    assert_eq!(app.customer("acme-labs").await["parent"], "acme");
    client.goto(&page).await.unwrap();
    assert_eq!(text(&client, "#below").await, "acme-labs");
    fill(&client, "#parent-id", "acme-labs").await;
    fill(&client, "#parent-reason", "the other way round").await;
    click(&client, "#set-parent").await;
    arrive(&client, "/admin/customers/acme/parent").await;
    let refused = notice(&client).await;
    assert!(
        refused.starts_with("Refused:") && refused.contains("cycle"),
        "{refused}"
    );
    assert_eq!(app.customer("acme").await["parent"], Value::Null);

    // Every action recorded with the admin's key and why.
    let (status, recorded) = app
        .call(
            reqwest::Method::GET,
            "/v1/operator-actions?customer=acme",
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{recorded}");
    let actions: Vec<(String, String, String)> = recorded["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let detail = &a["detail"];
            let why = detail["reason"]
                .as_str()
                .or(detail["memo"].as_str())
                .unwrap_or("")
                .to_owned();
            (
                a["key_id"].as_str().unwrap().to_owned(),
                a["action"].as_str().unwrap().to_owned(),
                why,
            )
        })
        .filter(|(key, _, _)| *key == admin_id)
        // The first is the test's own grant, through the API.
        .skip(1)
        .collect();
    let whys: Vec<(&str, &str)> = actions
        .iter()
        .map(|(_, action, why)| (action.as_str(), why.as_str()))
        .collect();
    assert_eq!(
        whys,
        [
            ("grant", "goodwill for the outage"),
            ("adjustment", "double grant"),
            ("plan", "moved to the free tier"),
            ("limits", "a cap per seat"),
            ("limits", "no longer needed"),
            ("override", "abuse report"),
            ("override", "volume deal"),
            ("override", "allowed past zero"),
        ]
    );
    let (status, labs) = app
        .call(
            reqwest::Method::GET,
            "/v1/operator-actions?customer=acme-labs",
            Some(&app.admin_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{labs}");
    let set = labs["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "parent")
        .expect("the parent set is recorded");
    assert_eq!(
        (
            &set["key_id"],
            &set["detail"]["reason"],
            &set["detail"]["parent"]
        ),
        (
            &json!(admin_id),
            &json!("labs is a team of acme"),
            &json!("acme")
        )
    );

    // A key revoked from the keys page; the session's own cannot be.
    client
        .goto(&format!("{}/admin", app.address))
        .await
        .unwrap();
    follow(&client, "#keys-link", "/admin/keys").await;
    let listed = text(&client, "#keys").await;
    assert!(listed.contains("this session"), "{listed}");
    assert!(
        client
            .find(Locator::Css(&format!("#revoke-{admin_id}")))
            .await
            .is_err()
    );
    fill(
        &client,
        &format!("input[aria-label='Why revoke {app_id}']"),
        "leaked in a log",
    )
    .await;
    click(&client, &format!("#revoke-{app_id}")).await;
    arrive(&client, "/admin/keys?done=revoked").await;
    assert_eq!(notice(&client).await, "Key revoked.");
    let (status, _) = app.get_app("/v1/customers/acme").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.assert_audit_clean().await;
}
