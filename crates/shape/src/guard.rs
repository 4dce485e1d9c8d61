//! The link guard: lowers cvdmirror's own cap when other traffic on the host
//! needs the link.
//!
//! The mirror shares its uplink with web sites, SSH and voice. Every second
//! the guard reads the interface's transmit counter, subtracts what the
//! mirror itself sent, and sets the link cap to what is left after a reserve
//! is kept free: `capacity - reserve - other`, never below a floor and never
//! above the configured cap. Other traffic is estimated pessimistically (the
//! larger of this second's value and a moving average), so a burst of web
//! traffic takes bandwidth from the mirror at once and gives it back slowly.
//! Counters include packet headers the mirror's byte count does not, which
//! errs on the side of the other services.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::{Rate, Shaper};

/// `[shape.link_guard]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkGuardConfig {
    /// Network interface whose transmit counter is watched, e.g. `eth0`.
    pub interface: String,
    /// What the link carries, e.g. `100Mbit`.
    pub capacity: Rate,
    /// Kept free for everything else on the host, e.g. `20Mbit`.
    pub reserve: Rate,
    /// The mirror never gets less than this (default: 5 % of the capacity).
    #[serde(default)]
    pub floor: Option<Rate>,
    /// How often the counter is read (default 1 s).
    #[serde(default = "second", with = "humantime_serde")]
    pub interval: Duration,
}

fn second() -> Duration {
    Duration::from_secs(1)
}

/// The guard's running estimate.
#[derive(Debug, Clone)]
pub struct LinkGuard {
    config: LinkGuardConfig,
    other_average: f64,
}

impl LinkGuard {
    /// A guard with no history.
    pub fn new(config: LinkGuardConfig) -> Self {
        Self {
            config,
            other_average: 0.0,
        }
    }

    /// The cap for the next interval, given what the interface sent (`total`)
    /// and what the mirror sent (`ours`) in the last `elapsed`, and the
    /// operator's configured cap.
    pub fn next_cap(
        &mut self,
        total: u64,
        ours: u64,
        elapsed: Duration,
        configured: Option<Rate>,
    ) -> Rate {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let other_now = (total.saturating_sub(ours)) as f64 / secs;
        self.other_average = 0.7 * self.other_average + 0.3 * other_now;
        let other = other_now.max(self.other_average);
        let capacity = self.config.capacity.bytes_per_sec() as f64;
        let reserve = self.config.reserve.bytes_per_sec() as f64;
        let floor = self
            .config
            .floor
            .map_or(capacity * 0.05, |f| f.bytes_per_sec() as f64)
            .max(1.0);
        let ceiling = configured.map_or(capacity, |c| (c.bytes_per_sec() as f64).min(capacity));
        let allowed = (capacity - reserve - other).clamp(floor.min(ceiling), ceiling);
        Rate::from_bytes_per_sec(allowed as u64).unwrap_or(self.config.capacity)
    }

    /// Watches the interface until `shutdown`, adjusting `shaper`'s link cap.
    pub async fn run(
        mut self,
        shaper: Shaper,
        configured: Option<Rate>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let path = PathBuf::from(format!(
            "/sys/class/net/{}/statistics/tx_bytes",
            self.config.interface
        ));
        let read = || {
            std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        let Some(mut last_total) = read() else {
            tracing::error!(path = %path.display(), "link guard cannot read the interface counter; it stays off");
            return;
        };
        let mut last_ours = shaper.snapshot().link.bytes;
        let mut last = Instant::now();
        let mut ticker = tokio::time::interval(self.config.interval);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let (Some(total), ours, now) = (read(), shaper.snapshot().link.bytes, Instant::now())
            else {
                continue;
            };
            let cap = self.next_cap(
                total.saturating_sub(last_total),
                ours.saturating_sub(last_ours),
                now - last,
                configured,
            );
            if shaper.link_rate() != Some(cap) {
                tracing::debug!(%cap, "link guard adjusts the mirror's cap");
                shaper.set_link_rate(Some(cap));
            }
            (last_total, last_ours, last) = (total, ours, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> LinkGuard {
        LinkGuard::new(LinkGuardConfig {
            interface: "eth0".into(),
            capacity: "100Mbit".parse().unwrap(),
            reserve: "20Mbit".parse().unwrap(),
            floor: None,
            interval: second(),
        })
    }

    const MBIT: u64 = 125_000;

    #[test]
    fn a_quiet_host_leaves_capacity_minus_reserve() {
        let cap = guard().next_cap(50 * MBIT, 50 * MBIT, second(), None);
        assert_eq!(cap.bytes_per_sec(), 80 * MBIT);
    }

    #[test]
    fn other_traffic_takes_from_the_mirror_at_once_and_gives_back_slowly() {
        let mut g = guard();
        let busy = g.next_cap(70 * MBIT, 40 * MBIT, second(), None);
        assert_eq!(
            busy.bytes_per_sec(),
            50 * MBIT,
            "30 Mbit of web traffic leaves 50 for the mirror"
        );
        let after = g.next_cap(40 * MBIT, 40 * MBIT, second(), None);
        assert!(
            after.bytes_per_sec() < 80 * MBIT,
            "the estimate decays, not drops: {after}"
        );
    }

    #[test]
    fn the_cap_stays_between_floor_and_the_configured_cap() {
        let mut g = guard();
        let starved = g.next_cap(200 * MBIT, 0, second(), None);
        assert_eq!(starved.bytes_per_sec(), 5 * MBIT, "5 % floor");
        let mut g = guard();
        let capped = g.next_cap(0, 0, second(), Some("30Mbit".parse().unwrap()));
        assert_eq!(capped.bytes_per_sec(), 30 * MBIT);
    }
}
