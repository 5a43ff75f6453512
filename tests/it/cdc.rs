//! Change data capture: a Debezium stream of inserts, updates, deletes and tombstones,
//! several changes per key per micro-batch, applied by key under kill -9 cycles. The
//! Delta table and its MySQL mirror must equal the final state computed here.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use crate::common::mariadb::MariaDb;
use crate::common::{brokers, row_strings, TestEnv};

const KEYS: i64 = 5_000;
const CHANGES: usize = 100_000;
const PARTITIONS: i32 = 4;
const DB: &str = "lakestream_cdc_it";

/// One message: partition, key, value (`None`: a tombstone).
type Message = (i32, Vec<u8>, Option<Vec<u8>>);

#[derive(Clone)]
struct Row {
    first: String,
    last: String,
    email: Option<String>,
    /// Quarters, so the DOUBLE column holds it exactly.
    quarters: i64,
}

impl Row {
    fn json(&self, id: i64) -> Value {
        json!({"id": id, "first_name": self.first, "last_name": self.last,
               "email": self.email, "balance": self.quarters as f64 / 4.0})
    }

    fn line(&self, id: i64) -> String {
        let email = self.email.clone().unwrap_or_default();
        format!(
            "{id}|{}|{}|{email}|{}",
            self.first, self.last, self.quarters
        )
    }
}

/// The change stream, and the state it leaves (computed here, not by lakestream).
fn generate(seed: u64) -> (Vec<Message>, BTreeMap<i64, Row>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state: BTreeMap<i64, Row> = BTreeMap::new();
    let mut messages = Vec::new();
    for n in 0..CHANGES {
        // A few hot keys change many times within one micro-batch.
        let id = if rng.gen_bool(0.3) {
            rng.gen_range(1..=50)
        } else {
            rng.gen_range(1..=KEYS)
        };
        let partition = (id % i64::from(PARTITIONS)) as i32;
        let key = match rng.gen_bool(0.5) {
            true => json!({"id": id}),
            false => json!({"schema": {"type": "struct"}, "payload": {"id": id}}),
        };
        let key = serde_json::to_vec(&key).unwrap();
        let ts = 1_700_000_000_000i64 + n as i64;
        let before = state.get(&id).map(|r| r.json(id));
        let (op, after) = match state.get(&id) {
            None => {
                let row = Row {
                    first: format!("f{id}-{n}"),
                    last: format!("l{}", n % 97),
                    email: (n % 5 != 0).then(|| format!("u{id}.{n}@example.com")),
                    quarters: rng.gen_range(0..40_000),
                };
                let after = row.json(id);
                state.insert(id, row);
                (if n % 7 == 0 { "r" } else { "c" }, Some(after))
            }
            Some(old) if rng.gen_bool(0.75) => {
                let row = Row {
                    first: format!("f{id}-{n}"),
                    email: if n % 3 == 0 { None } else { old.email.clone() },
                    quarters: rng.gen_range(0..40_000),
                    ..old.clone()
                };
                let after = row.json(id);
                state.insert(id, row);
                ("u", Some(after))
            }
            Some(_) => {
                state.remove(&id);
                if rng.gen_bool(0.1) {
                    // Deleted by a tombstone alone (a compacted topic keeps only that).
                    messages.push((partition, key, None));
                    continue;
                }
                ("d", None)
            }
        };
        let event = json!({"before": before, "after": after, "op": op,
                           "source": {"ts_ms": ts, "db": "inventory"}, "ts_ms": ts + 5});
        let event = match rng.gen_bool(0.5) {
            true => event,
            false => json!({"schema": {"type": "struct"}, "payload": event}),
        };
        messages.push((
            partition,
            key.clone(),
            Some(serde_json::to_vec(&event).unwrap()),
        ));
        if op == "d" && rng.gen_bool(0.5) {
            messages.push((partition, key, None));
        }
    }
    (messages, state)
}

