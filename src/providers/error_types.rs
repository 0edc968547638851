//! Anthropic's error types and the HTTP statuses they go with: one table
//! for every place that turns one into the other (the Bedrock and Vertex
//! error maps, answers in Claude Code's Bedrock mode).

/// `(status, error type)` as Anthropic's API answers them; the first row
/// of a type is its status.
const TABLE: &[(u16, &str)] = &[
    (400, "invalid_request_error"),
    (401, "authentication_error"),
    (403, "permission_error"),
    (404, "not_found_error"),
    (413, "request_too_large"),
    (429, "rate_limit_error"),
    (500, "api_error"),
    (529, "overloaded_error"),
    (503, "overloaded_error"),
];

/// The Anthropic error type of an error answered with `status`
/// (`api_error` for any status the table does not name).
pub fn error_type_for_status(status: u16) -> &'static str {
    TABLE
        .iter()
        .find(|(s, _)| *s == status)
        .map_or("api_error", |(_, t)| t)
}

/// The HTTP status Anthropic answers an error of `error_type` with (500
/// for a type the table does not name).
pub fn status_for_error_type(error_type: &str) -> u16 {
    TABLE
        .iter()
        .find(|(_, t)| *t == error_type)
        .map_or(500, |(s, _)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_maps_back_to_a_status_that_maps_to_it() {
        for (_, t) in TABLE {
            assert_eq!(error_type_for_status(status_for_error_type(t)), *t);
        }
        assert_eq!(error_type_for_status(503), "overloaded_error");
        assert_eq!(status_for_error_type("overloaded_error"), 529);
        assert_eq!(error_type_for_status(502), "api_error");
        assert_eq!(status_for_error_type("something_new"), 500);
    }
}
