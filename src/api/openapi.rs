//! `GET /openapi.json`: the API described by the handlers' own
//! annotations (utoipa), so the document changes with the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;

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
        super::admin::keys::create,
        super::admin::keys::list,
        super::admin::keys::one,
        super::admin::keys::revoke,
        super::admin::keys::rotate,
        super::admin::budgets::create,
        super::admin::budgets::replace,
        super::admin::budgets::list,
        super::admin::budgets::one,
        super::admin::budgets::remove,
        super::admin::audit::list,
        super::admin::rate_limits::list,
        super::admin::rate_limits::put,
        super::admin::rate_limits::remove,
        super::admin::webhooks::create,
        super::admin::webhooks::replace,
        super::admin::webhooks::list,
        super::admin::webhooks::one,
        super::admin::webhooks::remove,
        super::admin::keys::update,
        super::admin::routes::create,
        super::admin::routes::replace,
        super::admin::routes::list,
        super::admin::routes::one,
        super::admin::routes::remove,
        super::admin::teams::create_team,
        super::admin::teams::replace_team,
        super::admin::teams::list_teams,
        super::admin::teams::one_team,
        super::admin::teams::remove_team,
        super::admin::teams::create_workspace,
        super::admin::teams::replace_workspace,
        super::admin::teams::list_workspaces,
        super::admin::teams::one_workspace,
        super::admin::teams::remove_workspace,
        super::admin::spend_limits::list,
        super::admin::spend_limits::set,
        super::admin::spend_limits::one,
        super::admin::spend_limits::remove,
        super::sessions::resume,
    ),
    components(schemas(ErrorBody, super::sql::SqlRequest, super::admin::keys::NewKey, super::admin::keys::Rotate, super::admin::webhooks::NewWebhook, super::admin::teams::NewTeam)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The query parameter names the document lists for `GET path`.
    fn query_params(doc: &serde_json::Value, path: &str) -> Vec<String> {
        doc["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has no parameters"))
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn every_listing_endpoint_documents_each_filter_once_and_its_own_parameters() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let filters = [
            "trace_id",
            "session_id",
            "team",
            "user",
            "key",
            "model",
            "provider",
            "status",
            "from",
            "to",
            "metadata.<key>",
        ];
        for (path, own) in [
            ("/v1/logs", &["sort", "limit", "cursor"][..]),
            ("/v1/spend", &["group_by", "limit"][..]),
            ("/v1/spend/top-sessions", &["limit", "order_by"][..]),
            ("/v1/spend/cache-savings", &["group_by", "limit"][..]),
        ] {
            let mut got = query_params(&doc, path);
            got.sort();
            let mut want: Vec<String> = filters.iter().chain(own).map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(got, want, "{path}");
        }
        let status = &doc["paths"]["/v1/logs"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "status")
            .unwrap()["schema"];
        assert_eq!(
            status["type"], "integer",
            "status is documented as a number"
        );
    }
}
