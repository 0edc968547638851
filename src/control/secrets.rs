//! Webhook credentials created over the admin API.
//!
//! The control topic is the audit log, so it never holds a credential: a
//! webhook's entry there carries a redacted URL and a fingerprint
//! ([`super::event::WebhookEntry`]). A webhook from the config file takes
//! its URL and secret from the file; one created over the API takes them
//! from this topic ([`CONTROL_SECRETS_TOPIC`]), which no API endpoint
//! reads and the audit never copies. The API writes the credential first
//! and the control event second; the notifier uses a credential only when
//! its fingerprint equals the control entry's, so a change is applied
//! everywhere or nowhere even if the two topics are read at different
//! speeds.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ControlError;
use crate::bus::reader::TopicReader;
use crate::bus::{BusRecord, Log};
use crate::config::{WebhookConfig, WebhookFormat};

pub use crate::bus::CONTROL_SECRETS_TOPIC;

/// Webhook credentials by webhook id.
pub type Credentials = Arc<BTreeMap<String, WebhookConfig>>;

/// One record of the secrets topic: a webhook's URL and secret, or
/// `None` once the webhook is removed.
#[derive(Serialize, Deserialize)]
struct Record {
    id: String,
    webhook: Option<Credential>,
}

/// A webhook's credential as it is stored (no `Debug`: never logged).
#[derive(Serialize, Deserialize)]
struct Credential {
    url: String,
    format: WebhookFormat,
    secret: Option<String>,
}

/// Appends webhook `id`'s credential (`None`: forget it) to the topic.
pub async fn put(
    log: &dyn Log,
    id: &str,
    webhook: Option<&WebhookConfig>,
) -> Result<(), ControlError> {
    let record = Record {
        id: id.to_owned(),
        webhook: webhook.map(|w| Credential {
            url: w.url.clone(),
            format: w.format,
            secret: w.secret.clone(),
        }),
    };
    let payload = serde_json::to_vec(&record).map_err(ControlError::Encode)?;
    let key = Bytes::from(format!("webhook/{id}"));
    log.append(CONTROL_SECRETS_TOPIC, vec![(key, Bytes::from(payload))])
        .await?;
    Ok(())
}

/// The credentials as one process follows them.
pub struct Secrets {
    current: watch::Sender<Credentials>,
    reader: TopicReader,
}

impl Secrets {
    /// Reads the topic to its end, retrying (logged) while the bus cannot
    /// tell where that is, until `stop`.
    pub async fn start(
        log: Arc<dyn Log>,
        stop: &CancellationToken,
    ) -> Result<Arc<Secrets>, ControlError> {
        let reader = TopicReader::open(log, CONTROL_SECRETS_TOPIC, "tollgate-secrets").await?;
        let secrets = Arc::new(Secrets {
            current: watch::Sender::new(Arc::default()),
            reader,
        });
        secrets
            .reader
            .catch_up(stop, |records| secrets.fold(&records))
            .await?;
        Ok(secrets)
    }

    /// The credentials now, and every later change.
    pub fn watch(&self) -> watch::Receiver<Credentials> {
        self.current.subscribe()
    }

    /// Applies `records` (later ones win) and publishes the result.
    fn fold(&self, records: &[BusRecord]) {
        if records.is_empty() {
            return;
        }
        let mut next = BTreeMap::clone(&self.current.borrow());
        for r in records {
            match serde_json::from_slice::<Record>(&r.payload) {
                Ok(Record { id, webhook: None }) => drop(next.remove(&id)),
                Ok(Record {
                    id,
                    webhook: Some(c),
                }) => drop(next.insert(
                    id,
                    WebhookConfig {
                        url: c.url,
                        format: c.format,
                        secret: c.secret,
                    },
                )),
                Err(e) => {
                    tracing::error!(offset = r.offset, error = %e, "control secrets record unreadable; skipped")
                }
            }
        }
        self.current.send_replace(Arc::new(next));
    }

    /// Follows the topic until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> Result<(), ControlError> {
        self.reader
            .follow(&stop, |records| self.fold(&records))
            .await?;
        Ok(())
    }
}

/// The webhooks the notifier delivers to, by id: each webhook of the
/// control state with the credential whose fingerprint matches its entry
/// (the API's credential, else the config file's, found by id). One
/// without a matching credential yet is left out (logged at debug: its
/// credential is on its way).
pub fn live_webhooks(
    state: &super::ControlState,
    credentials: &BTreeMap<String, WebhookConfig>,
    file: &[WebhookConfig],
) -> Vec<(String, WebhookConfig)> {
    use super::event::{WebhookEntry, webhook_id};
    let matches = |w: &&WebhookConfig, want: &str| WebhookEntry::from_config(w).fingerprint == want;
    state
        .webhooks
        .iter()
        .filter_map(|(id, entry)| {
            let found = credentials
                .get(id)
                .filter(|w| matches(w, &entry.fingerprint))
                .or_else(|| {
                    file.iter()
                        .find(|w| webhook_id(w) == *id && matches(w, &entry.fingerprint))
                });
            if found.is_none() {
                tracing::debug!(webhook = %id, "no credential matches this webhook's fingerprint yet");
            }
            found.map(|w| (id.clone(), w.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::local::LocalBus;

    fn hook(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            format: WebhookFormat::Slack,
            secret: Some("s3cret".into()),
        }
    }

    #[tokio::test]
    async fn credentials_are_read_back_followed_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let bus = LocalBus::open(dir.path()).unwrap();
        put(bus.as_ref(), "w1", Some(&hook("http://a/1")))
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let secrets = Secrets::start(bus.clone(), &stop).await.unwrap();
        let mut seen = secrets.watch();
        assert_eq!(seen.borrow()["w1"].url, "http://a/1");
        let task = tokio::spawn(secrets.clone().run(stop.clone()));
        put(bus.as_ref(), "w1", None).await.unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            seen.wait_for(|c| c.is_empty()),
        )
        .await
        .expect("the removal was not followed")
        .unwrap();
        stop.cancel();
        task.await.unwrap().unwrap();
    }

    #[test]
    fn a_webhook_is_live_only_with_the_credential_its_entry_fingerprints() {
        use crate::control::event::{Origin, WebhookEntry};
        let mut state = crate::control::ControlState::default();
        let api = hook("http://api/1");
        let mut entry = WebhookEntry::from_config(&api);
        entry.origin = Origin::Api;
        state.webhooks.insert("w1".into(), entry);
        let file = [hook("http://file/1")];
        let file_entry = WebhookEntry::from_config(&file[0]);
        let file_id = crate::control::event::webhook_id(&file[0]);
        state.webhooks.insert(file_id.clone(), file_entry);
        // The API's credential has not arrived: only the file's is live.
        let live = live_webhooks(&state, &BTreeMap::new(), &file);
        let ids: Vec<&str> = live.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, [file_id.as_str()]);
        // A stale credential (another secret) does not match either.
        let mut stale = api.clone();
        stale.secret = Some("old".into());
        let creds = BTreeMap::from([("w1".to_owned(), stale)]);
        assert_eq!(live_webhooks(&state, &creds, &file).len(), 1);
        let creds = BTreeMap::from([("w1".to_owned(), api)]);
        let live = live_webhooks(&state, &creds, &file);
        assert_eq!(live.len(), 2);
        assert_eq!(
            live.iter().find(|(id, _)| id == "w1").unwrap().1.url,
            "http://api/1"
        );
    }
}
