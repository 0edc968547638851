//! Creating files and directories only their owner can read.
//!
//! Everything tollgate writes (the embedded log and journal, the lake, the
//! fingerprint secret, `tollgate init`'s config with its key hash and
//! provider settings) holds spend, identities or secrets, so every file it
//! creates is 0600 and every directory 0700, whatever the umask allows.
//! Every place that creates one goes through here, so none is forgotten.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::path::Path;

/// Mode of every directory tollgate creates: owner only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file tollgate creates: owner read and write.
pub const FILE_MODE: u32 = 0o600;

/// A [`DirBuilder`] that creates owner-only directories.
fn dir_builder(recursive: bool) -> DirBuilder {
    let mut b = DirBuilder::new();
    b.recursive(recursive);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, DIR_MODE);
    b
}

/// `std::fs::create_dir_all` with owner-only directories (those that
/// already exist are left as they are).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    dir_builder(true).create(path)
}

/// `std::fs::create_dir` with an owner-only directory.
pub fn create_dir(path: &Path) -> io::Result<()> {
    dir_builder(false).create(path)
}

/// [`OpenOptions`] whose created files are owner-only; the caller adds
/// `write`, `append`, `create` as it needs.
pub fn open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options
}

/// `File::create` (write, create, truncate) with an owner-only file.
pub fn create_file(path: &Path) -> io::Result<File> {
    open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_directories_are_0700_and_files_0600() {
        let root = tempfile::tempdir().unwrap();
        let nested = root.path().join("a").join("b");
        create_dir_all(&nested).unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        create_dir(&nested.join("c")).unwrap();
        assert_eq!(mode(&nested.join("c")), 0o700);
        create_file(&nested.join("f")).unwrap();
        assert_eq!(mode(&nested.join("f")), 0o600);
        open_options()
            .append(true)
            .create(true)
            .open(nested.join("g"))
            .unwrap();
        assert_eq!(mode(&nested.join("g")), 0o600);
    }
}
