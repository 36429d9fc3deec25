//! Typed configuration (README, Configuration), validated at start. Every error names the file, the key
//! and the reason.

use crate::domain::catalog::{
    self, Action, ActionChange, Breakage, Catalog, CreditsInterval, Feature, Overage, Pack, Plan,
};
use crate::domain::money::{Credits, Price, max_credits_per_request};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    stripe: RawStripe,
    #[serde(default)]
    accounting: RawAccounting,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    features: Vec<RawFeature>,
    #[serde(default)]
    actions: Vec<RawAction>,
    #[serde(default)]
    plans: Vec<RawPlan>,
    #[serde(default)]
    packs: Vec<RawPack>,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    webhooks: Vec<RawWebhook>,
    #[serde(default)]
    outbox: RawOutbox,
    #[serde(default)]
    pages: RawPages,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    customers: RawCustomers,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCustomers {
    default_plan: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    idempotency_days: Option<u32>,
    stripe_payload_days: Option<u32>,
    outbox_days: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPages {
    public_url: Option<String>,
    secret: Option<String>,
    portal_link_minutes: Option<u64>,
    session_idle_minutes: Option<u64>,
    session_max_hours: Option<u64>,
    #[serde(default)]
    embed_origins: Vec<String>,
}

/// The pages people look at (`[pages]`).
#[derive(Clone, Default)]
pub struct PagesConfig {
    /// Where people reach this server, for the links it makes; `http://{listen}` when absent.
    pub public_url: Option<String>,
    /// The key portal links and sessions are signed with; a random one per start when absent.
    pub secret: Option<Vec<u8>>,
    /// How long a portal link opens the customer's page.
    pub portal_link_seconds: u64,
    /// Origins that may embed the customer's page in a frame.
    pub embed_origins: Vec<String>,
    /// How long a finance or admin session lasts unused.
    pub session_idle_seconds: u64,
    /// How long a finance or admin session lasts at most, however used.
    pub session_max_seconds: u64,
}

impl std::fmt::Debug for PagesConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagesConfig")
            .field("public_url", &self.public_url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("portal_link_seconds", &self.portal_link_seconds)
            .field("embed_origins", &self.embed_origins)
            .field("session_idle_seconds", &self.session_idle_seconds)
            .field("session_max_seconds", &self.session_max_seconds)
            .finish()
    }
}

/// Portal links last 15 minutes unless configured, at most a day.
const DEFAULT_PORTAL_LINK_MINUTES: u64 = 15;
const MAX_PORTAL_LINK_MINUTES: u64 = 1_440;
/// Finance and admin sessions end after 30 minutes unused unless configured, at most a day.
const DEFAULT_SESSION_IDLE_MINUTES: u64 = 30;
/// And after 12 hours in all unless configured, at most a week.
const DEFAULT_SESSION_MAX_HOURS: u64 = 12;
const MAX_SESSION_MAX_HOURS: u64 = 168;

