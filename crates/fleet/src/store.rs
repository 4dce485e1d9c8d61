//! The fleet's side of Redis: one [`ConnectionManager`] that reconnects by
//! itself, every call bounded by the operation timeout, and the few Lua
//! scripts that make each step atomic. The scripts are the whole protocol:
//!
//! - `EXCHANGE` writes this node's report (`SET … PX node_ttl`, `SADD` to
//!   `{prefix}:nodes`) and reads every report with its remaining TTL and
//!   the lease, dropping (`SREM`) names whose key expired: one round trip
//!   per heartbeat.
//! - `ACQUIRE` takes a vacant lease (`SET NX PX lease_ttl`) with a fencing
//!   token from `INCR {prefix}:lease:token`, raised above the largest token
//!   this node has seen in case Redis lost the counter.
//! - `RENEW` and `RELEASE` extend (`PEXPIRE`) or delete the lease only while
//!   its value is still this node's.
//! - `CHARGE` adds to a shared counter and sets its period on first use.
//! - `PEER_TOKEN` sets the fleet's peer token unless one exists and reads
//!   it: the secret with which nodes syncing from each other pass the
//!   admission limits meant for clients.
//!
//! The exchange script reads keys named by the set's members, which is fine
//! for a single Redis (with or without replicas) but not Redis Cluster.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use arc_swap::ArcSwap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script, Value};

use crate::{FleetConfig, FleetError};

static EXCHANGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local out = { redis.call('GET', KEYS[3]) }
for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[4] .. name
  local report = redis.call('GET', key)
  if report then
    out[#out + 1] = name
    out[#out + 1] = report
    out[#out + 1] = redis.call('PTTL', key)
  else
    redis.call('SREM', KEYS[2], name)
  end
end
return out
",
    )
});

static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local token = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[3])
if token <= floor then
  token = floor + 1
  redis.call('SET', KEYS[2], string.format('%d', token))
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. string.format('%d', token), 'NX', 'PX', ARGV[2])
return token
",
    )
});

static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

static CHARGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return count
",
    )
});

static PEER_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
",
    )
});

/// One node's reply to a heartbeat's exchange.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Exchanged {
    /// The lease's value, when it is held.
    pub lease: Option<String>,
    /// Every live node: its name, its report's JSON and the milliseconds
    /// its key has left.
    pub reports: Vec<(String, String, i64)>,
}

/// The connection to the fleet's Redis.
pub(crate) struct Store {
    config: FleetConfig,
    client: redis::Client,
    settings: ConnectionManagerConfig,
    manager: ArcSwap<ConnectionManager>,
}

