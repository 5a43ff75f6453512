//! Secure connections against the local Apache Kafka's listeners (scripts/kafka/start.sh):
//! SASL_SSL with SCRAM-SHA-512 and OAUTHBEARER (a local OIDC token endpoint, Kafka's
//! unsecured-JWT validator), SSL with a required client certificate; and the start-up
//! errors of a wrong password, an untrusted CA and a missing client certificate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::TestEnv;

const USER: &str = "lakestream";
const PASSWORD: &str = "lakestream-secret";

fn sasl_brokers() -> String {
    std::env::var("LAKESTREAM_TEST_SASL_BROKERS").unwrap_or_else(|_| "127.0.0.1:9093".into())
}

fn mtls_brokers() -> String {
    std::env::var("LAKESTREAM_TEST_MTLS_BROKERS").unwrap_or_else(|_| "127.0.0.1:9094".into())
}

/// The throw-away CA and client certificate scripts/kafka/start.sh made.
fn tls_dir() -> PathBuf {
    std::env::var_os("LAKESTREAM_TEST_KAFKA_TLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let run = std::env::var_os("LAKESTREAM_RUN_DIR").map_or_else(
                || {
                    PathBuf::from(std::env::var("HOME").expect("HOME"))
                        .join(".cache/lakestream-run")
                },
                PathBuf::from,
            );
            run.join("kafka/tls")
        })
}

fn tls(file: &str) -> String {
    tls_dir().join(file).display().to_string()
}

/// SASL_SSL + SCRAM-SHA-512 settings, the password in the environment.
fn scram(env: &mut TestEnv, password: &str) {
    env.overrides.extend([
        format!("kafka.brokers={}", sasl_brokers()),
        "kafka.security.protocol=sasl_ssl".into(),
        "kafka.security.mechanism=SCRAM-SHA-512".into(),
        format!("kafka.security.username={USER}"),
        format!("kafka.security.ca_file={}", tls("ca.pem")),
    ]);
    env.env_vars
        .push(("LAKESTREAM_KAFKA_PASSWORD".into(), password.into()));
}

fn mtls(env: &mut TestEnv, with_certificate: bool) {
    env.overrides.extend([
        format!("kafka.brokers={}", mtls_brokers()),
        "kafka.security.protocol=ssl".into(),
        format!("kafka.security.ca_file={}", tls("ca.pem")),
    ]);
    if with_certificate {
        env.overrides.extend([
            format!("kafka.security.certificate_file={}", tls("client.pem")),
            format!("kafka.security.key_file={}", tls("client.key")),
        ]);
    }
}

