//! Links `tollgate`'s binaries with packed relative relocations
//! (`DT_RELR`) where the toolchain supports them.
//!
//! A position-independent Rust binary of this size carries ~6 MB of
//! `.rela.dyn`: one 24-byte entry per pointer the loader must adjust.
//! The loader reads all of it at every start, so those pages stayed
//! resident for the life of every process (about 6 MiB of a `tollgate
//! serve`'s 46 MiB idle RSS, and as much of every gateway's). Packed, the
//! same relocations take a few hundred KiB. The binary stays
//! position-independent (ASLR kept); it then needs glibc ≥ 2.36 at run
//! time, which the probe below checks by linking a program with the flag.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" && links_with_packed_relocations() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the C toolchain rustc links with accepts `-z
/// pack-relative-relocs` without a warning: binutils ≥ 2.38 and a libc
/// that provides `GLIBC_ABI_DT_RELR` (glibc ≥ 2.36). Otherwise the
/// binaries are linked as before.
fn links_with_packed_relocations() -> bool {
    let Some(out_dir) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return false;
    };
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let probe = out_dir.join("relr-probe");
    let child = Command::new(cc)
        .args(["-x", "c", "-", "-o"])
        .arg(&probe)
        .args(["-Wl,-z,pack-relative-relocs", "-Wl,--fatal-warnings"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"int main(void) { return 0; }\n");
    }
    child.wait().is_ok_and(|status| status.success())
}
