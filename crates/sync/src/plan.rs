//! Decides what one database needs from upstream, as a pure function of what
//! is published and what upstream advertises.
//!
//! The order matters to clients: cdiffs are fetched first (they are small
//! and they are what up-to-date clients need), the whole CVD last and only
//! when the version changed. A version advertised below ours means upstream
//! (or its DNS) is behind: we keep what we have.

use std::collections::BTreeSet;

/// What is known about one database before a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbState {
    /// Database name (`daily`).
    pub name: String,
    /// Version of the published `<name>.cvd`, if any.
    pub published: Option<u32>,
    /// Versions of the `<name>-N.cdiff` files already published.
    pub cdiffs: BTreeSet<u32>,
    /// Version upstream advertises.
    pub advertised: u32,
}

/// What to do for one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Published version equals the advertised one.
    UpToDate,
    /// Upstream advertises an older version than ours; nothing is fetched.
    UpstreamBehind {
        /// Our version.
        published: u32,
        /// Theirs.
        advertised: u32,
    },
    /// Fetch and publish.
    Update(Update),
}

/// The fetches that bring a database to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Version to publish.
    pub target: u32,
    /// cdiff versions to fetch, ascending. Those above `required_above` are
    /// required: the CVD is published only with the cdiffs that lead to it.
    pub cdiffs: Vec<u32>,
    /// cdiff versions at or below this are history (backfill): fetched if
    /// upstream has them, not required.
    pub required_above: u32,
    /// Whether the whole CVD must be fetched.
    pub cvd: bool,
}

/// Plans one database. `backfill` is how many versions of cdiff history a
/// mirror without that history fetches, so clients a few versions behind
/// can patch instead of downloading the whole database.
pub fn plan(state: &DbState, backfill: u32) -> Plan {
    let target = state.advertised;
    match state.published {
        Some(published) if published == target => {
            let cdiffs = missing_history(state, target, backfill);
            if cdiffs.is_empty() {
                Plan::UpToDate
            } else {
                Plan::Update(Update {
                    target,
                    cdiffs,
                    required_above: target,
                    cvd: false,
                })
            }
        }
        Some(published) if published > target => Plan::UpstreamBehind {
            published,
            advertised: target,
        },
        published => {
            // Patches from our version on are required, but only within the
            // history window: a mirror offline for months cannot wait for
            // cdiffs upstream has long deleted.
            let required_above = published
                .unwrap_or(target)
                .max(target.saturating_sub(backfill));
            Plan::Update(Update {
                target,
                cdiffs: missing_history(state, target, backfill),
                required_above,
                cvd: true,
            })
        }
    }
}

/// cdiffs from `target - backfill + 1` (or just past the published version,
/// whichever is lower) up to `target` that are not published yet.
fn missing_history(state: &DbState, target: u32, backfill: u32) -> Vec<u32> {
    let history_from = target.saturating_sub(backfill).saturating_add(1).max(1);
    let from = state
        .published
        .map_or(history_from, |p| history_from.min(p.saturating_add(1)));
    (from..=target)
        .filter(|v| !state.cdiffs.contains(v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(published: Option<u32>, cdiffs: &[u32], advertised: u32) -> DbState {
        DbState {
            name: "daily".into(),
            published,
            cdiffs: cdiffs.iter().copied().collect(),
            advertised,
        }
    }

    #[test]
    fn up_to_date_with_full_history_fetches_nothing() {
        assert_eq!(plan(&state(Some(10), &[8, 9, 10], 10), 3), Plan::UpToDate);
    }

    #[test]
    fn behind_fetches_cdiffs_first_then_the_cvd() {
        let p = plan(&state(Some(10), &[9, 10], 13), 3);
        assert_eq!(
            p,
            Plan::Update(Update {
                target: 13,
                cdiffs: vec![11, 12, 13],
                required_above: 10,
                cvd: true
            })
        );
    }

    #[test]
    fn fresh_mirror_backfills_history_but_only_requires_the_cvd() {
        let p = plan(&state(None, &[], 100), 3);
        assert_eq!(
            p,
            Plan::Update(Update {
                target: 100,
                cdiffs: vec![98, 99, 100],
                required_above: 100,
                cvd: true
            })
        );
    }

    #[test]
    fn a_mirror_far_behind_requires_only_the_history_window() {
        let Plan::Update(u) = plan(&state(Some(10), &[], 100), 3) else {
            panic!("no update")
        };
        assert_eq!(u.required_above, 97);
        assert_eq!(u.cdiffs, (11..=100).collect::<Vec<_>>());
    }

    #[test]
    fn upstream_behind_us_changes_nothing() {
        assert_eq!(
            plan(&state(Some(10), &[], 9), 3),
            Plan::UpstreamBehind {
                published: 10,
                advertised: 9
            }
        );
    }

    #[test]
    fn missing_history_is_filled_without_the_cvd() {
        let p = plan(&state(Some(10), &[10], 10), 3);
        assert_eq!(
            p,
            Plan::Update(Update {
                target: 10,
                cdiffs: vec![8, 9],
                required_above: 10,
                cvd: false
            })
        );
    }

    proptest! {
        #[test]
        fn plans_are_ascending_unique_and_never_past_the_target(
            published in proptest::option::of(0u32..200),
            cdiffs in proptest::collection::btree_set(0u32..200, 0..20),
            advertised in 0u32..200,
            backfill in 0u32..50,
        ) {
            let s = DbState { name: "d".into(), published, cdiffs: cdiffs.clone(), advertised };
            if let Plan::Update(u) = plan(&s, backfill) {
                prop_assert!(u.cdiffs.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(u.cdiffs.iter().all(|v| *v <= u.target && *v >= 1 && !cdiffs.contains(v)));
                // Every required version is planned or present.
                if published.is_some() {
                    for v in u.required_above + 1..=u.target {
                        prop_assert!(u.cdiffs.contains(&v) || cdiffs.contains(&v));
                    }
                }
                prop_assert_eq!(u.cvd, published != Some(advertised));
            }
        }
    }
}
