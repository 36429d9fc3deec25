//! Backfill: reads paid invoices, completed checkout sessions, subscriptions, refunds and
//! disputes from the Stripe API and applies each as the webhook for its current state would, with
//! the same per-object idempotency, so a sync after webhooks changes nothing and a sync instead
//! of webhooks reaches the same state.

use super::api::StripeApi;
use super::apply::{self, Context, Origin, Outcome};
use super::event::{Data, Event};
use crate::domain::Timestamp;
use crate::error::Result;
use crate::store::Store;
use std::collections::BTreeMap;

/// What a sync did, per outcome.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub read: usize,
    pub outcomes: BTreeMap<&'static str, usize>,
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

pub async fn run(
    store: &Store,
    api: &StripeApi,
    since: Timestamp,
    now: impl Fn() -> Timestamp,
    mut progress: impl FnMut(&str),
) -> Result<Report> {
    let mut report = Report::default();
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    for source in &SOURCES {
        let mut params: BTreeMap<String, String> = source
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if source.since_filter {
            params.insert("created[gte]".into(), since.timestamp().to_string());
        }
        let objects = api
            .list_all(source.path, &params, |read| {
                progress(&format!("{}: {read} read", source.name));
            })
            .await?;
        for (index, object) in objects.into_iter().enumerate() {
            report.read += 1;
            let id = object
                .get("id")
                .and_then(|i| i.as_str())
                .unwrap_or("unknown")
                .to_owned();
            let at = now();
            let event = Event {
                id: format!("sync_{run_id}_{id}"),
                event_type: event_type(source.path, &object).to_owned(),
                created: at.timestamp(),
                api_version: None,
                data: Data { object },
            };
            let payload = serde_json::to_string(&event.data.object)
                .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
            let fetched = apply::fetch(Some(api), &event).await?;
            let context = Context { store, now: at };
            let Outcome { outcome, .. } =
                apply::apply_event(&context, &event, &payload, Origin::Sync, fetched).await?;
            *report.outcomes.entry(outcome).or_default() += 1;
            if (index + 1) % 100 == 0 {
                progress(&format!("{}: {} applied", source.name, index + 1));
            }
        }
        progress(&format!("{}: done", source.name));
    }
    Ok(report)
}
