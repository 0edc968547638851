//! What the kernel says of a process (`/proc/<pid>/stat` and `status`),
//! for the benchmarks that print CPU time and memory.

// Each benchmark reads some of these figures, none all of them.
#![allow(dead_code)]

/// What the kernel says of a process: CPU time and memory.
pub struct ProcStats {
    /// User plus system CPU seconds.
    pub cpu: f64,
    /// Resident set, MiB.
    pub rss: f64,
    /// Peak resident set (VmHWM), MiB.
    pub peak: f64,
    /// Resident anonymous memory (heap, stacks), MiB: what the process
    /// allocated itself.
    pub anon: f64,
    /// Resident file-backed memory, MiB: mostly the pages of the binary's
    /// code it has run, shared with the page cache and dropped under
    /// pressure without swapping.
    pub file: f64,
}

impl ProcStats {
    /// The figures of process `pid` (a number, or `self`) now.
    pub fn of(pid: impl std::fmt::Display) -> ProcStats {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mib = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        ProcStats {
            cpu: cpu_seconds(&stat),
            rss: mib("VmRSS:"),
            peak: mib("VmHWM:"),
            anon: mib("RssAnon:"),
            file: mib("RssFile:"),
        }
    }

    /// "R MiB (A anon + F file)", the split that says how much of the
    /// resident set is the process's own.
    pub fn resident(&self) -> String {
        format!(
            "{:.1} MiB ({:.1} anon + {:.1} file)",
            self.rss, self.anon, self.file
        )
    }
}

/// CPU seconds per thread name of process `pid` (threads sharing a name,
/// like tokio's workers, summed): where a process's CPU time goes.
pub fn cpu_by_thread(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        *by_name.entry(name).or_insert(0.0) += cpu_seconds(&stat);
    }
    by_name
}

/// User plus system CPU seconds in a `/proc/.../stat` line (0 where it
/// cannot be read). Fields are counted after the command name's closing
/// parenthesis: the name itself may hold spaces and parentheses.
fn cpu_seconds(stat: &str) -> f64 {
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The CPU each thread name spent between two [`cpu_by_thread`] readings,
/// largest first, as "name 1.23 s" items; threads gone since `before`
/// count as nothing, new ones as all they spent.
pub fn cpu_spent(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> Vec<(String, f64)> {
    let mut spent: Vec<(String, f64)> = after
        .iter()
        .map(|(name, t)| (name.clone(), t - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, t)| *t > 0.0)
        .collect();
    spent.sort_by(|a, b| b.1.total_cmp(&a.1));
    spent
}
