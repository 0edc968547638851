//! The notifier role: the accountant's budget and guard alerts from the
//! bus to webhooks (beside the accountant, whose alerts it delivers).
//!
//! It reads `tollgate.alerts.v1` in order and hands each alert to one
//! delivery task per configured webhook (a generic JSON body or a
//! Slack-compatible one, signed when a secret is set, see [`signature`]).
//! Each task has its own bounded queue and retries with backoff, so a
//! receiver that is down holds back only its own deliveries. An alert is
//! committed once every receiver is done with it: delivered, or dropped
//! (its queue was full, or it kept failing for [`NotifierOptions::give_up_after`])
//! — a drop is logged as an error and counted in
//! `tollgate_alert_drops_total{format,reason}`, never silent. An alert ID
//! seen before (a crossing re-published after an accountant crash) is
//! delivered once: the IDs delivered before the group's committed offset
//! are re-read from the topic at start-up.
//!
//! The set of webhooks is live ([`Notifier::follow`]): within a poll
//! (250 ms) of a change a new webhook gets its own task and queue, a
//! removed one takes no new alerts (what it already holds is still
//! delivered, so nothing in flight is lost), and a changed one (new URL
//! or secret) keeps its queue and delivers it with the new credential.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::accounting::ledger::Alert;
use crate::backoff::Backoff;
use crate::bus::{ALERTS_TOPIC, BusError, BusRecord, Log, Subscription, history};
use crate::metrics::METRICS;

pub mod config;

pub use config::{WebhookConfig, WebhookFormat};

/// Consumer group of the notifier.
pub const NOTIFIER_GROUP: &str = "tollgate-notifier";
/// Header with the Unix time (seconds) a delivery was signed at.
pub const TIMESTAMP_HEADER: &str = "x-tollgate-timestamp";
/// Header with `v1=<hex HMAC-SHA256 of "{timestamp}.{body}">`.
pub const SIGNATURE_HEADER: &str = "x-tollgate-signature";
/// Alerts read but not yet done by every receiver, at most: past this the
/// notifier stops reading until receivers catch up (or give up).
const MAX_IN_FLIGHT: usize = 4096;

/// The webhooks to deliver to, by id (as the control state names them).
pub type WebhookSet = Arc<Vec<(String, WebhookConfig)>>;

/// Delivery tuning; `Default` is what production uses.
#[derive(Debug, Clone)]
pub struct NotifierOptions {
    /// Alerts waiting per receiver; more are dropped (counted).
    pub queue_capacity: usize,
    /// Wait before the first retry; doubles up to `max_backoff`.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// How long one alert is retried before it is dropped (counted).
    pub give_up_after: Duration,
}

impl Default for NotifierOptions {
    /// 256 queued alerts per receiver, backoff 1 s to 30 s, retried for an hour.
    fn default() -> Self {
        NotifierOptions {
            queue_capacity: 256,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            give_up_after: Duration::from_secs(3600),
        }
    }
}

/// How many receivers still have to finish an alert; the notifier commits
/// an alert once this reaches zero.
struct Ticket {
    remaining: AtomicUsize,
    /// Woken when a ticket reaches zero (shared by all tickets).
    done: Arc<Notify>,
}

impl Ticket {
    /// One receiver is done with the alert (delivered or dropped).
    fn finish(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }

    /// Every receiver is done with the alert: it may be committed.
    fn is_done(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }
}

/// One alert queued for one receiver.
struct Delivery {
    alert: Arc<Alert>,
    ticket: Arc<Ticket>,
}

/// The notifier's end of one receiver's queue.
struct Receiver {
    queue: mpsc::Sender<Delivery>,
    /// The task's webhook, replaced in place when its URL or secret
    /// changes (its queue then goes to the new one).
    hook: watch::Sender<WebhookConfig>,
    format: &'static str,
    /// For logs: never the full URL.
    url: String,
}

