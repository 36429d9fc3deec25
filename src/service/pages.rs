//! Where the pages are reached, the key their links are signed with, and who may embed the
//! customer's page: what the API (portal links) and the pages share.

use crate::config::PagesConfig;

/// What the pages need: where they are reached, the key their links are signed with, and who
/// may embed the customer's page.
#[derive(Clone)]
pub struct Pages {
    pub public_url: String,
    key: Vec<u8>,
    pub portal_link_seconds: u64,
    pub session_idle_seconds: u64,
    pub session_max_seconds: u64,
    /// Session cookies are `Secure` when the pages are reached over HTTPS.
    pub secure_cookies: bool,
    /// Who may frame the customer's page (`[pages] embed_origins`), as a CSP source list.
    pub frame_ancestors: String,
}

impl Pages {
    /// From `[pages]`; without a `secret`, a random key that lasts until the process stops.
    pub fn new(config: &PagesConfig, listen: &str) -> Pages {
        let key = config.secret.clone().unwrap_or_else(|| {
            tracing::warn!(
                "no [pages] secret: portal links last until this process stops and open on \
                 this instance only"
            );
            use rand::RngCore;
            let mut key = vec![0u8; 32];
            rand::thread_rng().fill_bytes(&mut key);
            key
        });
        let frame_ancestors = if config.embed_origins.is_empty() {
            "'none'".to_owned()
        } else {
            config.embed_origins.join(" ")
        };
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{listen}"));
        Pages {
            secure_cookies: public_url.starts_with("https://"),
            public_url,
            key,
            portal_link_seconds: config.portal_link_seconds,
            session_idle_seconds: config.session_idle_seconds,
            session_max_seconds: config.session_max_seconds,
            frame_ancestors,
        }
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }
}
