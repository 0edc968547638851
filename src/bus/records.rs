//! Building a batch of bus records in a few allocations.
//!
//! A record's key and payload used to be a `Vec` each, the payload grown by
//! doubling while serde wrote into it: several allocations and copies per
//! event, a visible share of the pipeline's profile. A [`RecordBuf`] writes
//! every record of a batch into one growing buffer and hands each out as a
//! `Bytes` slice of it, so a batch of thousands of events costs a handful
//! of allocations; once a batch's records are dropped the buffer's memory
//! is reused by the next.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// Room taken whenever the buffer runs out: a few hundred typical events,
/// so a batch allocates rarely and an idle buffer holds little.
const CHUNK: usize = 256 * 1024;

/// Room asked for before serialising one value (a typical event's JSON).
const TYPICAL: usize = 2048;

/// A buffer records are carved from (see the module doc).
#[derive(Default)]
pub struct RecordBuf {
    buf: BytesMut,
}

impl RecordBuf {
    /// An empty buffer; it allocates on first use.
    pub fn new() -> RecordBuf {
        RecordBuf::default()
    }

    /// A copy of `data` (a key) as a slice of the buffer.
    pub fn bytes(&mut self, data: &[u8]) -> Bytes {
        self.room(data.len());
        self.buf.extend_from_slice(data);
        self.buf.split().freeze()
    }

    /// `value` as JSON, a slice of the buffer.
    pub fn json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<Bytes, serde_json::Error> {
        self.room(TYPICAL);
        let written = serde_json::to_writer((&mut self.buf).writer(), value);
        self.finish(written)
    }

    /// The JSON object `object` with one more member, `"name": value`, as
    /// its last: `object` is copied, not parsed. The caller vouches that
    /// `object` is one JSON object (optionally followed by whitespace) with
    /// at least one member and no member called `name`.
    pub fn json_with_member<T: Serialize + ?Sized>(
        &mut self,
        object: &[u8],
        name: &str,
        value: &T,
    ) -> Result<Bytes, serde_json::Error> {
        let object = object.trim_ascii_end();
        let head = object.strip_suffix(b"}").unwrap_or(object);
        self.room(head.len() + TYPICAL);
        self.buf.extend_from_slice(head);
        self.buf.put_u8(b',');
        let written = serde_json::to_writer((&mut self.buf).writer(), name)
            .and_then(|()| {
                self.buf.put_u8(b':');
                serde_json::to_writer((&mut self.buf).writer(), value)
            })
            .map(|()| self.buf.put_u8(b'}'));
        self.finish(written)
    }

    /// The bytes written since the last record, as one record; on error
    /// they are dropped.
    fn finish(
        &mut self,
        written: Result<(), serde_json::Error>,
    ) -> Result<Bytes, serde_json::Error> {
        match written {
            Ok(()) => Ok(self.buf.split().freeze()),
            Err(e) => {
                self.buf.clear();
                Err(e)
            }
        }
    }

    /// Makes room for at least `n` more bytes, a chunk at a time.
    fn room(&mut self, n: usize) {
        if self.buf.capacity() - self.buf.len() < n {
            self.buf.reserve(n.max(CHUNK));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_separate_slices_that_survive_the_buffer() {
        let mut buf = RecordBuf::new();
        let key = buf.bytes(b"key-1");
        let json = buf.json(&serde_json::json!({"a": 1, "b": "two"})).unwrap();
        let many: Vec<Bytes> = (0..2000)
            .map(|i| buf.json(&serde_json::json!({ "i": i })).unwrap())
            .collect();
        drop(buf);
        assert_eq!(&key[..], b"key-1");
        assert_eq!(&json[..], br#"{"a":1,"b":"two"}"#);
        for (i, record) in many.iter().enumerate() {
            assert_eq!(record, &format!(r#"{{"i":{i}}}"#));
        }
    }

    #[test]
    fn a_member_is_appended_to_an_object_as_its_last() {
        let mut buf = RecordBuf::new();
        let out = buf
            .json_with_member(
                b"{\"a\":1,\"b\":[2]} \n",
                "cost",
                &serde_json::json!({"usd": "0.5"}),
            )
            .unwrap();
        assert_eq!(&out[..], br#"{"a":1,"b":[2],"cost":{"usd":"0.5"}}"#);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["cost"]["usd"], "0.5");
    }
}
