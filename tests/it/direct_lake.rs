//! What Power BI's Direct Lake (Fabric's Delta reader, through a OneLake shortcut) needs
//! of a table, checked on the flagship tables after ingestion, compaction and a
//! checkpoint (docs/bi.md, "Direct Lake"): reader version 1 with no reader features, no
//! `timestamp_ntz` and no nested column, no deletion vectors, a checkpoint that
//! `_last_checkpoint` names, and partitions compacted to few files.

use std::collections::HashMap;

use serde_json::Value;

use crate::common::{TestEnv, FLAGSHIP};

/// Column types Direct Lake maps to a model column (nested ones are skipped by it).
const SCALAR: [&str; 12] = [
    "string",
    "long",
    "integer",
    "short",
    "byte",
    "double",
    "float",
    "boolean",
    "date",
    "timestamp",
    "binary",
    "decimal",
];

#[tokio::test(flavor = "multi_thread")]
async fn flagship_tables_are_fit_for_direct_lake() {
    let mut env = TestEnv::new("direct-lake");
    env.pipelines = FLAGSHIP.map(String::from).to_vec();
    env.overrides
        .push("maintenance.checkpoint_interval=10".into());
    env.produce_synthetic(4_000, 41);
    env.run_ok(&["run", "--until-caught-up"]);
    env.run_ok(&["compact"]);
    env.run_ok(&["checkpoint"]);
    for name in FLAGSHIP {
        let table = env.open_table(name).await;
        let snapshot = table.snapshot().expect("snapshot");
        let protocol = snapshot.protocol();
        assert_eq!(protocol.min_reader_version(), 1, "{name}: reader version");
        assert!(
            protocol.reader_features().is_none_or(|f| f.is_empty()),
            "{name}: reader features {:?}",
            protocol.reader_features()
        );
        let config = snapshot.metadata().configuration();
        assert_ne!(
            config
                .get("delta.enableDeletionVectors")
                .map(String::as_str),
            Some("true"),
            "{name}: deletion vectors"
        );
        let schema: Value =
            serde_json::from_str(snapshot.metadata().schema_string()).expect("schema json");
        for field in schema["fields"].as_array().expect("fields") {
            let ty = field["type"].as_str().unwrap_or("(nested)");
            let base = ty.split('(').next().unwrap_or(ty);
            assert!(
                SCALAR.contains(&base),
                "{name}.{}: type {ty} Direct Lake does not read as a column",
                field["name"]
            );
        }
        let log = env.root().join(name).join("_delta_log");
        let last: Value = serde_json::from_slice(
            &std::fs::read(log.join("_last_checkpoint")).expect("_last_checkpoint"),
        )
        .expect("_last_checkpoint json");
        let version = last["version"].as_u64().expect("checkpoint version");
        let checkpoint = log.join(format!("{version:020}.checkpoint.parquet"));
        assert!(
            checkpoint.exists() || last["parts"].is_u64(),
            "{name}: no checkpoint file for version {version}"
        );
        assert_eq!(
            Some(version),
            table.version(),
            "{name}: the checkpoint is the latest version"
        );
        // Compacted: a partition (folder) holds few files, and none has a deletion vector.
        let mut per_folder: HashMap<String, usize> = HashMap::new();
        for file in snapshot.log_data().iter() {
            assert!(
                file.deletion_vector_descriptor().is_none(),
                "{name}: {} has a deletion vector",
                file.path()
            );
            let path = file.path().to_string();
            let folder = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
            *per_folder.entry(folder).or_default() += 1;
        }
        let most = per_folder.values().max().copied().unwrap_or(0);
        assert!(
            most <= 2,
            "{name}: {most} files in one partition after compaction: {per_folder:?}"
        );
    }
}
