//! The lake in Azure Blob Storage: `tollgate serve` with
//! `[lake] url = "az://container/prefix"` against Azurite (npm `azurite`,
//! Microsoft's Blob Storage server, installed by
//! scripts/install-test-deps.sh) on a free loopback port. The same path
//! as the S3 test: events land in the container, come back through the
//! query API, and compaction merges them there without losing or doubling
//! a row. What differs underneath is the store's protocol: block blobs,
//! `If-None-Match: *` for the create-only commit, Shared Key signing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::lake_s3::{hourly_requests, local_parquet, send, spend_of_eng, tools_dir};
use crate::support::{Tollgate, free_port, start_mock, wait_for_listener, write_config};

/// The container and prefix the lake goes to.
const CONTAINER: &str = "tollgate-lake";

/// Azurite's well-known development account and key (public: every
/// Azurite has them).
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An Azurite blob server on a free loopback port; killed on drop.
struct Azurite {
    child: Child,
    /// `http://127.0.0.1:PORT/devstoreaccount1`, what
    /// `AZURITE_BLOB_STORAGE_URL` tells object_store.
    url: String,
}

impl Azurite {
    fn start(dir: &Path) -> Azurite {
        let bin = tools_dir().join("azurite/node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "Azurite is not installed at {} (scripts/install-test-deps.sh installs it)",
            bin.display()
        );
        let port = free_port();
        let log = std::fs::File::create(dir.join("azurite.log")).unwrap();
        let child = Command::new(bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.join("azurite"))
            .arg("--skipApiVersionCheck")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("node starts azurite-blob");
        let addr = format!("127.0.0.1:{port}");
        let log = dir.join("azurite.log");
        wait_for_listener("Azurite", &addr, &log, Duration::from_secs(90));
        Azurite {
            child,
            url: format!("http://{addr}"),
        }
    }

    /// Creates a container with the Azure SDK for Python (PyPI
    /// `azure-storage-blob`): object_store cannot create containers.
    fn create_container(&self, name: &str) {
        let script = format!(
            "from azure.storage.blob import BlobServiceClient\n\
             c = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;\
             AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={}/{ACCOUNT};')\n\
             c.create_container('{name}')\n",
            self.url
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .env("PYTHONPATH", tools_dir().join("azure-blob"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "create container {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The environment that points object_store's emulator mode here.
    fn env(&self) -> [(&'static str, String); 1] {
        [("AZURITE_BLOB_STORAGE_URL", self.url.clone())]
    }

    /// The blobs under `<prefix>/<table>/` that are Parquet files, as the
    /// container's file tree on Azurite's disk cannot say (blobs are kept
    /// by content); listed with the SDK.
    fn parquet_under(&self, table: &str) -> Vec<String> {
        let script = format!(
            "from azure.storage.blob import BlobServiceClient\n\
             c = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;\
             AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};BlobEndpoint={}/{ACCOUNT};')\n\
             for b in c.get_container_client('{CONTAINER}').list_blobs(name_starts_with='prod/{table}/'):\n    print(b.name)\n",
            self.url
        );
        let out = Command::new("python3")
            .args(["-c", &script])
            .env("PYTHONPATH", tools_dir().join("azure-blob"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.ends_with(".parquet"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[lake]` section: the container through object_store's Azure
/// store in emulator mode (account and key are Azurite's).
fn lake_config() -> String {
    format!(
        r#"
[lake]
url = "az://{CONTAINER}/prod"

[lake.options]
azure_storage_use_emulator = "true"
azure_storage_account_name = "{ACCOUNT}"
azure_storage_account_key = "{ACCOUNT_KEY}"
"#
    )
}

/// `tollgate compact` on `config` with `env`: its JSON report.
fn compact(config: &PathBuf, env: &[(&str, String)]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["compact", "--min-files", "2", "--config"])
        .arg(config)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tollgate compact: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_in_an_azure_container_is_written_queried_and_compacted_there() {
    let dir = tempfile::tempdir().unwrap();
    let azurite = Azurite::start(dir.path());
    azurite.create_container(CONTAINER);
    let mock = start_mock().await;
    let config = write_config(dir.path(), &mock.url(), &lake_config());
    let env = azurite.env();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let tg = Tollgate::start_role_env(dir.path(), config.clone(), "serve", &env_refs);
    for (n, total) in [(4, 4), (3, 7), (5, 12)] {
        send(&tg, "trace-az", n).await;
        tg.wait_for_trace("trace-az", total).await;
    }
    let files = azurite.parquet_under("events");
    assert!(files.len() >= 3, "files in the container: {files:?}");
    assert_eq!(local_parquet(dir.path()), 0, "no lake file on local disk");
    let (requests, spend) = spend_of_eng(&tg).await;
    assert_eq!(requests, 12);
    tg.stop();

    let report = compact(&config, &env);
    assert_eq!(report["files_merged"], files.len(), "{report}");
    assert_eq!(report["rows"], 12, "{report}");
    let tg = Tollgate::start_role_env(dir.path(), config.clone(), "serve", &env_refs);
    let events = tg.wait_for_trace("trace-az", 12).await;
    let ids: std::collections::HashSet<_> = events.iter().map(|e| &e["event_id"]).collect();
    assert_eq!(ids.len(), 12, "each event once after compaction");
    assert_eq!(spend_of_eng(&tg).await, (12, spend));
    assert_eq!(hourly_requests(&tg).await, 12, "rollups: each event once");
    tg.stop();
    let report = compact(&config, &env);
    assert_eq!(report["leftovers_deleted"], files.len(), "{report}");
    assert_eq!(azurite.parquet_under("events").len(), 1);
}
