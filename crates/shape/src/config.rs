//! The `[shape]` settings: link cap, pacing tick, burst, quantum, per-site
//! weights and caps, and the traffic classes.
//!
//! Every field has a default, so an empty table shapes nothing but still
//! counts bytes and keeps small responses ahead of bulk ones. Validation
//! happens here, once, so the scheduler never has to wonder whether a weight
//! can be zero or a tick can be an hour.

use std::collections::BTreeMap;

use serde::Deserialize;
use thiserror::Error;
use tokio::time::Duration;

use super::class::{ClassConfig, default_classes};
use super::rate::Rate;

/// Default pacer tick: short enough that no client sees pulses.
pub const DEFAULT_TICK: Duration = Duration::from_millis(2);
/// How late a tick may fire on a healthy machine: tokio's timer has 1 ms
/// slots and rounds deadlines up, and the thread wakes a little after that.
pub const TICK_LATENESS: Duration = Duration::from_millis(2);
/// Default burst: how much traffic a cap lets through at once. The least
/// that still reaches the cap ([`DEFAULT_TICK`] + [`TICK_LATENESS`]): at
/// 85 Mbit/s 42 KB, near the 32 KB a typical token-bucket qdisc holds, so
/// other traffic on the link does not queue behind it.
pub const DEFAULT_BURST: Duration = Duration::from_millis(4);
/// Default deficit-round-robin quantum per unit of weight, in bytes.
pub const DEFAULT_QUANTUM: u64 = 16 * 1024;

/// Shaping configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShapeConfig {
    /// Total cap for everything the mirror sends; none: unlimited.
    pub link_rate: Option<Rate>,
    /// How often the pacer hands out budgets.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Burst allowed by every cap, as time at that rate (at least one
    /// quantum); at least the tick plus [`TICK_LATENESS`].
    #[serde(with = "humantime_serde")]
    pub burst: Duration,
    /// Bytes per round per unit of weight; also the largest single grant.
    pub quantum: u64,
    /// Per-site weight and cap, by site name; other sites get weight 1.
    pub sites: BTreeMap<String, SiteConfig>,
    /// Traffic classes in match order.
    #[serde(rename = "class")]
    pub classes: Vec<ClassConfig>,
    /// The class of responses no rule matches.
    pub default_class: String,
    /// Cap of each client (within each class), unless its class says otherwise.
    pub client_rate: Option<Rate>,
    /// Lowers the link cap when other traffic on the host needs the link.
    pub link_guard: Option<crate::LinkGuardConfig>,
    /// Also let the kernel pace each client socket (`SO_MAX_PACING_RATE`)
    /// at the client cap (else the link cap), for smoother packets.
    pub kernel_pacing: bool,
}

/// Weight and cap of one site.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Share of the link among busy sites.
    #[serde(default = "one")]
    pub weight: u32,
    /// Cap for the site.
    #[serde(default)]
    pub rate: Option<Rate>,
}

fn one() -> u32 {
    1
}

impl Default for SiteConfig {
    fn default() -> Self {
        Self {
            weight: 1,
            rate: None,
        }
    }
}

impl Default for ShapeConfig {
    fn default() -> Self {
        Self {
            link_rate: None,
            tick: DEFAULT_TICK,
            burst: DEFAULT_BURST,
            quantum: DEFAULT_QUANTUM,
            sites: BTreeMap::new(),
            classes: default_classes(),
            default_class: "bulk".into(),
            client_rate: None,
            link_guard: None,
            kernel_pacing: false,
        }
    }
}

/// A configuration the scheduler cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("shape: {reason}")]
pub struct ConfigError {
    /// The `[shape]` key at fault, if one is (so its line can be named).
    pub key: Option<&'static str>,
    /// What is wrong, for a person.
    pub reason: String,
}

impl ConfigError {
    fn new(key: Option<&'static str>, reason: String) -> Self {
        Self { key, reason }
    }
}