/// `[pages]`, with `CREDITBOOK_PAGES_SECRET` over the file's `secret`.
fn pages_config(raw: &RawPages, env_secret: Option<String>) -> Result<PagesConfig, Invalid> {
    let origin = |key: &str, text: &str| {
        let ok = (text.starts_with("https://") || text.starts_with("http://"))
            && !text.ends_with('/')
            && text.len() <= 300
            && !text
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == ';' || c == ',');
        if ok {
            Ok(text.to_owned())
        } else {
            Err((
                format!("pages.{key}"),
                format!("{text:?} is not an http(s) URL without a trailing slash"),
            ))
        }
    };
    let public_url = raw
        .public_url
        .as_deref()
        .map(|u| origin("public_url", u))
        .transpose()?;
    let embed_origins = raw
        .embed_origins
        .iter()
        .map(|o| origin("embed_origins", o))
        .collect::<Result<Vec<_>, _>>()?;
    let secret = env_secret.or_else(|| raw.secret.clone());
    if let Some(secret) = &secret
        && secret.len() < 32
    {
        return Err((
            "pages.secret".into(),
            "must be at least 32 characters".into(),
        ));
    }
    let minutes = raw
        .portal_link_minutes
        .unwrap_or(DEFAULT_PORTAL_LINK_MINUTES);
    if !(1..=MAX_PORTAL_LINK_MINUTES).contains(&minutes) {
        return Err((
            "pages.portal_link_minutes".into(),
            format!("must be between 1 and {MAX_PORTAL_LINK_MINUTES}"),
        ));
    }
    let idle = raw
        .session_idle_minutes
        .unwrap_or(DEFAULT_SESSION_IDLE_MINUTES);
    if !(1..=MAX_PORTAL_LINK_MINUTES).contains(&idle) {
        return Err((
            "pages.session_idle_minutes".into(),
            format!("must be between 1 and {MAX_PORTAL_LINK_MINUTES}"),
        ));
    }
    let max_hours = raw.session_max_hours.unwrap_or(DEFAULT_SESSION_MAX_HOURS);
    if !(1..=MAX_SESSION_MAX_HOURS).contains(&max_hours) {
        return Err((
            "pages.session_max_hours".into(),
            format!("must be between 1 and {MAX_SESSION_MAX_HOURS}"),
        ));
    }
    Ok(PagesConfig {
        public_url,
        secret: secret.map(String::into_bytes),
        portal_link_seconds: minutes * 60,
        embed_origins,
        session_idle_seconds: idle * 60,
        session_max_seconds: max_hours * 3_600,
    })
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    low_balance_consumed_share: Option<Decimal>,
    low_balance_credits: Option<Decimal>,
    grant_expiring_days: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    secret: String,
    events: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOutbox {
    first_retry_ms: Option<u64>,
    max_retry_ms: Option<u64>,
    dead_after_seconds: Option<u64>,
    timeout_seconds: Option<u64>,
    poll_interval_ms: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    database_url: Option<String>,
    log_format: Option<String>,
    shutdown_timeout_seconds: Option<u64>,
    max_connections: Option<u32>,
    acquire_timeout_seconds: Option<u64>,
    key_cache_seconds: Option<u64>,
    request_timeout_seconds: Option<u64>,
    max_concurrent_requests: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStripe {
    #[serde(default)]
    webhook_secrets: Vec<String>,
    webhook_tolerance_seconds: Option<u64>,
    api_key: Option<String>,
    api_base: Option<String>,
    past_due_grace_seconds: Option<u64>,
    livemode: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAccounting {
    currency: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    hold_timeout_seconds: Option<u64>,
    job_interval_seconds: Option<u64>,
    batch_max_commands: Option<usize>,
    batch_max_wait_micros: Option<u64>,
    postgres_batch_workers: Option<usize>,
    check_staleness_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    id: String,
    #[serde(default)]
    plan_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    id: String,
    feature: String,
    credits: Decimal,
    vendor_cost: Option<Decimal>,
    #[serde(default)]
    changes: Vec<RawActionChange>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActionChange {
    /// `YYYY-MM-DD` (midnight UTC) or an RFC 3339 instant.
    from: String,
    credits: Option<Decimal>,
    vendor_cost: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    id: String,
    #[serde(default)]
    stripe_prices: Vec<String>,
    credits: Decimal,
    credits_interval: Option<String>,
    #[serde(default)]
    per_seat: bool,
    #[serde(default)]
    features: Vec<String>,
    rollover_max: Option<Decimal>,
    overage: Option<String>,
    overage_limit: Option<Decimal>,
    overage_price: Option<Decimal>,
    platform_share: Option<Decimal>,
    breakage: Option<String>,
    expected_unused: Option<Decimal>,
    priority: Option<i32>,
    low_balance_consumed_share: Option<Decimal>,
    low_balance_credits: Option<Decimal>,
    overage_meter_event: Option<String>,
    overage_stripe_price: Option<String>,
    trial_credits: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPack {
    id: String,
    #[serde(default)]
    stripe_prices: Vec<String>,
    credits: Decimal,
    price: Decimal,
    currency: Option<String>,
    expires_after_days: Option<u32>,
    breakage: Option<String>,
    expected_unused: Option<Decimal>,
    priority: Option<i32>,
    low_balance_consumed_share: Option<Decimal>,
    low_balance_credits: Option<Decimal>,
    top_up_url: Option<String>,
}

#[derive(Clone)]
pub struct StripeConfig {
    /// Each one `whsec_…` (checked at start: an empty one would let anyone sign).
    pub webhook_secrets: Vec<String>,
    pub webhook_tolerance_seconds: u64,
    pub api_key: Option<String>,
    /// Where the Stripe API is reached (a stand-in in tests); Stripe's own by default.
    pub api_base: Option<String>,
    /// How long a `past_due` subscription keeps its plan's features before the gate refuses them.
    pub past_due_grace_seconds: u64,
    /// The Stripe mode whose events apply (`[stripe] livemode`); events of the other mode are
    /// recorded and apply nothing.
    pub livemode: bool,
}

impl std::fmt::Debug for StripeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeConfig")
            .field(
                "webhook_secrets",
                &format!("<{} redacted>", self.webhook_secrets.len()),
            )
            .field("webhook_tolerance_seconds", &self.webhook_tolerance_seconds)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_base", &self.api_base)
            .field("past_due_grace_seconds", &self.past_due_grace_seconds)
            .field("livemode", &self.livemode)
            .finish()
    }
}

/// Shortest random part of a Stripe webhook signing secret after `whsec_`.
const MIN_WEBHOOK_SECRET_CHARS: usize = 16;

/// A Stripe webhook signing secret: `whsec_` then at least 16 characters, none of them space or
/// control. Anything else (an empty string from a trailing comma, a pasted API key) is refused.
fn webhook_secret(key: String, secret: &str) -> Result<String, Invalid> {
    let rest = secret.strip_prefix("whsec_").unwrap_or("");
    let ok = secret.starts_with("whsec_")
        && rest.chars().count() >= MIN_WEBHOOK_SECRET_CHARS
        && rest.len() <= 256
        && rest.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(secret.to_owned())
    } else if secret.is_empty() {
        Err((key, "is empty: every webhook secret must be Stripe's whsec_… signing secret (a trailing comma adds an empty one)".into()))
    } else {
        Err((
            key,
            format!(
                "must be Stripe's signing secret, whsec_ followed by at least {MIN_WEBHOOK_SECRET_CHARS} characters without spaces"
            ),
        ))
    }
}

/// A Stripe API key: a secret (`sk_…`) or restricted (`rk_…`) key of either mode.
fn stripe_api_key(key: &str, value: &str) -> Result<(), Invalid> {
    let ok = ["sk_test_", "sk_live_", "rk_test_", "rk_live_"]
        .iter()
        .any(|p| value.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
        && value.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err((key.into(), "must be a Stripe secret or restricted key (sk_test_…, sk_live_…, rk_test_…, rk_live_…)".into()))
    }
}

/// Whether a Stripe API key is a live-mode one.
fn is_live_key(key: &str) -> bool {
    key.starts_with("sk_live_") || key.starts_with("rk_live_")
}

#[derive(Clone)]
pub struct Config {
    pub listen: String,
    pub database_url: String,
    /// How log lines are written (`[server] log_format`).
    pub log_format: LogFormat,
    /// Longest a shutdown waits for in-flight requests and jobs (`[server]
    /// shutdown_timeout_seconds`).
    pub shutdown_timeout_seconds: u64,
    /// The database connection pool (`[server] max_connections`, `acquire_timeout_seconds`).
    pub pool: crate::store::PoolSettings,
    /// How long a verified API key is trusted from memory (`[server] key_cache_seconds`).
    pub key_cache_seconds: u64,
    /// How long a request may take and how many run at once (`[server]
    /// request_timeout_seconds`, `max_concurrent_requests`).
    pub limits: ServerLimits,
    pub stripe: StripeConfig,
    pub hold_timeout_seconds: u64,
    pub job_interval_seconds: u64,
    /// How the gate batches commands (`[ledger] batch_*`).
    pub batching: crate::store::BatchSettings,
    pub catalog: Catalog,
    /// Outbound webhook endpoints with their signing keys (`[[webhooks]]`).
    pub webhooks: Vec<WebhookEndpoint>,
    /// How the outbox delivers (`[outbox]`).
    pub outbox: OutboxSettings,
    /// The pages people look at (`[pages]`).
    pub pages: PagesConfig,
    /// What is pruned and when (`[retention]`).
    pub retention: crate::store::retention::RetentionSettings,
}

impl std::fmt::Debug for Config {
    /// Every secret redacted: the database URL's password, Stripe's keys, the signing keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("database_url", &redact_url_password(&self.database_url))
            .field("log_format", &self.log_format)
            .field("shutdown_timeout_seconds", &self.shutdown_timeout_seconds)
            .field("pool", &self.pool)
            .field("key_cache_seconds", &self.key_cache_seconds)
            .field("limits", &self.limits)
            .field("stripe", &self.stripe)
            .field("hold_timeout_seconds", &self.hold_timeout_seconds)
            .field("job_interval_seconds", &self.job_interval_seconds)
            .field("batching", &self.batching)
            .field("catalog", &self.catalog)
            .field("webhooks", &self.webhooks)
            .field("outbox", &self.outbox)
            .field("pages", &self.pages)
            .field("retention", &self.retention)
            .finish()
    }
}

/// `scheme://user:password@host/…` with the password replaced.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or("");
            format!(
                "{scheme}://{user}:<redacted>@{host}{}",
                &rest[authority_end..]
            )
        }
        _ => url.to_owned(),
    }
}

/// An endpoint that receives outbound events, signed per the Standard Webhooks specification.
#[derive(Clone)]
pub struct WebhookEndpoint {
    pub url: String,
    /// The signing key: the bytes of the base64 after `whsec_`.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("url", &self.url)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What bounds the HTTP server: a request's time, requests at once, connections at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// A request not answered by then is answered 503 `unavailable`; a client that has not sent
    /// its headers by then is cut off.
    pub request_timeout: std::time::Duration,
    /// Requests served at once; one more is answered 503 `unavailable` with `Retry-After`.
    pub max_concurrent_requests: usize,
}

impl ServerLimits {
    /// Connections kept open at once: room for clients waiting between requests. Beyond it, new
    /// connections wait in the listen queue.
    pub fn max_connections(&self) -> usize {
        self.max_concurrent_requests.saturating_mul(4)
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            request_timeout: std::time::Duration::from_secs(DEFAULT_REQUEST_TIMEOUT_SECONDS),
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
        }
    }
}

pub const DEFAULT_REQUEST_TIMEOUT_SECONDS: u64 = 30;
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;
const MAX_REQUEST_TIMEOUT_SECONDS: u64 = 600;
const MAX_CONCURRENT_REQUESTS: usize = 100_000;

/// How the outbox worker delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSettings {
    pub retry: crate::domain::outbound::RetryPolicy,
    /// Longest a delivery may take before it counts as failed.
    pub timeout_seconds: u64,
    /// How often the worker looks for due messages when nothing woke it.
    pub poll_interval_ms: u64,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            retry: Default::default(),
            timeout_seconds: 10,
            poll_interval_ms: 1_000,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Default and limit of the shutdown drain.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECONDS: u64 = 30;
