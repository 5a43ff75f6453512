//! How every Kafka client of lakestream connects: bootstrap servers, TLS and SASL from
//! `kafka.security`, then `kafka.options`, built once per use from the config. The
//! context every client carries answers librdkafka's OAUTHBEARER token requests and
//! remembers the last connection error, so a failed start-up can say why.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::OAuthToken;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext};
use tracing::{error, warn};

use super::auth::Auth;
use super::SourceError;
use crate::config::{ConfigError, KafkaPlan, Sasl};

/// How long the start-up check waits for the cluster's metadata.
const CHECK_PATIENCE: Duration = Duration::from_secs(15);

/// Everything a client needs to reach the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Connection {
    brokers: String,
    /// librdkafka properties: security (secrets included), then `kafka.options`.
    properties: Arc<BTreeMap<String, String>>,
    auth: Auth,
    /// How it connects, for errors (never a secret).
    describe: Arc<str>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Properties hold passwords: never printed.
        write!(f, "Connection({} over {})", self.brokers, self.describe)
    }
}

impl Connection {
    /// The connection `kafka` describes; reads its secrets (environment or files).
    pub fn new(kafka: &KafkaPlan) -> Result<Self, ConfigError> {
        let security = &kafka.security;
        let mut properties = BTreeMap::new();
        let mut set = |k: &str, v: &str| {
            properties.insert(k.to_string(), v.to_string());
        };
        set("security.protocol", security.protocol.as_str());
        match &security.sasl {
            Some(Sasl::Password {
                mechanism,
                username,
                password,
            }) => {
                set("sasl.mechanism", mechanism.wire());
                set("sasl.username", username);
                set("sasl.password", &password.read()?);
            }
            // AWS_MSK_IAM is OAUTHBEARER on the wire, with a token of its own.
            Some(Sasl::OauthBearer(_) | Sasl::AwsMskIam { .. }) => {
                set("sasl.mechanism", "OAUTHBEARER")
            }
            None => {}
        }
        if let Some(tls) = &security.tls {
            match &tls.ca_file {
                Some(path) => set("ssl.ca.location", path),
                // The system's roots: OpenSSL's default paths, else librdkafka probes the
                // usual locations of the distributions.
                None => set("ssl.ca.location", "probe"),
            }
            if let Some((cert, key)) = &tls.client {
                set("ssl.certificate.location", cert);
                set("ssl.key.location", key);
            }
            if let Some(secret) = &tls.key_password {
                set("ssl.key.password", &secret.read()?);
            }
            if !tls.verify_hostname {
                set("ssl.endpoint.identification.algorithm", "none");
            }
        }
        for (k, v) in &kafka.options {
            set(k, v);
        }
        Ok(Self {
            brokers: kafka.brokers.clone(),
            properties: Arc::new(properties),
            auth: Auth::new(security)?,
            describe: security.describe().into(),
        })
    }

