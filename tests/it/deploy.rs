//! The Dockerfile and docker-compose.yml cannot be run here (no Docker daemon where tests
//! run), so they are checked for what can rot: every path they copy or mount exists, the
//! config overrides they set are real keys of a config that loads, the runtime stage
//! runs the binary the build stage made, and compose runs two replicas beside a broker,
//! MariaDB and a provisioned Grafana.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Dockerfile instructions as (keyword, arguments), continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((keyword.to_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

/// `KEY=value KEY2=value` pairs of an ENV instruction.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    args.split_whitespace()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn dockerfile_builds_the_binary_and_ships_config_and_sql() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    let steps = instructions(&text);
    let known = [
        "FROM",
        "WORKDIR",
        "ENV",
        "COPY",
        "RUN",
        "USER",
        "VOLUME",
        "EXPOSE",
        "ENTRYPOINT",
        "CMD",
        "ARG",
        "LABEL",
    ];
    for (keyword, args) in &steps {
        assert!(
            known.contains(&keyword.as_str()),
            "unknown instruction {keyword} {args}"
        );
    }
    let stages: Vec<&String> = steps
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "a build stage and a runtime stage: {stages:?}"
    );
    assert!(stages[0].ends_with(" AS build") && stages[0].starts_with("rust:"));
    assert!(stages[1].starts_with("debian:") && stages[1].contains("-slim"));

    let mut env = BTreeMap::new();
    let mut built = false;
    for (keyword, args) in &steps {
        match keyword.as_str() {
            "COPY" if args.starts_with("--from=build") => {
                let mut parts = args.split_whitespace().skip(1);
                let (from, to) = (parts.next().expect("source"), parts.next().expect("target"));
                assert!(built, "copies the binary before building it");
                assert_eq!(
                    from, "/usr/local/bin/lakestream",
                    "the path the build stage wrote"
                );
                assert!(to.ends_with("/lakestream"));
            }
            "COPY" => {
                let parts: Vec<&str> = args.split_whitespace().collect();
                for source in &parts[..parts.len() - 1] {
                    assert!(
                        repo().join(source).exists(),
                        "COPY source {source} is missing"
                    );
                }
            }
            "RUN" if args.contains("cargo build --release --locked --bin lakestream") => {
                assert!(args.contains("cp target/release/lakestream /usr/local/bin/lakestream"));
                built = true;
            }
            "ENV" => env.extend(env_pairs(args)),
            "ENTRYPOINT" => assert_eq!(args, r#"["lakestream"]"#),
            _ => {}
        }
    }
    assert!(built, "no cargo build step");
    let config = env["LAKESTREAM_CONFIG"]
        .strip_prefix("/opt/lakestream/")
        .expect("config under the working directory");
    assert!(
        repo().join(config).is_file(),
        "{config} is not in the image"
    );
    load_with(&env);
}

/// The shipped config with the `LAKESTREAM__...` overrides of `env` must load: a
/// misspelt key is an error naming it.
fn load_with(env: &BTreeMap<String, String>) {
    let overrides: Vec<(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("LAKESTREAM__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(!overrides.is_empty());
    let path = repo().join("config/lakestream.toml");
    // Relative paths in the config (SQL files, lookups) resolve from the working
    // directory, which cargo sets to the repository for tests.
    lakestream::config::load(&path, overrides, &[]).unwrap_or_else(|e| panic!("{e}"));
}

fn map<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or_else(|| panic!("no '{key}' in {v:?}"))
}

fn environment(service: &Value) -> BTreeMap<String, String> {
    let env = map(service, "environment");
    env.as_mapping()
        .expect("environment as a map")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => serde_yaml::to_string(other)
                    .expect("value")
                    .trim()
                    .to_string(),
            };
            (k.as_str().expect("name").to_string(), v)
        })
        .collect()
}

#[test]
fn compose_runs_two_replicas_beside_broker_mariadb_and_grafana() {
    let text = std::fs::read_to_string(repo().join("docker-compose.yml")).expect("compose");
    let mut doc: Value = serde_yaml::from_str(&text).expect("valid YAML");
    doc.apply_merge().expect("YAML anchors and merges");
    let services = map(&doc, "services");
    for name in ["kafka", "mariadb", "grafana", "lakestream"] {
        assert!(services.get(name).is_some(), "no service {name}");
    }
    let lake = map(services, "lakestream");
    assert_eq!(map(map(lake, "deploy"), "replicas").as_u64(), Some(2));
    assert_eq!(map(lake, "build").as_str(), Some("."));
    assert!(repo().join("Dockerfile").is_file());
    let env = environment(lake);
    assert_eq!(env["LAKESTREAM__KAFKA__BROKERS"], "kafka:9092");
    assert_eq!(env["LAKESTREAM__MYSQL__HOST"], "mariadb");
    load_with(&env);

    // Every host path mounted exists, and Grafana gets what its provisioning reads.
    for (name, service) in services.as_mapping().expect("services map") {
        let Some(volumes) = service.get("volumes").and_then(Value::as_sequence) else {
            continue;
        };
        for volume in volumes {
            let spec = volume.as_str().expect("short volume syntax");
            let host = spec.split(':').next().expect("source");
            if host.starts_with("./") {
                assert!(
                    repo().join(host).exists(),
                    "{name:?}: {host} does not exist"
                );
            } else {
                assert!(
                    map(&doc, "volumes").get(host).is_some(),
                    "{name:?}: volume {host} undeclared"
                );
            }
        }
    }
    let grafana = map(services, "grafana");
    let grafana_env = environment(grafana);
    let datasource = std::fs::read_to_string(
        repo().join("config/grafana/provisioning/datasources/lakestream.yaml"),
    )
    .expect("datasource");
    for var in ["LAKESTREAM_MYSQL_ADDRESS", "LAKESTREAM_BI_PASSWORD"] {
        assert!(
            datasource.contains(&format!("${{{var}}}")),
            "datasource does not read {var}"
        );
        assert!(grafana_env.contains_key(var), "grafana is not given {var}");
    }
    let provider = std::fs::read_to_string(
        repo().join("config/grafana/provisioning/dashboards/lakestream.yaml"),
    )
    .expect("dashboard provider");
    let mounted = grafana["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .filter_map(Value::as_str)
        .any(|v| v.starts_with("./config/grafana/dashboards:/etc/grafana/dashboards/lakestream"));
    assert!(mounted && provider.contains("path: /etc/grafana/dashboards/lakestream"));
    assert!(
        Path::new(&repo().join("config/grafana/dashboards"))
            .read_dir()
            .expect("dashboards")
            .count()
            > 0
    );
}
