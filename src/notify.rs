//! The notifier role: budget alerts from the bus to webhooks.
//!
//! It reads `tollgate.alerts.v1` in order and delivers each alert to every
//! configured webhook (a generic JSON body or a Slack-compatible one, signed
//! with HMAC-SHA256 when a secret is set), retrying with backoff for as long
//! as it takes, and commits an alert only once every webhook took it. An
//! alert ID seen before (a crossing re-published after an accountant crash)
//! is delivered once: the IDs delivered before the group's committed offset
//! are re-read from the topic at start-up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::accounting::ledger::Alert;
use crate::bus::{ALERTS_TOPIC, BusError, BusRecord, Log, Subscription, history};
use crate::config::{WebhookConfig, WebhookFormat};
use crate::metrics::METRICS;

/// Consumer group of the notifier.
pub const NOTIFIER_GROUP: &str = "tollgate-notifier";
/// Longest wait between delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The running notifier.
pub struct Notifier {
    log: Arc<dyn Log>,
    subscription: Box<dyn Subscription>,
    webhooks: Vec<WebhookConfig>,
    http: reqwest::Client,
    /// Alert IDs already delivered; `None` until read at the first batch.
    delivered: Option<HashSet<String>>,
}

impl Notifier {
    pub async fn new(
        log: Arc<dyn Log>,
        webhooks: Vec<WebhookConfig>,
    ) -> Result<Notifier, BusError> {
        if webhooks.is_empty() {
            tracing::warn!(
                "no [[webhooks]] configured: budget alerts are logged and published, not delivered"
            );
        }
        Ok(Notifier {
            subscription: log.subscribe(NOTIFIER_GROUP, ALERTS_TOPIC).await?,
            log,
            webhooks,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            delivered: None,
        })
    }

    /// Runs until `stop`; an alert being retried when it comes stays
    /// uncommitted and is delivered after the next start.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), BusError> {
        while !stop.is_cancelled() {
            let records = tokio::select! {
                r = self.subscription.poll(100, Duration::from_millis(250)) => r?,
                _ = stop.cancelled() => break,
            };
            if let Some(first) = records.first() {
                if self.delivered.is_none() {
                    self.delivered = Some(
                        delivered_before(self.log.as_ref(), first.partition, first.offset).await?,
                    );
                }
            }
            for record in records {
                if !self.handle(&record, &stop).await {
                    return Ok(());
                }
                self.subscription
                    .commit(record.partition, record.offset + 1)
                    .await?;
            }
        }
        Ok(())
    }

    /// Delivers one alert everywhere; false if `stop` came first.
    async fn handle(&mut self, record: &BusRecord, stop: &CancellationToken) -> bool {
        let alert: Alert = match serde_json::from_slice(&record.payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(offset = record.offset, error = %e, "alert record unreadable; skipped");
                return true;
            }
        };
        let delivered = self.delivered.get_or_insert_with(HashSet::new);
        if !delivered.insert(alert.alert_id.clone()) {
            tracing::info!(alert_id = %alert.alert_id, "alert already delivered; not sent again");
            return true;
        }
        let mut pending: Vec<usize> = (0..self.webhooks.len()).collect();
        let mut backoff = Duration::from_secs(1);
        while !pending.is_empty() {
            let mut failed = Vec::new();
            for i in pending {
                let hook = &self.webhooks[i];
                let format = format_label(hook.format);
                match deliver(&self.http, hook, &alert).await {
                    Ok(()) => {
                        METRICS.alerts_delivered.with_label_values(&[format]).inc();
                        tracing::info!(alert_id = %alert.alert_id, url = %hook.url, "alert delivered");
                    }
                    Err(e) => {
                        METRICS
                            .alert_delivery_failures
                            .with_label_values(&[format])
                            .inc();
                        tracing::warn!(alert_id = %alert.alert_id, url = %hook.url, error = %e,
                            retry_in_s = backoff.as_secs(), "alert delivery failed; retrying");
                        failed.push(i);
                    }
                }
            }
            pending = failed;
            if !pending.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return false,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        true
    }
}

/// IDs of the alerts before `offset` (delivered by an earlier run).
async fn delivered_before(
    log: &dyn Log,
    partition: u32,
    offset: u64,
) -> Result<HashSet<String>, BusError> {
    let mut ids = HashSet::new();
    let Some(end) = offset.checked_sub(1) else {
        return Ok(ids);
    };
    let ends = HashMap::from([(partition, end)]);
    history::read_history(log, ALERTS_TOPIC, "notifier-history", ends, |r| {
        if let Ok(a) = serde_json::from_slice::<Alert>(&r.payload) {
            ids.insert(a.alert_id);
        }
    })
    .await?;
    Ok(ids)
}

fn format_label(f: WebhookFormat) -> &'static str {
    match f {
        WebhookFormat::Json => "json",
        WebhookFormat::Slack => "slack",
    }
}

/// The human sentence of an alert.
pub fn message(a: &Alert) -> String {
    let spent = match a.limit_usd {
        Some(limit) => format!("${} of ${limit}", a.spent_usd.round_dp(4)),
        None => format!(
            "{} of {} tokens",
            a.spent_tokens,
            a.limit_tokens.unwrap_or(0)
        ),
    };
    let resets = a
        .period_end
        .map(|e| {
            format!(
                "; resets {}",
                e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .unwrap_or_default();
    format!(
        "tollgate budget {} ({}) crossed {}%: {spent} spent{resets}",
        a.budget, a.subject, a.threshold
    )
}

/// The body a webhook gets.
pub fn body(format: WebhookFormat, a: &Alert) -> Bytes {
    let value = match format {
        WebhookFormat::Json => {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("type".into(), "budget_alert".into());
                o.insert("message".into(), message(a).into());
            }
            v
        }
        WebhookFormat::Slack => {
            serde_json::json!({ "text": format!(":rotating_light: {}", message(a)) })
        }
    };
    Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
}

/// `sha256=<hex>` of HMAC-SHA256(secret, body).
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(
    http: &reqwest::Client,
    hook: &WebhookConfig,
    alert: &Alert,
) -> Result<(), String> {
    let body = body(hook.format, alert);
    let mut request = http
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("x-tollgate-alert-id", &alert.alert_id);
    if let Some(secret) = hook.secret.as_deref().filter(|s| !s.is_empty()) {
        request = request.header("x-tollgate-signature", signature(secret, &body));
    }
    let response = request.body(body).send().await.map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
