//! The response tee: forwards each upstream chunk the moment it arrives and
//! reads usage out of it on the side.
//!
//! The client's bytes are never held back or rewritten; the reader looks
//! only at the SSE lines that carry usage (`message_start`,
//! `message_delta`), the stop reason and errors, and notes when the first
//! content delta passed (time to first token). When the stream ends or
//! breaks, the event is emitted once.
//!
//! A client that goes away mid-answer does not stop the provider's meter:
//! the provider bills what it generated. So a dropped body hands the
//! upstream stream to a drain task that reads it to its end (bounded in
//! time and bytes) for the final usage; if that fails, the event carries
//! an estimate, never below what was forwarded, marked `usage_estimated`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::Stream;
use serde_json::Value;

use super::recording::Recording;
use crate::event::{LlmEvent, Usage};
use crate::providers::{BodyStream, ProviderError};

/// Largest partial SSE line or JSON body the reader keeps; beyond it the
/// reader stops looking (the client still gets every byte).
const READ_LIMIT: usize = 16 * 1024 * 1024;

/// Largest carry buffer kept for reuse once its line is read (a rare
/// huge line's buffer is freed rather than held for the stream's life).
const KEPT_CARRY_BYTES: usize = 64 * 1024;
/// Longest a drain reads a disconnected client's answer for its usage.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(300);
/// Most bytes a drain reads (Claude's largest answers are a few MB).
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
/// The fewest bytes of JSON around one content delta's payload: the
/// compact text delta `{"type":"content_block_delta","index":0,"delta":
/// {"type":"text_delta","text":""}}` (other delta types are longer).
/// Subtracting no more than the real envelope keeps the estimate an upper
/// bound of the payload bytes, and a token is at least one byte.
const DELTA_ENVELOPE_BYTES: u64 = 80;

/// What the reader has learned from an answer.
#[derive(Debug, Default)]
pub struct AnswerFacts {
    pub usage: Usage,
    pub model: Option<String>,
    pub message_id: Option<String>,
    pub stop_reason: Option<String>,
    pub error_type: Option<String>,
    pub first_token: Option<Instant>,
    /// The answer arrived whole (`message_stop`, or a complete JSON body).
    pub complete: bool,
    /// An upper bound of the output tokens forwarded so far, for the
    /// estimate when the real usage never arrives.
    pub forwarded_output_bound: u64,
}

/// The members of a Messages object (or an error object) the event needs.
/// Everything else, above all the answer's `content`, is passed over by
/// serde without being built: reading a whole answer into a
/// `serde_json::Value` was half of what emitting an event cost. Each
/// member stays a `Value` so that one of an unexpected type is ignored, as
/// before, instead of failing the read.
#[derive(Debug, Default, serde::Deserialize)]
struct MessageMembers {
    #[serde(rename = "type")]
    kind: Option<Value>,
    id: Option<Value>,
    model: Option<Value>,
    stop_reason: Option<Value>,
    usage: Option<Value>,
    error: Option<Value>,
}

impl MessageMembers {
    /// Reads `json` if it is an object (serde would read a struct out of
    /// an array, by position).
    fn read(json: &[u8]) -> Option<MessageMembers> {
        if json.trim_ascii_start().first() != Some(&b'{') {
            return None;
        }
        serde_json::from_slice(json).ok()
    }

    fn is_error(&self) -> bool {
        text(&self.kind) == Some("error")
    }
}

/// `message_start`'s payload: the Messages object it opens.
#[derive(serde::Deserialize)]
struct MessageStart {
    message: MessageMembers,
}

/// A member's text, if it is a string.
fn text(member: &Option<Value>) -> Option<&str> {
    member.as_ref().and_then(Value::as_str)
}

impl AnswerFacts {
    /// Takes what a Messages object (`message_start.message` or a
    /// non-streaming body) says.
    fn read_message(&mut self, m: &MessageMembers) {
        if let Some(id) = text(&m.id) {
            self.message_id = Some(id.to_owned());
        }
        if let Some(model) = text(&m.model) {
            self.model = Some(model.to_owned());
        }
        if let Some(reason) = text(&m.stop_reason) {
            self.stop_reason = Some(reason.to_owned());
        }
        if let Some(u) = &m.usage {
            self.usage.merge_cumulative(&Usage::from_anthropic_json(u));
        }
    }

