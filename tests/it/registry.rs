//! Avro through a Schema Registry (Apicurio, its Confluent API), records written by an
//! independent serializer (confluent-kafka's, fastavro): five versions of the subject
//! (fields added with defaults, one removed, one more added, one incompatible), kill -9
//! while the columns change, the registry down mid-run; every record lands exactly once
//! with its values and types, and hostile frames are dead letters with their reason.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::common::{brokers, row_strings, sigterm, tail, wait_until, TestEnv};

/// One Apicurio Registry for this test, its storage in a file so a restart keeps the ids.
struct Registry {
    port: u16,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
    process: Option<Child>,
}

impl Registry {
    fn start(dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut registry = Self {
            port,
            data: dir.join("registry-db"),
            log: dir.join("registry.log"),
            process: None,
        };
        registry.up();
        registry
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/apis/ccompat/v7", self.port)
    }

    fn up(&mut self) {
        let home = std::env::var("REGISTRY_APP").unwrap_or_else(|_| {
            format!(
                "{}/.cache/lakestream-registry",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let jar = Path::new(&home).join("registry.jar");
        assert!(
            jar.exists(),
            "no {}: run scripts/install-deps.sh",
            jar.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new("java")
            .args([
                "-Xmx384m",
                "-Dquarkus.http.host=127.0.0.1",
                &format!("-Dquarkus.http.port={}", self.port),
                "-jar",
            ])
            .arg(&jar)
            .env(
                "REGISTRY_DATASOURCE_URL",
                format!(
                    "jdbc:h2:file:{};DB_CLOSE_ON_EXIT=FALSE;WRITE_DELAY=0",
                    self.data.display()
                ),
            )
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("java");
        self.process = Some(child);
        for _ in 0..240 {
            let ready =
                std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.answers();
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "the registry did not start: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn answers(&self) -> bool {
        Command::new("curl")
            .args(["-sf", &format!("{}/subjects", self.url())])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Killed, as an outage is.
    fn down(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.down();
    }
}

fn tool(env: &TestEnv, registry: &Registry, args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry_tool.py");
    let out =
        Command::new(std::env::var("LAKESTREAM_TEST_PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(script)
            .args([brokers(), registry.url()])
            .arg(args[0])
            .arg(&env.topic)
            .args(&args[1..])
            .output()
            .expect("python3");
    assert!(
        out.status.success(),
        "registry_tool {args:?}: {}",
        tail(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub(crate) async fn rows(env: &TestEnv) -> i64 {
    match deltalake::open_table(env.table_url("calls")).await {
        Ok(_) => env.count("calls").await,
        Err(_) => 0,
    }
}

pub(crate) fn kill_during(env: &TestEnv, log: &str, rng: &mut StdRng) {
    let mut run = env.spawn(&["run"], log);
    std::thread::sleep(Duration::from_millis(rng.gen_range(3_000..7_000)));
    run.kill().expect("kill -9");
    run.wait().expect("reap");
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_versions_kill_9_and_a_registry_outage_land_exactly_once_with_their_types() {
    let mut env = TestEnv::new("avro");
    let mut registry = Registry::start(env.dir.path());
    env.config = Some(("config/examples/avro-registry.toml".into(), "calls".into()));
    env.pipelines = vec!["calls".into(), "calls_by_state".into()];
    env.overrides.extend([
        format!("schema_registry.url={}", registry.url()),
        "pipelines.calls.trigger_interval=300ms".to_string(),
        "pipelines.calls_by_state.trigger_interval=300ms".to_string(),
    ]);
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, 4)
        .await
        .expect("create topic");
    let mut rng = StdRng::seed_from_u64(34);

    tool(&env, &registry, &["produce", "v1", "0", "200"]);
    env.catch_up();
    assert_eq!(env.count("calls").await, 200);
    let schema = env.run_ok(&["schema", "calls", "--format", "csv"]);
    let schema = String::from_utf8_lossy(&schema.stdout).to_string();
    for column in [
        "id,long",
        "kind,string",
        "at,timestamp",
        "amount,\"decimal(10,2)\"",
        "state,string",
        "note,string",
        "uid,string",
        "day,date",
    ] {
        assert!(schema.contains(column), "{column} in\n{schema}");
    }
    assert!(
        schema.contains("place,\"struct<lat: double, district: string>\""),
        "{schema}"
    );

    // v2 adds three fields with defaults: a run killed while it adds the columns.
    tool(&env, &registry, &["produce", "v2", "200", "200"]);
    kill_during(&env, "run-v2.log", &mut rng);

    // v3 removes `kind`. Then the registry goes down mid-run: ids already seen still
    // decode; one registered meanwhile (v5) waits for the registry.
    let v3 = tool(&env, &registry, &["register", "v3"]);
    let outage_log = env.dir.path().join("run-outage.log");
    let mut run = env.spawn(&["run"], "run-outage.log");
    tool(&env, &registry, &["produce", "v3", "400", "200"]);
    wait_until(Duration::from_secs(120), "600 rows", || async {
        rows(&env).await == 600
    })
    .await;
    let v5 = tool(&env, &registry, &["register", "v5"]);
    registry.down();
    tool(&env, &registry, &["frames", "v3", &v3, "600", "100"]);
    wait_until(
        Duration::from_secs(60),
        "v3 rows during the outage",
        || async { rows(&env).await == 700 },
    )
    .await;
    tool(&env, &registry, &["frames", "v5", &v5, "700", "100"]);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(rows(&env).await, 700, "a new id waits for the registry");
    let log = std::fs::read_to_string(&outage_log).unwrap_or_default();
    assert!(
        log.contains("waiting for the schema registry"),
        "{}",
        tail(log.as_bytes())
    );
    assert!(
        run.try_wait().expect("alive").is_none(),
        "the run waits, it does not stop"
    );
    registry.up();
    wait_until(
        Duration::from_secs(120),
        "v5 rows after the outage",
        || async { rows(&env).await == 800 },
    )
    .await;
    sigterm(&run);
    run.wait().expect("stops");

    // An incompatible version and hostile frames: dead letters with their reasons.
    tool(&env, &registry, &["produce", "v4", "800", "20"]);
    tool(&env, &registry, &["hostile"]);
    env.catch_up();
    env.assert_each_offset_once(800).await;

    let n = 0..800i64;
    // v1 records lack the fields v2 added: null there, not the defaults.
    let units: i64 = (200..800).map(|n| n % 7).sum();
    let notes = n.clone().filter(|n| n % 3 == 0).count();
    let sum: i64 = n.clone().sum();
    let want = format!("800|{sum}|400|{units}|{notes}|{sum}|100|800|200|0");
    let got = row_strings(
        &env.sql(
            "calls",
            "SELECT count(*), sum(id), count(kind), sum(units), count(note), \
             CAST(sum(amount) * 4 AS BIGINT), count(extra), count(DISTINCT uid), \
             sum(CASE WHEN either IS NULL THEN 1 ELSE 0 END), \
             sum(CASE WHEN either['string'] = 'none' THEN 1 ELSE 0 END) FROM t",
        )
        .await,
    );
    assert_eq!(got, [want], "values of every version");
    let sample = row_strings(
        &env.sql(
            "calls",
            "SELECT id, state, place['district'], uid, CAST(at AS VARCHAR), CAST(day AS VARCHAR), \
             either['long'], either['string'], array_length(tags) FROM t WHERE id IN (5, 401) ORDER BY id",
        )
        .await,
    );
    assert_eq!(
        sample,
        [
            "401|OPEN|D2|00000000-0000-0000-0000-000000000191|2024-01-01T00:06:41Z|2024-01-12|401||2",
            "5|OPEN|D2|00000000-0000-0000-0000-000000000005|2024-01-01T00:00:05Z|2024-01-06|||",
        ],
        "v1 lacks what v2 added, v3 has it"
    );

    let dead = row_strings(
        &env.sql(
            "calls_dead_letters",
            "SELECT CAST(kafka_key_bytes AS VARCHAR), reason FROM t ORDER BY kafka_partition, kafka_offset",
        )
        .await,
    );
    assert_eq!(dead.len(), 26, "{dead:#?}");
    let reason = |key: &str| {
        dead.iter()
            .find(|d| d.starts_with(&format!("{key}|")))
            .unwrap_or_else(|| panic!("no dead letter {key}: {dead:#?}"))
            .clone()
    };
    assert!(
        reason("800").contains("cannot be read as the table's schema"),
        "{dead:#?}"
    );
    assert!(reason("wrong-magic").contains("magic byte"), "{dead:#?}");
    assert!(reason("plain-json").contains("plain JSON"), "{dead:#?}");
    assert!(
        reason("unknown-id").contains("schema id 987654 does not exist"),
        "{dead:#?}"
    );
    assert!(reason("truncated").contains("does not decode"), "{dead:#?}");
    assert!(reason("short-frame").contains("truncated"), "{dead:#?}");
    assert!(
        reason("other-subject").contains("-other-value"),
        "{dead:#?}"
    );

    // The SQL pipeline reads the same columns (an enum, a nested field).
    let by_state = env
        .scalar("calls_by_state", "SELECT CAST(sum(calls) AS BIGINT) FROM t")
        .await;
    assert_eq!(by_state, 800);
}
