//! What the mocked Bedrock and Vertex AI accept: their model IDs for
//! Anthropic's models and the `anthropic-beta` flags they know.
//!
//! Written from the providers' model pages, not copied from tollgate's
//! catalogue: a request tollgate builds with a wrong model ID or a beta the
//! provider would refuse then fails here, as it would in production.
//! A new model or beta is a row here.

/// Bedrock foundation-model IDs and the Anthropic model each one serves.
/// Requests may prefix an ID with a cross-region inference profile
/// (`us.`, `eu.`, `apac.`, `jp.`, `au.`, `global.`) or send its ARN.
#[rustfmt::skip]
const BEDROCK_MODELS: &[(&str, &str)] = &[
    // 2026 models: undated IDs, no `-v1:0`.
    ("anthropic.claude-opus-4-7", "claude-opus-4-7"),
    ("anthropic.claude-opus-4-8", "claude-opus-4-8"),
    ("anthropic.claude-opus-5", "claude-opus-5"),
    ("anthropic.claude-opus-5-5", "claude-opus-5-5"),
    ("anthropic.claude-sonnet-5", "claude-sonnet-5"),
    ("anthropic.claude-sonnet-5-5", "claude-sonnet-5-5"),
    ("anthropic.claude-haiku-5-5", "claude-haiku-5-5"),
    ("anthropic.claude-fable-5", "claude-fable-5"),
    ("anthropic.claude-fable-5-1", "claude-fable-5-1"),
    ("anthropic.claude-fable-5-2", "claude-fable-5-2"),
    ("anthropic.claude-mythos-5", "claude-mythos-5"),
    ("anthropic.claude-mythos-5-1", "claude-mythos-5-1"),
    // Earlier models.
    ("anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),
    ("anthropic.claude-sonnet-4-6", "claude-sonnet-4-6"),
    ("anthropic.claude-opus-4-5-20251101-v1:0", "claude-opus-4-5-20251101"),
    ("anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus-4-1-20250805"),
    ("anthropic.claude-opus-4-20250514-v1:0", "claude-opus-4-20250514"),
    ("anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5-20250929"),
    ("anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4-20250514"),
    ("anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet-20250219"),
    ("anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5-20251001"),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku-20241022"),
    ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet-20241022"),
    ("anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku-20240307"),
];

/// Cross-region inference profile prefixes Bedrock accepts before an ID.
const BEDROCK_REGION_PREFIXES: &[&str] = &["us.", "eu.", "apac.", "jp.", "au.", "global."];

/// Vertex AI model IDs (`name@version`, or the bare name for models
/// published without one) and the Anthropic model each one serves.
#[rustfmt::skip]
const VERTEX_MODELS: &[(&str, &str)] = &[
    // 2026 models: the API ID, no `@date`.
    ("claude-opus-4-7", "claude-opus-4-7"),
    ("claude-opus-4-8", "claude-opus-4-8"),
    ("claude-opus-5", "claude-opus-5"),
    ("claude-opus-5-5", "claude-opus-5-5"),
    ("claude-sonnet-5", "claude-sonnet-5"),
    ("claude-sonnet-5-5", "claude-sonnet-5-5"),
    ("claude-haiku-5-5", "claude-haiku-5-5"),
    ("claude-fable-5", "claude-fable-5"),
    ("claude-fable-5-1", "claude-fable-5-1"),
    ("claude-fable-5-2", "claude-fable-5-2"),
    ("claude-mythos-5", "claude-mythos-5"),
    ("claude-mythos-5-1", "claude-mythos-5-1"),
    // Earlier models.
    ("claude-opus-4-6", "claude-opus-4-6"),
    ("claude-sonnet-4-6", "claude-sonnet-4-6"),
    ("claude-opus-4-5@20251101", "claude-opus-4-5-20251101"),
    ("claude-opus-4-1@20250805", "claude-opus-4-1-20250805"),
    ("claude-opus-4@20250514", "claude-opus-4-20250514"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5-20250929"),
    ("claude-sonnet-4@20250514", "claude-sonnet-4-20250514"),
    ("claude-3-7-sonnet@20250219", "claude-3-7-sonnet-20250219"),
    ("claude-haiku-4-5@20251001", "claude-haiku-4-5-20251001"),
    ("claude-3-5-haiku@20241022", "claude-3-5-haiku-20241022"),
    ("claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet-20241022"),
];

/// `anthropic_beta` values Bedrock's InvokeModel accepts for Claude; any
/// other is refused with "invalid beta flag".
const BEDROCK_BETAS: &[&str] = &[
    "claude-code-20250219",
    "computer-use-2024-10-22",
    "computer-use-2025-01-24",
    "computer-use-2025-11-24",
    "token-efficient-tools-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19",
    "dev-full-thinking-2025-05-14",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "effort-2025-11-24",
    "tool-search-tool-2025-10-19",
    "tool-examples-2025-10-29",
];

/// `anthropic-beta` header flags Vertex AI accepts for Claude.
const VERTEX_BETAS: &[&str] = &[
    "claude-code-20250219",
    "computer-use-2024-10-22",
    "computer-use-2025-01-24",
    "computer-use-2025-11-24",
    "token-efficient-tools-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "output-128k-2025-02-19",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "effort-2025-11-24",
    "tool-search-tool-2025-10-19",
    "web-search-2025-03-05",
];

/// The Anthropic model a Bedrock model ID (plain, with a cross-region
/// prefix, or as an ARN) serves; `None` for an ID Bedrock does not know.
pub fn bedrock_model(id: &str) -> Option<&'static str> {
    let id = id.rsplit('/').next().unwrap_or(id);
    let base = BEDROCK_REGION_PREFIXES
        .iter()
        .find_map(|p| id.strip_prefix(p))
        .unwrap_or(id);
    lookup(BEDROCK_MODELS, base)
}

/// The Anthropic model a Vertex model ID serves; `None` for an unknown ID.
pub fn vertex_model(id: &str) -> Option<&'static str> {
    lookup(VERTEX_MODELS, id)
}

