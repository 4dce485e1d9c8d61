//! Client quotas and request rates that hold across the fleet, so that a
//! client cannot multiply its allowance by the number of nodes.
//!
//! The request path never waits for Redis: every node decides from its own
//! tables ([`Limits`]), which also hold what the other nodes did as of the
//! last sync. One task per node ([`spawn`]) syncs every `interval` (1 s):
//! it takes what changed on this node since the last sync and, in turns,
//! the clients active here recently ([`Limits::take_fleet_share`], at most
//! `max_keys` quota counters and `max_keys` clients' request counts), runs
//! one Lua script in one round trip, and folds the answer back
//! ([`Limits::merge_fleet_totals`]). The script is the protocol:
//!
//! - **Quotas**: one hash per client, site and period,
//!   `{prefix}:usage:{period_start_ms}:{client}@{site}`, with one field per
//!   node holding that node's bytes in the period (raised, never lowered),
//!   expiring a little after the period ends. The answer is this node's
//!   field and the sum of the others. Absolute values make a sync
//!   idempotent: one repeated after a lost reply counts nothing twice, and
//!   a Redis that comes back empty is rebuilt from the nodes.
//! - **Request rates**: the fleet's GCRA state per client,
//!   `{prefix}:rate:{client}`, the theoretical arrival time in Redis's own
//!   clock (`TIME`, so node clocks need not agree). Each sync moves it on by
//!   one interval per request the node admitted since the last one (never
//!   below the node's own), expiring when it falls into the past; the
//!   answer is how far it lies ahead, which becomes the node's.
//! - **Epoch**: `{prefix}:limits:epoch`, a random value set by the first
//!   node to find it missing. When it changes, Redis lost its data (it
//!   restarted empty, or failed over to a replica that had not seen it),
//!   and every node queues all its counters to be sent again.
//!
//! When Redis is out of reach, a sync fails within the operation timeout
//! and its share is put back: the node goes on deciding with what it knows
//! (its own usage, and the others' as of the last sync) and the first sync
//! that reaches Redis again sends everything that happened meanwhile.
//!
//! What this costs in accuracy (docs/fleet.md): a node learns of the other
//! nodes' traffic at most one interval (plus a round trip) late, so across
//! `N` nodes a client can exceed its quota by about what each node admits
//! for it in one interval, and its request rate by about one burst plus one
//! interval's requests per node.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use cvdmirror_formats::mutex::lock;
use cvdmirror_limits::{FleetShare, FleetTotals, FleetUsage, Limits};
use redis::{Script, Value};
use serde::Serialize;
use tokio::task::AbortHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::{FleetConfig, FleetError};

/// After this many failed syncs in a row the connection starts over (as
/// the heartbeat's does).
const RECONNECT_AFTER_FAILURES: u32 = 5;

/// How long a usage hash outlives its period: nodes whose clocks are a
/// little behind still add to it, and none of them deletes it by setting
/// an expiry in the past.
const USAGE_GRACE_MS: u64 = 5 * 60 * 1000;

/// `KEYS`: the epoch, then one usage hash per shared counter, then one rate
/// key per client. `ARGV`: node, epoch candidate, number of usage keys,
/// the request interval in µs; then (bytes, expire-at ms) per usage key and
/// (admitted, debt µs) per rate key. Returns the epoch, then (this node's
/// bytes, the others' bytes) per usage key and the debt in µs per rate key.
static SYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local node = ARGV[1]
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[1], epoch)
end
local usage = tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local out = { epoch }
for i = 1, usage do
  local key = KEYS[1 + i]
  local own = tonumber(ARGV[3 + 2 * i])
  local kept = tonumber(redis.call('HGET', key, node) or '0')
  if own > kept then
    redis.call('HSET', key, node, ARGV[3 + 2 * i])
    kept = own
  end
  redis.call('PEXPIREAT', key, ARGV[4 + 2 * i])
  local others = 0
  local fields = redis.call('HGETALL', key)
  for j = 1, #fields, 2 do
    if fields[j] ~= node then
      others = others + (tonumber(fields[j + 1]) or 0)
    end
  end
  out[#out + 1] = kept
  out[#out + 1] = others
end
local rates = #KEYS - 1 - usage
if rates > 0 then
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local base = 4 + 2 * usage
  for i = 1, rates do
    local key = KEYS[1 + usage + i]
    local admitted = tonumber(ARGV[base + 2 * i - 1])
    local mine = now + tonumber(ARGV[base + 2 * i])
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat < now then
      tat = now
    end
    tat = tat + admitted * interval
    if mine > tat then
      tat = mine
    end
    if tat > now then
      redis.call('SET', key, string.format('%d', tat), 'PX',
        string.format('%d', math.ceil((tat - now) / 1000)))
    end
    out[#out + 1] = tat - now
  end
end
return out
",
    )
});

