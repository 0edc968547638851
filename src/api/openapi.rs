//! `GET /openapi.json`: the API described by the handlers' own
//! annotations (utoipa), so the document changes with the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The error body every endpoint answers with on failure.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Always `error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `{type, message}`; the message names the parameter or rule.
    pub error: serde_json::Value,
}

/// The whole API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tollgate query API",
        description = "Logs, traces, spend and read-only SQL over tollgate's event lake. Admin tokens read every row; team tokens read their team's rows only, in every endpoint."
    ),
    paths(
        super::logs::list,
        super::logs::one,
        super::logs::trace,
        super::logs::session,
        super::spend::spend,
        super::spend::top_sessions,
        super::spend::cache_savings,
        super::sql::run,
        super::budgets,
        super::sessions::resume,
    ),
    components(schemas(ErrorBody, super::sql::SqlRequest)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// Adds the bearer-token scheme the `security` entries refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Serves the document (no token needed: it holds no data).
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