/// The second column of the row whose first column is `key`.
fn lookup(table: &[(&str, &'static str)], key: &str) -> Option<&'static str> {
    table.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

/// Whether Bedrock accepts beta flag `flag`.
pub fn bedrock_accepts_beta(flag: &str) -> bool {
    BEDROCK_BETAS.contains(&flag)
}

/// Whether Vertex AI accepts beta flag `flag`.
pub fn vertex_accepts_beta(flag: &str) -> bool {
    VERTEX_BETAS.contains(&flag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bedrock_ids_resolve_with_a_region_prefix_or_as_an_arn() {
        let sonnet = Some("claude-sonnet-4-5-20250929");
        assert_eq!(
            bedrock_model("anthropic.claude-sonnet-4-5-20250929-v1:0"),
            sonnet
        );
        assert_eq!(
            bedrock_model("us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            sonnet
        );
        assert_eq!(
            bedrock_model(
                "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
            ),
            sonnet
        );
        assert_eq!(
            bedrock_model("claude-sonnet-4-5"),
            None,
            "an Anthropic name is not a Bedrock ID"
        );
        assert_eq!(
            bedrock_model("xx.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            None
        );
    }

    #[test]
    fn vertex_ids_are_versioned_with_an_at_sign() {
        assert_eq!(
            vertex_model("claude-sonnet-4-5@20250929"),
            Some("claude-sonnet-4-5-20250929")
        );
        assert_eq!(vertex_model("claude-sonnet-4-5-20250929"), None);
    }

    #[test]
    fn betas_outside_the_tables_are_refused() {
        assert!(bedrock_accepts_beta("interleaved-thinking-2025-05-14"));
        assert!(!bedrock_accepts_beta("made-up-beta-2099-01-01"));
        assert!(!bedrock_accepts_beta("web-search-2025-03-05"));
        assert!(vertex_accepts_beta("web-search-2025-03-05"));
        assert!(!vertex_accepts_beta("made-up-beta-2099-01-01"));
    }
}