/// How often and how much a node syncs its limits with the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedLimitsConfig {
    /// Time between syncs: the staleness of what a node knows of the
    /// others, and so the slack of every shared limit.
    pub interval: Duration,
    /// Most quota counters, and most clients' request counts, per sync;
    /// the rest wait for the next one.
    pub max_keys: usize,
    /// How long after its last download here a client's quota counter is
    /// still synced when nothing changed here, so that this node keeps
    /// learning what the others send it. (A client's request rate is
    /// synced as long as its budget here is not full again.)
    pub active_for: Duration,
}

impl SharedLimitsConfig {
    /// The default interval.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
    /// The default bound on keys per sync.
    pub const DEFAULT_MAX_KEYS: usize = 1000;
    /// The default time a quiet client's counter is still synced.
    pub const DEFAULT_ACTIVE_FOR: Duration = Duration::from_secs(60);
}

impl Default for SharedLimitsConfig {
    fn default() -> Self {
        Self {
            interval: Self::DEFAULT_INTERVAL,
            max_keys: Self::DEFAULT_MAX_KEYS,
            active_for: Self::DEFAULT_ACTIVE_FOR,
        }
    }
}

/// How the syncs are going, for status pages and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SharedLimitsStatus {
    /// Whether the last sync reached Redis (`false` before the first).
    pub redis_ok: bool,
    /// Syncs that reached Redis.
    pub syncs: u64,
    /// Syncs that did not.
    pub failures: u64,
    /// Times Redis was found to have lost the fleet's usage, which every
    /// node then sent again.
    pub resends: u64,
    /// Quota counters and clients' request counts in the last sync that
    /// reached Redis.
    pub last_usage: usize,
    /// See `last_usage`.
    pub last_requests: usize,
    /// Quota counters waiting to be shared.
    pub unshared: usize,
}

/// Where the sync finds the limits in force (they are replaced on reload).
pub type LimitsSource = Arc<dyn Fn() -> Arc<Limits> + Send + Sync>;

/// A handle on a node's sync task.
#[derive(Clone)]
pub struct SharedLimits {
    status: Arc<Mutex<SharedLimitsStatus>>,
    rounds: Arc<AtomicU64>,
    task: AbortHandle,
    stopped: CancellationToken,
}

impl SharedLimits {
    /// How the syncs are going.
    pub fn status(&self) -> SharedLimitsStatus {
        lock(&self.status).clone()
    }

    /// Syncs attempted so far, successful or not.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(Ordering::Relaxed)
    }

    /// Stops syncing at once (the node goes on with local limits).
    pub fn abort(&self) {
        self.task.abort();
    }

    /// Waits until the task has ended (after `shutdown`, with a last
    /// sync, or [`abort`](Self::abort)).
    pub async fn stopped(&self) {
        self.stopped.cancelled().await;
    }
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// Starts syncing this node's client quotas and request rates with the
/// fleet of `fleet` (the node's name, key prefix, Redis and operation
/// timeout), on a connection of its own, until `shutdown`; a last sync then
/// hands over what changed since the one before. `limits` returns the
/// limits in force (`move || control.limits()`). A node whose limits have
/// no client quota and no request rate sends nothing. Must be called within
/// a Tokio runtime; Redis being out of reach is not an error here.
pub fn spawn(
    fleet: &FleetConfig,
    settings: SharedLimitsConfig,
    limits: impl Fn() -> Arc<Limits> + Send + Sync + 'static,
    shutdown: CancellationToken,
) -> Result<SharedLimits, FleetError> {
    fleet.validate()?;
    if settings.interval.is_zero() || settings.max_keys == 0 {
        return Err(FleetError::Config(
            "shared limits: interval and max_keys must be above 0".to_owned(),
        ));
    }
    // A connection of its own, apart from the heartbeat's.
    let link = Store::new(fleet)?;
    let status = Arc::new(Mutex::new(SharedLimitsStatus::default()));
    let rounds = Arc::new(AtomicU64::new(0));
    let mut sync = Syncer {
        keys: Keys::new(fleet),
        settings,
        link,
        limits: Arc::new(limits),
        epoch: None,
        failures: 0,
        status: Arc::clone(&status),
        rounds: Arc::clone(&rounds),
    };
    let stopped = CancellationToken::new();
    let done = stopped.clone().drop_guard();
    let task = tokio::spawn(async move {
        let _done = done;
        sync.run(shutdown).await;
    })
    .abort_handle();
    Ok(SharedLimits {
        status,
        rounds,
        task,
        stopped,
    })
}