    /// Takes an Anthropic error object's type.
    fn read_error(&mut self, m: &MessageMembers) {
        let t = m.error.as_ref().and_then(|e| e.get("type")?.as_str());
        self.error_type = Some(t.unwrap_or("api_error").to_owned());
    }

    /// Copies the facts onto the event. An answer that never arrived
    /// whole but produced output gets the estimate: the provider billed at
    /// least what reached the client.
    pub fn apply(self, e: &mut LlmEvent) {
        let estimate = !self.complete && self.forwarded_output_bound > self.usage.output_tokens;
        e.usage = self.usage;
        if estimate {
            e.usage.output_tokens = self.forwarded_output_bound;
            e.usage_estimated = true;
        }
        e.model_served = self.model;
        if e.request_id.is_none() {
            e.request_id = self.message_id;
        }
        e.stop_reason = self.stop_reason;
        if e.error_type.is_none() {
            e.error_type = self.error_type;
        }
    }
}

/// The SSE event types the reader cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SseKind {
    Unknown,
    MessageStart,
    MessageDelta,
    MessageStop,
    ContentDelta,
    Error,
    Other,
}

impl SseKind {
    fn from_name(name: &[u8]) -> SseKind {
        match name {
            b"message_start" => SseKind::MessageStart,
            b"message_delta" => SseKind::MessageDelta,
            b"message_stop" => SseKind::MessageStop,
            b"content_block_delta" => SseKind::ContentDelta,
            b"error" => SseKind::Error,
            _ => SseKind::Other,
        }
    }

    /// For `data:` lines without an `event:` line: the `type` is near the
    /// start of the JSON, so a short look decides.
    fn sniff(data: &[u8]) -> SseKind {
        let head = &data[..data.len().min(48)];
        let has = |needle: &str| memchr::memmem::find(head, needle.as_bytes()).is_some();
        if has("\"message_start\"") {
            SseKind::MessageStart
        } else if has("\"message_delta\"") {
            SseKind::MessageDelta
        } else if has("\"message_stop\"") {
            SseKind::MessageStop
        } else if has("\"content_block_delta\"") {
            SseKind::ContentDelta
        } else if has("\"error\"") {
            SseKind::Error
        } else {
            SseKind::Other
        }
    }
}

/// Reads Anthropic SSE line by line across chunk boundaries.
#[derive(Debug)]
pub struct SseReader {
    carry: Vec<u8>,
    kind: SseKind,
    overflowed: bool,
    pub facts: AnswerFacts,
}

impl Default for SseReader {
    fn default() -> Self {
        SseReader {
            carry: Vec::new(),
            kind: SseKind::Unknown,
            overflowed: false,
            facts: AnswerFacts::default(),
        }
    }
}

