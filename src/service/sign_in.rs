//! Sign-in attempts per client address, in memory: a guessing client is slowed down.

/// Failed sign-ins an address may make within `SIGN_IN_WINDOW` before it must wait.
pub const MAX_FAILED_SIGN_INS: u32 = 10;
pub const SIGN_IN_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);
/// Addresses remembered at most; the memory starts over when full.
const MAX_ADDRESSES: usize = 10_000;

/// Failed sign-ins per client address: a guessing client is slowed to `MAX_FAILED_SIGN_INS` per
/// `SIGN_IN_WINDOW`, in real time.
#[derive(Default)]
pub struct SignInThrottle {
    failures:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u32)>>,
}

impl SignInThrottle {
    /// How long `address` must wait before it may try again; none when it may now.
    pub fn wait(&self, address: std::net::IpAddr, now: std::time::Instant) -> Option<u64> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (since, count) = failures.get(&address)?;
        let over = now.saturating_duration_since(*since) >= SIGN_IN_WINDOW;
        (!over && *count >= MAX_FAILED_SIGN_INS)
            .then(|| (SIGN_IN_WINDOW - now.saturating_duration_since(*since)).as_secs() + 1)
    }

    pub fn failed(&self, address: std::net::IpAddr, now: std::time::Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&address) {
            failures.clear();
        }
        let entry = failures.entry(address).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= SIGN_IN_WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    pub fn succeeded(&self, address: std::net::IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&address);
    }
}