impl Store {
    /// A store for `config` (already validated); connects on first use.
    /// Must be called within a Tokio runtime.
    pub fn new(config: &FleetConfig) -> Result<Self, FleetError> {
        // rustls needs a process-wide crypto provider for `rediss://`; the
        // project's is ring (a provider installed earlier stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = config.redis_client()?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.op_timeout))
            .set_response_timeout(Some(config.op_timeout))
            .set_number_of_retries(1)
            .set_min_delay(config.heartbeat / 4)
            .set_max_delay(config.heartbeat);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), settings.clone())?;
        Ok(Self {
            config: config.clone(),
            client,
            settings,
            manager: ArcSwap::from_pointee(manager),
        })
    }

    /// Starts over with a new connection manager. The manager reconnects
    /// by itself after I/O errors, but a connection attempt refused by the
    /// server (a Redis still loading its data, a changed password) would
    /// leave it failing for good.
    pub fn reconnect(&self) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.settings.clone()) {
            Ok(manager) => self.manager.store(manager.into()),
            Err(error) => tracing::warn!(%error, "fleet: cannot renew the redis connection"),
        }
    }

    /// Runs `call` on the connection, bounded by the operation timeout.
    pub(crate) async fn call<T, F>(
        &self,
        call: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, FleetError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let connection = ConnectionManager::clone(&self.manager.load());
        match tokio::time::timeout(self.config.op_timeout, call(connection)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(FleetError::Timeout(self.config.op_timeout)),
        }
    }

    /// Writes this node's `report` and reads every node's and the lease.
    pub async fn exchange(&self, report: &str) -> Result<Exchanged, FleetError> {
        let config = &self.config;
        let reply: Value = self
            .call(|mut connection| async move {
                EXCHANGE
                    .key(config.node_key(&config.node))
                    .key(config.nodes_key())
                    .key(config.lease_key())
                    .arg(report)
                    .arg(millis(config.node_ttl))
                    .arg(&config.node)
                    .arg(config.node_key_prefix())
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        parse_exchange(reply)
    }

    /// Takes the lease if it is vacant: its fencing token, or `None` when
    /// another node holds it.
    pub async fn acquire(&self, floor: u64) -> Result<Option<u64>, FleetError> {
        let config = &self.config;
        self.call(|mut connection| async move {
            ACQUIRE
                .key(config.lease_key())
                .key(config.lease_token_key())
                .arg(&config.node)
                .arg(millis(config.lease_ttl))
                .arg(floor)
                .invoke_async(&mut connection)
                .await
        })
        .await
    }

    /// Extends the lease while its value is still `value`.
    pub async fn renew(&self, value: &str) -> Result<bool, FleetError> {
        let config = &self.config;
        let renewed: i64 = self
            .call(|mut connection| async move {
                RENEW
                    .key(config.lease_key())
                    .arg(value)
                    .arg(millis(config.lease_ttl))
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(renewed == 1)
    }

    /// Deletes the lease while its value is still `value`.
    pub async fn release(&self, value: &str) -> Result<bool, FleetError> {
        let config = &self.config;
        let released: i64 = self
            .call(|mut connection| async move {
                RELEASE
                    .key(config.lease_key())
                    .arg(value)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(released == 1)
    }

    /// The fleet's peer token: the one in Redis, or `candidate` when there
    /// is none yet (the first node to ask sets it).
    pub async fn peer_token(&self, candidate: &str) -> Result<String, FleetError> {
        let config = &self.config;
        self.call(|mut connection| async move {
            PEER_TOKEN
                .key(config.peer_token_key())
                .arg(candidate)
                .invoke_async(&mut connection)
                .await
        })
        .await
    }

    /// Removes this node's report, so that the others drop it at once.
    pub async fn leave(&self) -> Result<(), FleetError> {
        let config = &self.config;
        self.call(|mut connection| async move {
            redis::pipe()
                .atomic()
                .del(config.node_key(&config.node))
                .srem(config.nodes_key(), &config.node)
                .exec_async(&mut connection)
                .await
        })
        .await
    }

    /// Adds `amount` to the shared counter `key` (under `{prefix}:quota:`),
    /// which expires `period` after its first charge; the new count.
    pub async fn charge(
        &self,
        key: &str,
        amount: u64,
        period: Duration,
    ) -> Result<u64, FleetError> {
        let amount = i64::try_from(amount)
            .map_err(|_| FleetError::Config(format!("charge {amount} is too large")))?;
        let config = &self.config;
        let count: i64 = self
            .call(|mut connection| async move {
                CHARGE
                    .key(config.quota_key(key))
                    .arg(amount)
                    .arg(millis(period).max(1))
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        u64::try_from(count).map_err(|_| FleetError::Reply(format!("counter {key} is {count}")))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        _ => None,
    }
}

/// Reads the exchange script's reply: the lease (or nil), then a name,
/// a report and a TTL for every live node.
fn parse_exchange(reply: Value) -> Result<Exchanged, FleetError> {
    let unexpected = |what: &str| FleetError::Reply(format!("exchange: {what}"));
    let Value::Array(items) = reply else {
        return Err(unexpected("not an array"));
    };
    let mut items = items.into_iter();
    let lease = match items.next() {
        Some(Value::Nil) => None,
        Some(value) => Some(text(value).ok_or_else(|| unexpected("lease is not text"))?),
        None => return Err(unexpected("empty")),
    };
    let mut reports = Vec::new();
    while let Some(name) = items.next() {
        let (Some(report), Some(Value::Int(ttl))) = (items.next(), items.next()) else {
            return Err(unexpected("a node without report or TTL"));
        };
        match (text(name), text(report)) {
            (Some(name), Some(report)) => reports.push((name, report, ttl)),
            _ => return Err(unexpected("a name or report is not text")),
        }
    }
    Ok(Exchanged { lease, reports })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn an_exchange_reply_reads_back() {
        let reply = Value::Array(vec![
            bulk("b 7"),
            bulk("a"),
            bulk("{}"),
            Value::Int(900),
            bulk("b"),
            bulk("{\"node\":\"b\"}"),
            Value::Int(400),
        ]);
        let exchanged = parse_exchange(reply).unwrap();
        assert_eq!(exchanged.lease.as_deref(), Some("b 7"));
        assert_eq!(exchanged.reports.len(), 2);
        assert_eq!(
            exchanged.reports[1],
            ("b".into(), "{\"node\":\"b\"}".into(), 400)
        );
        let vacant = parse_exchange(Value::Array(vec![Value::Nil])).unwrap();
        assert_eq!(vacant, Exchanged::default());
    }

    #[test]
    fn a_malformed_exchange_reply_is_an_error() {
        for reply in [
            Value::Nil,
            Value::Array(vec![]),
            Value::Array(vec![Value::Nil, bulk("a"), bulk("{}")]),
            Value::Array(vec![Value::Nil, bulk("a"), bulk("{}"), bulk("x")]),
            Value::Array(vec![Value::Int(1)]),
        ] {
            assert!(matches!(parse_exchange(reply), Err(FleetError::Reply(_))));
        }
    }
}