impl ShapeConfig {
    /// Checks ranges and references.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError::new(None, m));
        let key_err = |key, m: String| Err(ConfigError::new(Some(key), m));
        if self.tick < Duration::from_micros(100) || self.tick > Duration::from_millis(100) {
            return key_err(
                "tick",
                format!("tick {:?} must be between 100µs and 100ms", self.tick),
            );
        }
        let least = self.tick + TICK_LATENESS;
        if self.burst < least {
            return key_err(
                "burst",
                format!(
                    "burst {:?} cannot reach the cap with tick {:?}: ticks fire up to {:?} late \
                 (the timer has 1 ms resolution) and a late tick earns more than the burst \
                 holds, so the burst must be at least tick + {:?} = {:?}",
                    self.burst, self.tick, TICK_LATENESS, TICK_LATENESS, least
                ),
            );
        }
        if self.burst > Duration::from_secs(1) {
            return key_err(
                "burst",
                format!("burst {:?} must be at most 1s", self.burst),
            );
        }
        if !(1024..=1024 * 1024).contains(&self.quantum) {
            return key_err(
                "quantum",
                format!("quantum {} must be between 1KiB and 1MiB", self.quantum),
            );
        }
        for (name, site) in &self.sites {
            if site.weight == 0 {
                return err(format!("site `{name}` has weight 0"));
            }
        }
        for (i, class) in self.classes.iter().enumerate() {
            if class.weight == 0 {
                return err(format!("class `{}` has weight 0", class.name));
            }
            if self.classes[..i].iter().any(|c| c.name == class.name) {
                return err(format!("class `{}` is defined twice", class.name));
            }
        }
        if !self.classes.iter().any(|c| c.name == self.default_class) {
            return key_err(
                "default_class",
                format!("default class `{}` is not defined", self.default_class),
            );
        }
        Ok(())
    }

    /// The site's settings, or the defaults.
    pub fn site(&self, name: &str) -> SiteConfig {
        self.sites.get(name).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_is_the_default_and_valid() {
        let c: ShapeConfig = toml::from_str("").unwrap();
        assert_eq!(c, ShapeConfig::default());
        c.validate().unwrap();
    }

    #[test]
    fn full_table_parses() {
        let c: ShapeConfig = toml::from_str(
            r#"
            link_rate = "80Mbit"
            tick = "5ms"
            burst = "20ms"
            default_class = "bulk"
            [sites."db.local"]
            weight = 3
            rate = "50Mbit"
            [[class]]
            name = "small"
            priority = 10
            match = [{ max_size = 65536 }, { kinds = ["cdiff", "sign"] }]
            [[class]]
            name = "bulk"
            client_rate = "2MB/s"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.site("db.local").weight, 3);
        assert_eq!(c.site("other").weight, 1);
        assert_eq!(c.classes[1].client_rate, "16Mbit".parse().ok());
    }

    #[test]
    fn nonsense_is_refused() {
        let bad = |t: &str| {
            toml::from_str::<ShapeConfig>(t)
                .map_err(|e| e.to_string())
                .and_then(|c| c.validate().map_err(|e| e.to_string()))
        };
        assert!(bad("tick = \"1h\"").is_err());
        // A burst of one tick loses the tokens of every late tick.
        let e = bad("tick = \"2ms\"\nburst = \"2ms\"").unwrap_err();
        assert!(
            e.contains("cannot reach the cap") && e.contains("4ms"),
            "{e}"
        );
        assert!(bad("tick = \"5ms\"\nburst = \"6ms\"").is_err());
        assert!(bad("tick = \"5ms\"\nburst = \"7ms\"").is_ok());
        assert!(bad("burst = \"3ms\"").is_err());
        assert!(bad("burst = \"2s\"").is_err());
        assert!(bad("quantum = 1").is_err());
        assert!(bad("default_class = \"nope\"").is_err());
        assert!(bad("link_rate = \"100\"").is_err());
        assert!(bad("link_rate = \"0Mbit\"").is_err());
        assert!(bad("[sites.a]\nweight = 0").is_err());
        assert!(bad("[[class]]\nname = \"a\"\n[[class]]\nname = \"a\"\n").is_err());
        assert!(bad("colour = 1").is_err());
    }
}