const MAX_SHUTDOWN_TIMEOUT_SECONDS: u64 = 3_600;
/// Limits of the connection pool.
const MAX_CONNECTIONS: u32 = 1_000;
const MAX_ACQUIRE_TIMEOUT_SECONDS: u64 = 300;
const MAX_KEY_CACHE_SECONDS: u64 = 300;

/// Limits on what a config may say: a hold lives at most a day, jobs run at least hourly.
const MAX_HOLD_TIMEOUT_SECONDS: u64 = 86_400;
const MAX_JOB_INTERVAL_SECONDS: u64 = 3_600;
/// Stripe's own retry window is 3 days; a grace or tolerance beyond 30 days is a mistake.
const MAX_STRIPE_SECONDS: u64 = 30 * 86_400;

impl Config {
    /// Reads the file, then applies the `CREDITBOOK_*` environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: "(file)".into(),
            reason: e.to_string(),
        })?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Config::parse(&text, &file, env)
    }

    // Long: one check per section and key of the config file, in the README's order, each naming its key in the error; split, the keys would scatter.
    pub fn parse(
        text: &str,
        file: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: toml_error_key(text, &e),
            reason: e.message().to_owned(),
        })?;
        let fail = |key: String, reason: String| ConfigError {
            file: file.to_owned(),
            key,
            reason,
        };
        let mut catalog = build_catalog(&raw).map_err(|(key, reason)| fail(key, reason))?;
        catalog.alerts = alert_rule(&raw.alerts).map_err(|(key, reason)| fail(key, reason))?;
        let webhooks = webhook_endpoints(&raw.webhooks).map_err(|(k, r)| fail(k, r))?;
        catalog.webhooks = webhooks.iter().map(|(_, s)| s.clone()).collect();
        let webhooks: Vec<WebhookEndpoint> = webhooks.into_iter().map(|(e, _)| e).collect();
        let outbox = outbox_settings(&raw.outbox).map_err(|(k, r)| fail(k, r))?;
        let pages = pages_config(&raw.pages, env("CREDITBOOK_PAGES_SECRET"))
            .map_err(|(k, r)| fail(k, r))?;
        let mut stripe = StripeConfig {
            webhook_secrets: raw.stripe.webhook_secrets,
            webhook_tolerance_seconds: raw.stripe.webhook_tolerance_seconds.unwrap_or(300),
            api_key: raw.stripe.api_key,
            api_base: raw.stripe.api_base,
            past_due_grace_seconds: raw
                .stripe
                .past_due_grace_seconds
                .unwrap_or(crate::domain::gate::Policy::default().past_due_grace_seconds),
            livemode: false,
        };
        for (key, value) in [
            (
                "stripe.webhook_tolerance_seconds",
                stripe.webhook_tolerance_seconds,
            ),
            (
                "stripe.past_due_grace_seconds",
                stripe.past_due_grace_seconds,
            ),
        ] {
            if value > MAX_STRIPE_SECONDS {
                return Err(fail(
                    key.into(),
                    format!("must be at most {MAX_STRIPE_SECONDS}"),
                ));
            }
        }
        if stripe.webhook_tolerance_seconds == 0 {
            return Err(fail(
                "stripe.webhook_tolerance_seconds".into(),
                "must be at least 1".into(),
            ));
        }
        if let Some(base) = &stripe.api_base
            && !(base.starts_with("http://") || base.starts_with("https://"))
        {
            return Err(fail(
                "stripe.api_base".into(),
                "must be an http:// or https:// URL".into(),
            ));
        }
        stripe.webhook_secrets = match env("CREDITBOOK_STRIPE_WEBHOOK_SECRET") {
            Some(secrets) => secrets
                .split(',')
                .enumerate()
                .map(|(i, s)| {
                    webhook_secret(
                        format!("CREDITBOOK_STRIPE_WEBHOOK_SECRET (secret {})", i + 1),
                        s.trim(),
                    )
                })
                .collect::<Result<_, _>>(),
            None => stripe
                .webhook_secrets
                .iter()
                .enumerate()
                .map(|(i, s)| webhook_secret(format!("stripe.webhook_secrets[{i}]"), s))
                .collect::<Result<_, _>>(),
        }
        .map_err(|(k, r)| fail(k, r))?;
        if stripe.webhook_secrets.len() > MAX_WEBHOOK_SECRETS {
            return Err(fail(
                "stripe.webhook_secrets".into(),
                format!("at most {MAX_WEBHOOK_SECRETS} (one or two while rotating)"),
            ));
        }
        if let Some(key) = env("CREDITBOOK_STRIPE_API_KEY") {
            stripe_api_key("CREDITBOOK_STRIPE_API_KEY", &key).map_err(|(k, r)| fail(k, r))?;
            stripe.api_key = Some(key);
        } else if let Some(key) = &stripe.api_key {
            stripe_api_key("stripe.api_key", key).map_err(|(k, r)| fail(k, r))?;
        }
        stripe.livemode = raw
            .stripe
            .livemode
            .unwrap_or_else(|| stripe.api_key.as_deref().is_some_and(is_live_key));
        if let Some(key) = &stripe.api_key
            && is_live_key(key) != stripe.livemode
        {
            return Err(fail(
                "stripe.livemode".into(),
                format!(
                    "is {} but [stripe] api_key is a {} key: the events applied and the API read would be of different modes",
                    stripe.livemode,
                    if is_live_key(key) { "live" } else { "test" }
                ),
            ));
        }
        let within = |key: &str, value: u64, (lo, hi): (u64, u64)| {
            if (lo..=hi).contains(&value) {
                Ok(value)
            } else {
                Err(fail(key.into(), format!("must be between {lo} and {hi}")))
            }
        };
        let hold_timeout_seconds = within(
            "ledger.hold_timeout_seconds",
            raw.ledger.hold_timeout_seconds.unwrap_or(900),
            (1, MAX_HOLD_TIMEOUT_SECONDS),
        )?;
        let job_interval_seconds = within(
            "ledger.job_interval_seconds",
            raw.ledger.job_interval_seconds.unwrap_or(5),
            (1, MAX_JOB_INTERVAL_SECONDS),
        )?;
        let log_format = match raw.server.log_format.as_deref() {
            None => LogFormat::default(),
            Some(s) => LogFormat::parse(s).ok_or_else(|| {
                fail(
                    "server.log_format".into(),
                    format!("must be \"text\" or \"json\", not {s:?}"),
                )
            })?,
        };
        let shutdown_timeout_seconds = within(
            "server.shutdown_timeout_seconds",
            raw.server
                .shutdown_timeout_seconds
                .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_SECONDS),
            (1, MAX_SHUTDOWN_TIMEOUT_SECONDS),
        )?;
        if let Some(n) = raw.server.max_connections {
            within(
                "server.max_connections",
                u64::from(n),
                (1, u64::from(MAX_CONNECTIONS)),
            )?;
        }
        let acquire_timeout_seconds = within(
            "server.acquire_timeout_seconds",
            raw.server
                .acquire_timeout_seconds
                .unwrap_or(crate::store::DEFAULT_ACQUIRE_TIMEOUT_SECONDS),
            (1, MAX_ACQUIRE_TIMEOUT_SECONDS),
        )?;
        let key_cache_seconds = within(
            "server.key_cache_seconds",
            raw.server
                .key_cache_seconds
                .unwrap_or(crate::store::keys::KEY_CACHE_SECONDS),
            (0, MAX_KEY_CACHE_SECONDS),
        )?;
        let limits = ServerLimits {
            request_timeout: std::time::Duration::from_secs(within(
                "server.request_timeout_seconds",
                raw.server
                    .request_timeout_seconds
                    .unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECONDS),
                (1, MAX_REQUEST_TIMEOUT_SECONDS),
            )?),
            max_concurrent_requests: within(
                "server.max_concurrent_requests",
                raw.server
                    .max_concurrent_requests
                    .unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS) as u64,
                (1, MAX_CONCURRENT_REQUESTS as u64),
            )? as usize,
        };
        let pool = crate::store::PoolSettings {
            max_connections: raw.server.max_connections,
            acquire_timeout: std::time::Duration::from_secs(acquire_timeout_seconds),
        };
        use crate::store::runner as r;
        let batching = crate::store::BatchSettings {
            max_commands: raw
                .ledger
                .batch_max_commands
                .unwrap_or(r::DEFAULT_MAX_BATCH_COMMANDS),
            max_wait: std::time::Duration::from_micros(
                raw.ledger
                    .batch_max_wait_micros
                    .unwrap_or(r::DEFAULT_MAX_BATCH_WAIT_MICROS),
            ),
            postgres_workers: raw
                .ledger
                .postgres_batch_workers
                .unwrap_or(r::DEFAULT_POSTGRES_WORKERS),
            check_staleness: std::time::Duration::from_millis(within(
                "ledger.check_staleness_ms",
                raw.ledger
                    .check_staleness_ms
                    .unwrap_or(crate::store::DEFAULT_CHECK_STALENESS_MS),
                (0, crate::store::MAX_CHECK_STALENESS_MS),
            )?),
        };
        within(
            "ledger.batch_max_commands",
            batching.max_commands as u64,
            (1, r::MAX_BATCH_COMMANDS as u64),
        )?;
        if batching.max_wait.as_micros() > u128::from(r::MAX_BATCH_WAIT_MICROS) {
            return Err(fail(
                "ledger.batch_max_wait_micros".into(),
                format!("must be at most {}", r::MAX_BATCH_WAIT_MICROS),
            ));
        }
        within(
            "ledger.postgres_batch_workers",
            batching.postgres_workers as u64,
            (1, r::MAX_POSTGRES_WORKERS as u64),
        )?;
        let retention = retention_settings(&raw.retention, &pages).map_err(|(k, r)| fail(k, r))?;
        Ok(Config {
            retention,
            batching,
            pool,
            key_cache_seconds,
            limits,
            log_format,
            shutdown_timeout_seconds,
            listen: env("CREDITBOOK_LISTEN")
                .or(raw.server.listen)
                .unwrap_or_else(|| "127.0.0.1:8080".into()),
            database_url: env("CREDITBOOK_DATABASE_URL")
                .or(raw.server.database_url)
                .unwrap_or_else(|| "sqlite://creditbook.db?mode=rwc".into()),
            stripe,
            hold_timeout_seconds,
            job_interval_seconds,
            catalog,
            webhooks,
            outbox,
            pages,
        })
    }
}

