//! Instructions per request, counted by valgrind's callgrind.
//!
//! Timings on a shared two-core VM move by 3× between a morning and an
//! evening; instruction counts do not (the same binary and inputs give the
//! same total whatever else the machine does). So a change to the request
//! path is judged by the instructions `tollgate serve` executes per request,
//! pipeline included, and where they go (inclusive, per function).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where a callgrind run's counts are dumped, and how it is started.
pub struct Callgrind {
    /// The dump file's name pattern (`%p` is the pid).
    out_pattern: PathBuf,
}

impl Callgrind {
    /// Whether `valgrind` can be run here.
    pub fn available() -> bool {
        Command::new("valgrind")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// A run whose dumps go to `dir`, or to `TOLLGATE_BENCH_CALLGRIND_OUT`
    /// if set (to be read with `callgrind_annotate` afterwards).
    pub fn new(dir: &Path) -> Callgrind {
        let dir = std::env::var_os("TOLLGATE_BENCH_CALLGRIND_OUT")
            .map_or_else(|| dir.to_owned(), PathBuf::from);
        let _ = std::fs::create_dir_all(&dir);
        Callgrind {
            out_pattern: dir.join("callgrind.out.%p"),
        }
    }

    /// valgrind's arguments before the program's own: counting starts at
    /// once and is zeroed before the measured requests.
    pub fn prefix_args(&self) -> Vec<String> {
        vec![
            "--tool=callgrind".into(),
            format!("--callgrind-out-file={}", self.out_pattern.display()),
        ]
    }

    /// Zeroes the counters of process `pid` (everything before is warm-up).
    pub fn zero(&self, pid: u32) {
        control(&["-z", &pid.to_string()]);
    }

    /// Dumps the counters of `pid` since the last zero; returns the file.
    pub fn dump(&self, pid: u32) -> Option<PathBuf> {
        control(&["-d", &pid.to_string()]);
        let dir = self.out_pattern.parent()?;
        let stem = format!("callgrind.out.{pid}.");
        // callgrind numbers its dumps; the newest is the one just made.
        std::thread::sleep(Duration::from_millis(500));
        std::fs::read_dir(dir)
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&stem))
            .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
            .map(|e| e.path())
    }
}

/// Runs `callgrind_control ARGS`, reporting a failure.
fn control(args: &[&str]) {
    match Command::new("callgrind_control").args(args).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "callgrind_control {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => eprintln!("callgrind_control {args:?}: {e}"),
    }
}

/// The instruction total of a dump (its `totals:` or `summary:` line).
pub fn total_instructions(dump: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dump).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Frames every request passes through (the runtime, the HTTP stack's
/// futures, thread start): they head every inclusive list and say nothing.
const PLUMBING: [&str; 10] = [
    "tokio::runtime",
    "futures_util::",
    "tower::",
    "axum::",
    "hyper_util::",
    "std::sys",
    "clone.S",
    "pthread_create",
    "core::ops::function",
    "http_server::serve",
];

/// The `top` functions of a dump by inclusive instructions, as
/// `callgrind_annotate` prints them, without the [`PLUMBING`].
pub fn top_inclusive(dump: &Path, top: usize) -> String {
    let out = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(dump)
        .output();
    let Ok(out) = out else {
        return "callgrind_annotate not found".into();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" (") || l.contains(':'))
        .skip_while(|l| !l.contains("file:function"))
        .skip(1)
        .filter(|l| !PLUMBING.iter().any(|p| l.contains(p)))
        .map(|l| l.split(" [").next().unwrap_or(l))
        .take(top)
        .collect::<Vec<_>>()
        .join("\n")
}
