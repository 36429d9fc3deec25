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
