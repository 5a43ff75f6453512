//! The quick start as a newcomer meets it: `scripts/quickstart.sh` end to end against a
//! MariaDB initialised the way Debian ships it (root only through the unix socket, no
//! password), on a topic, tables and database of its own; then once more (idempotent).

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use crate::common::mariadb::MariaDb;
use crate::common::{brokers, tail, TestEnv};

#[tokio::test(flavor = "multi_thread")]
async fn the_quick_start_works_on_mariadb_as_debian_ships_it() {
    let env = TestEnv::new("quickstart");
    let db = MariaDb::start_as_debian_ships(env.dir.path());
    assert!(
        db.conn("root", None, "mysql").await.is_err(),
        "as shipped, root cannot log in over TCP"
    );
    let password_file = env.dir.path().join("config/mysql-sync.password");
    let root = env.root();
    let quickstart = || {
        let mut cmd = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/quickstart.sh"
        ));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LAKESTREAM")) {
            cmd.env_remove(k);
        }
        let out = cmd
            .env("CALLS", "2000")
            .env("LAKESTREAM_BIN", env!("CARGO_BIN_EXE_lakestream"))
            .env("LAKESTREAM_BI_PASSWORD", "quickstart-bi-1")
            .env("LAKESTREAM_MYSQL_SOCKET", db.socket())
            .env("LAKESTREAM__MYSQL__PORT", db.port.to_string())
            .env("LAKESTREAM__MYSQL__DATABASE", "quickstart")
            .env("LAKESTREAM__MYSQL__USER", "quickstart_sync")
            .env("LAKESTREAM__MYSQL__PASSWORD_FILE", &password_file)
            .env("LAKESTREAM__STORAGE__ROOT", &root)
            .env("LAKESTREAM__KAFKA__BROKERS", brokers())
            .env("LAKESTREAM__KAFKA__GROUP_ID", &env.group)
            .env("LAKESTREAM__SOURCES__POLICE_CALLS__TOPIC", &env.topic)
            .env("LAKESTREAM__HTTP__LISTEN", "127.0.0.1:0")
            .output()
            .expect("run scripts/quickstart.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "quickstart failed: {stdout}\n{}",
            tail(&out.stderr)
        );
        stdout
    };
    let first = quickstart();
    let calls = format!("{}/calls: version", root.display());
    assert!(first.contains(&calls), "{first}");
    let python_rows = |stdout: &str| -> i64 {
        stdout
            .lines()
            .filter(|l| l.contains("(read by Python deltalake)"))
            .map(|l| {
                let rows = l.split(", ").nth(1).and_then(|r| r.split(' ').next());
                rows.and_then(|r| r.parse::<i64>().ok()).expect("row count")
            })
            .sum()
    };
    assert_eq!(python_rows(&first), 2000, "calls + dead letters: {first}");
    // "... as the read-only BI account: N dispositions, M calls"
    let bi_calls = |stdout: &str| -> i64 {
        let line = stdout
            .lines()
            .find(|l| l.contains("as the read-only BI account"))
            .unwrap_or_default();
        let calls = line.rsplit(", ").next().and_then(|c| c.split(' ').next());
        calls.and_then(|c| c.parse().ok()).unwrap_or(0)
    };
    let seen = bi_calls(&first);
    assert!(seen > 0, "the BI account reads the views: {first}");
    assert!(first.contains("What to look at next"), "{first}");
    let mode = std::fs::metadata(&password_file)
        .expect("password file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only its owner reads the password");
    let password = std::fs::read_to_string(&password_file).expect("password");

    let second = quickstart();
    assert_eq!(python_rows(&second), 4000, "a second burst: {second}");
    assert!(
        bi_calls(&second) > seen,
        "the mirror has the second burst: {second}"
    );
    assert_eq!(
        std::fs::read_to_string(&password_file).expect("password"),
        password,
        "a re-run reuses the account's password"
    );
    // The sync account is not root, and holds no privilege outside its database but
    // CREATE USER (for the BI account).
    let out = Command::new("mariadb")
        .arg("--protocol=socket")
        .arg(format!("--socket={}", db.socket().display()))
        .args(["-u", "root", "-N", "-e"])
        .arg("SELECT concat(Host, '|', Super_priv, File_priv, Create_user_priv, Grant_priv) FROM mysql.user WHERE User = 'quickstart_sync'")
        .output()
        .expect("mariadb client");
    let grants = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        grants.lines().count(),
        3,
        "localhost, 127.0.0.1, ::1: {grants}"
    );
    assert!(grants.lines().all(|g| g.ends_with("|NNYN")), "{grants}");
}