impl SseReader {
    /// Feeds one chunk as it passes.
    pub fn feed(&mut self, chunk: &[u8], now: Instant) {
        let mut rest = chunk;
        if !self.carry.is_empty() {
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                self.keep(rest);
                return;
            };
            self.keep(&rest[..nl]);
            // The carried line's buffer goes back afterwards, so a stream
            // whose events straddle chunks reuses one allocation.
            let mut line = std::mem::take(&mut self.carry);
            self.line(&line, now);
            if line.capacity() <= KEPT_CARRY_BYTES {
                line.clear();
                self.carry = line;
            }
            rest = &rest[nl + 1..];
        }
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', rest) {
            self.line(&rest[start..nl], now);
            start = nl + 1;
        }
        self.keep(&rest[start..]);
    }

    fn keep(&mut self, partial: &[u8]) {
        if self.carry.len() + partial.len() > READ_LIMIT {
            self.overflowed = true;
            self.carry.clear();
        } else {
            self.carry.extend_from_slice(partial);
        }
    }

    fn line(&mut self, line: &[u8], now: Instant) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.kind = SseKind::Unknown;
        } else if let Some(name) = line.strip_prefix(b"event:") {
            self.kind = SseKind::from_name(name.trim_ascii());
        } else if let Some(data) = line.strip_prefix(b"data:") {
            let data = data.trim_ascii_start();
            let kind = match self.kind {
                SseKind::Unknown => SseKind::sniff(data),
                known => known,
            };
            self.data(kind, data, now);
        }
    }

    fn data(&mut self, kind: SseKind, data: &[u8], now: Instant) {
        match kind {
            SseKind::ContentDelta => {
                self.facts.first_token.get_or_insert(now);
                self.facts.forwarded_output_bound += (data.len() as u64)
                    .saturating_sub(DELTA_ENVELOPE_BYTES)
                    .max(1);
            }
            SseKind::MessageStart => {
                if let Ok(start) = serde_json::from_slice::<MessageStart>(data) {
                    self.facts.read_message(&start.message);
                }
            }
            SseKind::MessageDelta => {
                if let Ok(v) = serde_json::from_slice::<Value>(data) {
                    if let Some(r) = v.pointer("/delta/stop_reason").and_then(|r| r.as_str()) {
                        self.facts.stop_reason = Some(r.to_owned());
                    }
                    if let Some(u) = v.get("usage") {
                        self.facts
                            .usage
                            .merge_cumulative(&Usage::from_anthropic_json(u));
                    }
                }
            }
            SseKind::MessageStop => self.facts.complete = true,
            SseKind::Error => {
                if let Some(m) = MessageMembers::read(data) {
                    self.facts.read_error(&m);
                }
            }
            SseKind::Unknown | SseKind::Other => {}
        }
    }
}

/// Keeps a JSON answer's chunks (cheap `Bytes` clones) to read at the end.
#[derive(Debug, Default)]
pub struct JsonReader {
    chunks: Vec<Bytes>,
    len: usize,
}

impl JsonReader {
    fn feed(&mut self, chunk: &Bytes) {
        self.len += chunk.len();
        if self.len <= READ_LIMIT {
            self.chunks.push(chunk.clone());
        }
    }

    /// Reads a Messages body or an error body.
    fn finish(self) -> AnswerFacts {
        let mut facts = AnswerFacts {
            forwarded_output_bound: self.len as u64,
            ..AnswerFacts::default()
        };
        if self.len > READ_LIMIT {
            return facts;
        }
        let body = match self.chunks.len() {
            1 => self.chunks[0].clone(),
            _ => Bytes::from(self.chunks.concat()),
        };
        if let Some(m) = MessageMembers::read(&body) {
            if m.is_error() {
                facts.read_error(&m);
            } else {
                facts.read_message(&m);
            }
            facts.complete = true;
        }
        facts
    }
}

/// Which reader an answer gets, by its content type.
pub enum AnswerReader {
    Sse(SseReader),
    Json(JsonReader),
}

impl AnswerReader {
    /// Picks the reader from the upstream `content-type`.
    pub fn for_content_type(content_type: Option<&str>) -> AnswerReader {
        match content_type {
            Some(ct) if ct.starts_with("text/event-stream") => {
                AnswerReader::Sse(SseReader::default())
            }
            _ => AnswerReader::Json(JsonReader::default()),
        }
    }

    fn feed(&mut self, chunk: &Bytes, now: Instant) {
        match self {
            AnswerReader::Sse(r) => r.feed(chunk, now),
            AnswerReader::Json(r) => r.feed(chunk),
        }
    }

    fn finish(self) -> AnswerFacts {
        match self {
            AnswerReader::Sse(r) => r.facts,
            AnswerReader::Json(r) => r.finish(),
        }
    }

    /// Whether the answer already arrived whole.
    fn complete(&self) -> bool {
        match self {
            AnswerReader::Sse(r) => r.facts.complete,
            AnswerReader::Json(_) => false,
        }
    }
}

/// The body the client receives: upstream's stream, teed.
pub struct TeeBody {
    upstream: BodyStream,
    state: Option<(AnswerReader, Recording)>,
    /// A cache miss's copy of the answer, stored when it ends whole.
    capture: Option<super::cache::Capture>,
}

impl TeeBody {
    /// Wraps an upstream body; the recording is emitted when it ends.
    pub fn new(upstream: BodyStream, reader: AnswerReader, recording: Recording) -> TeeBody {
        TeeBody {
            upstream,
            state: Some((reader, recording)),
            capture: None,
        }
    }