/// The running notifier.
pub struct Notifier {
    log: Arc<dyn Log>,
    subscription: Box<dyn Subscription>,
    /// The webhooks wanted now; followed while running.
    webhooks: watch::Receiver<WebhookSet>,
    /// One per webhook delivered to, by id.
    receivers: BTreeMap<String, Receiver>,
    options: NotifierOptions,
    http: reqwest::Client,
    /// Alert IDs already delivered; `None` until read at the first batch.
    delivered: Option<HashSet<String>>,
}

impl Notifier {
    /// Joins the notifier group with the default [`NotifierOptions`].
    pub async fn new(
        log: Arc<dyn Log>,
        webhooks: Vec<WebhookConfig>,
    ) -> Result<Notifier, BusError> {
        Notifier::with_options(log, webhooks, NotifierOptions::default()).await
    }

    /// Joins the notifier group with explicit delivery tuning and a fixed
    /// set of webhooks.
    pub async fn with_options(
        log: Arc<dyn Log>,
        webhooks: Vec<WebhookConfig>,
        options: NotifierOptions,
    ) -> Result<Notifier, BusError> {
        let set = webhooks
            .into_iter()
            .enumerate()
            .map(|(i, w)| (format!("webhook-{i}"), w))
            .collect();
        let (_, webhooks) = watch::channel(Arc::new(set));
        Notifier::follow(log, webhooks, options).await
    }

    /// Joins the notifier group; delivers to the webhooks `webhooks`
    /// holds, following its changes.
    pub async fn follow(
        log: Arc<dyn Log>,
        webhooks: watch::Receiver<WebhookSet>,
        options: NotifierOptions,
    ) -> Result<Notifier, BusError> {
        if webhooks.borrow().is_empty() {
            tracing::warn!(
                "no webhooks configured yet: budget alerts are logged and published, not delivered"
            );
        }
        Ok(Notifier {
            subscription: log.subscribe(NOTIFIER_GROUP, ALERTS_TOPIC).await?,
            log,
            webhooks,
            receivers: BTreeMap::new(),
            options,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            delivered: None,
        })
    }

