//! Where the demo's diagnostics go: not between the lines of its story.
//!
//! `cvdmirror demo` narrates on stdout. The servers it runs log like
//! `serve` does (sync passes, DNS queries, the alerts the scenario
//! provokes), and on the terminal those lines would bury the story. So the
//! demo runs its servers, clients and narrator on a runtime of its own
//! whose threads log through a subscriber of their own: everything at INFO
//! and above (or what `RUST_LOG` asks for) into a log file the demo names
//! at its start and end, and only ERRORs on stderr as well, since an
//! error means the demo itself went wrong.
//!
//! The process-wide subscriber `main` installs stays as it is; it only
//! sees events from threads outside the demo's runtime (the connection
//! workers, which log nothing below WARN).

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use tracing::Dispatch;
use tracing::dispatcher::DefaultGuard;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{Layer as _, Registry, fmt};

thread_local! {
    /// The demo's subscriber on this thread, while it is one of the demo
    /// runtime's.
    static SCOPE: RefCell<Option<DefaultGuard>> = const { RefCell::new(None) };
}

/// The demo's log: a file, and stderr for errors.
#[derive(Clone)]
pub struct DemoLog {
    path: PathBuf,
    dispatch: Dispatch,
}

impl DemoLog {
    /// Creates (or truncates) the log file at `path`.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let to_file = fmt::layer()
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .with_filter(filter);
        let errors = fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(LevelFilter::ERROR);
        let subscriber = Registry::default().with(to_file).with(errors);
        Ok(Self {
            path: path.to_path_buf(),
            dispatch: Dispatch::new(subscriber),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A multi-threaded runtime whose every thread (workers and blocking
    /// pool) logs here.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let dispatch = self.dispatch.clone();
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("cvdmirror-demo")
            .on_thread_start(move || {
                let guard = tracing::dispatcher::set_default(&dispatch);
                SCOPE.with(|scope| *scope.borrow_mut() = Some(guard));
            })
            .on_thread_stop(|| {
                SCOPE.with(|scope| scope.borrow_mut().take());
            })
            .build()
    }

    /// Runs `f` on this thread with this log as its subscriber.
    pub fn scope<T>(&self, f: impl FnOnce() -> T) -> T {
        tracing::dispatcher::with_default(&self.dispatch, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_logs_to_the_file_and_not_to_the_global_subscriber() {
        let dir = tempfile::tempdir().unwrap();
        let log = DemoLog::create(&dir.path().join("demo.log")).unwrap();
        let runtime = log.runtime().unwrap();
        log.scope(|| {
            runtime.block_on(async {
                tracing::info!("on the demo's thread");
                tokio::spawn(async { tracing::warn!(answer = 42, "on a worker") })
                    .await
                    .unwrap();
                tokio::task::spawn_blocking(|| tracing::info!("on the blocking pool"))
                    .await
                    .unwrap();
            });
        });
        drop(runtime);
        let text = std::fs::read_to_string(log.path()).unwrap();
        for line in [
            "INFO cvdmirror::demo::log::tests: on the demo's thread",
            "WARN cvdmirror::demo::log::tests: on a worker answer=42",
            "INFO cvdmirror::demo::log::tests: on the blocking pool",
        ] {
            assert!(text.contains(line), "no {line:?} in {text}");
        }
    }
}