fn produce(topic: &str, messages: &[Message]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    for (partition, key, value) in messages {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(*partition)
            .key(key.as_slice());
        if let Some(v) = value {
            record = record.payload(v.as_slice());
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            if let Err((e, r)) = producer.send(r) {
                assert!(
                    matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ),
                    "send: {e}"
                );
                producer.poll(Duration::from_millis(50));
                record = Some(r);
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

#[tokio::test(flavor = "multi_thread")]
async fn debezium_changes_under_kill_9_equal_the_final_state_in_delta_and_mysql() {
    let mut env = TestEnv::new("cdc");
    env.config = Some((
        "config/examples/cdc-debezium.toml".into(),
        "customers".into(),
    ));
    env.pipelines = vec!["customers".into()];
    let db = MariaDb::start(env.dir.path());
    env.overrides.extend(db.overrides(DB));
    env.overrides.extend([
        "pipelines.customers.trigger_interval=300ms".to_string(),
        "pipelines.customers.max_offsets_per_trigger=5000".to_string(),
    ]);
    let (messages, expected) = generate(15);
    // The topic with its partitions first, then the stream.
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, PARTITIONS)
        .await
        .expect("create topic");
    produce(&env.topic, &messages);

    let mut rng = StdRng::seed_from_u64(16);
    for round in 0..5 {
        let mut run = env.spawn(&["run"], &format!("run-{round}.log"));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2_000..6_000))).await;
        run.kill().expect("kill -9");
        run.wait().expect("reap");
    }
    // The killed runs must have committed part of the stream, or they proved nothing.
    let killed_commits = env.open_table("customers").await.version().unwrap_or(0);
    assert!(
        killed_commits > 2,
        "the killed runs committed {killed_commits} versions"
    );
    let out = env.run_ok(&["run", "--until-caught-up", "--summary", "json"]);
    eprintln!("final catch-up: {}", String::from_utf8_lossy(&out.stdout));
    env.run_ok(&["sync", "--once"]);

    let want: Vec<String> = expected.iter().map(|(id, r)| r.line(*id)).collect();
    let delta = row_strings(
        &env.sql(
            "customers",
            "SELECT id, first_name, last_name, coalesce(email, ''), \
             CAST(balance * 4 AS BIGINT) FROM t",
        )
        .await,
    );
    assert_eq!(delta.len(), want.len(), "Delta rows vs live keys");
    let mut want_sorted = want.clone();
    want_sorted.sort();
    assert!(
        delta == want_sorted,
        "Delta table differs from the final state"
    );
    let mysql = db
        .rows(
            DB,
            "SELECT id, first_name, last_name, COALESCE(email, ''), \
             CAST(balance * 4 AS SIGNED) FROM customers",
        )
        .await;
    assert_eq!(mysql.len(), want.len(), "MySQL rows vs live keys");
    assert!(
        mysql == want_sorted,
        "MySQL mirror differs from the final state"
    );
    // Every change event was read once: no dead letters but the tombstones that
    // deleted nothing (none here: every tombstone has a JSON key).
    let dead = env.count("customers_dead_letters").await;
    assert_eq!(dead, 0, "dead letters");
}

/// Upsert order across micro-batches: a change from another partition than the one that
/// last changed a key applies only if its Kafka timestamp is not older (the same rule
/// as inside one batch); from the same partition, offset order decides.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_change_from_another_partition_does_not_overwrite_a_newer_one() {
    let mut env = TestEnv::new("upsert-order");
    env.config = Some((
        "config/examples/cdc-json-upsert.toml".into(),
        "inventory".into(),
    ));
    env.pipelines = vec!["inventory".into()];
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, PARTITIONS)
        .await
        .expect("create topic");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let send = |partition: i32, at: i64, value: &str| {
        let key = value.split('"').nth(3).unwrap_or_default().to_string();
        producer
            .send(
                BaseRecord::to(&env.topic)
                    .partition(partition)
                    .key(key.as_bytes())
                    .payload(value.as_bytes())
                    .timestamp(1_700_000_000_000 + at),
            )
            .map_err(|(e, _)| e)
            .expect("send");
        producer.flush(Duration::from_secs(30)).expect("flush");
    };
    send(0, 2000, r#"{"sku":"A","stock":2}"#);
    send(0, 2000, r#"{"sku":"B","stock":2}"#);
    env.run_ok(&["run", "--until-caught-up"]);
    // Older changes of A from other partitions (an update, a delete), a newer one of B.
    send(1, 1000, r#"{"sku":"A","stock":1}"#);
    send(2, 1500, r#"{"sku":"A","op":"d"}"#);
    send(1, 3000, r#"{"sku":"B","stock":3}"#);
    env.run_ok(&["run", "--until-caught-up"]);
    assert_eq!(stock(&env).await, ["A|2", "B|3"]);
    // From the partition that last changed A, offset order wins over the timestamp.
    send(0, 900, r#"{"sku":"A","stock":5}"#);
    env.run_ok(&["run", "--until-caught-up"]);
    assert_eq!(stock(&env).await, ["A|5", "B|3"]);
}

async fn stock(env: &TestEnv) -> Vec<String> {
    row_strings(
        &env.sql("inventory", "SELECT sku, stock FROM t ORDER BY sku")
            .await,
    )
}
