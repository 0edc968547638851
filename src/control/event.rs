//! One change of the control state, as it sits on the control topic.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{BudgetConfig, KeyConfig, RateLimitConfig, WebhookConfig, WebhookFormat};

/// What changed. The family before the dot names the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "key.created")]
    KeyCreated,
    /// A key's non-secret fields changed (a file apply, say).
    #[serde(rename = "key.updated")]
    KeyUpdated,
    /// A new secret; the old hash stays valid until its grace period ends.
    #[serde(rename = "key.rotated")]
    KeyRotated,
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    #[serde(rename = "budget.set")]
    BudgetSet,
    #[serde(rename = "budget.removed")]
    BudgetRemoved,
    #[serde(rename = "rate_limit.set")]
    RateLimitSet,
    #[serde(rename = "rate_limit.removed")]
    RateLimitRemoved,
    #[serde(rename = "webhook.set")]
    WebhookSet,
    #[serde(rename = "webhook.removed")]
    WebhookRemoved,
    #[serde(rename = "route.set")]
    RouteSet,
    #[serde(rename = "route.removed")]
    RouteRemoved,
    #[serde(rename = "team.set")]
    TeamSet,
    #[serde(rename = "team.removed")]
    TeamRemoved,
    #[serde(rename = "workspace.set")]
    WorkspaceSet,
    #[serde(rename = "workspace.removed")]
    WorkspaceRemoved,
}

impl Kind {
    /// The wire name (`key.created`), for filters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::KeyCreated => "key.created",
            Kind::KeyUpdated => "key.updated",
            Kind::KeyRotated => "key.rotated",
            Kind::KeyRevoked => "key.revoked",
            Kind::BudgetSet => "budget.set",
            Kind::BudgetRemoved => "budget.removed",
            Kind::RateLimitSet => "rate_limit.set",
            Kind::RateLimitRemoved => "rate_limit.removed",
            Kind::WebhookSet => "webhook.set",
            Kind::WebhookRemoved => "webhook.removed",
            Kind::RouteSet => "route.set",
            Kind::RouteRemoved => "route.removed",
            Kind::TeamSet => "team.set",
            Kind::TeamRemoved => "team.removed",
            Kind::WorkspaceSet => "workspace.set",
            Kind::WorkspaceRemoved => "workspace.removed",
        }
    }

    /// The entity family (`key`, `budget`, `rate_limit`, `webhook`): with
    /// the entity id, the record's bus key (what Kafka compacts on).
    pub fn family(self) -> &'static str {
        self.as_str().split('.').next().unwrap_or("")
    }

    /// Whether the event removes its entity.
    pub fn removes(self) -> bool {
        matches!(
            self,
            Kind::KeyRevoked
                | Kind::BudgetRemoved
                | Kind::RateLimitRemoved
                | Kind::WebhookRemoved
                | Kind::RouteRemoved
                | Kind::TeamRemoved
                | Kind::WorkspaceRemoved
        )
    }
}

/// Who owns an entry: the config file (apply may change or remove it) or
/// the admin API (apply never touches it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    #[default]
    File,
    Api,
}

/// One change, with who made it and the value before and after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlEvent {
    /// Unique per event: the API waits for it to be folded.
    pub event_id: uuid::Uuid,
    pub kind: Kind,
    /// The entity: key id, budget name, rate-limit id, webhook id, route
    /// name, team id (`workspace/team`) or workspace name.
    pub id: String,
    /// Who: `file:<path>`, or the admin token's name.
    pub actor: String,
    pub at: DateTime<Utc>,
    /// The entry before the change (`null` when it is new).
    pub before: Option<serde_json::Value>,
    /// The entry after (`null` when removed).
    pub after: Option<serde_json::Value>,
}

impl ControlEvent {
    /// A new event about `id` now.
    pub fn new(
        kind: Kind,
        id: &str,
        actor: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> ControlEvent {
        ControlEvent {
            event_id: uuid::Uuid::now_v7(),
            kind,
            id: id.to_owned(),
            actor: actor.to_owned(),
            at: Utc::now(),
            before,
            after,
        }
    }

    /// The bus key: one per entity, so compaction keeps each one's latest.
    pub fn bus_key(&self) -> String {
        format!("{}/{}", self.kind.family(), self.id)
    }
}

/// A key as the control state holds it: its hash only, never the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    pub id: String,
    /// `sha256:<hex>` of the key.
    pub hash: String,
    pub workspace: String,
    pub team: String,
    pub user: String,
    pub provider: String,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub passthrough: bool,
    #[serde(default)]
    pub allow_client_config: bool,
    #[serde(default)]
    pub client_routes: Vec<String>,
    /// After this the key is refused.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The hash before the last rotation and until when it stays valid.
    #[serde(default)]
    pub previous: Option<PreviousHash>,
    #[serde(default)]
    pub origin: Origin,
}

/// A rotated-away key hash, valid for its grace period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousHash {
    pub hash: String,
    pub valid_until: DateTime<Utc>,
}

impl KeyEntry {
    /// The entry of a `[[keys]]` table of the file.
    pub fn from_config(k: &KeyConfig) -> KeyEntry {
        KeyEntry {
            id: k.id.clone(),
            hash: k.hash.clone(),
            workspace: k.workspace.clone(),
            team: k.team.clone(),
            user: k.user.clone(),
            provider: k.provider.clone(),
            route: k.route.clone(),
            passthrough: k.passthrough,
            allow_client_config: k.allow_client_config,
            client_routes: k.client_routes.clone(),
            expires_at: None,
            metadata: BTreeMap::new(),
            previous: None,
            origin: Origin::File,
        }
    }

