//! `lakestream check` and the errors that cannot heal: each external part broken in turn
//! is named within seconds, with no retry loop and nothing created.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::broker::tool;
use crate::common::mariadb::MariaDb;
use crate::common::TestEnv;

/// `check`'s exit status, stdout and how long it took.
fn check(env: &TestEnv, extra: &[&str]) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut args = extra.to_vec();
    args.push("check");
    let out = env.command(&args).output().expect("spawn");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn check_passes_on_a_working_setup_and_names_each_broken_part() {
    let env = TestEnv::new("check");
    tool(&["create-topic", &env.topic, "4"]);
    let (ok, out, _) = check(&env, &[]);
    assert!(ok, "{out}");
    for part in [
        "ok   config",
        "ok   kafka",
        "ok   topic",
        "ok   storage",
        "ok   sql",
    ] {
        assert!(out.contains(part), "{part}: {out}");
    }
    assert!(out.contains("4 partitions"), "{out}");
    let out = env
        .command(&["check", "--format", "json"])
        .output()
        .expect("spawn");
    assert!(out.status.success());
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(json.lines().count() >= 5, "{json}");
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        assert_eq!(v["ok"], true, "{line}");
    }

    // An unknown topic: check and run both say so at once, and run creates nothing.
    let missing = TestEnv::new("check-missing");
    let (ok, out, took) = check(&missing, &[]);
    assert!(
        !ok && out.contains("does not exist") && out.contains(&missing.topic),
        "{out}"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
    let started = Instant::now();
    let out = missing
        .command(&["run", "--until-caught-up", "--deadline", "1m"])
        .output()
        .expect("spawn");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist") && err.contains(&missing.topic),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        !missing.table_path("calls").exists(),
        "nothing created before the check passes"
    );

    // A table root that cannot be written.
    let (ok, out, _) = check(&env, &["--set", "storage.root=/etc/hostname/tables"]);
    assert!(!ok && out.contains("FAIL storage"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_refusals_fail_at_once_naming_the_account() {
    let mut env = TestEnv::new("check-mysql");
    tool(&["create-topic", &env.topic, "4"]);
    let db = MariaDb::start(env.dir.path());
    let mut root = db.conn("root", None, "mysql").await.expect("root");
    for sql in [
        "CREATE USER 'partial'@'%' IDENTIFIED BY 'partial-pass-1'",
        "GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX ON lake.* TO 'partial'@'%'",
    ] {
        root.query_drop(sql).await.expect(sql);
    }
    env.overrides.extend(db.overrides("lake"));
    env.overrides.extend([
        "mysql.user=partial".to_string(),
        "mysql.mirror=[\"disposition_summary\"]".to_string(),
    ]);
    env.env_vars
        .push(("LAKESTREAM_MYSQL_PASSWORD".into(), "partial-pass-1".into()));
    let (ok, out, _) = check(&env, &[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL mysql") && out.contains("partial") && out.contains("CREATE VIEW"),
        "names the missing privilege: {out}"
    );

    // A wrong password: `sync --once` fails at once, no retry loop.
    let started = Instant::now();
    let out = env
        .command(&[
            "--set",
            "mysql.password_env=LAKESTREAM_TEST_WRONG",
            "sync",
            "--once",
        ])
        .env("LAKESTREAM_TEST_WRONG", "not-the-password")
        .output()
        .expect("spawn");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("refused account 'partial'") && err.contains("1045"),
        "{err}"
    );
    assert!(!err.contains("retrying"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // MySQL down: check names it too.
    let mut db = db;
    db.kill();
    let (ok, out, took) = check(&env, &[]);
    assert!(
        !ok && out.contains("FAIL mysql") && out.contains("unreachable"),
        "{out}"
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}
