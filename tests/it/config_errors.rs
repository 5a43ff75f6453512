//! A bad config stops start-up with a message naming the key.

use crate::common::TestEnv;

fn stderr_of(env: &TestEnv, args: &[&str]) -> String {
    let out = env.command(args).output().expect("spawn");
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn bad_keys_are_named() {
    let env = TestEnv::new("config");
    let cases = [
        (
            "pipelines.calls.max_offsets_per_trigger=0",
            "pipelines.calls.max_offsets_per_trigger",
        ),
        (
            "pipelines.calls.trigger_interval=soon",
            "pipelines.calls.trigger_interval",
        ),
        ("pipelines.calls.table=calls;drop", "pipelines.calls.table"),
        ("pipelines.calls.source=nope", "pipelines.calls.source"),
        ("kafka.no_such_key=1", "no_such_key"),
        ("storage.zstd_level=99", "storage.zstd_level"),
        (
            "pipelines.calls.partition_by=[\"address\"]",
            "pipelines.calls.partition_by",
        ),
        ("storage.root=hdfs://nn/lake", "storage.root"),
        (
            "storage.options_env.azure_storage_account_key=LAKESTREAM_IT_UNSET_VARIABLE",
            "storage.options_env.azure_storage_account_key",
        ),
        (
            "storage.options_file.google_service_account_key=/nonexistent/key.json",
            "storage.options_file.google_service_account_key",
        ),
        (
            "pipelines.calls.catalog_table=sf.calls",
            "pipelines.calls.catalog_table",
        ),
    ];
    for (set, key) in cases {
        let err = stderr_of(&env, &["--set", set, "run", "--until-caught-up"]);
        assert!(
            err.contains(key),
            "--set {set}: error does not name {key}: {err}"
        );
    }
    let mut glue = TestEnv::new("config-glue");
    glue.overrides.push("catalog.kind=glue".into());
    let err = stderr_of(
        &glue,
        &["--set", "pipelines.calls.catalog_table=Calls", "check"],
    );
    assert!(
        err.contains("pipelines.calls.catalog_table") && err.contains("database.table"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lakestream"))
        .args(["--config", "/nonexistent.toml", "run"])
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("/nonexistent.toml"), "{err}");
}
