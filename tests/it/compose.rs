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
        .env("GRAFANA_ADMIN_PASSWORD", "generated")
        .env("MINIO_ROOT_PASSWORD", "generated")
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

/// `docker-compose config` of the file with `env` (and nothing from the
/// caller's environment that the file reads): the resolved YAML, or the
/// error text.
fn resolved(env: &[(&str, &str)]) -> Result<serde_yaml::Value, String> {
    let mut command = Command::new("docker-compose");
    command
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(repo());
    for var in [
        "GRAFANA_ADMIN_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "TOLLGATE_PUBLISH_ADDR",
        "TOLLGATE_ADMIN_TOKEN",
    ] {
        command.env_remove(var);
    }
    let out = command
        .envs(env.iter().copied())
        .output()
        .expect("docker-compose runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_yaml::from_slice(&out.stdout).unwrap())
}

#[test]
fn compose_refuses_to_start_grafana_without_a_generated_password() {
    let err = resolved(&[("ANTHROPIC_API_KEY", "x"), ("MINIO_ROOT_PASSWORD", "pw")]).unwrap_err();
    assert!(err.contains("GRAFANA_ADMIN_PASSWORD"), "{err}");
    let err =
        resolved(&[("ANTHROPIC_API_KEY", "x"), ("GRAFANA_ADMIN_PASSWORD", "pw")]).unwrap_err();
    assert!(
        err.contains("MINIO_ROOT_PASSWORD"),
        "MinIO needs a generated password too: {err}"
    );
    let doc = resolved(&[
        ("ANTHROPIC_API_KEY", "x"),
        ("GRAFANA_ADMIN_PASSWORD", "pw-from-env"),
        ("MINIO_ROOT_PASSWORD", "pw"),
    ])
    .unwrap();
    let env = &doc["services"]["grafana"]["environment"];
    assert_eq!(
        env["GF_SECURITY_ADMIN_PASSWORD"].as_str(),
        Some("pw-from-env")
    );
    assert_eq!(env["GF_AUTH_ANONYMOUS_ENABLED"].as_str(), Some("false"));
}

#[test]
fn every_published_port_is_bound_to_loopback_unless_asked() {
    let base = [
        ("ANTHROPIC_API_KEY", "x"),
        ("GRAFANA_ADMIN_PASSWORD", "pw"),
        ("MINIO_ROOT_PASSWORD", "pw"),
    ];
    let published = |doc: &serde_yaml::Value| -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, service) in doc["services"].as_mapping().unwrap() {
            for port in service
                .get("ports")
                .and_then(|p| p.as_sequence())
                .into_iter()
                .flatten()
            {
                out.push((
                    name.as_str().unwrap().to_owned(),
                    port.as_str().unwrap().to_owned(),
                ));
            }
        }
        out
    };
    let doc = resolved(&base).unwrap();
    let ports = published(&doc);
    assert!(ports.len() >= 4, "{ports:?}");
    for (service, port) in &ports {
        assert!(
            port.starts_with("127.0.0.1:"),
            "{service} publishes {port} beyond loopback"
        );
    }
    assert!(
        doc["services"]["kafka"].get("ports").is_none(),
        "Kafka is not published"
    );
    // Asked: the gateway and query API only; monitoring stays on loopback.
    let mut asked = base.to_vec();
    asked.push(("TOLLGATE_PUBLISH_ADDR", "0.0.0.0"));
    for (service, port) in published(&resolved(&asked).unwrap()) {
        let wide = ["gateway", "api"].contains(&service.as_str());
        assert_eq!(port.starts_with("0.0.0.0:"), wide, "{service}: {port}");
    }
}

#[test]
fn prometheus_scrapes_the_metrics_listener_not_the_gateway_port() {
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo().join("docker-compose.yml")).unwrap())
            .unwrap();
    let listen = compose["x-tollgate"]["environment"]["TOLLGATE_METRICS_LISTEN"]
        .as_str()
        .expect("roles get TOLLGATE_METRICS_LISTEN");
    let port = listen.rsplit(':').next().unwrap();
    let prometheus: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("deploy/prometheus.yml")).unwrap(),
    )
    .unwrap();
    let targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_sequence()
        .unwrap();
    assert_eq!(targets.len(), 5);
    for t in targets {
        assert!(t.as_str().unwrap().ends_with(&format!(":{port}")), "{t:?}");
    }
    let cfg = tollgate::config::Config::parse(
        &std::fs::read_to_string(repo().join("deploy/tollgate.kafka.toml"))
            .unwrap()
            .replace("${TOLLGATE_KAFKA_BROKERS}", "kafka:9092")
            .replace("${TOLLGATE_METRICS_LISTEN:-127.0.0.1:9464}", listen),
        Path::new("deploy/tollgate.kafka.toml"),
    )
    .unwrap();
    assert_eq!(
        cfg.server.metrics_listen.map(|a| a.port().to_string()),
        Some(port.to_owned())
    );
}
