//! The cdiff-404 fallback in the report: clients that missed a patch and
//! fetched the whole database instead, over the whole log and within each
//! episode (with the downloads that were aborted and will be repeated).

use std::collections::{HashMap, HashSet};

use super::{EpisodeFallback, Fallback, PatchRow};
use crate::aggregate::Analyzer;
use crate::chains::Chain;
use crate::sizes::FileVerdict;

pub(super) fn all_fallback(a: &Analyzer, top: usize) -> Fallback {
    let mut per: HashMap<(u32, u32), (HashSet<u64>, u64, u64)> = HashMap::new();
    for (client, chain) in a.chains.each() {
        let e = per.entry((chain.patch, chain.file)).or_default();
        e.0.insert(client);
        e.1 += 1;
        e.2 = e.2.saturating_add(chain.bytes);
    }
    let mut patches: Vec<PatchRow> = per
        .into_iter()
        .map(|((p, f), (clients, downloads, bytes))| PatchRow {
            patch: a.chains.name(p).to_owned(),
            file: a.chains.name(f).to_owned(),
            clients: clients.len() as u64,
            downloads,
            bytes,
        })
        .collect();
    patches.sort_by(|x, y| y.clients.cmp(&x.clients).then(x.patch.cmp(&y.patch)));
    patches.truncate(top);
    Fallback {
        clients: a.chains.clients() as u64,
        at_least: a.chains.untracked_chains > 0,
        chains: a.chains.total_chains,
        bytes: a.chains.total_bytes,
        patches,
        top_clients: a.chains.top_clients(top),
        window_secs: a.options.chain_window_secs,
    }
}

pub(super) fn episode_fallback(
    a: &Analyzer,
    chains: &[(u64, Chain)],
    verdicts: &[FileVerdict],
) -> Option<EpisodeFallback> {
    let mut per_patch: HashMap<(u32, u32), HashSet<u64>> = HashMap::new();
    let mut all = HashSet::new();
    for (client, chain) in chains {
        per_patch
            .entry((chain.patch, chain.file))
            .or_default()
            .insert(*client);
        all.insert(*client);
    }
    let (&(patch, file), clients) = per_patch
        .iter()
        .max_by(|x, y| x.1.len().cmp(&y.1.len()).then(y.0.cmp(x.0)))?;
    let (mut downloads, mut bytes, mut aborted, mut wasted) = (0u64, 0u64, 0u64, 0u64);
    let file_name = a.chains.name(file);
    let full = verdicts
        .iter()
        .find(|v| v.file == file_name)
        .map(|v| v.full_sizes.as_slice());
    for (_, chain) in chains
        .iter()
        .filter(|(k, c)| c.patch == patch && clients.contains(k))
    {
        downloads += 1;
        bytes = bytes.saturating_add(chain.bytes);
        let largest = full.and_then(|f| f.first()).copied().unwrap_or(0);
        if !full.is_some_and(|f| f.contains(&chain.bytes)) && chain.bytes < largest {
            aborted += 1;
            wasted = wasted.saturating_add(chain.bytes);
        }
    }
    Some(EpisodeFallback {
        patch: a.chains.name(patch).to_owned(),
        file: file_name.to_owned(),
        clients: clients.len() as u64,
        all_clients: all.len() as u64,
        downloads,
        bytes,
        aborted,
        wasted_bytes: wasted,
    })
}
