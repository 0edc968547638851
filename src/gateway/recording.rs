//! The event of one request while it is in flight, and its hand-off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::admission::Ticket;
use super::auth::Identity;
use super::headers::RequestTags;
use super::request_metrics::observe;
use crate::event::{Attempt, BilledBy, LlmEvent, Origin, SCHEMA_VERSION, Usage};
use crate::field_caps::{RECORDING, cap_event};
use crate::handoff::EventHandoff;
use crate::metrics::{METRICS, error_label};
use crate::providers::Endpoint;

/// An `LlmEvent` being filled in as the request goes; `emit` finishes it
/// and hands it to the bus queue exactly once.
pub struct Recording {
    event: LlmEvent,
    started: Instant,
    handoff: EventHandoff,
    /// The request's budget reservation, settled when the event is emitted.
    ticket: Option<Ticket>,
    /// Bytes of the answer passed to the client so far.
    response_bytes: u64,
    /// Usage reported in answers that were discarded for a retry or a
    /// fallback: the provider bills those calls too.
    discarded_usage: Usage,
    /// Counts the request in `tollgate_requests_in_flight` while it lives.
    _in_flight: InFlight,
}

/// One request in `tollgate_requests_in_flight`, however it ends.
struct InFlight;

impl InFlight {
    fn new() -> InFlight {
        METRICS.in_flight.inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
    }
}

impl Recording {
    /// Starts the event of an authenticated request.
    pub fn start(
        handoff: EventHandoff,
        started: Instant,
        started_at: DateTime<Utc>,
        identity: &Arc<Identity>,
        tags: RequestTags,
        endpoint: Endpoint,
    ) -> Recording {
        let event = LlmEvent {
            event_id: LlmEvent::new_id(),
            schema_version: SCHEMA_VERSION,
            trace_id: tags.trace_id,
            session_id: tags.session_id,
            agent_id: tags.agent_id,
            parent_agent_id: tags.parent_agent_id,
            request_id: None,
            started_at,
            ended_at: started_at,
            ttft_ms: None,
            latency_ms: 0,
            workspace: identity.workspace.clone(),
            team: identity.team.clone(),
            user: identity.user.clone(),
            key_id: identity.key_id.clone(),
            metadata: tags.metadata,
            endpoint: endpoint.as_str().to_owned(),
            provider: String::new(),
            target: identity.provider.clone(),
            region: None,
            model_requested: None,
            model_served: None,
            stream: false,
            status: 0,
            error_type: None,
            stop_reason: None,
            attempts: Vec::new(),
            usage: Usage::default(),
            downgrades: Vec::new(),
            client: tags.client,
            // A passthrough key's requests are billed to the client's own
            // credential; the proxy adds that credential's fingerprint.
            billed_by: if identity.passthrough {
                BilledBy::Subscription
            } else {
                BilledBy::Api
            },
            credential_fingerprint: None,
            usage_estimated: false,
            cost: None,
            origin: None,
            body_digest: None,
        };
        Recording {
            event,
            started,
            handoff,
            ticket: None,
            response_bytes: 0,
            discarded_usage: Usage::default(),
            _in_flight: InFlight::new(),
        }
    }

    /// The event under construction, for the request path to fill in.
    pub fn event_mut(&mut self) -> &mut LlmEvent {
        &mut self.event
    }

    /// The trace ID, for the response header.
    pub fn trace_id(&self) -> &str {
        &self.event.trace_id
    }

    /// Holds the request's reservation and marks the event with this
    /// gateway's origin, so the reservation is released once the
    /// accountant folded the event.
    pub fn admitted(&mut self, gateway: &str, ticket: Ticket) {
        self.event.origin = Some(Origin {
            gateway: gateway.to_owned(),
            seq: ticket.seq(),
        });
        self.ticket = Some(ticket);
    }

