//! The typical finished request's event the pipeline benchmarks feed in,
//! so the pipeline and the codec bench measure the same event.

use tollgate::event::LlmEvent;

/// A typical finished request's event, as the gateway hands it over.
pub fn template() -> LlmEvent {
    serde_json::from_value(serde_json::json!({
        "event_id": uuid::Uuid::now_v7(), "schema_version": 1, "trace_id": "trace",
        "session_id": "session-1", "request_id": "msg_01",
        "started_at": "2026-12-01T00:00:00Z", "ended_at": "2026-12-01T00:00:01Z",
        "ttft_ms": 300, "latency_ms": 1000, "workspace": "default", "team": "bench",
        "user": "bench", "key_id": "bench", "metadata": {}, "endpoint": "messages",
        "provider": "anthropic", "target": "anthropic", "region": null,
        "model_requested": "claude-sonnet-4-5", "model_served": "claude-sonnet-4-5-20250929",
        "stream": true, "status": 200, "error_type": null, "stop_reason": "end_turn",
        "attempts": [{"provider": "anthropic", "target": "anthropic", "status": 200,
            "latency_ms": 990, "error_type": null}],
        "usage": {"input_tokens": 1200, "output_tokens": 300, "cache_creation_5m_tokens": 0,
            "cache_creation_1h_tokens": 0, "cache_read_tokens": 20000,
            "web_search_requests": 0, "web_fetch_requests": 0},
        "downgrades": [], "client": "claude-cli/2.1.332"
    }))
    .expect("event")
}