    /// A plaintext connection with these librdkafka properties (tests, tools).
    pub fn plaintext(brokers: &str, options: &BTreeMap<String, String>) -> Self {
        Self {
            brokers: brokers.to_string(),
            properties: Arc::new(options.clone()),
            auth: Auth::default(),
            describe: "PLAINTEXT".into(),
        }
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// Who connects, for errors: `user 'x'`, or this client for listeners without one.
    pub fn user(&self) -> String {
        match self.property("sasl.username") {
            Some(user) if !user.is_empty() => format!("user '{user}'"),
            _ => "this client".into(),
        }
    }

    /// The same connection with `key` set (e.g. the isolation level).
    pub fn with(&self, key: &str, value: &str) -> Self {
        let mut properties = (*self.properties).clone();
        properties.insert(key.to_string(), value.to_string());
        Self {
            properties: Arc::new(properties),
            ..self.clone()
        }
    }

    /// A property as configured (`kafka.options` wins over defaults).
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// A librdkafka configuration with the bootstrap servers, security and options.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (k, v) in self.properties.iter() {
            config.set(k, v);
        }
        config
    }

    /// The context for a client of this connection.
    pub fn context(&self) -> KafkaContext {
        KafkaContext {
            auth: self.auth.clone(),
            last_error: Arc::default(),
        }
    }

    /// A consumer outside any group's assignment (metadata, watermarks, probes), ready
    /// to talk to the cluster.
    pub fn consumer(
        &self,
        group: &str,
        extra: &[(&str, &str)],
    ) -> Result<BaseConsumer<KafkaContext>, SourceError> {
        let mut config = self.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false");
        for (k, v) in extra {
            config.set(*k, *v);
        }
        let consumer: BaseConsumer<KafkaContext> = config
            .create_with_context(self.context())
            .map_err(|cause| SourceError::Settings { cause })?;
        self.authenticate(&consumer);
        Ok(consumer)
    }

    /// Let a new consumer answer librdkafka's first token request: events are handled
    /// only while a consumer polls, and metadata calls do not poll.
    pub fn authenticate<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        if self.auth.is_some() {
            let _ = consumer.poll(Duration::from_millis(100));
        }
    }

    /// Fail fast, and say why, when the cluster cannot be reached with these settings:
    /// wrong password, untrusted CA, missing client certificate, nothing listening.
    /// Returns once the cluster's metadata arrives.
    pub fn check(&self) -> Result<(), SourceError> {
        let consumer = self.consumer("lakestream-check", &[])?;
        let last_error = consumer.context().last_error.clone();
        let started = Instant::now();
        loop {
            let attempt = consumer.fetch_metadata(None, Duration::from_secs(1));
            let seen = last_error.lock().map(|e| e.clone()).unwrap_or_default();
            match attempt {
                Ok(_) => return Ok(()),
                // Authentication and TLS failures do not heal by waiting.
                Err(cause) if seen.as_deref().is_some_and(is_fatal) => {
                    return Err(self.refused(cause, seen))
                }
                Err(cause) if started.elapsed() >= CHECK_PATIENCE => {
                    return Err(self.unreachable(cause, seen))
                }
                Err(_) => {
                    // Error events arrive through polling.
                    let _ = consumer.poll(Duration::from_millis(100));
                }
            }
        }
    }

    /// [`Connection::check`] from async code; the connection back when it works.
    pub async fn checked(self) -> Result<Self, SourceError> {
        tokio::task::spawn_blocking(move || self.check().map(|()| self))
            .await
            .map_err(|cause| SourceError::Panicked {
                task: "the connection check",
                cause: cause.to_string(),
            })?
    }

    /// [`Connection::unreachable`] for a refused handshake. OpenSSL words an untrusted
    /// CA and a certificate for another host alike ("certificate verify failed"): the
    /// same connection without host name verification tells them apart.
    fn refused(&self, cause: KafkaError, seen: Option<String>) -> SourceError {
        let mut error = self.unreachable(cause, seen);
        let verifies_host = self.property("ssl.endpoint.identification.algorithm") != Some("none");
        if let SourceError::Unreachable { reason, hint, .. } = &mut error {
            if verifies_host
                && reason.contains("certificate verify failed")
                && self.trusts_without_host()
            {
                *hint = "the broker's certificate is signed by a trusted CA but does not name \
                         the host in kafka.brokers: connect by a name the certificate carries \
                         (or, only for testing, set kafka.security.verify_hostname = false)"
                    .into();
            }
        }
        error
    }

    /// Whether a handshake without host name verification succeeds.
    fn trusts_without_host(&self) -> bool {
        let probe = self.with("ssl.endpoint.identification.algorithm", "none");
        let Ok(consumer) = probe.consumer("lakestream-check", &[]) else {
            return false;
        };
        consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .is_ok()
    }

    /// The start-up error: broker, listener kind, mechanism, the broker's or TLS
    /// library's words, and what to check.
    pub(crate) fn unreachable(&self, cause: KafkaError, seen: Option<String>) -> SourceError {
        let reason = seen.unwrap_or_else(|| cause.to_string());
        SourceError::Unreachable {
            brokers: self.brokers.clone(),
            how: self.describe.to_string(),
            hint: hint(&reason, self.property("sasl.mechanism"), &self.describe),
            reason,
        }
    }
}

/// Errors that end the start-up check at once.
fn is_fatal(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    [
        "authentication",
        "ssl handshake",
        "certificate",
        "ssl alert",
        "sasl",
        "oauthbearer",
    ]
    .iter()
    .any(|w| r.contains(w))
}

/// What to check, from the failure's words.
fn hint(reason: &str, mechanism: Option<&str>, how: &str) -> String {
    let r = reason.to_ascii_lowercase();
    let mechanism = mechanism.unwrap_or("none");
    if r.contains("oauthbearer") || r.contains("oidc") || r.contains("token") {
        return "the OAUTHBEARER token could not be obtained or was refused: check \
                kafka.security.oauth (token_endpoint, client_id, the client secret) or, for \
                AWS_MSK_IAM, the AWS credentials and kafka.security.aws.region"
            .into();
    }
    if r.contains("invalid credentials") || r.contains("authentication failed") {
        return format!(
            "the broker refused the credentials ({mechanism}): check kafka.security.username \
             and the password in kafka.security.password_env / password_file, and that the \
             user exists for {mechanism} on this cluster"
        );
    }
    if r.contains("unsupported sasl mechanism") || r.contains("mechanism") && r.contains("sasl") {
        return format!(
            "this listener does not offer SASL mechanism {mechanism}: check \
             kafka.security.mechanism against the cluster's listener"
        );
    }
    if r.contains("certificate verify failed") || r.contains("unable to get local issuer") {
        return "the broker's certificate is not signed by a CA this client trusts: set \
                kafka.security.ca_file to the PEM of the CA that signed it (unset, the system's \
                roots are used)"
            .into();
    }
    if r.contains("hostname") || r.contains("subject alternative") {
        return "the broker's certificate does not name the host in kafka.brokers: connect by \
                a name the certificate carries (or, only for testing, set \
                kafka.security.verify_hostname = false)"
            .into();
    }
    if r.contains("bad certificate")
        || r.contains("certificate required")
        || r.contains("alert number 42")
        || r.contains("alert number 116")
    {
        return "the broker requires a client certificate it trusts (mTLS): set \
                kafka.security.certificate_file and key_file to a certificate signed by a CA \
                the broker trusts"
            .into();
    }
    if r.contains("ssl") || r.contains("tls") {
        return format!(
            "the TLS handshake failed over {how}: check kafka.security.protocol against the \
             listener (ssl/sasl_ssl need a TLS port) and kafka.security.ca_file"
        );
    }
    if r.contains("disconnected") || r.contains("apiversion") {
        return format!(
            "the broker closed the connection: the listener may expect another protocol than \
             {how}; check kafka.security.protocol and the port in kafka.brokers"
        );
    }
    "check kafka.brokers and that the cluster is up (a local one: scripts/services.sh)".into()
}