    /// Runs until `stop`; alerts not yet done by every receiver then stay
    /// uncommitted and are delivered again after the next start (receivers
    /// may see one twice: `x-tollgate-alert-id` tells them).
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), BusError> {
        let done = Arc::new(Notify::new());
        self.reconcile(&stop);
        let mut in_flight: VecDeque<(u32, u64, Arc<Ticket>)> = VecDeque::new();
        while !stop.is_cancelled() {
            // A closed channel (a fixed set) never changes.
            if matches!(self.webhooks.has_changed(), Ok(true)) {
                self.reconcile(&stop);
            }
            commit_done(self.subscription.as_mut(), &mut in_flight).await?;
            if in_flight.len() >= MAX_IN_FLIGHT {
                tokio::select! {
                    _ = done.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop.cancelled() => break,
                }
                continue;
            }
            let records = tokio::select! {
                r = self.subscription.poll(100, Duration::from_millis(250)) => r?,
                _ = stop.cancelled() => break,
            };
            if let Some(first) = records.first()
                && self.delivered.is_none()
            {
                self.delivered =
                    Some(delivered_before(self.log.as_ref(), first.partition, first.offset).await?);
            }
            for record in records {
                let ticket = self.dispatch(&record, &done);
                in_flight.push_back((record.partition, record.offset, ticket));
            }
        }
        Ok(())
    }

    /// Makes the receivers match the wanted webhooks: a task for each new
    /// one, the new credential for each changed one; a removed one's queue
    /// is closed, so its task delivers what it holds and ends.
    fn reconcile(&mut self, stop: &CancellationToken) {
        let wanted = self.webhooks.borrow_and_update().clone();
        self.receivers.retain(|id, r| {
            let keep = wanted.iter().any(|(w, _)| w == id);
            if !keep {
                tracing::info!(webhook = %id, url = %r.url, "webhook removed: it takes no new alerts");
            }
            keep
        });
        for (id, hook) in wanted.iter() {
            match self.receivers.get_mut(id) {
                Some(r) if *r.hook.borrow() != *hook => {
                    r.hook.send_replace(hook.clone());
                    r.format = format_label(hook.format);
                    r.url = hook.redacted_url();
                    tracing::info!(webhook = %id, url = %r.url, "webhook changed");
                }
                Some(_) => {}
                None => {
                    let receiver = self.spawn_receiver(hook, stop);
                    tracing::info!(webhook = %id, url = %receiver.url, "webhook added");
                    self.receivers.insert(id.clone(), receiver);
                }
            }
        }
    }

    /// One delivery task with its bounded queue.
    fn spawn_receiver(&self, hook: &WebhookConfig, stop: &CancellationToken) -> Receiver {
        // Each format's delivery series start at 0, so a dashboard shows
        // "none yet" rather than "No data".
        let format = format_label(hook.format);
        METRICS.alerts_delivered.with_label_values(&[format]);
        METRICS.alert_delivery_failures.with_label_values(&[format]);
        let (tx, rx) = mpsc::channel(self.options.queue_capacity.max(1));
        let (hook_tx, hook_rx) = watch::channel(hook.clone());
        let task = DeliveryTask {
            http: self.http.clone(),
            hook: hook_rx,
            options: self.options.clone(),
            stop: stop.clone(),
        };
        tokio::spawn(task.run(rx));
        Receiver {
            queue: tx,
            hook: hook_tx,
            format,
            url: hook.redacted_url(),
        }
    }

    /// Queues one alert for every receiver; the ticket says when all are
    /// done with it (at once for a record that is unreadable or seen before).
    fn dispatch(&mut self, record: &BusRecord, done: &Arc<Notify>) -> Arc<Ticket> {
        let alert = self.new_alert(record);
        let receivers = &self.receivers;
        let ticket = Arc::new(Ticket {
            remaining: AtomicUsize::new(if alert.is_some() { receivers.len() } else { 0 }),
            done: done.clone(),
        });
        let Some(alert) = alert else { return ticket };
        let alert = Arc::new(alert);
        for r in receivers.values() {
            let delivery = Delivery {
                alert: alert.clone(),
                ticket: ticket.clone(),
            };
            if let Err(e) = r.queue.try_send(delivery) {
                let reason = match e {
                    mpsc::error::TrySendError::Full(_) => "queue_full",
                    mpsc::error::TrySendError::Closed(_) => "receiver_stopped",
                };
                METRICS
                    .alert_drops
                    .with_label_values(&[r.format, reason])
                    .inc();
                tracing::error!(alert_id = %alert.alert_id, url = %r.url, reason,
                    "alert dropped for this webhook: its delivery queue is full (the receiver is down or slow)");
                ticket.finish();
            }
        }
        ticket
    }

    /// The alert a record holds, unless unreadable or delivered before.
    fn new_alert(&mut self, record: &BusRecord) -> Option<Alert> {
        let alert: Alert = match serde_json::from_slice(&record.payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(offset = record.offset, error = %e, "alert record unreadable; skipped");
                return None;
            }
        };
        let delivered = self.delivered.get_or_insert_with(HashSet::new);
        if !delivered.insert(alert.alert_id.clone()) {
            tracing::info!(alert_id = %alert.alert_id, "alert already delivered; not sent again");
            return None;
        }
        Some(alert)
    }
}

/// Commits, per partition, past the longest prefix of `in_flight` that
/// every receiver is done with.
async fn commit_done(
    subscription: &mut dyn Subscription,
    in_flight: &mut VecDeque<(u32, u64, Arc<Ticket>)>,
) -> Result<(), BusError> {
    let mut next: HashMap<u32, u64> = HashMap::new();
    while in_flight.front().is_some_and(|(_, _, t)| t.is_done()) {
        if let Some((partition, offset, _)) = in_flight.pop_front() {
            next.insert(partition, offset + 1);
        }
    }
    for (partition, offset) in next {
        subscription.commit(partition, offset).await?;
    }
    Ok(())
}

/// Delivers one receiver's queue in order, retrying each alert with
/// backoff until it is taken or `give_up_after` passes.
struct DeliveryTask {
    http: reqwest::Client,
    /// Read at each attempt: a changed webhook's queue goes to its new URL.
    hook: watch::Receiver<WebhookConfig>,
    options: NotifierOptions,
    stop: CancellationToken,
}

