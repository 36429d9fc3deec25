//! The pages through the real HTTP stack: a portal link opens one customer's credits page, with
//! the numbers the API gives, until it expires; a changed, expired or missing link opens nothing;
//! every value is escaped and every page carries a strict Content-Security-Policy.

mod common;

use axum::http::StatusCode;
use common::{Engine, TestApp};
use serde_json::json;

fn start() -> chrono::DateTime<chrono::Utc> {
    "2026-03-10T12:00:00Z".parse().unwrap()
}

/// A portal link for `customer`, as the path and query to ask this server.
async fn portal_link(app: &TestApp, customer: &str) -> (String, serde_json::Value) {
    let (status, link) = app
        .post_app(&format!("/v1/customers/{customer}/portal-links"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{link}");
    let url = link["url"].as_str().unwrap();
    let at = url.find("/portal?token=").expect("a portal URL");
    (url[at..].to_owned(), link)
}

/// A page: its status, its Content-Security-Policy and its HTML.
async fn page(app: &TestApp, path: &str) -> (StatusCode, String, String) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    assert_eq!(
        headers["content-type"].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    let policy = headers["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, policy, response.text().await.unwrap())
}

/// The text of the element with `id`.
fn by_id<'a>(html: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\">");
    let at = html
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in the page"))
        + open.len();
    &html[at..at + html[at..].find('<').unwrap()]
}

async fn a_portal_link_opens_its_customer_s_page_until_it_expires(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.grant(
        "acme",
        json!({"kind": "promotional", "credits": "2000", "expires_at": "2026-03-14T00:00:00Z"}),
    )
    .await;
    app.promo("acme", "1000").await;
    app.promo("beta", "5").await;
    for day in 0..25 {
        let at = format!("2026-03-{:02}T09:00:00Z", 1 + day % 9);
        let action = if day % 2 == 0 {
            "chat.request"
        } else {
            "image.standard"
        };
        let (status, used) = app
            .post_app(
                "/v1/usage",
                json!({"customer": "acme", "action": action, "quantity": 1 + day,
                       "idempotency_key": format!("u{day}"), "occurred_at": at}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{used}");
    }
    let (status, hold) = app.authorize("acme", "chat.request", json!(7)).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let (path, link) = portal_link(&app, "acme").await;
    assert_eq!(link["expires_at"], "2026-03-10T12:15:00Z");
    let (status, policy, html) = page(&app, &path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(policy.starts_with("default-src 'none';"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    // The figures are the API's.
    let view = app.customer("acme").await;
    for field in ["available", "held", "balance"] {
        assert_eq!(
            by_id(&html, field),
            view[field].as_str().unwrap(),
            "{field}"
        );
    }
    assert_eq!(by_id(&html, "customer"), "acme");
    assert!(!html.contains("beta"), "another customer's data");
    // The pack with a top-up URL links to it, naming the customer; the other has none.
    assert_eq!(
        by_attribute(&html, "top-up-topup_small"),
        "https://buy.stripe.com/test_topup_small?client_reference_id=acme"
    );
    assert!(!html.contains("top-up-topup_large"));
    // The alerts in force: the configured share, and not low yet.
    assert_eq!(by_id(&html, "alert-share"), "80");
    assert!(!html.contains("id=\"alert-now\""));
    // The promotion expiring in 4 days is flagged; the grants come soonest expiry first.
    let grants = &html[html.find("id=\"grants\"").unwrap()..];
    assert!(grants.find("expires within 7 days").unwrap() < grants.find("never").unwrap());
    // Usage by feature: both features, one bar part per day and feature.
    let (_, usage) = app
        .get_app("/v1/customers/acme/usage?by=feature&from=2026-02-09&to=2026-03-10")
        .await;
    let parts = html.matches("<rect class=\"series-").count();
    assert_eq!(parts, usage["usage"].as_array().unwrap().len());
    assert!(html.contains("</span>chat</li>") && html.contains("</span>image</li>"));
    // The ledger, 20 entries a page: older, then back to the newest.
    let ledger = app.ledger("acme").await;
    assert!(ledger.len() > 20);
    let rows = |html: &str| {
        let table = &html[html.find("id=\"ledger\"").unwrap()..];
        table[..table.find("</table>").unwrap()]
            .matches("<tr>")
            .count()
            - 1
    };
    assert_eq!(rows(&html), 20);
    let older = by_attribute(&html, "older");
    let (status, _, second) = page(&app, &older.replace("&amp;", "&")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&second), ledger.len() - 20);
    assert!(second.contains("id=\"newest\""));
    // Expired: refused, and says so.
    app.advance("2026-03-10T12:15:00Z".parse().unwrap()).await;
    let (status, policy, html) = page(&app, &path).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        html.contains("Link expired") && !html.contains("acme"),
        "{html}"
    );
    assert!(policy.starts_with("default-src 'none';"));
    app.assert_audit_clean().await;
}
for_each_engine!(a_portal_link_opens_its_customer_s_page_until_it_expires);

/// The `href` of the link with `id`.
fn by_attribute(html: &str, id: &str) -> String {
    let open = format!("id=\"{id}\" href=\"");
    let at = html.find(&open).unwrap() + open.len();
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

async fn changed_or_missing_links_open_nothing_and_values_are_escaped(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    let evil = "<b>evil</b>&\"x\"";
    let encoded = "%3Cb%3Eevil%3C%2Fb%3E%26%22x%22";
    app.promo(encoded, "10").await;
    let (path, _) = portal_link(&app, encoded).await;
    let (status, _, html) = page(&app, &path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        !html.contains(evil) && !html.contains("<b>evil"),
        "unescaped: {html}"
    );
    assert!(
        html.contains("&#60;b&#62;evil&#60;/b&#62;&#38;&#34;x&#34;")
            || html.contains("&lt;b&gt;evil&lt;/b&gt;&amp;&quot;x&quot;"),
        "{html}"
    );
    // The top-up link names the customer, encoded.
    assert_eq!(
        by_attribute(&html, "top-up-topup_small"),
        "https://buy.stripe.com/test_topup_small?client_reference_id=%3Cb%3Eevil%3C%2Fb%3E%26%22x%22"
    );
    // Ten credits granted, none used, but ten is at or below the customer's own threshold.
    let (status, set) = app
        .call(
            reqwest::Method::PUT,
            &format!("/v1/customers/{encoded}/alert-thresholds"),
            Some(&app.admin_key),
            Some(json!({"low_balance_credits": "10"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let (_, _, html) = page(&app, &path).await;
    assert_eq!(by_id(&html, "alert-credits"), "10");
    assert_eq!(by_id(&html, "alert-now"), "Your balance is low.");
    // One character changed: refused.
    let mut tampered = path.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for path in [
        tampered.as_str(),
        "/portal",
        "/portal?token=v1.YWNtZQ.9999999999.AAAA",
    ] {
        let (status, policy, html) = page(&app, path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        assert!(!html.contains("evil"), "{path}");
        assert!(policy.contains("default-src 'none'"));
    }
    let (status, problem) = app
        .post_app("/v1/customers/nobody/portal-links", json!({}))
        .await;
    assert_eq!(
        (status, &problem["type"]),
        (StatusCode::NOT_FOUND, &json!("customer_not_found"))
    );
    let (status, problem) = app
        .call(
            reqwest::Method::POST,
            "/v1/customers/x/portal-links",
            Some(&app.finance_key),
            None,
        )
        .await;
    assert_eq!(
        (status, &problem["type"]),
        (StatusCode::FORBIDDEN, &json!("insufficient_scope"))
    );
}
for_each_engine!(changed_or_missing_links_open_nothing_and_values_are_escaped);

/// A browser without cookies of its own or redirects followed: each answer as it comes.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: app.address.clone(),
            cookie: None,
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> (StatusCode, String, String) {
        let request = match &self.cookie {
            Some(c) => request.header("cookie", c),
            None => request,
        };
        let response = request.send().await.unwrap();
        let status = response.status();
        if let Some(set) = response.headers().get("set-cookie") {
            let set = set.to_str().unwrap().to_owned();
            assert!(
                set.contains("HttpOnly") && set.contains("SameSite=Strict"),
                "{set}"
            );
            let pair = set.split(';').next().unwrap().to_owned();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, location, response.text().await.unwrap())
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String, String) {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String, String) {
        let request = self.client.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }
}

/// The value of the hidden `csrf` field of a page's form.
fn csrf(html: &str) -> String {
    let open = "name=\"csrf\" value=\"";
    let at = html.find(open).expect("a form with its token") + open.len();
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

async fn an_admin_signs_in_to_the_console_and_out_again(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("acme", "100").await;
    app.promo("beta", "40").await;
    let (status, hold) = app.authorize("acme", "chat.request", json!(15)).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let mut browser = Browser::new(&app);
    let (status, location, _) = browser.get("/admin").await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
    let (status, _, form) = browser.get("/login").await;
    assert_eq!(status, StatusCode::OK);
    assert!(form.contains("name=\"key\""));
    for (key, status) in [
        ("not-a-key", StatusCode::UNAUTHORIZED),
        (app.app_key.as_str(), StatusCode::FORBIDDEN),
    ] {
        let (got, _, page) = browser.post("/login", &[("key", key)]).await;
        assert_eq!(got, status);
        assert!(page.contains("id=\"problem\""), "{page}");
        assert!(browser.cookie.is_none());
    }
    let (status, location, _) = browser.post("/login", &[("key", &app.admin_key)]).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/admin")
    );
    assert!(browser.cookie.is_some());
    let (status, _, html) = browser.get("/admin").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    // Each row is the API's.
    let (_, listed) = app
        .call(
            reqwest::Method::GET,
            "/v1/customers",
            Some(&app.admin_key),
            None,
        )
        .await;
    for row in listed["customers"].as_array().unwrap() {
        let id = row["id"].as_str().unwrap();
        let cells = format!(
            "<a href=\"/admin/customers/{id}\">{id}</a></td><td></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
            row["balance"].as_str().unwrap(),
            row["held"].as_str().unwrap(),
            row["available"].as_str().unwrap()
        );
        assert!(html.contains(&cells), "{cells} in {html}");
    }
    let (_, _, found) = browser.get("/admin?q=bet").await;
    assert!(found.contains("/admin/customers/beta") && !found.contains("/admin/customers/acme"));
    let (status, _, customer) = browser.get("/admin/customers/acme").await;
    assert_eq!(status, StatusCode::OK);
    let view = app.customer("acme").await;
    for field in ["available", "held", "balance", "overdraft"] {
        assert_eq!(
            by_id(&customer, field),
            view[field].as_str().unwrap(),
            "{field}"
        );
    }
    assert!(customer.contains(hold["id"].as_str().unwrap()));
    let (status, _, _) = browser.get("/admin/customers/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // An admin session has no finance pages.
    let (status, _, _) = browser.get("/finance").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Signing out needs the session's own form token.
    let token = csrf(&html);
    let (status, _, refused) = browser.post("/logout", &[("csrf", "forged")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    let old_cookie = browser.cookie.clone();
    let (status, location, _) = browser.post("/logout", &[("csrf", &token)]).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
    browser.cookie = old_cookie;
    let (status, location, _) = browser.get("/admin").await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/login"),
        "the old cookie opens nothing"
    );
}
for_each_engine!(an_admin_signs_in_to_the_console_and_out_again);

async fn finance_closes_an_ended_month_once_confirmed(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.grant(
        "acme",
        json!({"kind": "pack", "pack": "topup_small", "price": "10.00", "currency": "usd"}),
    )
    .await;
    let (status, _) = app.usage("acme", "chat.request", json!(100), "u1").await;
    assert_eq!(status, StatusCode::CREATED);
    let mut browser = Browser::new(&app);
    let (status, location, _) = browser.post("/login", &[("key", &app.finance_key)]).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/finance")
    );
    let (status, _, html) = browser.get("/finance").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let (_, api) = app
        .call(
            reqwest::Method::GET,
            "/v1/revenue/rollforward?from=2025-04&to=2026-03",
            Some(&app.finance_key),
            None,
        )
        .await;
    let march = api["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["period"] == "2026-03")
        .expect("March in the roll-forward");
    let row = format!(
        "<td>2026-03</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
        march["currency"].as_str().unwrap(),
        march["opening"].as_str().unwrap(),
        march["billings"].as_str().unwrap(),
        march["recognized"].as_str().unwrap()
    );
    assert!(html.contains(&row), "{row} in {html}");
    let token = csrf(&html);
    // March has not ended; February needs the box ticked; a forged token is refused.
    let (status, _, page) = browser
        .post(
            "/finance/close",
            &[("csrf", &token), ("period", "2026-03"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(by_id(&page, "message").contains("has not ended"), "{page}");
    let (status, _, page) = browser
        .post("/finance/close", &[("csrf", &token), ("period", "2026-02")])
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(by_id(&page, "message").contains("confirm"), "{page}");
    let (status, _, _) = browser
        .post(
            "/finance/close",
            &[
                ("csrf", "forged"),
                ("period", "2026-02"),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, location, _) = browser
        .post(
            "/finance/close",
            &[("csrf", &token), ("period", "2026-02"), ("confirm", "yes")],
        )
        .await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/finance?closed=2026-02")
    );
    let (_, _, page) = browser.get(&location).await;
    assert_eq!(by_id(&page, "message"), "2026-02 is closed.");
    // The API sees it closed: closing again answers the first close.
    let (status, closed) = app
        .call(
            reqwest::Method::POST,
            "/v1/revenue/periods/2026-02/close",
            Some(&app.finance_key),
            None,
        )
        .await;
    assert_eq!(
        (status, &closed["closed_at"]),
        (StatusCode::OK, &json!("2026-03-10T12:00:00Z"))
    );
    // A finance session has no console, and ends after 30 minutes unused.
    let (status, _, _) = browser.get("/admin").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.advance("2026-03-10T12:30:00Z".parse().unwrap()).await;
    let (status, location, _) = browser.get("/finance").await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
}
for_each_engine!(finance_closes_an_ended_month_once_confirmed);

/// The rows of the table with `id`, each as its cells' text.
fn table(html: &str, id: &str) -> Vec<Vec<String>> {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let body = &html[at..];
    let body = &body[body.find("<tbody>").unwrap()..body.find("</tbody>").unwrap()];
    body.split("<tr")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let text = &cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()];
                    // Links: their text.
                    let mut out = String::new();
                    let mut inside = false;
                    for c in text.chars() {
                        match c {
                            '<' => inside = true,
                            '>' => inside = false,
                            c if !inside => out.push(c),
                            _ => {}
                        }
                    }
                    out
                })
                .collect()
        })
        .collect()
}

async fn the_console_lists_stripe_events_by_outcome_and_a_customer_s_deliveries(engine: Engine) {
    // A webhook endpoint that refuses every connection: alerts wait, with their errors.
    let app = common::spawn_app_at(engine, start(), |config| {
        let toml = "[[webhooks]]\nurl = \"http://127.0.0.1:9/hooks\"\n\
                    secret = \"whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\n\
                    [outbox]\nfirst_retry_ms = 50\nmax_retry_ms = 200\npoll_interval_ms = 20\n";
        let parsed = creditbook::config::Config::parse(toml, "webhooks.toml", |_| None).unwrap();
        config.webhooks = parsed.webhooks;
        config.outbox = parsed.outbox;
        config.catalog.webhooks = parsed.catalog.webhooks;
    })
    .await;
    let now = app.now().timestamp();
    let checkout = json!({"id": "cs_acme_1", "object": "checkout.session", "mode": "payment",
        "payment_status": "paid", "customer": "cus_acme", "client_reference_id": "acme",
        "amount_total": 1000, "currency": "usd", "payment_intent": "pi_acme_1",
        "metadata": {"creditbook_pack": "topup_small"}});
    common::expect_outcome(
        &app,
        &common::stripe_event("evt_acme_paid", "checkout.session.completed", now, checkout),
        "applied",
    )
    .await;
    let unmapped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/stripe/synthetic/invoice_paid.json"),
    )
    .unwrap();
    let mut unmapped: serde_json::Value = serde_json::from_str(&unmapped).unwrap();
    unmapped["id"] = json!("evt_unmapped");
    unmapped["created"] = json!(now);
    common::expect_outcome(&app, &unmapped.to_string(), "unmapped_price").await;
    // Using 900 of the 1,000 credits sends credit.balance_low to the refusing endpoint.
    let (status, _) = app.usage("acme", "chat.request", json!(900), "u1").await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, outbox) = app
        .call(
            reqwest::Method::GET,
            "/v1/outbox?customer=acme",
            Some(&app.admin_key),
            None,
        )
        .await;
    let messages = outbox["messages"].as_array().unwrap().clone();
    assert!(!messages.is_empty(), "{outbox}");

    let mut browser = Browser::new(&app);
    browser.post("/login", &[("key", &app.admin_key)]).await;
    let (status, _, html) = browser.get("/admin").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("id=\"essentials\""));
    assert!(html.contains("<strong>unmapped_price 1</strong>"), "{html}");
    // Filtered by outcome, with what to do.
    let (status, _, events) = browser
        .get("/admin/stripe-events?outcome=unmapped_price")
        .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let rows = table(&events, "events");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][1], "evt_unmapped");
    let advice = &events[events.find("id=\"advice\"").expect("advice")..];
    assert!(
        advice[..advice.find("</p>").unwrap()].contains("stripe_prices"),
        "{advice}"
    );
    let (_, _, all) = browser.get("/admin/stripe-events").await;
    assert_eq!(table(&all, "events").len(), 2);
    let (status, _, _) = browser.get("/admin/stripe-events?outcome=nonsense").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // The customer's page: its Stripe event, and its alerts with their deliveries.
    let (_, _, customer) = browser.get("/admin/customers/acme").await;
    let events = table(&customer, "stripe-events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0][1].as_str(), events[0][3].as_str()),
        ("evt_acme_paid", "applied")
    );
    let deliveries = table(&customer, "deliveries");
    assert_eq!(deliveries.len(), messages.len());
    assert!(
        deliveries
            .iter()
            .any(|d| d[2] == "credit.balance_low" && d[3] == "http://127.0.0.1:9/hooks"),
        "{deliveries:?}"
    );
    // Another customer has none of them.
    app.promo("beta", "5").await;
    let (_, _, beta) = browser.get("/admin/customers/beta").await;
    assert!(!beta.contains("evt_acme_paid") && !beta.contains("credit.balance_low"));
}
for_each_engine!(the_console_lists_stripe_events_by_outcome_and_a_customer_s_deliveries);

async fn finance_pages_show_what_the_reports_say(engine: Engine) {
    let app = common::spawn_app_at(engine, "2026-01-10T12:00:00Z".parse().unwrap(), |_| {}).await;
    let grant = app
        .grant(
            "acme",
            json!({"kind": "pack", "pack": "topup_small", "price": "10.00", "currency": "usd"}),
        )
        .await;
    let (status, _) = app.usage("acme", "chat.request", json!(100), "u1").await;
    assert_eq!(status, StatusCode::CREATED);
    app.advance("2026-02-10T12:00:00Z".parse().unwrap()).await;
    let (status, _) = app.usage("acme", "image.standard", json!(10), "u2").await;
    assert_eq!(status, StatusCode::CREATED);
    app.advance("2026-03-10T12:00:00Z".parse().unwrap()).await;
    let mut browser = Browser::new(&app);
    browser.post("/login", &[("key", &app.finance_key)]).await;
    let (status, _, html) = browser.get("/finance?from=2026-01&to=2026-03").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let api = |path: String| {
        let app = &app;
        async move {
            let (status, body) = app
                .call(reqwest::Method::GET, &path, Some(&app.finance_key), None)
                .await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
            body
        }
    };
    // The waterfall grid is the API's.
    let waterfall = api("/v1/revenue/waterfall?from=2026-01&to=2026-03".into()).await;
    let grid = table(&html, "waterfall");
    let rows = waterfall["rows"].as_array().unwrap();
    assert_eq!(grid.len(), rows.len());
    for (cells, row) in grid.iter().zip(rows) {
        let mut expected = vec![
            row["booked_period"].as_str().unwrap().to_owned(),
            row["currency"].as_str().unwrap().to_owned(),
            row["billed"].as_str().unwrap().to_owned(),
        ];
        for month in ["2026-01", "2026-02", "2026-03"] {
            expected.push(row["recognized"][month].as_str().unwrap_or("").to_owned());
        }
        expected.push(row["deferred"].as_str().unwrap().to_owned());
        assert_eq!(cells, &expected);
    }
    // The chart draws January's and February's usage revenue; the roll-forward splits it.
    let rollforward = api("/v1/revenue/rollforward?from=2026-01&to=2026-03".into()).await;
    let january = &rollforward["rows"][0];
    assert_eq!(january["usage_recognized"], january["recognized"]);
    assert!(
        html.contains(&format!(
            "<title>usage: {}</title>",
            january["usage_recognized"].as_str().unwrap()
        )),
        "{html}"
    );
    // Margin: the catalog's actions have vendor costs.
    let margin = table(&html, "margin");
    let api_margin = api("/v1/revenue/margin?from=2026-01&to=2026-03&by=plan".into()).await;
    assert_eq!(margin.len(), api_margin["rows"].as_array().unwrap().len());
    assert_eq!(
        margin[0][7],
        api_margin["rows"][0]["margin"].as_str().unwrap()
    );
    // Downloads are the API's CSV.
    for report in ["journal", "rollforward", "waterfall", "margin"] {
        let (status, _, csv) = browser
            .get(&format!(
                "/finance/export/{report}.csv?from=2026-01&to=2026-03"
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{report}: {csv}");
        let path = if report == "journal" {
            "/v1/revenue/journal?from=2026-01-01&to=2026-03-31&format=csv".to_owned()
        } else {
            format!("/v1/revenue/{report}?from=2026-01&to=2026-03&format=csv")
        };
        let expected = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(&app.finance_key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(csv, expected, "{report}");
        assert!(csv.lines().count() > 1, "{report}: {csv}");
    }
    let (status, _, _) = browser
        .get("/finance/export/secrets.csv?from=2026-01&to=2026-03")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A customer's paid grants, and one grant's schedule, as the API has it.
    let (_, _, lots) = browser.get("/finance/grants?customer=acme").await;
    let lots = table(&lots, "lots");
    assert_eq!(lots.len(), 1);
    assert_eq!(lots[0][0], grant);
    let (status, location, _) = browser.get(&format!("/finance/grants?grant={grant}")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, page) = browser.get(&location).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let schedule = api(format!("/v1/revenue/grants/{grant}/schedule")).await;
    assert_eq!(by_id(&page, "paid"), schedule["paid"].as_str().unwrap());
    assert_eq!(
        by_id(&page, "total-recognized"),
        schedule["totals"]["recognized"].as_str().unwrap()
    );
    let periods = table(&page, "schedule");
    assert_eq!(periods.len(), schedule["periods"].as_array().unwrap().len());
    for (cells, row) in periods.iter().zip(schedule["periods"].as_array().unwrap()) {
        assert_eq!(cells[0], row["period"].as_str().unwrap());
        assert_eq!(cells[2], row["usage_recognized"].as_str().unwrap());
        assert_eq!(cells[8], row["deferred"].as_str().unwrap());
    }
    let (_, _, csv) = browser
        .get(&format!("/finance/grants/{grant}/schedule.csv"))
        .await;
    assert!(csv.starts_with("grant,period,"), "{csv}");
    let (status, _, _) = browser.get("/finance/grants/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Without a session: the sign-in page, for pages and downloads alike.
    let mut stranger = Browser::new(&app);
    for path in [
        "/finance/export/journal.csv?from=2026-01&to=2026-03",
        "/finance/grants?customer=acme",
    ] {
        let (status, location, _) = stranger.get(path).await;
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::SEE_OTHER, "/login")
        );
    }
    app.assert_audit_clean().await;
}
for_each_engine!(finance_pages_show_what_the_reports_say);

/// The portal's HTML, with the link's token (a new key each start) redacted.
async fn the_portal_page_renders_as_recorded(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.grant(
        "acme",
        json!({"kind": "promotional", "credits": "300", "expires_at": "2026-03-14T00:00:00Z"}),
    )
    .await;
    app.promo("acme", "1000").await;
    for (key, action, quantity, at) in [
        ("s1", "chat.request", "12", "2026-03-08T10:00:00Z"),
        ("s2", "image.standard", "3", "2026-03-09T11:00:00Z"),
        ("s3", "chat.request", "5.5", "2026-03-09T12:00:00Z"),
    ] {
        let (status, used) = app
            .post_app(
                "/v1/usage",
                json!({"customer": "acme", "action": action, "quantity": quantity,
                       "idempotency_key": key, "occurred_at": at}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{used}");
    }
    let (path, _) = portal_link(&app, "acme").await;
    let (status, _, html) = page(&app, &path).await;
    assert_eq!(status, StatusCode::OK);
    let token = &path["/portal?token=".len()..];
    let html = html.replace(token, "[token]");
    // One recording for both engines: they must render the same page.
    insta::assert_snapshot!("portal_page", html);
}
for_each_engine!(the_portal_page_renders_as_recorded);

/// A customer's console page and the finance page, with their random ids and the session's
/// form token redacted: one recording for both engines.
async fn the_console_and_finance_pages_render_as_recorded(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    let grant = app
        .grant(
            "acme",
            json!({"kind": "pack", "pack": "topup_small", "price": "10.00", "currency": "usd",
                "idempotency_key": "g-pack"}),
        )
        .await;
    let promo = app
        .grant(
            "acme",
            json!({"kind": "promotional", "credits": "50", "idempotency_key": "g-promo"}),
        )
        .await;
    let admin_id = app.key_id(creditbook::store::keys::Scope::Admin).await;
    let (status, _) = app.usage("acme", "chat.request", json!(80), "r1").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, hold) = app.authorize("acme", "image.standard", json!(2)).await;
    assert_eq!(status, StatusCode::CREATED, "{hold}");
    let hold = hold["id"].as_str().unwrap().to_owned();
    let redact = |html: String, csrf: &str| {
        let mut html = html
            .replace(&grant, "[pack grant]")
            .replace(&promo, "[promotional grant]")
            .replace(&hold, "[hold]")
            .replace(&admin_id, "[admin key]")
            .replace(csrf, "[form token]");
        // Each form's idempotency key is new with each page.
        html = match html.find("value=\"grant-") {
            Some(at) => {
                let start = at + "value=\"grant-".len();
                let key = html[start..start + 36].to_owned();
                html.replace(&key, "[form key]")
            }
            None => html,
        };
        // An admin grant's source is the random id of the request that made it.
        let mut parts = html.split("<td>admin ");
        let mut out = parts.next().unwrap().to_owned();
        for part in parts {
            out.push_str("<td>admin [request]");
            out.push_str(&part[part.find('<').unwrap()..]);
        }
        html = out;
        html
    };
    let mut admin = Browser::new(&app);
    admin.post("/login", &[("key", &app.admin_key)]).await;
    let (status, _, html) = admin.get("/admin/customers/acme").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let token = csrf(&html);
    insta::assert_snapshot!("console_customer_page", redact(html, &token));
    let mut finance = Browser::new(&app);
    finance.post("/login", &[("key", &app.finance_key)]).await;
    let (status, _, html) = finance.get("/finance?from=2026-01&to=2026-03").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let token = csrf(&html);
    insta::assert_snapshot!("finance_page", redact(html, &token));
}
for_each_engine!(the_console_and_finance_pages_render_as_recorded);

/// No page renders a customer-supplied string unescaped: a customer id, a search, an override's
/// reason and a paid grant's customer, each full of HTML, in the console and the finance pages.
async fn the_console_and_finance_pages_escape_what_people_typed(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    let encoded = "%3Cb%3Eevil%3C%2Fb%3E%26%22x%22";
    app.grant(
        encoded,
        json!({"kind": "pack", "pack": "topup_small", "price": "10.00", "currency": "usd"}),
    )
    .await;
    let (status, made) = app
        .post_admin(
            &format!("/v1/customers/{encoded}/overrides"),
            json!({"feature": "video", "enabled": true, "reason": "<script>alert(1)</script>",
                   "idempotency_key": "o1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    let mut admin = Browser::new(&app);
    admin.post("/login", &[("key", &app.admin_key)]).await;
    let mut finance = Browser::new(&app);
    finance.post("/login", &[("key", &app.finance_key)]).await;
    for (as_finance, path) in [
        (false, "/admin".to_owned()),
        (false, format!("/admin?q={encoded}")),
        (false, "/admin?q=%3Cscript%3E".to_owned()),
        (false, format!("/admin/customers/{encoded}")),
        (true, format!("/finance/grants?customer={encoded}")),
    ] {
        let browser = if as_finance { &mut finance } else { &mut admin };
        let (status, _, html) = browser.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert!(
            !html.contains("<b>evil") && !html.contains("<script>"),
            "{path} renders unescaped: {html}"
        );
        assert!(
            html.contains("&#60;b&#62;evil")
                || html.contains("&lt;b&gt;evil")
                || html.contains("&#60;script&#62;")
                || html.contains("&lt;script&gt;"),
            "{path} shows the escaped text: {html}"
        );
    }
}
for_each_engine!(the_console_and_finance_pages_escape_what_people_typed);

/// A query parameter of the wrong type on a page is refused as the API refuses it: 422
/// `invalid_request` naming the parameter, never a bare text answer.
async fn bad_query_parameters_on_pages_are_problems(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("acme", "10").await;
    let (path, _) = portal_link(&app, "acme").await;
    let mut admin = Browser::new(&app);
    admin.post("/login", &[("key", &app.admin_key)]).await;
    let mut finance = Browser::new(&app);
    finance.post("/login", &[("key", &app.finance_key)]).await;
    let check = |status: StatusCode, body: &str, field: &str| {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let problem: serde_json::Value = serde_json::from_str(body).expect("problem+json");
        assert_eq!(problem["type"], "invalid_request", "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(field),
            "{problem}"
        );
    };
    let response = app
        .client
        .get(format!("{}{path}&before=abc", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    check(response.status(), &response.text().await.unwrap(), "before");
    for path in [
        "/admin/customers/acme?before=abc",
        "/admin/stripe-events?before=yesterday",
    ] {
        let (status, _, body) = admin.get(path).await;
        check(status, &body, "before");
    }
    let (status, _, body) = finance.get("/finance/export/journal.csv?to=2026-03").await;
    check(status, &body, "from");
}
for_each_engine!(bad_query_parameters_on_pages_are_problems);

/// `[pages] embed_origins` lets those origins frame the customer's page only: sign-in, the
/// console and the finance pages may be framed by no one.
async fn only_the_customer_s_page_may_be_framed(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |config| {
        config.pages.embed_origins = vec!["https://app.example.com".into()];
    })
    .await;
    app.promo("acme", "10").await;
    let (path, _) = portal_link(&app, "acme").await;
    let (status, policy, _) = page(&app, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        policy.contains("frame-ancestors https://app.example.com"),
        "{policy}"
    );
    for path in ["/login", "/admin", "/finance"] {
        let (_, policy, _) = page(&app, path).await;
        assert!(
            policy.contains("frame-ancestors 'none'"),
            "{path}: {policy}"
        );
    }
}

for_each_engine!(only_the_customer_s_page_may_be_framed);

/// Guessing keys at `/login` is slowed: after ten failures from one address within five
/// minutes, even the right key waits (429 with Retry-After); another app's sign-ins are its own.
async fn failed_sign_ins_are_limited_per_address(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |key: String| {
        let client = client.clone();
        let url = format!("{}/login", app.address);
        async move { client.post(url).form(&[("key", key)]).send().await.unwrap() }
    };
    for n in 0..10 {
        let answer = sign_in(format!(
            "cb_admin_{}",
            format!("{n:x}").repeat(64)[..64].to_owned()
        ))
        .await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "attempt {n}");
    }
    let refused = sign_in(app.admin_key.clone()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins")
    );
}

for_each_engine!(failed_sign_ins_are_limited_per_address);

/// A customer id with a `/` (or other characters a path reserves) opens from the console's list.
async fn a_customer_id_with_a_slash_opens_from_the_console(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    let (status, granted) = app
        .post_admin(
            "/v1/customers/team%2Fa%3Fb/grants",
            json!({"kind": "promotional", "credits": "100", "idempotency_key": "g"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{granted}");
    assert_eq!(granted["customer"], "team/a?b");
    let mut browser = Browser::new(&app);
    let (status, _, _) = browser
        .post("/login", &[("key", app.admin_key.as_str())])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, list) = browser.get("/admin").await;
    assert_eq!(status, StatusCode::OK);
    let link = "/admin/customers/team%2Fa%3Fb";
    assert!(list.contains(&format!("href=\"{link}\"")), "{list}");
    let (status, _, page) = browser.get(link).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("team/a?b"), "{page}");
}

for_each_engine!(a_customer_id_with_a_slash_opens_from_the_console);

/// A customer on a credit cycle sees its next grant on its page, as the API gives it: the
/// allowance, when, and what would roll over.
async fn the_portal_says_when_the_next_grant_comes(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |config| {
        config.catalog.default_plan = Some("free".into());
        let free = config.catalog.plans.get_mut("free").unwrap();
        free.rollover_max = "10".parse().unwrap();
    })
    .await;
    let (status, used) = app.usage("cycled", "chat.request", json!(5), "u1").await;
    assert_eq!(status, StatusCode::CREATED, "{used}");
    let customer = app.customer("cycled").await;
    assert_eq!(customer["next_grant_at"], "2026-04-10T12:00:00Z");
    let (path, _) = portal_link(&app, "cycled").await;
    let (status, _, html) = page(&app, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        by_id(&html, "next-grant"),
        "50 credits on 2026-04-10 12:00 UTC (10 rolling over)"
    );
    // Set on pro through the API: pro's cycle, from that day.
    app.set_plan("cycled", "pro").await;
    let (path, _) = portal_link(&app, "cycled").await;
    let (_, _, html) = page(&app, &path).await;
    assert_eq!(
        by_id(&html, "next-grant"),
        "2000 credits on 2026-04-10 12:00 UTC"
    );
}
for_each_engine!(the_portal_says_when_the_next_grant_comes);

/// The customer's page names who spent: usage by member, the limit on each member, the member
/// of each ledger line, escaped as any text a caller gave.
async fn the_portal_names_the_members(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("team", "500").await;
    for (quantity, subject) in [(30, "alice"), (12, "<b>bob</b>"), (8, "alice")] {
        let (status, used) = app
            .post_app(
                "/v1/usage",
                json!({"customer": "team", "action": "chat.request", "quantity": quantity,
                    "subject": subject, "idempotency_key": uuid::Uuid::new_v4().to_string()}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{used}");
    }
    let (status, set) = app
        .call(
            reqwest::Method::PUT,
            "/v1/customers/team/limits",
            Some(&app.app_key),
            Some(json!({"limits": [
                {"period": "month", "credits": "100", "mode": "hard", "each_subject": true}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");
    let (path, _) = portal_link(&app, "team").await;
    let (status, _, html) = page(&app, &path).await;
    assert_eq!(status, StatusCode::OK);
    let members = &html[html.find("id=\"members\"").expect("usage by member")..];
    let members = &members[..members.find("</table>").unwrap()];
    assert!(
        members.contains("<td>&#60;b&#62;bob&#60;/b&#62;</td><td class=\"num\">12</td>")
            || members.contains("<td>&lt;b&gt;bob&lt;/b&gt;</td><td class=\"num\">12</td>"),
        "{members}"
    );
    assert!(
        members.contains("<td>alice</td><td class=\"num\">38</td>"),
        "{members}"
    );
    assert!(!html.contains("<b>bob</b>"), "a member's name is escaped");
    let limits = &html[html.find("id=\"limits\"").unwrap()..];
    assert!(limits.contains("<td>each member</td>"), "{limits}");
}
for_each_engine!(the_portal_names_the_members);

/// An organization's credits page lists the usage of each account below it beside its own; a
/// team's page shows what it can spend with its organization's pool.
async fn the_portal_of_an_organization_lists_its_accounts(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("acme", "500").await;
    for team in ["acme-design", "acme-research"] {
        let (status, set) = app.set_parent(team, json!("acme")).await;
        assert_eq!(status, StatusCode::OK, "{set}");
    }
    for (customer, quantity) in [("acme-design", 20), ("acme-research", 7), ("acme", 3)] {
        let (status, used) = app
            .post_app(
                "/v1/usage",
                json!({"customer": customer, "action": "chat.request", "quantity": quantity,
                    "idempotency_key": uuid::Uuid::new_v4().to_string()}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{used}");
    }
    let (path, _) = portal_link(&app, "acme").await;
    let (status, _, html) = page(&app, &path).await;
    assert_eq!(status, StatusCode::OK);
    let accounts = &html[html.find("id=\"accounts\"").expect("usage by account")..];
    let accounts = &accounts[..accounts.find("</table>").unwrap()];
    for row in [
        "<td>acme</td><td class=\"num\">3</td>",
        "<td>acme-design</td><td class=\"num\">20</td>",
        "<td>acme-research</td><td class=\"num\">7</td>",
    ] {
        assert!(accounts.contains(row), "{accounts}");
    }
    assert!(!html.contains("id=\"pool-available\""));
    let (path, _) = portal_link(&app, "acme-design").await;
    let (status, _, html) = page(&app, &path).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !html.contains("id=\"accounts\""),
        "a team with nobody below"
    );
    let pool = &html[html.find("id=\"pool-available\"").expect("the pool")..];
    assert!(
        pool.starts_with("id=\"pool-available\">470<"),
        "{}",
        &pool[..60]
    );
}
for_each_engine!(the_portal_of_an_organization_lists_its_accounts);

/// Posts the console's grant form for acme.
async fn post_grant(
    browser: &mut Browser,
    form: Vec<(&'static str, String)>,
) -> (StatusCode, String, String) {
    let request = browser
        .client
        .post(format!("{}/admin/customers/acme/grant", browser.base))
        .form(&form);
    browser.send(request).await
}

/// The console's actions need an admin's session and its form token; a form with a field the
/// page does not send is refused; none of these changes anything.
async fn console_actions_need_an_admin_session_and_its_form_token(engine: Engine) {
    let app = common::spawn_app_at(engine, start(), |_| {}).await;
    app.promo("acme", "100").await;
    let grant = |csrf: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("key", "g-1".to_owned()),
            ("credits", "10".to_owned()),
            ("reason", "test".to_owned()),
        ]
    };
    // No session: to the sign-in page.
    let mut nobody = Browser::new(&app);
    let (status, location, _) = post_grant(&mut nobody, grant("x")).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/login")
    );
    // A finance session: not for this key.
    let mut finance = Browser::new(&app);
    finance.post("/login", &[("key", &app.finance_key)]).await;
    let (_, _, page) = finance.get("/finance").await;
    let (status, _, _) = post_grant(&mut finance, grant(&csrf(&page))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An admin session with a wrong token, or a field the form has not.
    let mut admin = Browser::new(&app);
    admin.post("/login", &[("key", &app.admin_key)]).await;
    let (_, _, page) = admin.get("/admin/customers/acme").await;
    let token = csrf(&page);
    let (status, _, _) = post_grant(&mut admin, grant("not-the-token")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut extra = grant(&token);
    extra.push(("kind", "pack".to_owned()));
    let (status, _, _) = post_grant(&mut admin, extra).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.balances("acme").await.2, "100");
    // A reason follows the rule of every operator's reason: at most 500 characters.
    let long = "w".repeat(501);
    let request = admin
        .client
        .post(format!("{}/admin/customers/acme/plan", admin.base))
        .form(&[("csrf", token.as_str()), ("plan", "pro"), ("reason", &long)]);
    let (status, _, page) = admin.send(request).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("at most 500 characters"), "{page}");
    assert_eq!(app.customer("acme").await["plan"], serde_json::Value::Null);
    // The same form sent twice grants once (its key is the form's).
    for _ in 0..2 {
        let (status, location, _) = post_grant(&mut admin, grant(&token)).await;
        assert_eq!(
            (status, location.as_str()),
            (StatusCode::SEE_OTHER, "/admin/customers/acme?done=granted")
        );
    }
    assert_eq!(app.balances("acme").await.2, "110");
    // A customer id that needs escaping comes back to its own page.
    app.promo("a%2Fb%20c", "5").await;
    let request = admin
        .client
        .post(format!("{}/admin/customers/a%2Fb%20c/adjust", admin.base))
        .form(&[
            ("csrf", token.as_str()),
            ("key", "a-1"),
            ("credits", "-5"),
            ("reason", "test"),
        ]);
    let (status, location, _) = admin.send(request).await;
    assert_eq!(
        (status, location.as_str()),
        (
            StatusCode::SEE_OTHER,
            "/admin/customers/a%2Fb%20c?done=adjusted"
        )
    );
    assert_eq!(app.balances("a%2Fb%20c").await.2, "0");
}
for_each_engine!(console_actions_need_an_admin_session_and_its_form_token);