    /// Keeps a copy of the answer for the response cache.
    pub fn with_capture(mut self, capture: Option<super::cache::Capture>) -> TeeBody {
        self.capture = capture;
        self
    }

    /// Emits the event once, with `error_type` if the answer did not end
    /// normally.
    fn finish(&mut self, error_type: Option<&str>) {
        let Some((reader, recording)) = self.state.take() else {
            return;
        };
        if let Some(c) = self
            .capture
            .take()
            .filter(|c| error_type.is_none() && c.body.len() <= super::cache::MAX_ENTRY_BYTES)
        {
            c.cache
                .put(c.key, c.content_type, c.body.freeze(), c.max_age);
        }
        emit(reader, recording, error_type);
    }
}

impl Stream for TeeBody {
    type Item = Result<Bytes, ProviderError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.upstream.as_mut().poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some((reader, recording)) = self.state.as_mut() {
                    reader.feed(chunk, Instant::now());
                    recording.add_response_bytes(chunk.len());
                }
                if let Some(c) = self.capture.as_mut() {
                    if c.body.len() + chunk.len() <= super::cache::MAX_ENTRY_BYTES {
                        c.body.extend_from_slice(chunk);
                    } else {
                        self.capture = None;
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let t = e.error_type();
                self.finish(Some(t));
            }
            Poll::Ready(None) => self.finish(None),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for TeeBody {
    /// A body dropped before its end means the client went away; if the
    /// answer was already whole, nothing was lost. Otherwise the rest is
    /// drained for the usage the provider bills.
    fn drop(&mut self) {
        match &self.state {
            None => return,
            Some((reader, _)) if reader.complete() => return self.finish(None),
            Some(_) => {}
        }
        let Some((reader, recording)) = self.state.take() else {
            return;
        };
        let upstream = std::mem::replace(&mut self.upstream, Box::pin(futures::stream::empty()));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(drain(upstream, reader, recording));
            }
            Err(_) => emit(reader, recording, Some(CLIENT_DISCONNECTED)),
        }
    }
}

