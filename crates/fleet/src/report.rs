//! What one node tells the others each heartbeat: the files it publishes
//! (size, SHA-256, version), the version of each database, how loaded its
//! link is and whether its sync works. It travels as JSON under
//! `{prefix}:node:{name}` and expires with the node TTL, so a node that
//! stops reporting leaves the fleet by itself. Unknown fields are ignored
//! and missing ones take their defaults, so nodes of neighbouring versions
//! can share a fleet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One node's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeReport {
    /// The node's name (the fleet fills it in from its configuration).
    pub node: String,
    /// Where clients reach the node (filled in from the configuration).
    pub public_url: String,
    /// Every published file by name (`daily.cvd`, `daily-27480.cdiff`, …).
    pub files: BTreeMap<String, PublishedFile>,
    /// The published version of each database (`daily` → 27480).
    pub versions: BTreeMap<String, u32>,
    /// The node's link: capacity and current load.
    pub link: LinkLoad,
    /// Whether the node's sync works.
    pub sync: SyncState,
    /// When the report was written, in Unix seconds (filled in by the
    /// fleet).
    pub reported_at: u64,
}

/// One published file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishedFile {
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256 in lowercase hex.
    pub sha256: String,
    /// The database version it carries, when it carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

/// A node's link in bytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkLoad {
    /// What the node may send in all, when it is known.
    pub capacity: Option<u64>,
    /// What it sends now.
    pub load: u64,
}

impl LinkLoad {
    /// A node has headroom when its capacity is known and it sends less
    /// than 90 % of it: only such a node takes redirected clients, and it
    /// would not redirect them on itself.
    pub fn has_headroom(&self) -> bool {
        self.capacity
            .is_some_and(|capacity| u128::from(self.load) * 10 < u128::from(capacity) * 9)
    }

    /// Capacity not in use, zero when the capacity is unknown.
    pub fn free(&self) -> u64 {
        self.capacity
            .map_or(0, |capacity| capacity.saturating_sub(self.load))
    }
}

/// The state of a node's sync.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SyncState {
    /// Whether the last pass worked.
    pub health: SyncHealth,
    /// The last successful pass, in Unix seconds.
    pub last_success: Option<u64>,
}

/// Whether a node's sync works.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum SyncHealth {
    /// The last pass worked.
    #[default]
    Ok,
    /// The last pass failed.
    Failing {
        /// Why, in a line.
        reason: String,
    },
}

pub(crate) use cvdmirror_formats::calendar::unix_now;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_travels_as_json() {
        let mut report = NodeReport {
            node: "a".to_owned(),
            public_url: "https://a.example.org".to_owned(),
            link: LinkLoad {
                capacity: Some(1_000),
                load: 10,
            },
            sync: SyncState {
                health: SyncHealth::Failing {
                    reason: "upstream 503".to_owned(),
                },
                last_success: Some(1_700_000_000),
            },
            reported_at: 1_700_000_100,
            ..NodeReport::default()
        };
        report.versions.insert("daily".to_owned(), 27480);
        report.files.insert(
            "daily.cvd".to_owned(),
            PublishedFile {
                size: 1234,
                sha256: "ab".repeat(32),
                version: Some(27480),
            },
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["versions"]["daily"], 27480);
        assert_eq!(json["files"]["daily.cvd"]["size"], 1234);
        assert_eq!(json["sync"]["health"]["state"], "failing");
        assert_eq!(json["sync"]["health"]["reason"], "upstream 503");
        let back: NodeReport = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_ones_defaulted() {
        let report: NodeReport =
            serde_json::from_str(r#"{"node":"b","future":1,"versions":{"main":62}}"#).unwrap();
        assert_eq!(report.node, "b");
        assert_eq!(report.versions.get("main"), Some(&62));
        assert_eq!(report.sync.health, SyncHealth::Ok);
        assert_eq!(report.link.capacity, None);
    }

    #[test]
    fn headroom_needs_a_known_capacity_and_less_than_ninety_percent_load() {
        let link = |capacity, load| LinkLoad { capacity, load };
        assert!(link(Some(100), 89).has_headroom());
        assert!(!link(Some(100), 90).has_headroom());
        assert!(!link(None, 0).has_headroom());
        assert!(!link(Some(0), 0).has_headroom());
        assert!(link(Some(u64::MAX), u64::MAX / 2).has_headroom());
        assert_eq!(link(Some(100), 30).free(), 70);
        assert_eq!(link(Some(100), 130).free(), 0);
        assert_eq!(link(None, 0).free(), 0);
    }
}
