//! Concurrent requests per client and per site, counted by RAII guards.
//!
//! The server already caps connections globally; this caps how many of them
//! one client (e.g. a download accelerator opening 16 ranges) or one site may
//! hold. A slot is taken with [`Concurrency::acquire`] and given back when
//! the returned [`ConnGuard`] drops, however the exchange ends, so counts
//! cannot leak. Entries at zero are removed at once: memory follows the
//! number of active clients, not the number ever seen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::client::ClientKey;
use super::lock;

/// Which limit refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnLimitHit {
    /// The client holds its maximum.
    Client,
    /// The site holds its maximum.
    Site,
}

#[derive(Debug, Default)]
struct Counts {
    clients: HashMap<ClientKey, u32>,
    sites: HashMap<Arc<str>, u32>,
    denied_client: u64,
    denied_site: u64,
}

/// Concurrency counters; clone-cheap handle.
#[derive(Debug, Clone)]
pub struct Concurrency {
    per_client: Option<u32>,
    per_site: Option<u32>,
    counts: Arc<Mutex<Counts>>,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnGuard {
    site: Arc<str>,
    client: ClientKey,
    counts: Arc<Mutex<Counts>>,
}

/// Counts for status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnStats {
    /// Active slots per site.
    pub sites: Vec<(String, u32)>,
    /// Clients holding at least one slot.
    pub active_clients: usize,
    /// Busiest clients (up to 20), most slots first.
    pub top_clients: Vec<(String, u32)>,
    /// Refusals by the per-client limit.
    pub denied_client: u64,
    /// Refusals by the per-site limit.
    pub denied_site: u64,
}

impl Concurrency {
    /// Limits per client and per site (`None`: unlimited, still counted).
    pub fn new(per_client: Option<u32>, per_site: Option<u32>) -> Self {
        Self {
            per_client,
            per_site,
            counts: Arc::default(),
        }
    }

    /// Takes over `previous`'s held slots (config reload): guards it issued
    /// are still counted here and release here.
    pub fn adopt(&mut self, previous: &Concurrency) {
        self.counts = Arc::clone(&previous.counts);
    }

    /// Takes a slot for `client` on `site`, or says which limit is full.
    pub fn acquire(&self, site: &Arc<str>, client: ClientKey) -> Result<ConnGuard, ConnLimitHit> {
        let mut c = lock(&self.counts);
        let client_now = c.clients.get(&client).copied().unwrap_or(0);
        if self.per_client.is_some_and(|max| client_now >= max) {
            c.denied_client += 1;
            return Err(ConnLimitHit::Client);
        }
        let site_now = c.sites.get(site).copied().unwrap_or(0);
        if self.per_site.is_some_and(|max| site_now >= max) {
            c.denied_site += 1;
            return Err(ConnLimitHit::Site);
        }
        c.clients.insert(client, client_now + 1);
        c.sites.insert(site.clone(), site_now + 1);
        Ok(ConnGuard {
            site: site.clone(),
            client,
            counts: self.counts.clone(),
        })
    }

    /// Slots `client` holds.
    pub fn client_count(&self, client: &ClientKey) -> u32 {
        lock(&self.counts).clients.get(client).copied().unwrap_or(0)
    }

    /// Slots `site` holds.
    pub fn site_count(&self, site: &str) -> u32 {
        lock(&self.counts).sites.get(site).copied().unwrap_or(0)
    }

    /// A snapshot for status pages.
    pub fn stats(&self) -> ConnStats {
        let c = lock(&self.counts);
        let mut top: Vec<(String, u32)> =
            c.clients.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top.truncate(20);
        let mut sites: Vec<(String, u32)> =
            c.sites.iter().map(|(s, n)| (s.to_string(), *n)).collect();
        sites.sort();
        ConnStats {
            sites,
            active_clients: c.clients.len(),
            top_clients: top,
            denied_client: c.denied_client,
            denied_site: c.denied_site,
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        if let Some(n) = c.clients.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.clients.remove(&self.client);
            }
        }
        if let Some(n) = c.sites.get_mut(&*self.site) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.sites.remove(&*self.site);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ClientPrefixes;

    fn key(s: &str) -> ClientKey {
        ClientPrefixes::default().key(s.parse().unwrap())
    }

    #[test]
    fn per_client_and_per_site_limits_with_guards() {
        let c = Concurrency::new(Some(2), Some(3));
        let site: Arc<str> = Arc::from("mirror");
        let a1 = c.acquire(&site, key("192.0.2.1")).unwrap();
        let _a2 = c.acquire(&site, key("192.0.2.1")).unwrap();
        assert_eq!(
            c.acquire(&site, key("192.0.2.1")).unwrap_err(),
            ConnLimitHit::Client
        );
        // Another host in the same IPv6 /64 is the same client.
        let _b1 = c.acquire(&site, key("2001:db8::1")).unwrap();
        assert_eq!(
            c.acquire(&site, key("192.0.2.9")).unwrap_err(),
            ConnLimitHit::Site
        );
        let other: Arc<str> = Arc::from("other");
        let _o = c.acquire(&other, key("192.0.2.9")).unwrap();
        drop(a1);
        assert_eq!(c.client_count(&key("192.0.2.1")), 1);
        let _b2 = c.acquire(&site, key("2001:db8::2")).unwrap();
        assert_eq!(
            c.acquire(&site, key("192.0.2.50")).unwrap_err(),
            ConnLimitHit::Site
        );
        let s = c.stats();
        assert_eq!(s.denied_client, 1);
        assert_eq!(s.denied_site, 2);
        assert_eq!(s.sites, vec![("mirror".into(), 3), ("other".into(), 1)]);
        assert_eq!(s.top_clients[0], ("2001:db8::/64".into(), 2));
    }

    #[test]
    fn entries_vanish_when_released() {
        let c = Concurrency::new(None, None);
        let site: Arc<str> = Arc::from("s");
        let guards: Vec<_> = (0..1000u32)
            .map(|n| {
                c.acquire(
                    &site,
                    ClientPrefixes::default().key(std::net::Ipv4Addr::from(n).into()),
                )
                .unwrap()
            })
            .collect();
        assert_eq!(c.stats().active_clients, 1000);
        assert_eq!(c.site_count("s"), 1000);
        drop(guards);
        let s = c.stats();
        assert_eq!(s.active_clients, 0);
        assert!(s.sites.is_empty());
    }
}