/// The context of every plain client: tokens on request, the last error remembered.
#[derive(Clone)]
pub struct KafkaContext {
    auth: Auth,
    last_error: Arc<Mutex<Option<String>>>,
}

impl KafkaContext {
    /// Answer a token request (other contexts delegate here too).
    pub fn token(auth: &Auth) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        auth.token().inspect_err(|e| {
            error!(error = %crate::report::Report(e.as_ref()), "cannot obtain an OAUTHBEARER token");
        })
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }
}

/// librdkafka's log lines, at their level; but a connection torn down before it was
/// set up ("... (after 0ms in state DOWN)": the coordinator's connection of a SASL
/// client, before authentication even began) is an ERROR only in librdkafka's words:
/// the client connects again at once, and a real failure is reported on its own.
pub(super) fn log_librdkafka(
    level: rdkafka::config::RDKafkaLogLevel,
    facility: &str,
    message: &str,
) {
    use rdkafka::config::RDKafkaLogLevel as L;
    let setting_up = message.contains("after 0ms in state DOWN");
    match level {
        L::Emerg | L::Alert | L::Critical | L::Error if !setting_up => {
            error!(target: "librdkafka", "{facility}: {message}")
        }
        L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
            warn!(target: "librdkafka", "{facility}: {message}")
        }
        L::Notice | L::Info => tracing::info!(target: "librdkafka", "{facility}: {message}"),
        L::Debug => tracing::debug!(target: "librdkafka", "{facility}: {message}"),
    }
}

impl ClientContext for KafkaContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
        log_librdkafka(level, facility, message);
    }

    /// rust-rdkafka's default logs every statistics report (~7 KB) at INFO; a short-lived
    /// client's (kafka.options may set `statistics.interval.ms` for all) are not ours
    /// to read. The consumer's own feed its lag (`SourceContext::stats`).
    fn stats(&self, statistics: rdkafka::Statistics) {
        tracing::trace!(client = %statistics.name, "librdkafka statistics");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        warn!(error = %crate::report::Report(&error), "Kafka client: {reason}");
        if let Ok(mut last) = self.last_error.lock() {
            // "1/1 brokers are down" follows the failure that says why: keep the why.
            if !last.as_deref().is_some_and(is_fatal) {
                *last = Some(reason.to_string());
            }
        }
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        Self::token(&self.auth)
    }
}

impl ConsumerContext for KafkaContext {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The librdkafka this binary links: TLS, every SASL mechanism we offer, every codec.
    #[test]
    fn librdkafka_has_tls_sasl_and_every_codec() {
        let native = ClientConfig::new()
            .create_native_config()
            .expect("a librdkafka config");
        let features = native.get("builtin.features").expect("builtin.features");
        for wanted in [
            "ssl",
            "sasl_plain",
            "sasl_scram",
            "sasl_oauthbearer",
            "gzip",
            "snappy",
            "lz4",
            "zstd",
        ] {
            assert!(
                features.split(',').any(|f| f == wanted),
                "librdkafka lacks {wanted}: {features}"
            );
        }
    }

    #[test]
    fn hints_name_what_to_check() {
        let scram = Some("SCRAM-SHA-512");
        let cases = [
            ("SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512", "password"),
            ("SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified, verify that ssl.ca.location is correctly configured", "ca_file"),
            ("Receive failed: error:0A000412:SSL routines::ssl/tls alert bad certificate: SSL alert number 42", "certificate_file"),
            ("Failed to acquire SASL OAUTHBEARER token: OIDC token endpoint refused", "oauth"),
            ("Connect to ipv4#127.0.0.1:9999 failed: Connection refused", "kafka.brokers"),
        ];
        for (reason, key) in cases {
            let h = hint(reason, scram, "SASL_SSL");
            assert!(h.contains(key), "{reason} -> {h}");
        }
    }
}