impl DeliveryTask {
    /// Takes alerts off the queue one at a time until stopped.
    async fn run(self, mut queue: mpsc::Receiver<Delivery>) {
        loop {
            let delivery = tokio::select! {
                d = queue.recv() => d,
                _ = self.stop.cancelled() => None,
            };
            let Some(delivery) = delivery else { return };
            if !self.deliver_with_retries(&delivery.alert).await {
                // Stopping: the ticket stays open, the alert uncommitted.
                return;
            }
            delivery.ticket.finish();
        }
    }

    /// True once the alert is delivered or dropped; false if stopped first.
    async fn deliver_with_retries(&self, alert: &Alert) -> bool {
        let started = Instant::now();
        let mut backoff = Backoff::new(self.options.first_backoff, self.options.max_backoff);
        loop {
            let hook = self.hook.borrow().clone();
            let (format, url) = (format_label(hook.format), hook.redacted_url());
            let error = match deliver(&self.http, &hook, alert).await {
                Ok(()) => {
                    METRICS.alerts_delivered.with_label_values(&[format]).inc();
                    tracing::info!(alert_id = %alert.alert_id, %url, "alert delivered");
                    return true;
                }
                Err(e) => e,
            };
            METRICS
                .alert_delivery_failures
                .with_label_values(&[format])
                .inc();
            let left = self.options.give_up_after.saturating_sub(started.elapsed());
            if left.is_zero() {
                METRICS
                    .alert_drops
                    .with_label_values(&[format, "retries_exhausted"])
                    .inc();
                tracing::error!(alert_id = %alert.alert_id, %url, error = %error,
                    retried_s = started.elapsed().as_secs(), "alert dropped for this webhook: it kept failing");
                return true;
            }
            let wait = backoff.next_wait().min(left);
            tracing::warn!(alert_id = %alert.alert_id, %url, error = %error,
                retry_in_ms = wait.as_millis() as u64, "alert delivery failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return false,
            }
        }
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

/// The `format` label of delivery metrics.
fn format_label(f: WebhookFormat) -> &'static str {
    match f {
        WebhookFormat::Json => "json",
        WebhookFormat::Slack => "slack",
    }
}

/// The human sentence of an alert.
pub fn message(a: &Alert) -> String {
    if let Some(g) = &a.guard {
        let then = if g.blocked {
            format!(
                "; its requests are refused until an admin resumes it (POST /v1/sessions/{}/resume)",
                g.session
            )
        } else {
            String::new()
        };
        return format!(
            "tollgate guard {} tripped in session {} (key {}): {}{then}",
            a.budget, g.session, g.key_id, g.reason
        );
    }
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
                let kind = if a.guard.is_some() {
                    "guard_alert"
                } else {
                    "budget_alert"
                };
                o.insert("type".into(), kind.into());
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

/// `v1=<hex>` of HMAC-SHA256(secret, "{timestamp}.{body}"): the
/// timestamp is signed with the body, so a receiver that checks it is
/// recent (see [`verify`]) cannot be fed a captured delivery again later.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("v1={}", hex::encode(mac(secret, timestamp, body)))
}

/// The raw HMAC of a signed delivery.
fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Why a receiver should reject a delivery.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("x-tollgate-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error(
        "delivery signed {age_s} s from now, beyond the {tolerance_s} s tolerance (replayed or clock skew)"
    )]
    Stale { age_s: i64, tolerance_s: i64 },
    #[error("x-tollgate-signature is not v1=<hex HMAC-SHA256>")]
    BadSignatureHeader,
    #[error("x-tollgate-signature does not match the body and timestamp")]
    Mismatch,
}