    /// The event's ID, for the response header.
    pub fn event_id(&self) -> uuid::Uuid {
        self.event.event_id
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Records one try at a target.
    pub fn push_attempt(
        &mut self,
        provider: &str,
        target: &str,
        status: Option<u16>,
        since: Instant,
        error_type: Option<&str>,
    ) {
        let took = since.elapsed();
        // A cache hit is recorded as an attempt, but nothing went upstream.
        if provider != "cache" {
            let kind = match self.event.attempts.last() {
                None => "first",
                Some(previous) if previous.target == target => "retry",
                Some(_) => "fallback",
            };
            let outcome = match (status, error_type) {
                (Some(status), _) => status.to_string(),
                (None, Some(e)) => error_label(e).to_owned(),
                (None, None) => "error".to_owned(),
            };
            METRICS
                .upstream_attempts
                .with_label_values(&[provider, target, kind, &outcome])
                .inc();
            METRICS
                .upstream_duration
                .with_label_values(&[provider, target])
                .observe(took.as_secs_f64());
        }
        self.event.provider = provider.to_owned();
        self.event.target = target.to_owned();
        self.event.attempts.push(Attempt {
            provider: provider.to_owned(),
            target: target.to_owned(),
            status,
            latency_ms: millis(took),
            error_type: error_type.map(str::to_owned),
        });
    }

    /// Adds the usage of an answer that was discarded for a retry or a
    /// fallback.
    pub fn add_discarded_usage(&mut self, usage: &Usage) {
        self.discarded_usage.add(usage);
    }

    /// Counts answer bytes passed to the client.
    pub fn add_response_bytes(&mut self, n: usize) {
        self.response_bytes += n as u64;
    }

    /// Finishes the event and hands it over without waiting.
    pub fn emit(mut self, first_token: Option<Instant>) {
        let elapsed = self.started.elapsed();
        let e = &mut self.event;
        e.usage.add(&self.discarded_usage);
        e.latency_ms = millis(elapsed);
        e.ended_at =
            e.started_at + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::zero());
        e.ttft_ms = first_token.map(|t| millis(t.duration_since(self.started)));
        observe(
            e,
            elapsed,
            first_token.map(|t| t.duration_since(self.started)),
        );
        if self.response_bytes > 0 {
            METRICS
                .response_bytes
                .with_label_values(&[if e.provider.is_empty() {
                    "none"
                } else {
                    e.provider.as_str()
                }])
                .observe(self.response_bytes as f64);
        }
        if let Some(ticket) = self.ticket.take() {
            let model = e.model_served.as_deref().or(e.model_requested.as_deref());
            ticket.settle(&e.provider, model, &e.usage);
        }
        // After settling (the price needs the full model name), before the
        // event leaves: no field copied from the request or an upstream
        // answer may make it too big for the bus.
        cap_event(e, &RECORDING);
        self.handoff.send(self.event);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_supplied_fields_are_capped_with_a_marker_and_counted() {
        let (handoff, mut queue) = crate::handoff::channel(4);
        let identity = Arc::new(Identity {
            key_id: "k".into(),
            workspace: "w".into(),
            team: "t".into(),
            user: "u".into(),
            provider: "anthropic".into(),
            route: None,
            passthrough: false,
            client_routing: Default::default(),
        });
        let huge = "x".repeat(1 << 20);
        let tags = RequestTags {
            trace_id: "trace".into(),
            metadata: [("k".repeat(1000), huge.clone())].into_iter().collect(),
            session_id: Some(huge.clone()),
            agent_id: Some(huge.clone()),
            parent_agent_id: None,
            client: Some(huge.clone()),
        };
        let cut = || {
            METRICS
                .event_fields_truncated
                .with_label_values(&["model_requested"])
                .get()
        };
        let before = cut();
        let mut recording = Recording::start(
            handoff,
            Instant::now(),
            Utc::now(),
            &identity,
            tags,
            Endpoint::Messages,
        );
        let e = recording.event_mut();
        e.model_requested = Some(huge.clone());
        e.request_id = Some("é".repeat(1 << 19));
        e.downgrades = vec![huge.clone(); 1000];
        recording.emit(None);
        let e = queue.recv().await.unwrap();
        let json = serde_json::to_vec(&e).unwrap();
        assert!(json.len() < 64 * 1024, "event of {} bytes", json.len());
        let model = e.model_requested.unwrap();
        assert!(model.len() <= 256 && model.ends_with("bytes]"), "{model}");
        assert!(e.session_id.unwrap().contains("…[truncated "));
        assert!(e.request_id.unwrap().len() <= 256);
        assert!(cut() > before);
    }
}
