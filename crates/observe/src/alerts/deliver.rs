//! Delivers alert events: a log line always (`warn` when an alert fires,
//! `info` when it resolves), and a JSON `POST` to the operator's webhook
//! when one is configured.
//!
//! A webhook receiver is often down exactly when things go wrong, so a
//! failed delivery (transport error, timeout or non-2xx answer) is retried
//! with exponential backoff and jitter (the sync engine's [`Backoff`]) up to
//! a number of attempts. Events are delivered one at a time in order, so a
//! resolve never overtakes its firing; the queue is bounded, and events
//! beyond it are logged and dropped rather than piling up in memory.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{AlertEvent, AlertState};
use cvdmirror_formats::backoff::Backoff;

/// Events waiting for delivery at most.
pub const QUEUE: usize = 256;

/// Where and how alerts are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL.
    pub url: String,
    /// Time limit of one attempt.
    pub timeout: Duration,
    /// Attempts per event (at least 1).
    pub attempts: u32,
    /// First retry delay (doubles, with jitter, up to a minute).
    pub retry_base: Duration,
}

/// The sending half: where the alert engine puts its events.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<AlertEvent>,
}

impl Outbox {
    /// Logs `event` now and queues it for the webhook.
    pub fn send(&self, event: AlertEvent) {
        match event.state {
            AlertState::Firing => {
                tracing::warn!(alert = event.alert, values = %event.values, "ALERT: {}", event.summary)
            }
            AlertState::Resolved => {
                tracing::info!(alert = event.alert, values = %event.values, "alert {}", event.summary)
            }
        }
        if let Err(e) = self.tx.try_send(event) {
            tracing::warn!(error = %e, "alert queue full; webhook delivery dropped");
        }
    }
}

/// A queue whose events [`run`] delivers.
pub fn outbox() -> (Outbox, mpsc::Receiver<AlertEvent>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (Outbox { tx }, rx)
}

/// Posts queued events to `webhook` until `shutdown` (without a webhook,
/// just drains the queue: the log line was written when queued).
pub async fn run(
    mut events: mpsc::Receiver<AlertEvent>,
    webhook: Option<WebhookConfig>,
    shutdown: CancellationToken,
) {
    let client = match &webhook {
        Some(w) => {
            // One process-wide TLS provider; installing twice is harmless.
            let _ = rustls::crypto::ring::default_provider().install_default();
            match reqwest::Client::builder()
                .user_agent(concat!("cvdmirror/", env!("CARGO_PKG_VERSION")))
                .timeout(w.timeout)
                .build()
            {
                Ok(client) => Some(client),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the webhook client; alerts are only logged");
                    None
                }
            }
        }
        None => None,
    };
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        if let (Some(client), Some(webhook)) = (&client, &webhook) {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = post(client, webhook, &event) => {}
            }
        }
    }
}

async fn post(client: &reqwest::Client, webhook: &WebhookConfig, event: &AlertEvent) {
    let mut backoff = Backoff::new(webhook.retry_base, Duration::from_secs(60));
    let attempts = webhook.attempts.max(1);
    let body = match serde_json::to_vec(event) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the alert");
            return;
        }
    };
    for attempt in 1..=attempts {
        let outcome = client
            .post(&webhook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let problem = match outcome {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => format!("answered {}", response.status()),
            Err(e) => e.to_string(),
        };
        if attempt == attempts {
            tracing::error!(alert = event.alert, url = %webhook.url, %problem, attempts, "webhook delivery failed; giving up");
            return;
        }
        let delay = backoff.next_delay(&mut rand::rng());
        tracing::warn!(alert = event.alert, url = %webhook.url, %problem, retry_in = ?delay, "webhook delivery failed; retrying");
        tokio::time::sleep(delay).await;
    }
}
