//! What can go wrong between a node and the fleet's Redis: a configuration
//! refused at start, a Redis call that failed or took longer than the
//! operation timeout, and a reply that is not what the fleet's scripts
//! return. Callers treat every runtime error the same way: the fleet is not
//! reachable just now, so they fall back to what the node knows alone.

use std::time::Duration;

use thiserror::Error;

/// An error of the fleet.
#[derive(Debug, Error)]
pub enum FleetError {
    /// The configuration cannot work (a bad URL, node name or duration).
    #[error("fleet configuration: {0}")]
    Config(String),
    /// Redis answered with an error, or the connection failed.
    #[error("redis: {0}")]
    Redis(String),
    /// Redis did not answer within the operation timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis answered with something the fleet's scripts never return.
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

impl From<redis::RedisError> for FleetError {
    fn from(error: redis::RedisError) -> Self {
        Self::Redis(error.to_string())
    }
}