/// `[retention]`: each window 1 day to 10 years.
fn retention_settings(
    raw: &RawRetention,
    pages: &PagesConfig,
) -> Result<crate::store::retention::RetentionSettings, Invalid> {
    let defaults = crate::store::retention::RetentionSettings::default();
    let days = |key: &str, value: Option<u32>, default: u32| {
        let value = value.unwrap_or(default);
        if (1..=3_650).contains(&value) {
            Ok(value)
        } else {
            Err((
                format!("retention.{key}"),
                "must be between 1 and 3650".to_owned(),
            ))
        }
    };
    Ok(crate::store::retention::RetentionSettings {
        idempotency_days: days(
            "idempotency_days",
            raw.idempotency_days,
            defaults.idempotency_days,
        )?,
        stripe_payload_days: days(
            "stripe_payload_days",
            raw.stripe_payload_days,
            defaults.stripe_payload_days,
        )?,
        outbox_days: days("outbox_days", raw.outbox_days, defaults.outbox_days)?,
        session_idle_seconds: pages.session_idle_seconds,
        session_max_seconds: pages.session_max_seconds,
    })
}

/// Endpoints at most, and event types at most per endpoint: a limit on everything.
const MAX_WEBHOOKS: usize = 32;
/// Stripe webhook secrets at most: one, or two while rotating, with room to spare.
const MAX_WEBHOOK_SECRETS: usize = 8;

/// Low-balance thresholds under `prefix` (`alerts`, or a plan's): a share above 0 and at most 1,
/// credits zero or more. `None` when neither is given.
fn low_balance(
    prefix: &str,
    share: Option<Decimal>,
    credits: Option<Decimal>,
) -> Result<Option<crate::domain::alerts::LowBalance>, Invalid> {
    crate::domain::alerts::LowBalance::of(share, credits)
        .map_err(|bad| (format!("{prefix}.{}", bad.field), bad.reason.to_owned()))
}

fn alert_rule(raw: &RawAlerts) -> Result<crate::domain::alerts::AlertRule, Invalid> {
    let mut rule = crate::domain::alerts::AlertRule::default().with(
        low_balance(
            "alerts",
            raw.low_balance_consumed_share,
            raw.low_balance_credits,
        )?
        .as_ref(),
    );
    if let Some(days) = raw.grant_expiring_days {
        if !(1..=365).contains(&days) {
            return Err((
                "alerts.grant_expiring_days".into(),
                "must be between 1 and 365".into(),
            ));
        }
        rule.grant_expiring_days = days;
    }
    Ok(rule)
}

