//! Test harness: a fresh topic, group and table root per test, the real binary, and
//! readers that check tables through DataFusion and through Python's `deltalake`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::Int64Type;
use deltalake::datafusion::prelude::SessionContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use tempfile::TempDir;

pub(crate) mod http;
pub(crate) mod lakes;
pub(crate) mod mariadb;
pub(crate) mod s3;

pub(crate) fn brokers() -> String {
    std::env::var("LAKESTREAM_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A plaintext connection to the test broker, for the library's own helpers.
pub(crate) fn connection() -> lakestream::source::Connection {
    lakestream::source::Connection::plaintext(&brokers(), &Default::default())
}

/// (partition, key, payload) of a message produced as it is.
pub(crate) type RawRecord<'a> = (i32, Option<&'a [u8]>, &'a [u8]);

/// The four pipelines of the shipped config (the flagship job).
pub(crate) const FLAGSHIP: [&str; 4] = [
    "calls",
    "crime_type_windows",
    "crime_type_hourly",
    "disposition_summary",
];

pub(crate) struct TestEnv {
    pub dir: TempDir,
    pub topic: String,
    pub group: String,
    /// Extra `--set` overrides for every command.
    pub overrides: Vec<String>,
    /// Pipelines `run` starts (all configured ones when empty).
    pub pipelines: Vec<String>,
    /// Environment variables for every command (e.g. passwords).
    pub env_vars: Vec<(String, String)>,
    /// Tables in an object store (S3, Azure, GCS) instead of the local folder.
    pub remote: Option<lakes::RemoteRoot>,
    /// Another config file than the shipped one (relative to the repository), and the
    /// source whose topic becomes this test's.
    pub config: Option<(String, String)>,
    /// Processes spawned in the background, killed when the test ends (even by panic).
    spawned: std::sync::Mutex<Vec<u32>>,
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let pids = self.spawned.lock().map(|p| p.clone()).unwrap_or_default();
        for pid in pids {
            // Already-reaped pids fail harmlessly.
            let _ = Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl TestEnv {
    pub(crate) fn new(name: &str) -> Self {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let env = Self {
            dir: tempfile::Builder::new()
                .prefix(&format!("lakestream-it-{name}-"))
                .disable_cleanup(std::env::var_os("LAKESTREAM_TEST_KEEP").is_some())
                .tempdir()
                .expect("temp dir"),
            topic: format!("it-{name}-{id}"),
            group: format!("it-{name}-{id}"),
            overrides: Vec::new(),
            pipelines: vec!["calls".to_string()],
            env_vars: Vec::new(),
            remote: None,
            config: None,
            spawned: std::sync::Mutex::new(Vec::new()),
        };
        std::fs::create_dir_all(env.root()).expect("table root");
        env
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.dir.path().join("tables")
    }

    pub(crate) fn table_path(&self, table: &str) -> PathBuf {
        self.root().join(table)
    }

    /// Put this test's tables under `s3://<bucket>/<test id>/` on `server`.
    pub(crate) fn use_s3(&mut self, server: &s3::S3Server) {
        self.remote = Some(lakes::RemoteRoot::s3(server, &self.group));
    }

    /// Put this test's tables in `remote` (see `lakes`).
    pub(crate) fn use_remote(&mut self, remote: lakes::RemoteRoot) {
        self.remote = Some(remote);
    }

    pub(crate) fn table_url(&self, table: &str) -> url::Url {
        match &self.remote {
            Some(r) => url::Url::parse(&format!("{}/{table}/", r.root)).expect("url"),
            None => url::Url::from_directory_path(self.table_path(table)).expect("url"),
        }
    }

    pub(crate) fn storage_options(&self) -> std::collections::HashMap<String, String> {
        self.remote
            .as_ref()
            .map(|r| r.options.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Table `table` at its latest version, read in-process.
    pub(crate) async fn open_table(&self, table: &str) -> deltalake::DeltaTable {
        deltalake::open_table_with_storage_options(self.table_url(table), self.storage_options())
            .await
            .expect("open table")
    }

    /// The binary with the shipped config and this test's topic, group and tables.
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lakestream"));
        let (config, source) = self
            .config
            .clone()
            .unwrap_or_else(|| ("config/lakestream.toml".into(), "police_calls".into()));
        cmd.arg("--config")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(config));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LAKESTREAM__")) {
            cmd.env_remove(k);
        }
        let root = match &self.remote {
            Some(r) => {
                r.configure(&mut cmd);
                r.root.clone()
            }
            None => self.root().display().to_string(),
        };
        // Short sessions: a killed consumer's partitions move on within seconds. (The
        // KIP-848 consumer protocol takes them from the broker, which the test broker
        // sets to the same.)
        let consumer_protocol = self
            .overrides
            .iter()
            .any(|o| o.ends_with("group.protocol=consumer"));
        let sessions = [
            "kafka.options.session.timeout.ms=6000".to_string(),
            "kafka.options.heartbeat.interval.ms=500".to_string(),
        ];
        let mut sets = vec![
            format!("kafka.brokers={}", brokers()),
            format!("kafka.group_id={}", self.group),
            format!("storage.root={root}"),
            // Tests of the MySQL mirror turn it on with their own database.
            "mysql.enabled=false".to_string(),
            // Tests run side by side: each status page on a port of its own.
            "http.listen=127.0.0.1:0".to_string(),
        ];
        // A source of several topics gets its topics from the test (empty name).
        if !source.is_empty() {
            sets.push(format!("sources.{source}.topic={}", self.topic));
        }
        let shipped = [
            "calls",
            "crime_type_windows",
            "crime_type_hourly",
            "disposition_summary",
        ];
        let pipelines = if self.config.is_some() {
            &[][..]
        } else {
            &shipped[..]
        };
        let speed = pipelines.iter().flat_map(|p| {
            [
                format!("pipelines.{p}.trigger_interval=300ms"),
                format!("pipelines.{p}.max_offsets_per_trigger=5000"),
            ]
        });
        if !consumer_protocol {
            sets.extend(sessions);
        }
        for s in sets.into_iter().chain(speed).chain(self.overrides.clone()) {
            cmd.arg("--set").arg(s);
        }
        cmd.arg("--log")
            .arg("info,buoyant_kernel=off,deltalake_core=error");
        cmd.envs(self.env_vars.iter().map(|(k, v)| (k, v)));
        cmd.args(args);
        if args.first() == Some(&"run") {
            for p in &self.pipelines {
                cmd.arg("--pipeline").arg(p);
            }
        }
        cmd
    }

    /// A mirror of only some tables gets no BI views (they read all three).
    pub(crate) fn without_bi_views(&mut self) {
        let views = self.dir.path().join("no-views");
        std::fs::create_dir_all(&views).expect("views dir");
        self.overrides
            .push(format!("mysql.sql_dir={}", views.display()));
    }

    pub(crate) fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("spawn lakestream");
        assert!(
            out.status.success(),
            "lakestream {args:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            tail(&out.stderr)
        );
        out
    }

    pub(crate) fn spawn(&self, args: &[&str], log: &str) -> Child {
        let file = std::fs::File::create(self.dir.path().join(log)).expect("log file");
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(file);
        self.spawn_command(cmd)
    }

    /// Spawn `cmd`, to be killed when the test ends.
    pub(crate) fn spawn_command(&self, mut cmd: Command) -> Child {
        let child = cmd.spawn().expect("spawn lakestream");
        if let Ok(mut pids) = self.spawned.lock() {
            pids.push(child.id());
        }
        child
    }

    pub(crate) fn produce_synthetic(&self, n: u64, seed: u64) {
        let (n, seed) = (n.to_string(), seed.to_string());
        self.run_ok(&[
            "produce",
            "--synthetic",
            &n,
            "--seed",
            &seed,
            "--partitions",
            "4",
            "--no-progress",
        ]);
    }

    /// `run --until-caught-up`, returning the JSON summary of the calls pipeline.
    pub(crate) fn catch_up(&self) -> serde_json::Value {
        let out = self.run_ok(&["run", "--until-caught-up", "--summary", "json"]);
        parse_summary(&out.stdout)
    }

    /// `run --until-caught-up` with `kafka.fail_on_data_loss = false`: the calls
    /// pipeline's JSON summary.
    pub(crate) fn catch_up_skipping_data_loss(&self) -> serde_json::Value {
        let out = self.run_ok(&[
            "--set",
            "kafka.fail_on_data_loss=false",
            "run",
            "--until-caught-up",
            "--summary",
            "json",
        ]);
        parse_summary(&out.stdout)
    }

    /// Produce JSON payloads without keys, each to its partition.
    pub(crate) fn produce_json(&self, records: &[(i32, String)]) {
        let raw: Vec<RawRecord<'_>> = records
            .iter()
            .map(|(p, json)| (*p, None, json.as_bytes()))
            .collect();
        self.produce_raw(&raw);
    }

    /// Produce raw payloads, each to an explicit partition.
    pub(crate) fn produce_raw(&self, records: &[RawRecord<'_>]) {
        produce_raw_to(&self.topic, records);
    }

    /// Run SQL over table `table` registered as `t`.
    pub(crate) async fn sql(&self, table: &str, query: &str) -> Vec<RecordBatch> {
        let table = self.open_table(table).await;
        let ctx = SessionContext::new();
        table
            .update_datafusion_session(&ctx.state())
            .expect("session");
        let provider = table.table_provider().await.expect("provider");
        ctx.register_table("t", provider).expect("register");
        ctx.sql(query)
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run")
    }

    /// A query returning one i64 value.
    pub(crate) async fn scalar(&self, table: &str, query: &str) -> i64 {
        let batches = self.sql(table, query).await;
        let column = batches[0].column(0).clone();
        let column: Arc<dyn Array> =
            deltalake::arrow::compute::cast(&column, &deltalake::arrow::datatypes::DataType::Int64)
                .expect("cast");
        column.as_primitive::<Int64Type>().value(0)
    }

    pub(crate) async fn count(&self, table: &str) -> i64 {
        self.scalar(table, "SELECT count(*) FROM t").await
    }

    /// Distinct (partition, offset) pairs in `table`: equal to its row count when no
    /// record landed twice.
    pub(crate) async fn distinct_offsets(&self, table: &str) -> i64 {
        self.scalar(
            table,
            "SELECT count(*) FROM (SELECT DISTINCT kafka_partition, kafka_offset FROM t)",
        )
        .await
    }

    /// `produce --synthetic n` at `rate` calls/s in the background, killed with the test.
    pub(crate) fn spawn_producer(&self, n: u64, seed: u64, rate: u32) -> Child {
        let (n, seed, rate) = (n.to_string(), seed.to_string(), rate.to_string());
        let mut cmd = self.command(&[
            "produce",
            "--synthetic",
            &n,
            "--seed",
            &seed,
            "--rate",
            &rate,
            "--no-progress",
        ]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        self.spawn_command(cmd)
    }

    /// Exactly-once check of the calls table against `expected` produced calls, each
    /// with its own crime_id.
    pub(crate) async fn assert_exactly_once(&self, expected: i64) {
        self.assert_each_offset_once(expected).await;
        let distinct_ids = self
            .scalar("calls", "SELECT count(DISTINCT crime_id) FROM t")
            .await;
        assert_eq!(distinct_ids, expected, "distinct crime_ids vs produced");
    }

    /// The calls table holds `expected` rows, one per (partition, offset).
    pub(crate) async fn assert_each_offset_once(&self, expected: i64) {
        let rows = self.count("calls").await;
        let distinct_offsets = self.distinct_offsets("calls").await;
        assert_eq!(
            distinct_offsets, rows,
            "duplicate (partition, offset) pairs"
        );
        assert_eq!(rows, expected, "rows in table vs produced");
    }
}

pub(crate) fn parse_summary(stdout: &[u8]) -> serde_json::Value {
    summary_of(stdout, "calls")
}

/// The JSON summary line of `pipeline` in `run --summary json` output.
pub(crate) fn summary_of(stdout: &[u8], pipeline: &str) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let needle = format!("\"pipeline\":\"{pipeline}\"");
    let line = text
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no summary of {pipeline} in: {text}"));
    serde_json::from_str(line).expect("summary JSON")
}

/// Every row as one `a|b|c` string (columns cast to text), sorted: tables compare
/// without caring about file order.
pub(crate) fn row_strings(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in batches {
        let columns: Vec<Vec<String>> = (0..b.num_columns())
            .map(|i| strings(std::slice::from_ref(b), i))
            .collect();
        for r in 0..b.num_rows() {
            let cells: Vec<&str> = columns.iter().map(|c| c[r].as_str()).collect();
            rows.push(cells.join("|"));
        }
    }
    rows.sort();
    rows
}

/// Rows of `table` (at `version`, or the latest) read by Python's `deltalake`, on the
/// local folder or the S3 server alike.
pub(crate) fn python_count(env: &TestEnv, table: &str, version: Option<u64>) -> u64 {
    let script = "import json, os, sys; from deltalake import DeltaTable; \
        v = None if sys.argv[2] == '-' else int(sys.argv[2]); \
        t = DeltaTable(sys.argv[1], version=v, storage_options=json.loads(sys.argv[3]) or None); \
        print(t.to_pyarrow_table().num_rows, flush=True); os._exit(0)";
    let options: serde_json::Map<String, serde_json::Value> = env
        .storage_options()
        .into_iter()
        .map(|(k, v)| (k, v.into()))
        .collect();
    let python = std::env::var("LAKESTREAM_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args(["-c", script, env.table_url(table).as_str()])
        .arg(version.map_or("-".to_string(), |v| v.to_string()))
        .arg(serde_json::Value::Object(options).to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python deltalake failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number")
}

/// Poll `probe` until it returns true or `timeout` passes.
pub(crate) async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub(crate) fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Column `index` of `batches` as strings (DataFusion may hand back Utf8View).
pub(crate) fn strings(batches: &[RecordBatch], index: usize) -> Vec<String> {
    use deltalake::arrow::datatypes::DataType;
    batches
        .iter()
        .flat_map(|b| {
            let column =
                deltalake::arrow::compute::cast(b.column(index), &DataType::Utf8).expect("cast");
            column
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Produce raw payloads to `topic`, each to an explicit partition.
pub(crate) fn produce_raw_to(topic: &str, records: &[RawRecord<'_>]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for (partition, key, payload) in records {
        let mut r = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(*partition)
            .payload(*payload);
        if let Some(k) = key {
            r = r.key(*k);
        }
        producer.send(r).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}
