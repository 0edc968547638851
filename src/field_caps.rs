//! Length caps on the event fields that come from a request or an upstream
//! answer (model names, session and request IDs, the user agent, metadata,
//! error texts, downgrades).
//!
//! Nothing bounded them: one event carrying a megabyte `model` went over
//! Kafka's record size limit and stopped everything behind it. The gateway
//! caps each field when it records the event ([`RECORDING`]); a bus that
//! still refuses a record for its size shrinks it further ([`MINIMAL`]).
//! A cut field ends with a marker saying how much was cut, on a char
//! boundary, and `tollgate_event_fields_truncated_total{field}` counts it.

use crate::event::LlmEvent;
use crate::metrics::METRICS;

/// The most bytes kept of each kind of field.
#[derive(Debug, Clone, Copy)]
pub struct FieldCaps {
    /// IDs, names and short texts (model, session, request ID, error type…).
    pub text: usize,
    /// The client's user agent.
    pub client: usize,
    /// Each metadata key.
    pub metadata_key: usize,
    /// Each metadata value.
    pub metadata_value: usize,
    /// Metadata entries kept (the first ones, by key order).
    pub metadata_entries: usize,
    /// Entries kept of a list (downgrades).
    pub list_items: usize,
}

/// Caps applied to every event the gateway records.
pub const RECORDING: FieldCaps = FieldCaps {
    text: 256,
    client: 512,
    metadata_key: 128,
    metadata_value: 1024,
    metadata_entries: 1024,
    list_items: 64,
};

/// Caps for a record a bus refused for its size: a short event that still
/// counts (usage, team, cost) is better than one that stops the pipeline.
pub const MINIMAL: FieldCaps = FieldCaps {
    text: 64,
    client: 64,
    metadata_key: 32,
    metadata_value: 64,
    metadata_entries: 8,
    list_items: 8,
};

/// Cuts `s` to at most `max` bytes, the marker (`…[truncated N bytes]`)
/// included, on a char boundary; returns the bytes cut, or `None` when it
/// fits.
pub fn truncate(s: &mut String, max: usize) -> Option<usize> {
    if s.len() <= max {
        return None;
    }
    // The marker's digits are at most those of the whole length.
    let room = max.saturating_sub(marker(s.len()).len());
    let keep = floor_char_boundary(s, room);
    let cut = s.len() - keep;
    s.truncate(keep);
    if marker(cut).len() <= max - keep {
        s.push_str(&marker(cut));
    }
    Some(cut)
}

/// The text that ends a cut field.
fn marker(cut: usize) -> String {
    format!("…[truncated {cut} bytes]")
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Caps every request- or upstream-supplied field of `e`, counting each
/// cut field in the metric; returns how many fields were cut.
pub fn cap_event(e: &mut LlmEvent, caps: &FieldCaps) -> usize {
    let mut cut = 0;
    let mut count = |field: &str, n: Option<usize>| {
        if n.is_some() {
            METRICS
                .event_fields_truncated
                .with_label_values(&[field])
                .inc();
            cut += 1;
        }
    };
    count("trace_id", truncate(&mut e.trace_id, caps.text));
    for (field, value) in [
        ("session_id", &mut e.session_id),
        ("agent_id", &mut e.agent_id),
        ("parent_agent_id", &mut e.parent_agent_id),
        ("request_id", &mut e.request_id),
        ("model_requested", &mut e.model_requested),
        ("model_served", &mut e.model_served),
        ("error_type", &mut e.error_type),
        ("stop_reason", &mut e.stop_reason),
        ("region", &mut e.region),
    ] {
        count(field, value.as_mut().and_then(|v| truncate(v, caps.text)));
    }
    count(
        "client",
        e.client.as_mut().and_then(|v| truncate(v, caps.client)),
    );
    for a in &mut e.attempts {
        let n = a.error_type.as_mut().and_then(|v| truncate(v, caps.text));
        count("attempts.error_type", n);
    }
    count("downgrades", cap_list(&mut e.downgrades, caps).then_some(1));
    count("metadata", cap_metadata(e, caps).then_some(1));
    cut
}

/// Caps each entry and the number of entries (the last one kept says how
/// many more there were); true when anything was cut.
fn cap_list(list: &mut Vec<String>, caps: &FieldCaps) -> bool {
    let mut cut = false;
    for item in list.iter_mut() {
        cut |= truncate(item, caps.text).is_some();
    }
    if list.len() > caps.list_items {
        let more = list.len() + 1 - caps.list_items;
        list.truncate(caps.list_items.saturating_sub(1));
        list.push(format!("…[{more} more]"));
        cut = true;
    }
    cut
}

/// Caps metadata keys, values and the number of entries; true when
/// anything was cut.
fn cap_metadata(e: &mut LlmEvent, caps: &FieldCaps) -> bool {
    let fits = e.metadata.len() <= caps.metadata_entries
        && e.metadata
            .iter()
            .all(|(k, v)| k.len() <= caps.metadata_key && v.len() <= caps.metadata_value);
    if fits {
        return false;
    }
    let entries = std::mem::take(&mut e.metadata);
    for (mut k, mut v) in entries.into_iter().take(caps.metadata_entries) {
        truncate(&mut k, caps.metadata_key);
        truncate(&mut v, caps.metadata_value);
        e.metadata.insert(k, v);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_a_char_boundary_and_says_how_much_was_cut() {
        let mut s = "é".repeat(1000);
        let cut = truncate(&mut s, 100).unwrap();
        assert!(s.len() <= 100, "{}", s.len());
        let kept = s.find('…').unwrap();
        assert_eq!(kept + cut, 2000);
        assert!(s.ends_with(&format!("…[truncated {cut} bytes]")), "{s}");
        let mut short = "short".to_owned();
        assert_eq!(truncate(&mut short, 100), None);
        assert_eq!(short, "short");
    }
}