fn webhook_endpoints(
    raw: &[RawWebhook],
) -> Result<Vec<(WebhookEndpoint, crate::domain::outbound::Subscription)>, Invalid> {
    use crate::domain::outbound::{EventType, Subscription};
    use base64::Engine as _;
    if raw.len() > MAX_WEBHOOKS {
        return Err((
            "webhooks".into(),
            format!("at most {MAX_WEBHOOKS} endpoints"),
        ));
    }
    let mut endpoints = Vec::new();
    for (i, w) in raw.iter().enumerate() {
        let key = |name: &str| format!("webhooks[{i}].{name}");
        if !(w.url.starts_with("http://") || w.url.starts_with("https://")) || w.url.len() > 2_000 {
            return Err((key("url"), "must be an http:// or https:// URL".into()));
        }
        if endpoints
            .iter()
            .any(|(e, _): &(WebhookEndpoint, Subscription)| e.url == w.url)
        {
            return Err((key("url"), format!("{:?} is defined twice", w.url)));
        }
        let secret = w
            .secret
            .strip_prefix("whsec_")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|k| (24..=64).contains(&k.len()))
            .ok_or_else(|| {
                (
                    key("secret"),
                    "must be whsec_ followed by the base64 of 24 to 64 random bytes".into(),
                )
            })?;
        let events = match &w.events {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        EventType::parse(n).ok_or_else(|| {
                            (
                                key("events"),
                                format!(
                                    "unknown event type {n:?}; known: {}",
                                    EventType::ALL.map(EventType::as_str).join(", ")
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        endpoints.push((
            WebhookEndpoint {
                url: w.url.clone(),
                key: secret,
            },
            Subscription {
                url: w.url.clone(),
                events,
            },
        ));
    }
    Ok(endpoints)
}

fn outbox_settings(raw: &RawOutbox) -> Result<OutboxSettings, Invalid> {
    let mut settings = OutboxSettings::default();
    let within = |key: &str, value: u64, (lo, hi): (u64, u64)| {
        if (lo..=hi).contains(&value) {
            Ok(value)
        } else {
            Err((
                format!("outbox.{key}"),
                format!("must be between {lo} and {hi}"),
            ))
        }
    };
    if let Some(v) = raw.first_retry_ms {
        settings.retry.first_retry_ms = within("first_retry_ms", v, (1, 3_600_000))?;
    }
    if let Some(v) = raw.max_retry_ms {
        settings.retry.max_retry_ms = within("max_retry_ms", v, (1, 86_400_000))?;
    }
    if settings.retry.max_retry_ms < settings.retry.first_retry_ms {
        return Err((
            "outbox.max_retry_ms".into(),
            "must be at least outbox.first_retry_ms".into(),
        ));
    }
    if let Some(v) = raw.dead_after_seconds {
        settings.retry.dead_after_ms = within("dead_after_seconds", v, (1, 30 * 86_400))? * 1_000;
    }
    if let Some(v) = raw.timeout_seconds {
        settings.timeout_seconds = within("timeout_seconds", v, (1, 60))?;
    }
    if let Some(v) = raw.poll_interval_ms {
        settings.poll_interval_ms = within("poll_interval_ms", v, (10, 60_000))?;
    }
    Ok(settings)
}

/// The dotted key a toml error points at: the table header above the span, then the key on its
/// line (`server.listen`); the line number when the span is not on a `key = value` line.
fn toml_error_key(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return "(syntax)".into();
    };
    let before = &text[..span.start.min(text.len())];
    let line_number = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or_default();
    let header = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['));
    let table = header.map(|h| {
        let name = h.trim_matches(|c| c == '[' || c == ']');
        if h.starts_with("[[") {
            // An array of tables: name the element, as validation errors do (`plans[1]`).
            let index = before.lines().filter(|l| l.trim() == h).count() - 1;
            format!("{name}[{index}]")
        } else {
            name.to_owned()
        }
    });
    match (line.split_once('='), table) {
        (Some((key, _)), Some(table)) => format!("{table}.{}", key.trim()),
        (Some((key, _)), None) => key.trim().to_owned(),
        (None, _) => format!("(line {line_number})"),
    }
}

type Invalid = (String, String);

/// A top-up link: an https URL (http only for a local host), with no fragment and no
/// `client_reference_id` of its own (the page adds the customer's).
fn top_up_url(key: String, text: &str) -> Result<String, Invalid> {
    let local = ["http://localhost", "http://127.0.0.1"].iter().any(|p| {
        text.strip_prefix(p)
            .is_some_and(|r| r.is_empty() || r.starts_with([':', '/']))
    });
    let ok = (text.starts_with("https://") && text.len() > "https://".len() || local)
        && text.len() <= 2_000
        && !text.contains('#')
        && !text.contains("client_reference_id")
        && !text.chars().any(|c| c.is_control() || c.is_whitespace());
    if ok {
        Ok(text.to_owned())
    } else {
        Err((
            key,
            format!(
                "{text:?} is not an https URL (at most 2,000 characters, no fragment, no \
                 client_reference_id)"
            ),
        ))
    }
}

fn positive_credits(key: String, value: Decimal) -> Result<Credits, Invalid> {
    Credits::positive(value).map_err(|e| (key, format!("{value} {e}")))
}

/// Credits per unit of an action: positive, and no more than one request may spend.
fn action_credits(key: String, value: Decimal) -> Result<Credits, Invalid> {
    if value > max_credits_per_request() {
        return Err((
            key,
            format!(
                "{value} is more than the {} credits one request may spend",
                max_credits_per_request()
            ),
        ));
    }
    positive_credits(key, value)
}

/// The most one unit of an action may cost at the vendor: with the most units one request may
/// name, a request's cost stays within what is stored exactly (six places in 64 bits).
pub const MAX_VENDOR_COST_PER_UNIT: i64 = 1_000;

fn vendor_cost(key: String, value: Decimal) -> Result<Decimal, Invalid> {
    if value < Decimal::ZERO {
        return Err((key, "must not be negative".into()));
    }
    if value > Decimal::from(MAX_VENDOR_COST_PER_UNIT) {
        return Err((
            key,
            format!("{value} is more than {MAX_VENDOR_COST_PER_UNIT} per unit"),
        ));
    }
    Ok(value)
}

/// A date (`YYYY-MM-DD`, midnight UTC) or an RFC 3339 instant.
fn instant(key: String, text: &str) -> Result<crate::domain::Timestamp, Invalid> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            (
                key,
                format!("{text:?} is not a date YYYY-MM-DD or an RFC 3339 time"),
            )
        })
}

/// A plan's `trial_credits`: positive, and only for a plan sold through Stripe (a trial is a
/// Stripe subscription's).
fn trial_credits(key: &impl Fn(&str) -> String, p: &RawPlan) -> Result<Option<Credits>, Invalid> {
    let Some(value) = p.trial_credits else {
        return Ok(None);
    };
    if p.stripe_prices.is_empty() {
        return Err((
            key("trial_credits"),
            "applies only to a plan with stripe_prices (a trial is a Stripe subscription's)".into(),
        ));
    }
    positive_credits(key("trial_credits"), value).map(Some)
}

fn non_negative_credits(key: String, value: Decimal) -> Result<Credits, Invalid> {
    if value.is_zero() {
        return Ok(Credits::ZERO);
    }
    positive_credits(key, value)
}

fn share(key: String, value: Decimal, upper_inclusive: bool) -> Result<Decimal, Invalid> {
    let ok = value >= Decimal::ZERO
        && (value < Decimal::ONE || (upper_inclusive && value == Decimal::ONE));
    if ok {
        Ok(value)
    } else {
        Err((key, format!("{value} must be a fraction between 0 and 1")))
    }
}

fn breakage(
    prefix: &str,
    method: Option<&str>,
    expected_unused: Option<Decimal>,
) -> Result<Breakage, Invalid> {
    match (method.unwrap_or("remote"), expected_unused) {
        ("remote", None) => Ok(Breakage::Remote),
        ("remote", Some(_)) => Err((
            format!("{prefix}.expected_unused"),
            "only applies with breakage = \"proportional\"".into(),
        )),
        ("proportional", Some(e)) => Ok(Breakage::Proportional {
            expected_unused: share(format!("{prefix}.expected_unused"), e, false)?,
        }),
        ("proportional", None) => Err((
            format!("{prefix}.expected_unused"),
            "is required with breakage = \"proportional\"".into(),
        )),
        (other, _) => Err((
            format!("{prefix}.breakage"),
            format!("{other:?} is not one of \"remote\", \"proportional\""),
        )),
    }
}

fn valid_id(key: String, id: &str) -> Result<(), Invalid> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err((
            key,
            format!("{id:?} must be 1-64 characters of [A-Za-z0-9_.-]"),
        ))
    }
}

/// A plan's `credits_interval`. A plan sold through Stripe is granted per paid invoice line, for
/// the line's period: an interval other than the default would be ignored, so it is refused.
fn credits_interval(key: &dyn Fn(&str) -> String, p: &RawPlan) -> Result<CreditsInterval, Invalid> {
    let Some(text) = p.credits_interval.as_deref() else {
        return Ok(CreditsInterval::default());
    };
    let interval = CreditsInterval::parse(text).ok_or_else(|| {
        (
            key("credits_interval"),
            format!(
                "{text:?} is not one of \"day\", \"week\", \"month\", \"year\", \"billing_period\""
            ),
        )
    })?;
    let invoiced = matches!(
        interval,
        CreditsInterval::Month | CreditsInterval::BillingPeriod
    );
    if !p.stripe_prices.is_empty() && !invoiced {
        return Err((
            key("credits_interval"),
            format!(
                "{text:?} applies to plans outside Stripe; a plan with stripe_prices is granted once per paid invoice period (\"month\" or \"billing_period\")"
            ),
        ));
    }
    Ok(interval)
}