/// Produce `n` calls and ingest them, both over the env's (secured) settings.
async fn ingest_exactly(env: &TestEnv, n: u64) {
    env.produce_synthetic(n, 7);
    let summary = env.catch_up();
    assert!(summary.is_array() || summary.is_object(), "{summary}");
    env.assert_each_offset_once(n as i64).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_ssl_scram_ingests_exactly() {
    let mut env = TestEnv::new("scram");
    scram(&mut env, PASSWORD);
    ingest_exactly(&env, 2_000).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_ingests_exactly() {
    let mut env = TestEnv::new("mtls");
    mtls(&mut env, true);
    ingest_exactly(&env, 2_000).await;
}

/// `run` fails within seconds, the error names the broker and `words`, and no table
/// was created.
fn fails_at_start(env: &TestEnv, words: &[&str]) -> String {
    let started = Instant::now();
    let out = env
        .command(&["run", "--until-caught-up"])
        .output()
        .expect("spawn lakestream");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "run must fail: {stderr}");
    assert!(
        took < Duration::from_secs(25),
        "failed only after {took:?}: {stderr}"
    );
    for w in words {
        assert!(stderr.contains(w), "error should name '{w}': {stderr}");
    }
    let tables: Vec<_> = std::fs::read_dir(env.root())
        .expect("table root")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(tables.is_empty(), "no table may be created: {tables:?}");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_fails_at_start_saying_what_to_check() {
    let mut env = TestEnv::new("badpw");
    scram(&mut env, "not-the-password");
    let err = fails_at_start(
        &env,
        &[&sasl_brokers(), "SASL_SSL", "SCRAM-SHA-512", "password"],
    );
    assert!(
        !err.contains("not-the-password"),
        "the secret is never printed: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_ca_fails_at_start_saying_what_to_check() {
    let mut env = TestEnv::new("badca");
    scram(&mut env, PASSWORD);
    // A CA of our own that never signed the broker's certificate.
    let ca = env.dir.path().join("other-ca.pem");
    let key = env.dir.path().join("other-ca.key");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=not the broker's CA", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    env.overrides
        .push(format!("kafka.security.ca_file={}", ca.display()));
    fails_at_start(&env, &[&sasl_brokers(), "SASL_SSL", "ca_file"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_client_certificate_fails_at_start_saying_what_to_check() {
    let mut env = TestEnv::new("nocert");
    mtls(&mut env, false);
    fails_at_start(&env, &[&mtls_brokers(), "SSL", "certificate_file"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_in_kafka_options_is_refused() {
    let mut env = TestEnv::new("optpw");
    env.overrides
        .push("kafka.options.sasl.password=hunter2".into());
    let out = env.command(&["run"]).output().expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("kafka.security"), "{stderr}");
}

/// A minimal OIDC token endpoint: checks the client credentials (HTTP Basic) and the
/// grant, and answers an unsecured JWT (alg none) that Kafka's unsecured validator takes.
/// Returns its URL and the number of tokens it issued so far.
fn token_endpoint(
    client_id: &'static str,
    secret: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use base64::Engine;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/oauth2/token",
        listener.local_addr().expect("addr")
    );
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = issued.clone();
    std::thread::spawn(move || {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}"))
        );
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let (mut auth, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if lower.starts_with("authorization:") {
                    auth = line["authorization:".len()..].trim().to_string();
                }
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).to_string();
            let (status, answer) = if auth == expected
                && body.contains("grant_type=client_credentials")
            {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_secs();
                let header = b64.encode(r#"{"alg":"none"}"#);
                let claims = b64.encode(format!(
                    r#"{{"sub":"{client_id}","iat":{now},"exp":{}}}"#,
                    now + 3600
                ));
                (
                    "200 OK",
                    format!(
                        r#"{{"access_token":"{header}.{claims}.","token_type":"bearer","expires_in":3600}}"#
                    ),
                )
            } else {
                (
                    "401 Unauthorized",
                    r#"{"error":"invalid_client"}"#.to_string(),
                )
            };
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, issued)
}

fn oauth(env: &mut TestEnv, endpoint: &str, secret: &str) {
    env.overrides.extend([
        format!("kafka.brokers={}", sasl_brokers()),
        "kafka.security.protocol=sasl_ssl".into(),
        "kafka.security.mechanism=OAUTHBEARER".into(),
        format!("kafka.security.ca_file={}", tls("ca.pem")),
        format!("kafka.security.oauth.token_endpoint={endpoint}"),
        "kafka.security.oauth.client_id=lakestream-client".into(),
    ]);
    env.env_vars
        .push(("LAKESTREAM_KAFKA_CLIENT_SECRET".into(), secret.into()));
}

#[tokio::test(flavor = "multi_thread")]
async fn oauthbearer_from_an_oidc_endpoint_ingests_exactly() {
    let (endpoint, issued) = token_endpoint("lakestream-client", "client-secret");
    let mut env = TestEnv::new("oauth");
    // The topic is made over plaintext: rdkafka's admin client cannot fetch tokens.
    lakestream::source::ensure_topic(&crate::common::connection(), &env.topic, 4)
        .await
        .expect("create topic");
    oauth(&mut env, &endpoint, "client-secret");
    ingest_exactly(&env, 1_000).await;
    assert!(
        issued.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "tokens came from the endpoint"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_oidc_client_fails_at_start_saying_what_to_check() {
    let (endpoint, _) = token_endpoint("lakestream-client", "client-secret");
    let mut env = TestEnv::new("oauthbad");
    oauth(&mut env, &endpoint, "wrong-secret");
    let err = fails_at_start(&env, &[&sasl_brokers(), "OAUTHBEARER", "oauth"]);
    assert!(
        !err.contains("wrong-secret"),
        "the secret is never printed: {err}"
    );
}

/// A certificate the trusted CA signed, for other names than the one connected to: the
/// hint names the host, not the CA (OpenSSL words both "certificate verify failed").
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_host_gets_the_host_name_hint() {
    let mut env = TestEnv::new("hostname");
    scram(&mut env, PASSWORD);
    // "127.1" reaches 127.0.0.1, but the broker's certificate names 127.0.0.1 and
    // localhost only.
    let port = sasl_brokers()
        .rsplit(':')
        .next()
        .unwrap_or("9093")
        .to_string();
    env.overrides.push(format!("kafka.brokers=127.1:{port}"));
    let err = fails_at_start(&env, &["does not name the host", "verify_hostname"]);
    assert!(!err.contains("not signed by a CA"), "{err}");
}