/// The names of the keys the sync touches.
struct Keys {
    node: String,
    prefix: String,
}

impl Keys {
    fn new(config: &FleetConfig) -> Self {
        Self {
            node: config.node.clone(),
            prefix: config.key_prefix.clone(),
        }
    }

    fn epoch(&self) -> String {
        format!("{}:limits:epoch", self.prefix)
    }

    /// A client's counter on a site in the period starting at `start`; a
    /// client key never holds an `@`, so the site after it is unambiguous.
    fn usage(&self, start: u64, client: &impl std::fmt::Display, site: &str) -> String {
        format!("{}:usage:{start}:{client}@{site}", self.prefix)
    }

    fn rate(&self, client: &impl std::fmt::Display) -> String {
        format!("{}:rate:{client}", self.prefix)
    }
}

struct Syncer {
    keys: Keys,
    settings: SharedLimitsConfig,
    link: Store,
    limits: LimitsSource,
    /// The epoch last seen in Redis.
    epoch: Option<String>,
    failures: u32,
    status: Arc<Mutex<SharedLimitsStatus>>,
    rounds: Arc<AtomicU64>,
}

impl Syncer {
    async fn run(&mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = ticker.tick() => self.round().await,
            }
        }
        // What changed since the last sync reaches the fleet before the
        // node goes (bounded by the operation timeout like every call).
        self.round().await;
    }

    /// One sync: share, exchange, merge (or put the share back).
    async fn round(&mut self) {
        let limits = (self.limits)();
        if !limits.is_shareable() {
            return;
        }
        let share = limits.take_fleet_share(self.settings.max_keys, self.settings.active_for);
        let started = Instant::now();
        let result = self.exchange(&share).await;
        self.rounds.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok((epoch, totals)) => {
                limits.merge_fleet_totals(&share, &totals);
                let lost = self.epoch.as_ref().is_some_and(|known| *known != epoch);
                if lost {
                    tracing::info!(
                        node = %self.keys.node,
                        "shared limits: redis lost the fleet's usage; sending it again"
                    );
                    limits.reshare_all();
                }
                if self.failures > 0 {
                    tracing::info!(node = %self.keys.node, "shared limits: redis reached again");
                }
                self.epoch = Some(epoch);
                self.failures = 0;
                let mut status = lock(&self.status);
                status.redis_ok = true;
                status.syncs += 1;
                status.resends += u64::from(lost);
                status.last_usage = share.usage.len();
                status.last_requests = share.requests.len();
                status.unshared = limits.unshared();
                tracing::trace!(
                    usage = share.usage.len(),
                    requests = share.requests.len(),
                    took = ?started.elapsed(),
                    "shared limits: synced"
                );
            }
            Err(error) => {
                if self.failures == 0 {
                    tracing::warn!(
                        %error,
                        node = %self.keys.node,
                        "shared limits: redis out of reach; limits stay local until it is back"
                    );
                }
                limits.return_fleet_share(share);
                self.failures += 1;
                if self.failures.is_multiple_of(RECONNECT_AFTER_FAILURES) {
                    self.link.reconnect();
                }
                let mut status = lock(&self.status);
                status.redis_ok = false;
                status.failures += 1;
                status.unshared = limits.unshared();
            }
        }
    }

    /// Runs the script on `share`, bounded by the operation timeout.
    async fn exchange(&self, share: &FleetShare) -> Result<(String, FleetTotals), FleetError> {
        let mut invocation = SYNC.prepare_invoke();
        invocation.key(self.keys.epoch());
        for usage in &share.usage {
            invocation.key(
                self.keys
                    .usage(usage.period_start_ms, &usage.client, &usage.site),
            );
        }
        for requests in &share.requests {
            invocation.key(self.keys.rate(&requests.client));
        }
        let interval = share.request_interval.map_or(1, micros).max(1);
        invocation
            .arg(&self.keys.node)
            .arg(format!("{:016x}", rand::random::<u64>()))
            .arg(share.usage.len())
            .arg(interval);
        for usage in &share.usage {
            invocation
                .arg(usage.used)
                .arg(usage.period_end_ms.saturating_add(USAGE_GRACE_MS));
        }
        for requests in &share.requests {
            invocation.arg(requests.admitted).arg(micros(requests.debt));
        }
        let reply: Value = self
            .link
            .call(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        parse_reply(reply, share.usage.len(), share.requests.len())
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Reads the script's reply: the epoch, two numbers per usage key, one per
/// rate key.
fn parse_reply(
    reply: Value,
    usage: usize,
    requests: usize,
) -> Result<(String, FleetTotals), FleetError> {
    let unexpected = |what: &str| FleetError::Reply(format!("shared limits: {what}"));
    let Value::Array(items) = reply else {
        return Err(unexpected("not an array"));
    };
    if items.len() != 1 + 2 * usage + requests {
        return Err(unexpected(&format!(
            "{} items for {usage} counters and {requests} clients",
            items.len()
        )));
    }
    let mut items = items.into_iter();
    let epoch = match items.next() {
        Some(Value::BulkString(bytes)) => String::from_utf8(bytes).ok(),
        Some(Value::SimpleString(text)) => Some(text),
        _ => None,
    }
    .ok_or_else(|| unexpected("the epoch is not text"))?;
    let mut number = || match items.next() {
        Some(Value::Int(n)) => Ok(u64::try_from(n).unwrap_or(0)),
        _ => Err(unexpected("a count is not a number")),
    };
    let mut totals = FleetTotals::default();
    for _ in 0..usage {
        let own = number()?;
        let others = number()?;
        totals.usage.push(FleetUsage { own, others });
    }
    for _ in 0..requests {
        totals.requests.push(Duration::from_micros(number()?));
    }
    Ok((epoch, totals))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn a_reply_reads_back() {
        let reply = Value::Array(vec![
            bulk("00ff"),
            Value::Int(1_500),
            Value::Int(98_000),
            Value::Int(0),
            Value::Int(7),
            Value::Int(2_500_000),
        ]);
        let (epoch, totals) = parse_reply(reply, 2, 1).unwrap();
        assert_eq!(epoch, "00ff");
        assert_eq!(
            totals.usage,
            [
                FleetUsage {
                    own: 1_500,
                    others: 98_000
                },
                FleetUsage { own: 0, others: 7 }
            ]
        );
        assert_eq!(totals.requests, [Duration::from_millis(2_500)]);
        let (_, empty) = parse_reply(Value::Array(vec![bulk("e")]), 0, 0).unwrap();
        assert_eq!(empty, FleetTotals::default());
    }

    #[test]
    fn a_malformed_reply_is_an_error() {
        for (reply, usage, requests) in [
            (Value::Nil, 0, 0),
            (Value::Array(vec![]), 0, 0),
            (Value::Array(vec![Value::Int(1)]), 0, 0),
            (Value::Array(vec![bulk("e"), Value::Int(1)]), 1, 0),
            (Value::Array(vec![bulk("e"), bulk("x")]), 0, 1),
        ] {
            assert!(matches!(
                parse_reply(reply, usage, requests),
                Err(FleetError::Reply(_))
            ));
        }
    }

    #[test]
    fn keys_sit_under_the_prefix() {
        let keys = Keys::new(&FleetConfig::new(
            "redis://127.0.0.1:6379/0",
            "a",
            "https://a.example.org",
        ));
        assert_eq!(keys.epoch(), "cvdmirror:limits:epoch");
        assert_eq!(
            keys.usage(1_704_067_200_000, &"2001:db8::/64", "mirror"),
            "cvdmirror:usage:1704067200000:2001:db8::/64@mirror"
        );
        assert_eq!(keys.rate(&"192.0.2.7/32"), "cvdmirror:rate:192.0.2.7/32");
    }
}
