//! Subscription passthrough: Claude Code on a Max plan or Anthropic OAuth
//! (or a user's own Anthropic key) through tollgate.
//!
//! The client names itself to tollgate with `x-tollgate-api-key` only; its
//! own `Authorization` / `x-api-key` go to Anthropic unchanged, and the
//! body goes byte for byte. tollgate never stores, logs or puts on an event
//! the credential itself: only a keyed, truncated HMAC of it, so usage per
//! credential can be told apart without the credential being recoverable.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use http::{HeaderMap, header};
use rand::RngCore;
use sha2::Sha256;

use super::route::RouteConfig;
use crate::config::Config;
use crate::providers::Provider;

/// Why the fingerprint secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    #[error("cannot read or create the credential fingerprint secret {path}: {source}")]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the credential fingerprint secret {path} is not 64 hex digits; delete it to make a new one (fingerprints then change)"
    )]
    BadSecret { path: PathBuf },
}

/// The file a per-installation fingerprint secret is kept in when the
/// config sets none.
const SECRET_FILE: &str = "fingerprint.secret";

/// Makes credential fingerprints: `fp_` and the first 16 hex digits of
/// HMAC-SHA256(secret, credential). Without the secret a fingerprint
/// cannot even be checked against a guessed credential; with it, it still
/// cannot be reversed.
#[derive(Clone)]
pub struct Fingerprinter {
    secret: Arc<[u8]>,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter(..)")
    }
}

impl Fingerprinter {
    /// A fingerprinter keyed with `secret`.
    pub fn new(secret: &[u8]) -> Fingerprinter {
        Fingerprinter {
            secret: Arc::from(secret),
        }
    }

    /// The configured secret, else the installation's one from
    /// `data.dir/fingerprint.secret` (made on first use). With no
    /// passthrough key nothing is read or written: a random secret stands
    /// in, since nothing will be fingerprinted.
    pub fn from_config(cfg: &Config) -> Result<Fingerprinter, PassthroughError> {
        let configured = cfg.passthrough.fingerprint_secret.as_bytes();
        if !configured.is_empty() {
            return Ok(Fingerprinter::new(configured));
        }
        let needed = cfg.keys.iter().any(|k| k.is_passthrough(&cfg.routes));
        if !needed {
            let mut secret = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut secret);
            return Ok(Fingerprinter::new(&secret));
        }
        let secret = installation_secret(&cfg.data.dir)?;
        Ok(Fingerprinter::new(&secret))
    }

    /// The fingerprint of one credential.
    pub fn fingerprint(&self, credential: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(credential);
        let digest = mac.finalize().into_bytes();
        format!("fp_{}", hex::encode(&digest[..8]))
    }
}

/// Reads the installation's secret, or makes it (32 random bytes, hex,
/// readable by the owner only) when there is none.
fn installation_secret(dir: &Path) -> Result<Vec<u8>, PassthroughError> {
    let path = dir.join(SECRET_FILE);
    let io = |source| PassthroughError::Secret {
        path: path.clone(),
        source,
    };
    crate::private_fs::create_dir_all(dir).map_err(io)?;
    let mut fresh = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut fresh);
    match crate::private_fs::open_options()
        .write(true)
        .create_new(true)
        .open(&path)
    {
        Ok(mut file) => {
            use std::io::Write;
            file.write_all(hex::encode(fresh).as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(io)?;
            tracing::info!(path = %path.display(), "made the credential fingerprint secret");
            Ok(fresh.to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let secret = hex::decode(text.trim()).ok().filter(|s| s.len() == 32);
            secret.ok_or(PassthroughError::BadSecret { path })
        }
        Err(e) => Err(io(e)),
    }
}

/// The client's own credential on a passthrough request, as the bytes
/// that are fingerprinted: the Bearer token when there is one (Claude
/// Code's `ANTHROPIC_AUTH_TOKEN` or its OAuth login), else `x-api-key`.
/// `None`: the request carries no credential of its own.
pub fn client_credential(headers: &HeaderMap) -> Option<&[u8]> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .map(|v| crate::http_headers::bearer_token(headers).unwrap_or(v.as_bytes()));
    bearer
        .into_iter()
        .chain(headers.get("x-api-key").map(|v| v.as_bytes()))
        .find(|c| !c.is_empty())
}

/// Why the route a passthrough request resolved to cannot take it, if it
/// cannot: a target that is not Anthropic (the credential is Anthropic's),
/// a body rewrite, or a cache (answers would cross credentials). Checked
/// per request since `x-tollgate-config` may name any route.
pub fn route_problem(
    route: &RouteConfig,
    providers: &std::collections::HashMap<String, Arc<dyn Provider>>,
) -> Option<String> {
    if route.cache.is_some() {
        return Some("a passthrough request cannot use a cache".into());
    }
    route.targets.iter().find_map(|t| {
        if !t.override_params.is_empty() {
            return Some(format!(
                "target {:?} has override_params; a passthrough body goes byte for byte",
                t.provider
            ));
        }
        match providers.get(&t.provider).map(|p| p.kind()) {
            Some("anthropic") | None => None,
            Some(kind) => Some(format!(
                "target {:?} is {kind}; a passthrough request goes to Anthropic only",
                t.provider
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn fingerprints_are_stable_per_credential_and_secret_and_hide_the_credential() {
        let fp = Fingerprinter::new(b"pepper");
        let a = fp.fingerprint(b"sk-ant-oat01-aaaa");
        assert_eq!(a, fp.fingerprint(b"sk-ant-oat01-aaaa"));
        assert_ne!(a, fp.fingerprint(b"sk-ant-oat01-bbbb"));
        assert_ne!(
            a,
            Fingerprinter::new(b"other").fingerprint(b"sk-ant-oat01-aaaa")
        );
        assert!(a.starts_with("fp_") && a.len() == 19, "{a}");
        assert!(!a.contains("aaaa"));
    }

    #[test]
    fn bearer_token_is_the_credential_before_x_api_key() {
        let h = headers(&[
            ("authorization", "Bearer sk-ant-oat01-x"),
            ("x-api-key", "sk-ant-api03-y"),
        ]);
        assert_eq!(client_credential(&h), Some(&b"sk-ant-oat01-x"[..]));
        let h = headers(&[("x-api-key", "sk-ant-api03-y")]);
        assert_eq!(client_credential(&h), Some(&b"sk-ant-api03-y"[..]));
        assert_eq!(client_credential(&headers(&[("x-api-key", "")])), None);
    }

    #[test]
    fn installation_secret_is_made_once_and_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let first = installation_secret(dir.path()).unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(installation_secret(dir.path()).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "owner only: {mode:o}");
        }
    }
}
