//! `cvdmirror sync`: one pass, with progress bars on a terminal. Exits 0 only
//! when the served set is complete, verified and at the newest version
//! upstream advertises; otherwise the reason goes to stderr and the
//! previously published files stay served.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::config::flags::{ServeArgs, SyncCommandArgs};
use crate::config::{Config, DEFAULT_ROOT};
use crate::sync::signatures::DbSignatures;
use crate::sync::{DbOutcome, DbReport, Engine, Progress, Quiet};

/// Runs one pass.
pub async fn run(args: SyncCommandArgs) -> anyhow::Result<()> {
    let serve_args = ServeArgs {
        config: args.config,
        root: args.root,
        sync: args.sync,
        ..Default::default()
    };
    let config = Config::resolve(&serve_args)?;
    let root = config.default_site.root.clone();
    if root.as_path() == std::path::Path::new(DEFAULT_ROOT) {
        std::fs::create_dir_all(&root)?;
    } else if !root.is_dir() {
        bail!("root {} is not a directory", root.display());
    }
    let engine = Engine::new(config.sync.engine_config(root))?;
    let bars;
    let progress: &dyn Progress = if std::io::stderr().is_terminal() {
        bars = Bars::default();
        &bars
    } else {
        &Quiet
    };
    let report = engine.pass(progress).await?;
    let signatures = engine.status().borrow().signatures.clone();
    for db in &report.databases {
        println!("{}", outcome_line(db, &signatures, "upstream advertises"));
    }
    Ok(())
}

/// One line per database: its version, what the pass did, and the
/// signatures its files carry. `source` names where newer versions come
/// from (`upstream advertises`, `the bundle has`).
pub(crate) fn outcome_line(
    db: &DbReport,
    signatures: &BTreeMap<String, DbSignatures>,
    source: &str,
) -> String {
    let version = db.after.map_or("-".to_owned(), |v| v.to_string());
    let what = match &db.outcome {
        DbOutcome::UpToDate => "up to date".to_owned(),
        DbOutcome::Updated => format!(
            "updated from {} ({} files)",
            db.before.map_or("nothing".to_owned(), |v| v.to_string()),
            db.fetched.len()
        ),
        DbOutcome::UpstreamBehind => {
            format!("{source} older version {}; kept ours", db.advertised)
        }
        DbOutcome::Failed(reason) => reason.clone(),
    };
    let signed = match signatures.get(&db.name) {
        Some(s) => match &s.sign {
            Some(by) => format!("; signatures: {} (.sign by {})", s.kinds(), by.signer),
            None => format!("; signatures: {}", s.kinds()),
        },
        None => String::new(),
    };
    format!("{:<12} {version:>8}  {what}{signed}", db.name)
}

/// One progress bar per download.
#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn bar(&self, name: &str) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.entry(name.to_owned())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(0));
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>24} {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_prefix(name.to_owned());
                bar.enable_steady_tick(Duration::from_millis(200));
                bar
            })
            .clone()
    }
}

impl Progress for Bars {
    fn started(&self, name: &str) {
        self.bar(name).set_position(0);
    }
    fn advanced(&self, name: &str, done: u64, total: Option<u64>) {
        let bar = self.bar(name);
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
    }
    fn finished(&self, name: &str, outcome: &str) {
        self.bar(name).finish_with_message(outcome.to_owned());
    }
}
