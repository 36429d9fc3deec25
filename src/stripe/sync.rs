//! Backfill: reads paid invoices, completed checkout sessions, subscriptions, refunds and
//! disputes from the Stripe API and applies each as the webhook for its current state would, with
//! the same per-object idempotency, so a sync after webhooks changes nothing and a sync instead
//! of webhooks reaches the same state.

use super::api::{MAX_PAGES, StripeApi};
use super::apply::{self, Context, Origin, Outcome, OutcomeKind};
use super::event::{Data, Event};
use crate::domain::Timestamp;
use crate::error::Result;
use crate::store::Store;
use std::collections::BTreeMap;

/// What a sync did, per outcome.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub read: usize,
    pub outcomes: BTreeMap<OutcomeKind, usize>,
}

/// One kind of object to read, in the order that makes links known before purchases.
struct Source {
    name: &'static str,
    path: &'static str,
    /// List filters; `created[gte]` is added for sources read since a date.
    params: &'static [(&'static str, &'static str)],
    since_filter: bool,
}

const SOURCES: [Source; 5] = [
    Source {
        name: "checkout sessions",
        path: "/checkout/sessions",
        params: &[("status", "complete")],
        since_filter: true,
    },
    // Every subscription, whenever created: an old subscription renews today.
    Source {
        name: "subscriptions",
        path: "/subscriptions",
        params: &[("status", "all")],
        since_filter: false,
    },
    Source {
        name: "invoices",
        path: "/invoices",
        params: &[("status", "paid")],
        since_filter: true,
    },
    Source {
        name: "refunds",
        path: "/refunds",
        params: &[],
        since_filter: true,
    },
    Source {
        name: "disputes",
        path: "/disputes",
        params: &[],
        since_filter: true,
    },
];

/// The event type whose effect an object in its current state has.
fn event_type(source: &str, object: &serde_json::Value) -> &'static str {
    let status = object.get("status").and_then(|s| s.as_str());
    match source {
        "/checkout/sessions" => "checkout.session.completed",
        "/subscriptions" if status == Some("canceled") => "customer.subscription.deleted",
        "/subscriptions" => "customer.subscription.updated",
        "/invoices" => "invoice.paid",
        "/refunds" => "refund.updated",
        _ => "charge.dispute.updated",
    }
}

/// Reads every source page by page and applies each object as it comes (nothing is collected
/// first). After each page the source's cursor is saved, so a run that stops (a failure, a kill)
/// is resumed by the next run with the same `since` after the last page applied; a run with
/// another `since` starts over. A run that completes forgets its cursors.
// Long: the backfill's loop over sources and pages, with its cursor saved after each page.
pub async fn run(
    store: &Store,
    api: &StripeApi,
    livemode: bool,
    since: Timestamp,
    now: impl Fn() -> Timestamp,
    mut progress: impl FnMut(&str),
) -> Result<Report> {
    let mut report = Report::default();
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let since_seconds = since.timestamp();
    for source in &SOURCES {
        let mut params: BTreeMap<String, String> = source
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if source.since_filter {
            params.insert("created[gte]".into(), since_seconds.to_string());
        }
        let saved = store
            .sync_cursor(source.name)
            .await?
            .filter(|c| c.since == since_seconds);
        if saved.as_ref().is_some_and(|c| c.done) {
            progress(&format!("{}: done in an earlier run", source.name));
            continue;
        }
        let mut after = saved.and_then(|c| c.starting_after);
        if let Some(after) = &after {
            progress(&format!("{}: resuming after {after}", source.name));
        }
        let mut read = 0_usize;
        for page_number in 0.. {
            if page_number == MAX_PAGES {
                return Err(crate::error::Error::StripeUnavailable(format!(
                    "{}: more than {MAX_PAGES} pages",
                    source.path
                )));
            }
            let page = api.page(source.path, &params, after.as_deref()).await?;
            let last = page.last_id();
            let more = page.has_more && last.is_some();
            for object in page.data {
                let at = now();
                let id = object
                    .get("id")
                    .and_then(|i| i.as_str())
                    .unwrap_or("unknown")
                    .to_owned();
                let event = Event {
                    id: format!("sync_{run_id}_{id}"),
                    event_type: event_type(source.path, &object).to_owned(),
                    created: at.timestamp(),
                    api_version: None,
                    // An object of the key's mode; one that does not say is taken as of it.
                    livemode: object
                        .get("livemode")
                        .and_then(|l| l.as_bool())
                        .unwrap_or(livemode),
                    data: Data { object },
                };
                let payload = serde_json::to_string(&event.data.object)
                    .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
                let fetched = apply::fetch(Some(api), &event).await?;
                let context = Context {
                    store,
                    now: at,
                    livemode,
                };
                let Outcome { outcome, .. } =
                    apply::apply_event(&context, &event, &payload, Origin::Sync, fetched).await?;
                *report.outcomes.entry(outcome).or_default() += 1;
                report.read += 1;
                read += 1;
            }
            after = last.or(after);
            store
                .save_sync_cursor(entity::stripe_sync_cursors::Model {
                    source: source.name.to_owned(),
                    since: since_seconds,
                    starting_after: after.clone(),
                    done: !more,
                    updated_at: now().timestamp(),
                })
                .await?;
            progress(&format!("{}: {read} read and applied", source.name));
            if !more {
                break;
            }
        }
        progress(&format!("{}: done", source.name));
    }
    store.clear_sync_cursors().await?;
    Ok(report)
}
