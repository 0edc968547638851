//! Consumer groups' committed offsets: one small file per group and topic
//! (`<root>/<topic>/<group>.offset`), replaced atomically on commit.
//!
//! Separate from the segments: offsets are written by consumers, not by
//! appends, and retention reads them to know what it may delete.

use std::io::{self, Write};
use std::path::PathBuf;

use super::files::{OFFSET_SUFFIX, check_group, check_topic, ensure_dir, sync_dir};
use super::{EmbeddedLog, EmbeddedLogError, io_err};

impl EmbeddedLog {
    /// Path of a group's offset file for a topic (validating both names).
    fn offset_path(&self, group: &str, topic: &str) -> Result<PathBuf, EmbeddedLogError> {
        check_topic(topic)?;
        check_group(group)?;
        Ok(self
            .root
            .join(topic)
            .join(format!("{group}{OFFSET_SUFFIX}")))
    }

    /// Durably records that `group` will next read `next_offset` of
    /// `topic`: temp file, fsync, rename over the old one, fsync directory.
    pub fn commit(
        &self,
        group: &str,
        topic: &str,
        next_offset: u64,
    ) -> Result<(), EmbeddedLogError> {
        let path = self.offset_path(group, topic)?;
        let dir = self.root.join(topic);
        let tmp = dir.join(format!("{group}{OFFSET_SUFFIX}.tmp"));
        let _guard = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        ensure_dir(&dir, &self.root)?;
        let mut file = crate::private_fs::create_file(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(format!("{next_offset}\n").as_bytes())
            .map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
        sync_dir(&dir)
    }

    /// The next offset `group` will read from `topic`: what it last
    /// committed, or 0 if it never did.
    pub fn committed(&self, group: &str, topic: &str) -> Result<u64, EmbeddedLogError> {
        let path = self.offset_path(group, topic)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => text
                .trim()
                .parse()
                .map_err(|_| EmbeddedLogError::BadOffsetFile {
                    content: text.trim().to_owned(),
                    path,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_and_committed_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = EmbeddedLog::open(dir.path()).unwrap();
            assert_eq!(log.committed("sink", "t").unwrap(), 0, "unknown group");
            log.commit("sink", "t", 42).unwrap();
            log.commit("sink", "t", 43).unwrap();
            log.commit("audit", "t", 7).unwrap();
            assert_eq!(log.committed("sink", "t").unwrap(), 43);
        }
        let log = EmbeddedLog::open(dir.path()).unwrap();
        assert_eq!(log.committed("sink", "t").unwrap(), 43);
        assert_eq!(log.committed("audit", "t").unwrap(), 7);
        assert_eq!(log.committed("sink", "other").unwrap(), 0);
        // Offset files do not disturb the topic's segments.
        assert_eq!(log.end_offset("t").unwrap(), 0);
        assert_eq!(log.append("t", &[(b"", b"a")]).unwrap(), 0);

        std::fs::write(dir.path().join("t").join("sink.offset"), "junk").unwrap();
        let err = log.committed("sink", "t").unwrap_err();
        assert!(
            matches!(err, EmbeddedLogError::BadOffsetFile { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("sink.offset"), "{err}");
    }
}
