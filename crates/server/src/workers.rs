//! The threads that serve connections: one single-threaded tokio runtime
//! per worker, each watching every listener, the way nginx runs one event
//! loop per worker process.
//!
//! A connection stays on the thread that accepted it, so its reads, writes
//! and timers never hop between threads: a multi-threaded runtime's work
//! stealing and cross-thread wake-ups are what a small request (a header
//! check, a `304`) costs most (see BENCHMARKS.md). Every worker listens on
//! each address with a socket of its own (the first worker with the one
//! bound at startup, the others with its `SO_REUSEPORT` siblings), so a new
//! connection wakes exactly one worker. Shared state (the shaper, limits, counters) is behind `Arc`s and
//! works from any thread; the pacer and the background tasks stay on the
//! main runtime.

use std::future::Future;
use std::io;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::runtime::{Builder, Runtime};
use tokio_util::sync::CancellationToken;

/// Running worker threads.
pub(super) struct Workers {
    threads: Vec<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `count` workers. For each, `accept` is called with that
    /// worker's own sockets on the addresses of `listeners` (on the calling thread,
    /// inside the worker's runtime) and returns the accept loops the worker
    /// then runs; the worker keeps running what they spawn until
    /// [`stop`](Self::stop).
    pub(super) fn start<F, L>(
        count: usize,
        listeners: &[std::net::TcpListener],
        mut accept: F,
    ) -> io::Result<Self>
    where
        F: FnMut(Vec<TcpListener>) -> Vec<L>,
        L: Future<Output = ()> + Send + 'static,
    {
        let mut prepared = Vec::with_capacity(count);
        for worker in 0..count {
            // Sockets and timers only: signals and child processes are the
            // main runtime's, and their drivers would be polled on every turn.
            let runtime = Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()?;
            let loops = {
                let _inside = runtime.enter();
                let copies = listeners
                    .iter()
                    .map(|l| {
                        // The first worker takes the bound socket itself.
                        let own = if worker == 0 {
                            l.try_clone()?
                        } else {
                            super::listen::sibling(l)?
                        };
                        TcpListener::from_std(own)
                    })
                    .collect::<io::Result<Vec<_>>>()?;
                accept(copies)
            };
            prepared.push((runtime, loops));
        }
        let mut workers = Self {
            threads: Vec::with_capacity(count),
            stop: CancellationToken::new(),
        };
        for (i, (runtime, loops)) in prepared.into_iter().enumerate() {
            let stop = workers.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("cvdmirror-worker-{i}"))
                .spawn(move || run(&runtime, loops, &stop));
            match thread {
                Ok(thread) => workers.threads.push(thread),
                Err(e) => {
                    // The ones started see the token at once and end; wait
                    // for them so a failed start leaves no thread behind.
                    workers.stop.cancel();
                    for thread in workers.threads.drain(..) {
                        if thread.join().is_err() {
                            tracing::error!("a worker thread panicked");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(workers)
    }

    /// Ends every worker (whatever still runs on them is dropped) and waits
    /// for their threads.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        let threads = self.threads;
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                if thread.join().is_err() {
                    tracing::error!("a worker thread panicked");
                }
            }
        })
        .await;
        if let Err(e) = joined {
            tracing::error!(error = %e, "could not wait for the worker threads");
        }
    }
}

/// A worker's thread: its accept loops, then whatever they spawn, until
/// `stop`.
fn run<L>(runtime: &Runtime, loops: Vec<L>, stop: &CancellationToken)
where
    L: Future<Output = ()> + Send + 'static,
{
    runtime.block_on(async {
        for accept in loops {
            tokio::spawn(accept);
        }
        stop.cancelled().await;
    });
}
