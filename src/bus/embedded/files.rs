//! The log's files and names: segment file naming and listing, directory
//! creation and fsync, and the checks that make topic and group names safe
//! path components.
//!
//! Kept apart so every path the log builds from a caller's name goes
//! through one set of rules.

use std::io;
use std::path::Path;

use super::{EmbeddedLogError, io_err};

/// Longest topic or group name: keeps `<group>.offset` under the usual
/// 255-byte file name limit.
pub(super) const MAX_NAME_LEN: usize = 200;
/// Suffix of segment files.
pub(super) const SEGMENT_SUFFIX: &str = ".log";
/// Suffix of consumer-group offset files.
pub(super) const OFFSET_SUFFIX: &str = ".offset";
/// Digits in a segment file name (enough for any u64).
const SEGMENT_DIGITS: usize = 20;

/// Checks a topic or group name: it becomes a path component.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Rejects a bad topic name with an error naming it.
pub(super) fn check_topic(name: &str) -> Result<(), EmbeddedLogError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(EmbeddedLogError::BadTopicName {
            name: name.to_owned(),
        })
    }
}

/// Rejects a bad group name with an error naming it.
pub(super) fn check_group(name: &str) -> Result<(), EmbeddedLogError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(EmbeddedLogError::BadGroupName {
            name: name.to_owned(),
        })
    }
}

/// File name of the segment whose first record has offset `base`.
pub(super) fn segment_name(base: u64) -> String {
    format!("{base:0SEGMENT_DIGITS$}{SEGMENT_SUFFIX}")
}

/// Base offset encoded in a segment file name, if it is one.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment bases found in a topic directory, ascending.
pub(super) fn list_segments(dir: &Path) -> Result<Vec<u64>, EmbeddedLogError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_segment_name) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Makes created, renamed or removed directory entries durable.
#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> Result<(), EmbeddedLogError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Directory fsync is a no-op off unix (and not possible on Windows).
#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> Result<(), EmbeddedLogError> {
    Ok(())
}

/// Creates `dir` if missing, making its entry in `parent` durable.
pub(super) fn ensure_dir(dir: &Path, parent: &Path) -> Result<(), EmbeddedLogError> {
    match crate::private_fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("create directory", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::EmbeddedLog;
    use super::*;

    #[test]
    fn bad_topic_name_is_rejected_with_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(dir.path()).unwrap();
        let long = "x".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../up",
            "sp ace",
            "naïve",
            long.as_str(),
        ] {
            let err = log.append(bad, &[(b"", b"a")]).unwrap_err();
            assert!(
                matches!(err, EmbeddedLogError::BadTopicName { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
            assert!(log.reader(bad, 0).is_err());
            assert!(log.end_offset(bad).is_err());
            assert!(log.commit("g", bad, 1).is_err());
        }
        let err = log.commit("g/../x", "t", 1).unwrap_err();
        assert!(
            matches!(err, EmbeddedLogError::BadGroupName { .. }),
            "{err}"
        );
        for good in ["tollgate.events.v1", "A-b_c.9"] {
            log.append(good, &[(b"", b"a")]).unwrap();
        }
        assert!(!dir.path().join("a").exists());
    }
}
