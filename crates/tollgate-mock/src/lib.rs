//! A mock of the LLM providers tollgate talks to, speaking their wire
//! formats: Anthropic's Messages API, Bedrock's runtime API and Vertex AI
//! (with its OAuth token endpoint), on one server.
//!
//! Providers cannot be reached from CI, so tollgate's tests, benchmarks and
//! the real-Claude-Code test run against this instead. It checks what the
//! real service checks (credential, version header, body shape, model IDs,
//! beta flags) and answers with Anthropic's exact SSE or JSON, including
//! every cache token class. Behaviour is scripted per request with the
//! `x-mock-scenario` header (which tollgate forwards like any unknown
//! header) or per server.
//!
//! This crate shares no code with tollgate: its event-stream writer, error
//! types, model and beta tables are its own, so a framing or catalogue bug
//! in tollgate cannot hide by being the same on both sides.

pub mod anthropic;
pub mod bedrock;
pub mod catalog;
pub mod eventstream;
pub mod sigv4;
pub mod vertex;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

pub use anthropic::{
    USAGE_CACHE_1H, USAGE_CACHE_5M, USAGE_CACHE_READ, USAGE_INPUT, USAGE_OUTPUT, sse_events,
};

/// One request as the mock received it, so tests can check what tollgate
/// sent upstream.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    pub path_and_query: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl ReceivedRequest {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a mock server behaves.
#[derive(Debug, Clone, Default)]
pub struct MockOptions {
    /// The credential the mock expects (`x-api-key` or Bearer); `None`
    /// (with no `credentials`) accepts anything.
    pub api_key: Option<String>,
    /// More accepted credentials (`x-api-key`, else Bearer): a
    /// subscription passthrough test lists the clients' own tokens here
    /// and no `api_key`, so tollgate's provider key is refused.
    pub credentials: Vec<String>,
    /// Scenario for requests that name none.
    pub default_scenario: Option<String>,
    /// Keep a copy of every request (off for benchmarks).
    pub record: bool,
    /// Bedrock: the (access key id, secret) whose SigV4 signatures are
    /// recomputed and checked; `None` checks none.
    pub aws: Option<(String, String)>,
    /// Bedrock: an accepted API key (`Authorization: Bearer`).
    pub bedrock_bearer: Option<String>,
    /// Vertex: the service account's public key; the mock's `/token`
    /// checks JWTs against it.
    pub google_public_key_pem: Option<String>,
}

/// A running mock: its address and what it received.
#[derive(Clone)]
pub struct MockHandle {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<ReceivedRequest>>>,
}

impl MockHandle {
    /// Requests received so far.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The base URL to configure as the upstream.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Most requests kept when recording, so a long run cannot exhaust memory.
const RECORD_LIMIT: usize = 10_000;

/// Serves the mock on `listener` until the runtime stops.
pub fn spawn(
    listener: tokio::net::TcpListener,
    options: MockOptions,
) -> std::io::Result<MockHandle> {
    let addr = listener.local_addr()?;
    let received = Arc::new(Mutex::new(Vec::new()));
    let state = Arc::new(anthropic::MockState {
        options,
        received: received.clone(),
        tokens: Mutex::new(Vec::new()),
    });
    let app = anthropic::router(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "mock provider stopped");
        }
    });
    Ok(MockHandle { addr, received })
}

/// Keeps `request`, unless `RECORD_LIMIT` requests are kept already.
fn record(received: &Mutex<Vec<ReceivedRequest>>, request: ReceivedRequest) {
    let mut all = received.lock().unwrap_or_else(|p| p.into_inner());
    if all.len() < RECORD_LIMIT {
        all.push(request);
    }
}