// Long: every plan, pack, action and feature checked against the others in one pass, each error naming its key.
fn build_catalog(raw: &RawConfig) -> Result<Catalog, Invalid> {
    let currency = raw
        .accounting
        .currency
        .clone()
        .unwrap_or_else(|| "usd".into());
    Price::new(Decimal::ZERO, &currency).map_err(|r| ("accounting.currency".to_owned(), r))?;
    let currency = currency.to_ascii_lowercase();

    let mut features = BTreeMap::new();
    for (i, f) in raw.features.iter().enumerate() {
        valid_id(format!("features[{i}].id"), &f.id)?;
        let feature = Feature {
            id: f.id.clone(),
            plan_only: f.plan_only,
        };
        if features.insert(f.id.clone(), feature).is_some() {
            return Err((
                format!("features[{i}].id"),
                format!("{:?} is defined twice", f.id),
            ));
        }
    }

    let mut actions = BTreeMap::new();
    for (i, a) in raw.actions.iter().enumerate() {
        let key = |k: &str| format!("actions[{i}].{k}");
        valid_id(key("id"), &a.id)?;
        if !features.contains_key(&a.feature) {
            return Err((
                key("feature"),
                format!("{:?} is not a defined feature", a.feature),
            ));
        }
        let mut changes: Vec<ActionChange> = Vec::with_capacity(a.changes.len());
        for (j, c) in a.changes.iter().enumerate() {
            let key = |k: &str| format!("actions[{i}].changes[{j}].{k}");
            let from = instant(key("from"), &c.from)?;
            if let Some(previous) = changes.last()
                && previous.from >= from
            {
                return Err((key("from"), "must be after the change before it".into()));
            }
            if c.credits.is_none() && c.vendor_cost.is_none() {
                return Err((
                    key("credits"),
                    "a change sets credits, vendor_cost or both".into(),
                ));
            }
            changes.push(ActionChange {
                from,
                credits: c
                    .credits
                    .map(|v| action_credits(key("credits"), v))
                    .transpose()?,
                vendor_cost: c
                    .vendor_cost
                    .map(|v| vendor_cost(key("vendor_cost"), v))
                    .transpose()?,
            });
        }
        let action = Action {
            id: a.id.clone(),
            feature: a.feature.clone(),
            credits: action_credits(key("credits"), a.credits)?,
            vendor_cost: a
                .vendor_cost
                .map(|v| vendor_cost(key("vendor_cost"), v))
                .transpose()?,
            changes,
        };
        if actions.insert(a.id.clone(), action).is_some() {
            return Err((key("id"), format!("{:?} is defined twice", a.id)));
        }
    }

    let mut prices_seen: BTreeMap<String, String> = BTreeMap::new();
    let mut claim_price = |key: String, price: &str, owner: &str| -> Result<(), Invalid> {
        match prices_seen.insert(price.to_owned(), owner.to_owned()) {
            Some(previous) => Err((key, format!("{price:?} is already mapped to {previous:?}"))),
            None => Ok(()),
        }
    };

    let mut plans = BTreeMap::new();
    for (i, p) in raw.plans.iter().enumerate() {
        let prefix = format!("plans[{i}]");
        let key = |k: &str| format!("{prefix}.{k}");
        valid_id(key("id"), &p.id)?;
        for (j, price) in p.stripe_prices.iter().enumerate() {
            claim_price(format!("{prefix}.stripe_prices[{j}]"), price, &p.id)?;
        }
        for (j, f) in p.features.iter().enumerate() {
            if !features.contains_key(f) {
                return Err((
                    format!("{prefix}.features[{j}]"),
                    format!("{f:?} is not a defined feature"),
                ));
            }
        }
        let overage = match p.overage.as_deref().unwrap_or("block") {
            "block" => Overage::Block,
            "allow" => Overage::Allow {
                limit: positive_credits(
                    key("overage_limit"),
                    p.overage_limit.ok_or((
                        key("overage_limit"),
                        "is required with overage = \"allow\"".into(),
                    ))?,
                )?,
            },
            "bill" => {
                let price = p.overage_price.ok_or((
                    key("overage_price"),
                    "is required with overage = \"bill\"".into(),
                ))?;
                if price <= Decimal::ZERO {
                    return Err((key("overage_price"), "must be greater than zero".into()));
                }
                Overage::Bill { price }
            }
            other => {
                return Err((
                    key("overage"),
                    format!("{other:?} is not one of \"block\", \"allow\", \"bill\""),
                ));
            }
        };
        let overage_meter = match (&p.overage_meter_event, &overage) {
            (None, _) => {
                if p.overage_stripe_price.is_some() {
                    return Err((
                        key("overage_stripe_price"),
                        "only applies with overage_meter_event".into(),
                    ));
                }
                None
            }
            (Some(_), Overage::Block | Overage::Allow { .. }) => {
                return Err((
                    key("overage_meter_event"),
                    "only applies with overage = \"bill\"".into(),
                ));
            }
            (Some(event_name), Overage::Bill { .. }) => {
                let ok = !event_name.is_empty()
                    && event_name.chars().count() <= 100
                    && !event_name.chars().any(char::is_control);
                if !ok {
                    return Err((
                        key("overage_meter_event"),
                        "must be 1 to 100 characters, none of them control characters".into(),
                    ));
                }
                if let Some(price) = &p.overage_stripe_price {
                    claim_price(key("overage_stripe_price"), price, &p.id)?;
                }
                Some(catalog::OverageMeter {
                    event_name: event_name.clone(),
                    stripe_price: p.overage_stripe_price.clone(),
                })
            }
        };
        let plan = Plan {
            credits_interval: credits_interval(&key, p)?,
            id: p.id.clone(),
            stripe_prices: p.stripe_prices.clone(),
            credits: non_negative_credits(key("credits"), p.credits)?,
            per_seat: p.per_seat,
            features: p.features.clone(),
            rollover_max: non_negative_credits(
                key("rollover_max"),
                p.rollover_max.unwrap_or_default(),
            )?,
            overage,
            platform_share: share(
                key("platform_share"),
                p.platform_share.unwrap_or_default(),
                true,
            )?,
            breakage: breakage(&prefix, p.breakage.as_deref(), p.expected_unused)?,
            priority: p.priority.unwrap_or(catalog::DEFAULT_PLAN_PRIORITY),
            low_balance: low_balance(&prefix, p.low_balance_consumed_share, p.low_balance_credits)?,
            overage_meter,
            trial_credits: trial_credits(&key, p)?,
        };
        if plans.insert(p.id.clone(), plan).is_some() {
            return Err((key("id"), format!("{:?} is defined twice", p.id)));
        }
    }

    let mut packs = BTreeMap::new();
    for (i, p) in raw.packs.iter().enumerate() {
        let prefix = format!("packs[{i}]");
        let key = |k: &str| format!("{prefix}.{k}");
        valid_id(key("id"), &p.id)?;
        for (j, price) in p.stripe_prices.iter().enumerate() {
            claim_price(format!("{prefix}.stripe_prices[{j}]"), price, &p.id)?;
        }
        let pack_currency = p.currency.clone().unwrap_or_else(|| currency.clone());
        let pack = Pack {
            id: p.id.clone(),
            stripe_prices: p.stripe_prices.clone(),
            credits: positive_credits(key("credits"), p.credits)?,
            price: Price::new(p.price, &pack_currency).map_err(|r| (key("price"), r))?,
            expires_after_days: match p.expires_after_days {
                Some(0) => return Err((key("expires_after_days"), "must be at least 1".into())),
                Some(d) if d > 36_500 => {
                    return Err((key("expires_after_days"), "must be at most 36500".into()));
                }
                other => other,
            },
            breakage: breakage(&prefix, p.breakage.as_deref(), p.expected_unused)?,
            priority: p.priority.unwrap_or(catalog::DEFAULT_PACK_PRIORITY),
            low_balance: low_balance(&prefix, p.low_balance_consumed_share, p.low_balance_credits)?,
            top_up_url: p
                .top_up_url
                .as_deref()
                .map(|u| top_up_url(key("top_up_url"), u))
                .transpose()?,
        };
        if packs.insert(p.id.clone(), pack).is_some() {
            return Err((key("id"), format!("{:?} is defined twice", p.id)));
        }
    }

    let default_plan = match &raw.customers.default_plan {
        Some(id) if !plans.contains_key(id) => {
            return Err((
                "customers.default_plan".to_owned(),
                format!("{id:?} is not a plan of [[plans]]"),
            ));
        }
        other => other.clone(),
    };

    Ok(Catalog {
        currency,
        features,
        actions,
        plans,
        packs,
        default_plan,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", |_| None)
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../examples/creditbook.toml");
        let config = parse(text).expect("example config parses");
        assert!(config.catalog.actions.contains_key("chat.request"));
        assert_eq!(config.catalog.plans.len(), 3);
        assert_eq!(config.catalog.packs.len(), 2);
    }

    #[test]
    fn webhooks_alerts_and_the_outbox_are_checked() {
        let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let config = parse(&format!(
            "[[webhooks]]\nurl = \"https://example.com/h\"\nsecret = \"{key}\"\n\
             events = [\"credit.balance_low\"]\n[alerts]\nlow_balance_consumed_share = \"0.9\"\n"
        ))
        .unwrap();
        assert_eq!(config.webhooks.len(), 1);
        assert_eq!(config.webhooks[0].key.len(), 24);
        assert!(
            !format!("{:?}", config.webhooks[0]).contains("MfKQ"),
            "the key is not logged"
        );
        assert_eq!(config.catalog.webhooks[0].url, "https://example.com/h");
        assert_eq!(config.catalog.alerts.low_consumed_share, Decimal::new(9, 1));
        let plan = parse("[[plans]]\nid = \"p\"\ncredits = \"10\"\nlow_balance_credits = \"25\"\n")
            .unwrap();
        let low = plan.catalog.plan("p").unwrap().low_balance.unwrap();
        assert_eq!(
            (low.consumed_share, low.credits.map(|c| c.to_string())),
            (None, Some("25".to_owned()))
        );
        for (text, field) in [
            (
                "[[plans]]\nid = \"p\"\ncredits = \"10\"\nlow_balance_consumed_share = \"0\"\n"
                    .into(),
                "plans[0].low_balance_consumed_share",
            ),
            (
                format!("[[webhooks]]\nurl = \"ftp://x\"\nsecret = \"{key}\"\n"),
                "webhooks[0].url",
            ),
            (
                "[[webhooks]]\nurl = \"https://x\"\nsecret = \"hunter2\"\n".into(),
                "webhooks[0].secret",
            ),
            (
                format!(
                    "[[webhooks]]\nurl = \"https://x\"\nsecret = \"{key}\"\nevents = [\"credit.low\"]\n"
                ),
                "webhooks[0].events",
            ),
            (
                format!("[[webhooks]]\nurl = \"https://x\"\nsecret = \"{key}\"\nsecrt = 1\n"),
                "webhooks[0].secrt",
            ),
            (
                "[alerts]\nlow_balance_consumed_share = \"1.5\"\n".into(),
                "alerts.low_balance_consumed_share",
            ),
            (
                "[alerts]\ngrant_expiring_days = 0\n".into(),
                "alerts.grant_expiring_days",
            ),
            (
                "[[packs]]\nid = \"p\"\ncredits = \"5\"\nprice = \"1\"\ntop_up_url = \"http://evil.example/x\"\n".into(),
                "packs[0].top_up_url",
            ),
            (
                "[[packs]]\nid = \"p\"\ncredits = \"5\"\nprice = \"1\"\ntop_up_url = \"https://x/?client_reference_id=a\"\n".into(),
                "packs[0].top_up_url",
            ),
            (
                "[outbox]\nfirst_retry_ms = 0\n".into(),
                "outbox.first_retry_ms",
            ),
            (
                "[outbox]\nfirst_retry_ms = 500\nmax_retry_ms = 100\n".into(),
                "outbox.max_retry_ms",
            ),
        ] {
            let err = parse(&text).unwrap_err();
            assert_eq!(err.key, field, "{text}: {err}");
        }
    }

    #[test]
    fn a_webhook_secret_anyone_could_sign_with_is_refused_at_start() {
        let good = "whsec_0123456789abcdefABCDEF";
        let with_env = |value: &str| {
            let value = value.to_owned();
            Config::parse("", "t.toml", move |name| {
                (name == "CREDITBOOK_STRIPE_WEBHOOK_SECRET").then(|| value.clone())
            })
        };
        assert_eq!(
            with_env(&format!("{good}, whsec_ZYXWVUTSRQPONMLKJIH"))
                .unwrap()
                .stripe
                .webhook_secrets,
            vec![good.to_owned(), "whsec_ZYXWVUTSRQPONMLKJIH".to_owned()]
        );
        for (value, key) in [
            (
                format!("{good},"),
                "CREDITBOOK_STRIPE_WEBHOOK_SECRET (secret 2)",
            ),
            (
                format!(",{good}"),
                "CREDITBOOK_STRIPE_WEBHOOK_SECRET (secret 1)",
            ),
            (
                "whsec_".to_owned(),
                "CREDITBOOK_STRIPE_WEBHOOK_SECRET (secret 1)",
            ),
            (
                "sk_test_0123456789abcdef0123".to_owned(),
                "CREDITBOOK_STRIPE_WEBHOOK_SECRET (secret 1)",
            ),
        ] {
            let err = with_env(&value).unwrap_err();
            assert_eq!(err.key, key, "{value:?}: {err}");
        }
        for (text, key) in [
            (
                "[stripe]\nwebhook_secrets = [\"\"]\n",
                "stripe.webhook_secrets[0]",
            ),
            (
                "[stripe]\nwebhook_secrets = [\"whsec_0123456789abcdefABCDEF\", \"whsec_short\"]\n",
                "stripe.webhook_secrets[1]",
            ),
            (
                "[stripe]\nwebhook_secrets = [\"whsec_0123456789 abcdefABCDEF\"]\n",
                "stripe.webhook_secrets[0]",
            ),
            ("[stripe]\napi_key = \"\"\n", "stripe.api_key"),
            ("[stripe]\napi_key = \"pk_live_abc\"\n", "stripe.api_key"),
            (
                "[stripe]\napi_key = \"sk_live_abc\"\nlivemode = false\n",
                "stripe.livemode",
            ),
            (
                "[stripe]\napi_key = \"rk_test_abc\"\nlivemode = true\n",
                "stripe.livemode",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
        let err = parse("[stripe]\nwebhook_secrets = [\"\"]\n").unwrap_err();
        assert!(err.reason.contains("empty"), "{err}");
    }

    #[test]
    fn retention_and_server_bounds_are_checked() {
        let config = parse(
            "[retention]\nidempotency_days = 7\n[server]\nrequest_timeout_seconds = 5\n\
             max_concurrent_requests = 64\n[pages]\nsession_max_hours = 2\n",
        )
        .unwrap();
        assert_eq!(config.retention.idempotency_days, 7);
        assert_eq!(config.retention.stripe_payload_days, 90);
        assert_eq!(config.retention.session_max_seconds, 7_200);
        assert_eq!(config.limits.request_timeout.as_secs(), 5);
        assert_eq!(config.limits.max_connections(), 256);
        for (text, key) in [
            ("[retention]\noutbox_days = 0\n", "retention.outbox_days"),
            ("[retention]\nkeep = 1\n", "retention.keep"),
            (
                "[server]\nrequest_timeout_seconds = 0\n",
                "server.request_timeout_seconds",
            ),
            (
                "[server]\nmax_concurrent_requests = 0\n",
                "server.max_concurrent_requests",
            ),
            (
                "[pages]\nsession_max_hours = 169\n",
                "pages.session_max_hours",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn the_stripe_mode_follows_the_api_key_unless_set() {
        let mode = |text: &str| parse(text).unwrap().stripe.livemode;
        assert!(!mode(""), "no key: test mode");
        assert!(!mode("[stripe]\napi_key = \"sk_test_abc\"\n"));
        assert!(mode("[stripe]\napi_key = \"sk_live_abc\"\n"));
        assert!(mode("[stripe]\napi_key = \"rk_live_abc\"\n"));
        assert!(mode("[stripe]\nlivemode = true\n"), "set, without a key");
        let from_env = Config::parse("", "t.toml", |name| {
            (name == "CREDITBOOK_STRIPE_API_KEY").then(|| "sk_live_fromenv".to_owned())
        })
        .unwrap();
        assert!(from_env.stripe.livemode);
    }

    #[test]
    fn the_config_s_debug_shows_no_secret() {
        let text = "[server]\ndatabase_url = \"postgres://cb:pa55word@db.internal:5432/cb\"\n\
                    [stripe]\nwebhook_secrets = [\"whsec_0123456789abcdefABCDEF\"]\n\
                    api_key = \"sk_test_SECRETKEYVALUE\"\n";
        let shown = format!("{:?}", parse(text).unwrap());
        for secret in ["pa55word", "0123456789abcdef", "SECRETKEYVALUE"] {
            assert!(!shown.contains(secret), "{secret} shown");
        }
        assert!(
            shown.contains("postgres://cb:<redacted>@db.internal:5432/cb"),
            "{shown}"
        );
        assert_eq!(
            redact_url_password("sqlite://creditbook.db?mode=rwc"),
            "sqlite://creditbook.db?mode=rwc"
        );
    }

    #[test]
    fn the_pages_settings_are_checked_and_the_secret_is_not_logged() {
        let secret = "a-secret-of-at-least-thirty-two-characters";
        let config = parse(&format!(
            "[pages]\npublic_url = \"https://credits.example.com\"\nsecret = \"{secret}\"\n\
             portal_link_minutes = 5\nsession_idle_minutes = 60\n\
             embed_origins = [\"https://app.example.com\"]\n"
        ))
        .unwrap();
        let pages = &config.pages;
        assert_eq!(
            (pages.portal_link_seconds, pages.session_idle_seconds),
            (300, 3_600)
        );
        assert_eq!(pages.secret.as_deref(), Some(secret.as_bytes()));
        assert!(
            !format!("{pages:?}").contains("thirty-two"),
            "the secret is not logged"
        );
        let defaults = parse("").unwrap().pages;
        assert_eq!(
            (
                defaults.portal_link_seconds,
                defaults.session_idle_seconds,
                defaults.secret
            ),
            (900, 1_800, None)
        );
        let from_env = Config::parse("", "test.toml", |name| {
            (name == "CREDITBOOK_PAGES_SECRET").then(|| secret.to_owned())
        })
        .unwrap();
        assert!(from_env.pages.secret.is_some());
        for (text, field) in [
            ("[pages]\npublic_url = \"ftp://x\"\n", "pages.public_url"),
            ("[pages]\npublic_url = \"https://x/\"\n", "pages.public_url"),
            ("[pages]\nsecret = \"short\"\n", "pages.secret"),
            (
                "[pages]\nportal_link_minutes = 0\n",
                "pages.portal_link_minutes",
            ),
            (
                "[pages]\nsession_idle_minutes = 1441\n",
                "pages.session_idle_minutes",
            ),
            (
                "[pages]\nembed_origins = [\"https://a.example; script-src *\"]\n",
                "pages.embed_origins",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.key, field, "{text}: {err}");
        }
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let err = parse(
            r#"
            [[features]]
            id = "chat"
            [[actions]]
            id = "chat.request"
            feature = "chatt"
            credits = "1"
            "#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.toml: actions[0].feature: \"chatt\" is not a defined feature"
        );

        let err =
            parse("[[plans]]\nid = \"pro\"\ncredits = \"10\"\noverage = \"allow\"\n").unwrap_err();
        assert_eq!(err.key, "plans[0].overage_limit");

        let err = parse("[server]\nlisten = 8080\n").unwrap_err();
        assert!(err.reason.contains("invalid type"), "{err}");

        let err = parse("[[packs]]\nid = \"p\"\ncredits = \"-5\"\nprice = \"1\"\n").unwrap_err();
        assert_eq!(err.key, "packs[0].credits");
        assert!(err.reason.contains("greater than zero"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = Config::parse("[server]\nlisten = \"0.0.0.0:1\"\n", "t.toml", |name| {
            (name == "CREDITBOOK_LISTEN").then(|| "127.0.0.1:9".to_owned())
        })
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9");
    }

    #[test]
    fn action_changes_are_dated_in_order() {
        let action = |changes: &str| {
            parse(&format!(
                "[[features]]\nid = \"chat\"\n[[actions]]\nid = \"chat.request\"\n\
                 feature = \"chat\"\ncredits = \"1\"\nvendor_cost = \"0.002\"\n{changes}"
            ))
        };
        let config = action(
            "[[actions.changes]]\nfrom = \"2027-01-01\"\nvendor_cost = \"0.001\"\n\
             [[actions.changes]]\nfrom = \"2027-02-01T12:00:00Z\"\ncredits = \"2\"\n",
        )
        .unwrap();
        let changes = &config.catalog.actions["chat.request"].changes;
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].from.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        for (changes, key, reason) in [
            (
                "[[actions.changes]]\nfrom = \"2027-02-01\"\ncredits = \"2\"\n\
                 [[actions.changes]]\nfrom = \"2027-01-01\"\ncredits = \"3\"\n",
                "actions[0].changes[1].from",
                "after the change before it",
            ),
            (
                "[[actions.changes]]\nfrom = \"2027-02-01\"\n",
                "actions[0].changes[0].credits",
                "sets credits, vendor_cost or both",
            ),
            (
                "[[actions.changes]]\nfrom = \"next year\"\ncredits = \"2\"\n",
                "actions[0].changes[0].from",
                "is not a date",
            ),
            (
                "[[actions.changes]]\nfrom = \"2027-02-01\"\nvendor_cost = \"1000.5\"\n",
                "actions[0].changes[0].vendor_cost",
                "per unit",
            ),
            (
                "[[actions.changes]]\nfrom = \"2027-02-01\"\ncredits = \"0\"\n",
                "actions[0].changes[0].credits",
                "",
            ),
        ] {
            let err = action(changes).unwrap_err();
            assert_eq!(err.key, key, "{err:?}");
            assert!(err.reason.contains(reason), "{err:?}");
        }
    }
}
