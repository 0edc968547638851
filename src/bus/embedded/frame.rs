//! The record frame: the log's on-disk format, written by appends and
//! compaction and decoded by [`super::cursor::SegmentCursor`].
//!
//! Every record is framed as (all little endian)
//! `len u32 | crc32 u32 | offset u64 | key_len u32 | key | payload`, where
//! `len` counts everything after the crc and the crc (crc32fast) covers the
//! same bytes. Kept apart so the format is defined in one place, next to
//! what a decoder may find.

use super::Record;

/// Bytes of a frame before its key: len, crc, offset, key length.
pub(super) const HEADER_LEN: usize = 4 + 4 + 8 + 4;
/// Bytes covered by `len` that are not key or payload: offset, key length.
pub(super) const BODY_FIXED: usize = 8 + 4;
/// Largest key + payload accepted; also stops a garbage length from making
/// a reader allocate gigabytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// Little-endian u32 at `at` (caller guarantees the bytes are there).
pub(super) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Little-endian u64 at `at` (caller guarantees the bytes are there).
pub(super) fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Appends one framed record to `out`.
pub(super) fn encode_frame(out: &mut Vec<u8>, offset: u64, key: &[u8], payload: &[u8]) {
    let len = BODY_FIXED + key.len() + payload.len();
    let start = out.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What [`super::cursor::SegmentCursor::next_frame`] found.
pub(super) enum Frame {
    /// A frame below the offset asked for, passed over by its header alone
    /// (no checksum): how a reader gets from a sparse index entry to its
    /// start offset.
    Skipped,
    /// A whole frame, checksum verified.
    Whole {
        /// The record's offset.
        offset: u64,
        /// Byte position of the frame.
        pos: u64,
        /// The record, if asked for.
        record: Option<Record>,
    },
    /// No bytes left before the limit.
    End,
    /// Bytes remain before the limit but do not make a valid frame.
    Bad {
        /// Byte position of the bad frame.
        pos: u64,
        /// What was wrong.
        reason: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_len_crc_offset_key_len_key_payload_with_the_crc_over_the_body() {
        let mut out = vec![0xee]; // a frame is appended after what is there
        encode_frame(&mut out, 42, b"key", b"payload");
        assert_eq!(out[0], 0xee);
        let frame = &out[1..];
        assert_eq!(frame.len(), HEADER_LEN + 3 + 7);
        assert_eq!(le_u32(frame, 0) as usize, BODY_FIXED + 3 + 7);
        assert_eq!(le_u32(frame, 4), crc32fast::hash(&frame[8..]));
        assert_eq!(le_u64(frame, 8), 42);
        assert_eq!(le_u32(frame, 16), 3);
        assert_eq!(&frame[HEADER_LEN..], b"keypayload");
    }
}