    /// The key as the gateway's key ring takes it.
    pub fn to_config(&self) -> KeyConfig {
        KeyConfig {
            id: self.id.clone(),
            hash: self.hash.clone(),
            workspace: self.workspace.clone(),
            team: self.team.clone(),
            user: self.user.clone(),
            provider: self.provider.clone(),
            route: self.route.clone(),
            passthrough: self.passthrough,
            allow_client_config: self.allow_client_config,
            client_routes: self.client_routes.clone(),
        }
    }
}

/// A budget with its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetEntry {
    pub budget: BudgetConfig,
    #[serde(default)]
    pub origin: Origin,
}

/// A route (`[routes.NAME]`) with its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    pub route: crate::gateway::route::RouteConfig,
    #[serde(default)]
    pub origin: Origin,
}

/// A team: who keys belong to, inside one workspace. Its id in the state
/// is `workspace/name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamEntry {
    pub name: String,
    pub workspace: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub origin: Origin,
}

impl TeamEntry {
    /// The team's id in the state: `workspace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.workspace, self.name)
    }
}

/// A workspace: the unit admin tokens can be limited to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceEntry {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub origin: Origin,
}

/// A rate limit with its id and owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitEntry {
    pub limit: RateLimitConfig,
    #[serde(default)]
    pub origin: Origin,
}

/// A webhook as events carry it: the URL redacted and a fingerprint of
/// URL and secret. The URL (Slack keeps its credential in the path) and
/// the signing secret are *referenced*, not copied: the notifier takes
/// them from its own config file by the webhook's id. So the topic — the
/// audit log, readable by every admin:read token and copied to every
/// broker — never holds a credential, while a change of URL or secret is
/// still visible as a changed fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntry {
    pub url_redacted: String,
    pub format: WebhookFormat,
    /// `sha256:` of url + secret, first 16 hex digits.
    pub fingerprint: String,
    pub signed: bool,
    #[serde(default)]
    pub origin: Origin,
}

impl WebhookEntry {
    /// The entry of a `[[webhooks]]` table: no credential kept.
    pub fn from_config(w: &WebhookConfig) -> WebhookEntry {
        WebhookEntry {
            url_redacted: w.redacted_url(),
            format: w.format,
            fingerprint: webhook_fingerprint(w),
            signed: w.secret.is_some(),
            origin: Origin::File,
        }
    }
}

/// A short digest of a webhook's URL and secret: equal iff both are.
fn webhook_fingerprint(w: &WebhookConfig) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(w.url.as_bytes());
    h.update([0]);
    h.update(w.secret.as_deref().unwrap_or("").as_bytes());
    format!("sha256:{}", &hex::encode(h.finalize())[..16])
}

/// The id of a webhook: its position-free name, from the URL's digest.
pub fn webhook_id(w: &WebhookConfig) -> String {
    use sha2::Digest;
    format!(
        "webhook-{}",
        &hex::encode(sha2::Sha256::digest(w.url.as_bytes()))[..12]
    )
}

/// The id of a rate limit: its scope and subject (`team:eng`, `key:*`),
/// with `#2`, `#3` for further limits of the same scope and subject.
pub fn rate_limit_ids(limits: &[RateLimitConfig]) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    limits
        .iter()
        .map(|l| {
            let scope = serde_json::to_value(l.scope)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let base = format!("{scope}:{}", l.subject.as_deref().unwrap_or("*"));
            let n = seen.entry(base.clone()).or_default();
            *n += 1;
            if *n == 1 { base } else { format!("{base}#{n}") }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_entry_holds_no_credential_but_changes_when_one_does() {
        let hook = |url: &str, secret: Option<&str>| WebhookConfig {
            url: url.into(),
            format: WebhookFormat::Slack,
            secret: secret.map(str::to_owned),
        };
        let slack = hook(
            "https://hooks.slack.com/services/T0/B0/XyZsecret",
            Some("s3cret"),
        );
        let entry = serde_json::to_string(&WebhookEntry::from_config(&slack)).unwrap();
        assert!(
            !entry.contains("XyZsecret") && !entry.contains("s3cret"),
            "{entry}"
        );
        assert!(entry.contains("hooks.slack.com"), "{entry}");
        let rotated = hook(
            "https://hooks.slack.com/services/T0/B0/XyZsecret",
            Some("other"),
        );
        assert_ne!(
            WebhookEntry::from_config(&slack).fingerprint,
            WebhookEntry::from_config(&rotated).fingerprint
        );
        assert_eq!(webhook_id(&slack), webhook_id(&rotated));
    }

    #[test]
    fn rate_limit_ids_name_scope_and_subject_and_number_repeats() {
        let limit = |subject: Option<&str>| RateLimitConfig {
            scope: crate::config::BudgetScope::Team,
            subject: subject.map(str::to_owned),
            requests_per_minute: Some(1),
            tokens_per_minute: None,
        };
        let ids = rate_limit_ids(&[limit(None), limit(Some("eng")), limit(None)]);
        assert_eq!(ids, ["team:*", "team:eng", "team:*#2"]);
    }
}