/// What a receiver does with a delivery (the reference for README's
/// receiver check): the timestamp header must be within `tolerance` of
/// `now` (Unix seconds) and the signature must be the HMAC of
/// `"{timestamp}.{body}"`, compared in constant time.
pub fn verify(
    secret: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let tolerance_s = tolerance.as_secs() as i64;
    let age_s = now.saturating_sub(ts);
    if age_s.abs() > tolerance_s {
        return Err(SignatureError::Stale { age_s, tolerance_s });
    }
    let given = signature
        .strip_prefix("v1=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::BadSignatureHeader)?;
    let mut check =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    check.update(format!("{ts}.").as_bytes());
    check.update(body);
    check
        .verify_slice(&given)
        .map_err(|_| SignatureError::Mismatch)
}

/// One attempt: POSTs the alert, signed at this moment. Errors never
/// carry the URL (it may hold the receiver's credential).
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
        let now = chrono::Utc::now().timestamp();
        request = request
            .header(TIMESTAMP_HEADER, now.to_string())
            .header(SIGNATURE_HEADER, signature(secret, now, &body));
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::bus::local::LocalBus;

    #[test]
    fn signature_covers_the_timestamp_and_the_body() {
        // Python: hmac.new(b"Jefe", b'1700000000.{"a":1}', sha256).hexdigest()
        assert_eq!(
            signature("Jefe", 1_700_000_000, br#"{"a":1}"#),
            "v1=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
        assert_ne!(
            signature("Jefe", 1_700_000_001, br#"{"a":1}"#),
            signature("Jefe", 1_700_000_000, br#"{"a":1}"#)
        );
    }

    #[test]
    fn receivers_reject_old_or_tampered_deliveries() {
        let body = br#"{"type":"budget_alert"}"#;
        let sig = signature("s3cret", 1_000, body);
        let five_min = Duration::from_secs(300);
        assert_eq!(
            verify("s3cret", "1000", &sig, body, 1_100, five_min),
            Ok(())
        );
        // The same delivery replayed an hour later.
        assert!(matches!(
            verify("s3cret", "1000", &sig, body, 4_600, five_min),
            Err(SignatureError::Stale { age_s: 3600, .. })
        ));
        // A fresh timestamp on an old signature.
        assert_eq!(
            verify("s3cret", "4600", &sig, body, 4_600, five_min),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("s3cret", "1000", &sig, b"{}", 1_000, five_min),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("s3cret", "soon", &sig, body, 1_000, five_min),
            Err(SignatureError::BadTimestamp)
        );
    }

    /// Bodies a test receiver got, in order.
    type Got = Arc<Mutex<Vec<(http::HeaderMap, Bytes)>>>;

    /// A receiver answering `status` to every delivery, recording them.
    async fn receiver(status: u16) -> (String, Got) {
        let got: Got = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/SECRETPATH", listener.local_addr().unwrap());
        let seen = got.clone();
        let app = axum::Router::new().route(
            "/hook/SECRETPATH",
            axum::routing::post(move |headers: http::HeaderMap, body: Bytes| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push((headers, body));
                    http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, got)
    }

    fn alert(n: u32) -> Alert {
        Alert {
            alert_id: format!("alert-{n}"),
            budget: "b".into(),
            subject: "eng".into(),
            period_start: chrono::Utc::now(),
            period_end: None,
            threshold: n,
            spent_usd: rust_decimal::Decimal::ONE,
            limit_usd: Some(rust_decimal::Decimal::TWO),
            spent_tokens: 0,
            limit_tokens: None,
            crossed_at: chrono::Utc::now(),
            guard: None,
        }
    }

    async fn publish(bus: &LocalBus, n: u32) {
        publish_from(bus, 0, n).await
    }

    /// Publishes alerts `from..from + n` (distinct ids).
    async fn publish_from(bus: &LocalBus, from: u32, n: u32) {
        let records = (from..from + n)
            .map(|i| {
                (
                    Bytes::from("k"),
                    Bytes::from(serde_json::to_vec(&alert(i)).unwrap()),
                )
            })
            .collect();
        bus.append(ALERTS_TOPIC, records).await.unwrap();
    }

    fn hook(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            format: WebhookFormat::Json,
            secret: Some("s3cret".into()),
        }
    }

    /// Waits (up to 20 s) until `check` holds.
    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_receiver_that_is_down_does_not_hold_back_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(dir.path()).unwrap();
        let (down, down_got) = receiver(503).await;
        let (up, up_got) = receiver(200).await;
        publish(&bus, 3).await;
        let notifier = Notifier::new(bus.clone(), vec![hook(&down), hook(&up)])
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(notifier.run(stop.clone()));
        until("every alert at the healthy receiver", || {
            up_got.lock().unwrap().len() == 3
        })
        .await;
        // The down receiver was tried too (its first attempt may come later
        // than the healthy one's three on a busy machine).
        until("a delivery attempt at the down receiver", || {
            !down_got.lock().unwrap().is_empty()
        })
        .await;
        let now = chrono::Utc::now().timestamp();
        for (headers, body) in up_got.lock().unwrap().iter() {
            let ts = headers[TIMESTAMP_HEADER].to_str().unwrap();
            let sig = headers[SIGNATURE_HEADER].to_str().unwrap();
            verify("s3cret", ts, sig, body, now, Duration::from_secs(300)).unwrap();
        }
        // The down receiver still has them: nothing is committed yet.
        assert_eq!(
            bus.committed(NOTIFIER_GROUP, ALERTS_TOPIC).await.unwrap(),
            0
        );
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn webhooks_added_and_removed_while_running_take_alerts_from_then_on() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(dir.path()).unwrap();
        let (first, first_got) = receiver(200).await;
        let (second, second_got) = receiver(200).await;
        let set = |hooks: &[(&str, &str)]| -> WebhookSet {
            Arc::new(
                hooks
                    .iter()
                    .map(|(id, url)| (id.to_string(), hook(url)))
                    .collect(),
            )
        };
        let (wanted, watching) = watch::channel(set(&[("a", &first)]));
        let notifier = Notifier::follow(bus.clone(), watching, NotifierOptions::default())
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(notifier.run(stop.clone()));
        publish_from(&bus, 0, 1).await;
        until("the first alert at the first receiver", || {
            first_got.lock().unwrap().len() == 1
        })
        .await;
        // Swap the first receiver for the second: the next alert goes to
        // the second only.
        wanted.send_replace(set(&[("b", &second)]));
        let mut next = 1;
        let deadline = Instant::now() + Duration::from_secs(20);
        // Until the notifier has read the change, an alert may still go to
        // the first receiver; once the second has one, the change is in.
        while second_got.lock().unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the added webhook never got an alert"
            );
            publish_from(&bus, next, 1).await;
            next += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        publish_from(&bus, next, 1).await;
        let last = format!("alert-{next}");
        let holds = |got: &Got| {
            got.lock()
                .unwrap()
                .iter()
                .any(|(h, _)| h["x-tollgate-alert-id"] == last.as_str())
        };
        until("the next alert at the second receiver", || {
            holds(&second_got)
        })
        .await;
        assert!(!holds(&first_got), "the removed webhook still took alerts");
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_and_a_receiver_that_keeps_failing_drop_alerts_counted_then_commit() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(dir.path()).unwrap();
        let (down, _) = receiver(500).await;
        let drops = |reason: &str| {
            METRICS
                .alert_drops
                .with_label_values(&["json", reason])
                .get()
        };
        let (full_before, exhausted_before) = (drops("queue_full"), drops("retries_exhausted"));
        publish(&bus, 5).await;
        let options = NotifierOptions {
            queue_capacity: 1,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            give_up_after: Duration::from_millis(100),
        };
        let notifier = Notifier::with_options(bus.clone(), vec![hook(&down)], options)
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(notifier.run(stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while bus.committed(NOTIFIER_GROUP, ALERTS_TOPIC).await.unwrap() < 5 {
            assert!(Instant::now() < deadline, "alerts never committed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let full = drops("queue_full") - full_before;
        let exhausted = drops("retries_exhausted") - exhausted_before;
        assert!(full >= 1, "a queue of 1 cannot hold 5 alerts");
        assert!(exhausted >= 1, "the receiver never took one");
        assert!(full + exhausted >= 5, "every alert is accounted for");
        stop.cancel();
        task.await.unwrap().unwrap();
    }
}
