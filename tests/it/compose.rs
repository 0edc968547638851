//! `docker-compose.yml` cannot run here (no Docker engine), so this checks
//! what can be checked without one: Compose itself accepts the file, every
//! tollgate service runs a real role, and every file it mounts exists.

use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn docker_compose_file_is_accepted_by_compose() {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(repo())
        .env("ANTHROPIC_API_KEY", "x")
        .output()
        .expect("docker-compose is installed by scripts/install-test-deps.sh");
    assert!(
        out.status.success(),
        "docker-compose rejected the file:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_compose_service_runs_a_real_role_and_mounts_files_that_exist() {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let services = doc["services"].as_mapping().expect("services");
    let roles = ["gateway", "accountant", "sink", "api", "notifier"];
    let mut seen_roles = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        // Merge keys (`<<: *tollgate`) are resolved by Compose; read the
        // anchor's volumes when the service has none of its own.
        let volumes = service
            .get("volumes")
            .or_else(|| service.get("<<").and_then(|m| m.get("volumes")));
        for volume in volumes.and_then(|v| v.as_sequence()).into_iter().flatten() {
            let spec = volume.as_str().unwrap();
            let source = spec.split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(
                    repo().join(source).exists(),
                    "service {name} mounts {source}, which does not exist"
                );
            }
        }
        if let Some(command) = service.get("command").and_then(|c| c.as_sequence()) {
            let first = command[0].as_str().unwrap();
            if roles.contains(&first) {
                seen_roles.push(first.to_owned());
                let config = command
                    .iter()
                    .skip_while(|a| a.as_str() != Some("--config"))
                    .nth(1)
                    .unwrap()
                    .as_str()
                    .unwrap();
                assert_eq!(
                    config, "/etc/tollgate/tollgate.toml",
                    "service {name} reads the mounted config"
                );
            }
        }
    }
    seen_roles.sort();
    assert_eq!(
        seen_roles,
        ["accountant", "api", "gateway", "notifier", "sink"],
        "every role runs as a service"
    );
    let cfg = tollgate::config::Config::parse(
        &std::fs::read_to_string(repo().join("deploy/tollgate.kafka.toml"))
            .unwrap()
            .replace("${TOLLGATE_KAFKA_BROKERS}", "kafka:9092"),
        Path::new("deploy/tollgate.kafka.toml"),
    )
    .expect("the compose config is a valid tollgate config");
    assert_eq!(cfg.bus.kind, tollgate::config::BusKind::Kafka);
    // Every role of the file exists as a subcommand of the binary.
    for role in roles {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args([role, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "tollgate {role} is a command");
    }
}