/// Reads the rest of an answer whose client went away, bounded by
/// [`DRAIN_TIME`] and [`DRAIN_BYTES`], then emits the event with the usage
/// it found (or the estimate).
async fn drain(mut upstream: BodyStream, mut reader: AnswerReader, recording: Recording) {
    use futures::StreamExt;
    let mut read = 0usize;
    let reading = async {
        while let Some(Ok(chunk)) = upstream.next().await {
            read += chunk.len();
            if read > DRAIN_BYTES {
                break;
            }
            reader.feed(&chunk, Instant::now());
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, reading).await;
    drop(upstream);
    emit(reader, recording, Some(CLIENT_DISCONNECTED));
}

/// Emits the event with what the reader learned, marked with
/// `error_type` when the answer did not end normally.
fn emit(reader: AnswerReader, mut recording: Recording, error_type: Option<&str>) {
    let facts = reader.finish();
    let first_token = facts.first_token;
    let e = recording.event_mut();
    if let Some(t) = error_type {
        e.error_type = Some(t.to_owned());
    }
    facts.apply(e);
    recording.emit(first_token);
}

/// The event's `error_type` when the client went away mid-answer.
const CLIENT_DISCONNECTED: &str = "client_disconnected";

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "event: message_start\ndata: {\"type\": \"message_start\", \"message\": {\"id\": \"msg_1\", \"model\": \"claude-x\", \"usage\": {\"input_tokens\": 42, \"cache_creation_input_tokens\": 10, \"cache_read_input_tokens\": 5, \"output_tokens\": 1}}}\n\nevent: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\"type\": \"text_delta\", \"text\": \"hi\"}}\n\nevent: message_delta\ndata: {\"type\": \"message_delta\", \"delta\": {\"stop_reason\": \"end_turn\"}, \"usage\": {\"output_tokens\": 17}}\n\nevent: message_stop\ndata: {\"type\": \"message_stop\"}\n\n";

    fn read_in_chunks(size: usize) -> AnswerFacts {
        let mut r = SseReader::default();
        for chunk in SAMPLE.as_bytes().chunks(size) {
            r.feed(chunk, Instant::now());
        }
        r.facts
    }

    #[test]
    fn usage_is_read_whatever_the_chunk_boundaries() {
        for size in [1, 2, 7, 64, 4096] {
            let f = read_in_chunks(size);
            assert_eq!(f.usage.input_tokens, 42, "chunk size {size}");
            assert_eq!(f.usage.output_tokens, 17, "chunk size {size}");
            assert_eq!(f.usage.cache_creation_5m_tokens, 10);
            assert_eq!(f.usage.cache_read_tokens, 5);
            assert_eq!(f.model.as_deref(), Some("claude-x"));
            assert_eq!(f.stop_reason.as_deref(), Some("end_turn"));
            assert!(f.first_token.is_some() && f.complete);
        }
    }

    #[test]
    fn data_lines_without_event_names_are_sniffed() {
        let mut r = SseReader::default();
        r.feed(b"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":3}}\r\n\r\n", Instant::now());
        assert_eq!(r.facts.stop_reason.as_deref(), Some("max_tokens"));
        assert_eq!(r.facts.usage.output_tokens, 3);
    }

    #[test]
    fn billing_facts_of_a_stream_are_read_from_the_last_usage() {
        let mut r = SseReader::default();
        r.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"claude-opus-5-5\",\"usage\":{\"input_tokens\":40,\"output_tokens\":1,\"service_tier\":\"standard\",\"inference_geo\":\"us\"}}}\n\n", Instant::now());
        r.feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":40,\"output_tokens\":9,\"speed\":\"fast\",\"server_tool_use\":{\"web_search_requests\":2},\"iterations\":[{\"type\":\"compaction\",\"input_tokens\":500,\"output_tokens\":20},{\"type\":\"message\",\"input_tokens\":40,\"output_tokens\":9}]}}\n\n", Instant::now());
        let u = &r.facts.usage;
        assert_eq!((u.input_tokens, u.output_tokens), (40, 9));
        assert_eq!(u.speed.as_deref(), Some("fast"));
        assert_eq!(
            u.inference_geo.as_deref(),
            Some("us"),
            "kept from message_start"
        );
        assert_eq!(u.service_tier.as_deref(), Some("standard"));
        assert_eq!(u.web_search_requests, 2);
        assert_eq!(u.iterations.len(), 2);
        assert_eq!(u.iterations[0].usage.input_tokens, 500);
    }

    #[test]
    fn json_error_body_gives_error_type() {
        let mut r = JsonReader::default();
        r.feed(&Bytes::from_static(
            b"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}",
        ));
        assert_eq!(r.finish().error_type.as_deref(), Some("overloaded_error"));
    }

    /// A whole answer's facts are read around its content, however large
    /// or oddly shaped; a body that is not a Messages object is not
    /// complete, so the event carries the forwarded-bytes estimate.
    #[test]
    fn a_json_answer_is_read_around_its_content() {
        let text = "tokens \\\"quoted\\\" ".repeat(5_000);
        let body = format!(
            r#"{{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{{"type":"text","text":"{text}"}},{{"type":"tool_use","input":{{"a":[1,{{"b":null}}]}}}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":12,"output_tokens":34,"cache_read_input_tokens":5}}}}"#
        );
        let mut r = JsonReader::default();
        for chunk in body.as_bytes().chunks(1000) {
            r.feed(&Bytes::copy_from_slice(chunk));
        }
        let f = r.finish();
        assert!(f.complete);
        assert_eq!((f.usage.input_tokens, f.usage.output_tokens), (12, 34));
        assert_eq!(f.usage.cache_read_tokens, 5);
        assert_eq!(f.message_id.as_deref(), Some("msg_1"));
        assert_eq!(f.model.as_deref(), Some("claude-x"));
        assert_eq!(f.stop_reason.as_deref(), Some("end_turn"));
        for odd in [&b"[\"msg\", \"claude\"]"[..], b"\"text\"", b"{\"usage\":"] {
            let mut r = JsonReader::default();
            r.feed(&Bytes::copy_from_slice(odd));
            let f = r.finish();
            assert!(!f.complete, "{}", String::from_utf8_lossy(odd));
            assert_eq!(f.forwarded_output_bound, odd.len() as u64);
        }
    }
}
