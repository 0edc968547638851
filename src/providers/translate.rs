//! What Bedrock and Vertex need changed in an Anthropic request: the model
//! ID they know it by, the body fields they want, and the beta flags they
//! accept. Every flag removed is reported, so it lands on the event as a
//! downgrade instead of vanishing.

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::ProviderConfig;

/// The built-in catalog (`catalog.toml`): model IDs and beta allowlists.
#[derive(Debug, Deserialize)]
struct Catalog {
    bedrock: ProviderCatalog,
    vertex: ProviderCatalog,
}

#[derive(Debug, Deserialize)]
struct ProviderCatalog {
    models: BTreeMap<String, String>,
    betas: Vec<String>,
}

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| {
    toml::from_str(include_str!("catalog.toml"))
        .expect("catalog.toml is valid (checked by a unit test)")
});

/// Which catalog section a provider uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Bedrock,
    Vertex,
}

/// A provider's model names and accepted betas (catalog + config).
#[derive(Debug, Clone)]
pub struct Dialect {
    models: BTreeMap<String, String>,
    betas: HashSet<String>,
}

impl Dialect {
    pub fn new(family: Family, cfg: &ProviderConfig) -> Dialect {
        let base = match family {
            Family::Bedrock => &CATALOG.bedrock,
            Family::Vertex => &CATALOG.vertex,
        };
        let mut models = base.models.clone();
        models.extend(cfg.model_map.clone());
        let betas = cfg
            .beta_allowlist
            .clone()
            .unwrap_or_else(|| base.betas.clone())
            .into_iter()
            .collect();
        Dialect { models, betas }
    }

    /// The provider's ID for `model`; a name the catalog does not know is
    /// taken as already being one (so clients may send provider IDs).
    pub fn model_id(&self, model: &str) -> String {
        self.models
            .get(model)
            .cloned()
            .unwrap_or_else(|| model.to_owned())
    }

    /// Splits an `anthropic-beta` header value into accepted flags and
    /// downgrades (`anthropic-beta:<flag>` for each removed one).
    pub fn filter_betas<'a>(
        &self,
        header: impl Iterator<Item = &'a str>,
    ) -> (Vec<String>, Vec<String>) {
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for flag in header
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            if self.betas.contains(flag) {
                kept.push(flag.to_owned());
            } else {
                dropped.push(format!("anthropic-beta:{flag}"));
            }
        }
        (kept, dropped)
    }
}

/// Every model name in the catalog, Anthropic's and the providers' IDs
/// (the model names that may become metric labels).
pub fn catalog_model_names() -> Vec<String> {
    [&CATALOG.bedrock, &CATALOG.vertex]
        .iter()
        .flat_map(|c| c.models.iter())
        .flat_map(|(name, id)| [name.clone(), id.clone()])
        .collect()
}

/// Every Bedrock model ID in the catalog (for `GET /inference-profiles`).
pub fn bedrock_profiles() -> Vec<String> {
    let mut ids: Vec<String> = CATALOG.bedrock.models.values().cloned().collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The Messages body as a JSON object; anything else is the client's
/// error, named as such.
pub fn body_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the request body is not a JSON object".into()),
        Err(e) => Err(format!("the request body is not valid JSON: {e}")),
    }
}

/// Anthropic's name for a Bedrock or Vertex model ID, for inbound requests
/// (`us.anthropic.claude-sonnet-4-5-20250929-v1:0`, an ARN, or
/// `claude-sonnet-4-5@20250929` → `claude-sonnet-4-5-20250929`).
pub fn anthropic_name(provider_id: &str) -> String {
    let id = provider_id.rsplit('/').next().unwrap_or(provider_id);
    let id = match id.find("anthropic.") {
        Some(i) => &id[i + "anthropic.".len()..],
        None => id,
    };
    let id = id.split(':').next().unwrap_or(id);
    let id = id
        .strip_suffix("-v1")
        .or_else(|| id.strip_suffix("-v2"))
        .unwrap_or(id);
    id.replace('@', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProviderConfig {
        toml::from_str("kind = \"bedrock\"").unwrap()
    }

    #[test]
    fn catalog_parses_and_maps_current_models() {
        let bedrock = Dialect::new(Family::Bedrock, &cfg());
        assert_eq!(
            bedrock.model_id("claude-sonnet-4-5"),
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
        );
        assert_eq!(
            bedrock.model_id("eu.anthropic.claude-x-v1:0"),
            "eu.anthropic.claude-x-v1:0"
        );
        let vertex = Dialect::new(Family::Vertex, &cfg());
        assert_eq!(
            vertex.model_id("claude-sonnet-4-5"),
            "claude-sonnet-4-5@20250929"
        );
    }

    /// Claude Code 2.1.332 defaults to Opus 5.5 on Bedrock and Vertex: an
    /// unmapped 2026 model would go out under its bare API name and be
    /// refused ("The provided model identifier is invalid").
    #[test]
    fn every_2026_model_has_a_bedrock_and_a_vertex_id() {
        let bedrock = Dialect::new(Family::Bedrock, &cfg());
        let vertex = Dialect::new(Family::Vertex, &cfg());
        for model in [
            "claude-opus-4-7",
            "claude-opus-4-8",
            "claude-opus-5",
            "claude-opus-5-5",
            "claude-sonnet-5",
            "claude-sonnet-5-5",
            "claude-haiku-5-5",
            "claude-fable-5",
            "claude-fable-5-1",
            "claude-fable-5-2",
            "claude-mythos-5",
            "claude-mythos-5-1",
        ] {
            assert_eq!(bedrock.model_id(model), format!("global.anthropic.{model}"));
            assert_eq!(vertex.model_id(model), model);
            assert!(
                vertex.models.contains_key(model),
                "{model} has no Vertex ID"
            );
        }
    }

    #[test]
    fn config_model_map_overrides_the_catalog() {
        let mut c = cfg();
        c.model_map.insert(
            "claude-sonnet-4-5".into(),
            "arn:aws:bedrock:us-east-1:1:inference-profile/x".into(),
        );
        assert_eq!(
            Dialect::new(Family::Bedrock, &c).model_id("claude-sonnet-4-5"),
            "arn:aws:bedrock:us-east-1:1:inference-profile/x"
        );
    }

    #[test]
    fn betas_outside_the_allowlist_become_named_downgrades() {
        let d = Dialect::new(Family::Bedrock, &cfg());
        let (kept, dropped) = d.filter_betas(
            ["claude-code-20250219,interleaved-thinking-2025-05-14, made-up-2099-01-01"]
                .into_iter(),
        );
        assert_eq!(
            kept,
            ["claude-code-20250219", "interleaved-thinking-2025-05-14"]
        );
        assert_eq!(dropped, ["anthropic-beta:made-up-2099-01-01"]);
    }

    #[test]
    fn provider_ids_map_back_to_anthropic_names() {
        assert_eq!(
            anthropic_name("us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            "claude-sonnet-4-5-20250929"
        );
        assert_eq!(
            anthropic_name("global.anthropic.claude-opus-4-6-v1"),
            "claude-opus-4-6"
        );
        assert_eq!(
            anthropic_name(
                "arn:aws:bedrock:us-east-1:123:inference-profile/us.anthropic.claude-haiku-4-5-20251001-v1:0"
            ),
            "claude-haiku-4-5-20251001"
        );
        assert_eq!(
            anthropic_name("claude-sonnet-4-5@20250929"),
            "claude-sonnet-4-5-20250929"
        );
    }
}
