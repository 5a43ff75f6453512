//! The Dockerfile and docker-compose.yml cannot be run here (no Docker daemon where tests
//! run), so they are checked for what can rot: every path they copy or mount exists, the
//! config overrides they set are real keys of a config that loads, the runtime stage
//! runs the binary the build stage made, and compose runs two replicas beside a broker,
//! MariaDB and a provisioned Grafana. The Helm chart is rendered (helm template) and
//! checked against the binary the same way.

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
            "RUN" if args.contains("scripts/dist.sh") => {
                assert!(args.contains("OUT=/src/dist"));
                assert!(args.contains("cp dist/lakestream /usr/local/bin/lakestream"));
                let script =
                    std::fs::read_to_string(repo().join("scripts/dist.sh")).expect("dist.sh");
                assert!(script.contains("profile=${PROFILE:-dist}"));
                assert!(
                    script.contains("cargo build --profile \"$profile\" --locked --bin lakestream")
                );
                let manifest =
                    std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
                assert!(manifest.contains("[profile.dist]"));
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
    let build = map(lake, "build");
    assert_eq!(map(build, "context").as_str(), Some("."));
    assert!(repo().join("Dockerfile").is_file());
    // The demo builds the quicker release profile through the Dockerfile's PROFILE.
    assert_eq!(map(map(build, "args"), "PROFILE").as_str(), Some("release"));
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("ARG PROFILE=dist") && dockerfile.contains("PROFILE=$PROFILE"));
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

/// Where `helm` is: on PATH, or where `go install` put it (scripts/install-deps.sh).
fn helm() -> PathBuf {
    let on_path = std::process::Command::new("helm").arg("version").output();
    if on_path.is_ok_and(|o| o.status.success()) {
        return PathBuf::from("helm");
    }
    let gopath = std::process::Command::new("go")
        .args(["env", "GOPATH"])
        .output()
        .expect("go is installed");
    PathBuf::from(String::from_utf8_lossy(&gopath.stdout).trim()).join("bin/helm")
}

/// The chart rendered with its defaults, by kind.
fn rendered_chart() -> BTreeMap<String, Value> {
    use serde::Deserialize;
    let out = std::process::Command::new(helm())
        .args(["template", "lakestream"])
        .arg(repo().join("deploy/helm/lakestream"))
        .output()
        .expect("helm runs (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|doc| Value::deserialize(doc).ok())
        .filter(|doc| !doc.is_null())
        .map(|doc| (doc["kind"].as_str().unwrap_or_default().to_string(), doc))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_helm_chart_runs_members_the_binary_accepts() {
    use clap::Parser;
    let chart = rendered_chart();
    for kind in [
        "Deployment",
        "ConfigMap",
        "Secret",
        "Service",
        "PodDisruptionBudget",
        "ScaledObject",
    ] {
        assert!(chart.contains_key(kind), "no {kind} in {:?}", chart.keys());
    }
    let deployment = &chart["Deployment"];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // The arguments are a command line the binary takes, and the drain fits in the grace
    // period Kubernetes gives before SIGKILL.
    let args = strings(&container["args"]);
    let cli = lakestream::cli::Cli::try_parse_from(
        std::iter::once("lakestream".to_string()).chain(args.clone()),
    )
    .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let lakestream::cli::Command::Run(run) = cli.command else {
        panic!("the members must `run`: {args:?}");
    };
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    assert!(
        run.drain_timeout.as_secs() + 10 <= grace,
        "drain {:?} must end well before SIGKILL at {grace}s",
        run.drain_timeout
    );

    // The config the ConfigMap mounts where --config points loads with the pod's
    // environment (every LAKESTREAM__ key is a real key) and listens on the port the
    // probes and the Service use.
    let mount = container["volumeMounts"][0]["mountPath"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(cli.config, Path::new(mount).join("lakestream.toml"));
    let text = chart["ConfigMap"]["data"]["lakestream.toml"]
        .as_str()
        .expect("config");
    let env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        env.iter().all(|(k, _)| k.starts_with("LAKESTREAM__")),
        "{env:?}"
    );
    let plan = lakestream::config::load_str(text, "chart", env.clone(), &[])
        .unwrap_or_else(|e| panic!("the chart's config with {env:?}: {e}"));
    let port = container["ports"][0]["containerPort"]
        .as_u64()
        .expect("port");
    assert_eq!(plan.http.listen, format!("0.0.0.0:{port}"));
    // The container's memory limit holds the budget plus the fixed part
    // (docs/operations.md, "Memory"), or the kernel kills a member under backlog.
    let container_limit = container["resources"]["limits"]["memory"]
        .as_str()
        .and_then(|m| {
            m.strip_suffix("Gi")
                .map(|g| g.parse::<u64>().map(|g| g << 30))
        })
        .and_then(Result::ok)
        .expect("resources.limits.memory in Gi");
    assert!(
        container_limit >= plan.memory_limit + (256 << 20),
        "memory limit {container_limit} leaves under 256 MiB above memory_limit {}",
        plan.memory_limit
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"],
        lakestream::http::HEALTH_PATH
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"]["path"],
        lakestream::http::METRICS_PATH
    );
    let port_name = container["ports"][0]["name"].as_str().unwrap_or_default();
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], port_name, "{probe}");
    }
    assert_eq!(
        chart["Service"]["spec"]["ports"][0]["targetPort"],
        port_name
    );
    let secret = chart["Secret"]["metadata"]["name"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(container["envFrom"][0]["secretRef"]["name"], secret);

    // The PDB and the Service select the members.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        &chart["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        labels
    );
    assert_eq!(&chart["Service"]["spec"]["selector"], labels);
    assert_eq!(chart["PodDisruptionBudget"]["spec"]["maxUnavailable"], 1);

    // KEDA watches the group the members commit to, on the topic and brokers they read.
    let names: Vec<String> = plan.pipelines.keys().cloned().collect();
    let readers = plan.readers(&names).expect("readers");
    assert_eq!(readers.len(), 1, "the chart's pipelines share one reader");
    let scaled = &chart["ScaledObject"]["spec"];
    let trigger = &scaled["triggers"][0]["metadata"];
    assert_eq!(trigger["consumerGroup"], readers[0].group_id().as_str());
    assert_eq!(trigger["topic"], readers[0].source.topic());
    assert_eq!(trigger["bootstrapServers"], plan.kafka.brokers.as_str());
    assert_eq!(
        scaled["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "KEDA owns the count"
    );
}
