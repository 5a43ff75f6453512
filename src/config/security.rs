//! `kafka.security`: how lakestream authenticates to the brokers and encrypts the
//! connection. Secrets never come from the config file: each is read from an environment
//! variable or a file named here, once, when the clients are built.

use serde::Deserialize;

use super::ConfigError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: Protocol,
    /// With `sasl_*`: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER` (a token
    /// from `oauth.token_endpoint`) or `AWS_MSK_IAM` (OAUTHBEARER with a SigV4-signed
    /// token from the standard AWS credential chain).
    pub mechanism: Option<Mechanism>,
    /// PLAIN and SCRAM user name (Confluent Cloud: the API key).
    pub username: Option<String>,
    /// Environment variable holding the PLAIN/SCRAM password (Confluent Cloud: the API
    /// secret; Event Hubs: the connection string).
    pub password_env: String,
    /// A file holding the password (first line), instead of the environment variable.
    pub password_file: Option<String>,
    /// PEM file of the CA(s) that signed the brokers' certificates. Unset: the system's
    /// trusted roots (right for every managed service).
    pub ca_file: Option<String>,
    /// mTLS: PEM file of this client's certificate (chain).
    pub certificate_file: Option<String>,
    /// mTLS: PEM file of the certificate's private key.
    pub key_file: Option<String>,
    /// Environment variable holding the key's passphrase, when the key is encrypted.
    pub key_password_env: Option<String>,
    /// `false` turns off the check that a broker's certificate names the host
    /// connected to (librdkafka's `ssl.endpoint.identification.algorithm = none`).
    pub verify_hostname: bool,
    /// OAUTHBEARER through an OIDC token endpoint (client credentials grant).
    pub oauth: OauthConfig,
    /// AWS_MSK_IAM settings.
    pub aws: AwsConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    /// librdkafka's `security.protocol` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    pub fn is_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER")]
    OauthBearer,
    #[serde(rename = "AWS_MSK_IAM")]
    AwsMskIam,
}

impl Mechanism {
    /// The name in the config file and in errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OauthBearer => "OAUTHBEARER",
            Self::AwsMskIam => "AWS_MSK_IAM",
        }
    }

    /// The SASL mechanism on the wire (librdkafka's `sasl.mechanism`).
    pub fn wire(self) -> &'static str {
        match self {
            Self::AwsMskIam => "OAUTHBEARER",
            other => other.name(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OauthConfig {
    /// The OIDC provider's token endpoint (`https://.../oauth2/token`).
    pub token_endpoint: Option<String>,
    pub client_id: Option<String>,
    /// Environment variable holding the client secret.
    pub client_secret_env: String,
    /// A file holding the client secret (first line), instead of the variable.
    pub client_secret_file: Option<String>,
    /// Space-separated scopes to ask for (some providers require one).
    pub scope: Option<String>,
    /// PEM file of the CA that signed the token endpoint's certificate. Unset: the
    /// system's trusted roots.
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsConfig {
    /// The cluster's AWS region (e.g. `us-east-1`). Unset: the credential chain's
    /// region (`AWS_REGION`, the profile).
    pub region: Option<String>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            protocol: Protocol::default(),
            mechanism: None,
            username: None,
            password_env: "LAKESTREAM_KAFKA_PASSWORD".into(),
            password_file: None,
            ca_file: None,
            certificate_file: None,
            key_file: None,
            key_password_env: None,
            verify_hostname: true,
            oauth: OauthConfig::default(),
            aws: AwsConfig::default(),
        }
    }
}

impl Default for OauthConfig {
    fn default() -> Self {
        Self {
            token_endpoint: None,
            client_id: None,
            client_secret_env: "LAKESTREAM_KAFKA_CLIENT_SECRET".into(),
            client_secret_file: None,
            scope: None,
            ca_file: None,
        }
    }
}

/// `path` with a leading `~/` read as the home folder (`$HOME`).
pub fn expand_home(path: &str) -> std::path::PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => std::path::Path::new(&home).join(rest),
        _ => std::path::PathBuf::from(path),
    }
}

/// A secret from a file (first line; `~/` is the home folder) or an environment
/// variable. `key` names the config keys in errors.
pub fn read_secret(file: Option<&str>, env: &str, key: &str) -> Result<String, ConfigError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(expand_home(path)).map_err(|e| {
            ConfigError::key(format!("{key}_file"), format!("cannot read {path}: {e}"))
        })?;
        let line = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_string();
        if line.is_empty() {
            return Err(ConfigError::key(
                format!("{key}_file"),
                format!("{path} is empty"),
            ));
        }
        return Ok(line);
    }
    match std::env::var(env) {
        Ok(value) if !value.is_empty() => Ok(value),
        _ => Err(ConfigError::key(
            format!("{key}_env"),
            format!(
                "the environment variable {env} is not set; export it, or name a file in \
                 {key}_file"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    fn load(sets: &[&str]) -> Result<crate::config::Plan, crate::config::ConfigError> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lakestream.toml");
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        crate::config::load(&path, [], &sets)
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["kafka.security.protocol=sasl_ssl"],
                "kafka.security.mechanism",
            ),
            (
                &["kafka.security.mechanism=PLAIN"],
                "kafka.security.mechanism",
            ),
            (
                &[
                    "kafka.security.protocol=sasl_ssl",
                    "kafka.security.mechanism=SCRAM-SHA-512",
                ],
                "kafka.security.username",
            ),
            (
                &[
                    "kafka.security.protocol=sasl_ssl",
                    "kafka.security.mechanism=OAUTHBEARER",
                ],
                "kafka.security.oauth.token_endpoint",
            ),
            (
                &["kafka.security.ca_file=/nonexistent/ca.pem"],
                "kafka.security.ca_file",
            ),
            (
                &[
                    "kafka.security.protocol=ssl",
                    "kafka.security.certificate_file=/etc/hostname",
                ],
                "kafka.security.key_file",
            ),
            (
                &["kafka.options.sasl.password=x"],
                "kafka.options.sasl.password",
            ),
            (
                &["kafka.security.mechanism=GSSAPI"],
                "kafka.security.mechanism",
            ),
        ];
        for (sets, key) in cases {
            let err = load(sets).expect_err("must be refused").to_string();
            assert!(err.contains(key), "{sets:?}: {err}");
        }
    }

    #[test]
    fn a_missing_secret_is_named_when_connecting_not_when_loading() {
        let config = load(&[
            "kafka.security.protocol=sasl_ssl",
            "kafka.security.mechanism=SCRAM-SHA-512",
            "kafka.security.username=u",
            "kafka.security.password_env=LAKESTREAM_TEST_UNSET_VARIABLE",
        ])
        .expect("loads: query and compact need no Kafka password");
        let err = crate::source::Connection::new(&config.kafka)
            .expect_err("no password")
            .to_string();
        assert!(
            err.contains("kafka.security.password_env")
                && err.contains("LAKESTREAM_TEST_UNSET_VARIABLE"),
            "{err}"
        );
    }

    #[test]
    fn a_complete_section_loads_and_never_prints_the_secret() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), "s3cret-value\n").expect("write");
        let path = file.path().display().to_string();
        let config = load(&[
            "kafka.security.protocol=sasl_ssl",
            "kafka.security.mechanism=SCRAM-SHA-256",
            "kafka.security.username=svc",
            &format!("kafka.security.password_file={path}"),
        ])
        .expect("loads");
        let Some(crate::config::Sasl::Password { password, .. }) = &config.kafka.security.sasl
        else {
            panic!("a password mechanism: {:?}", config.kafka.security.sasl);
        };
        assert_eq!(password.read().expect("read"), "s3cret-value");
        let connection = crate::source::Connection::new(&config.kafka).expect("connection");
        assert_eq!(connection.property("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(connection.property("ssl.ca.location"), Some("probe"));
        assert!(!format!("{connection:?}").contains("s3cret"));
        assert_eq!(
            config.kafka.security.describe(),
            "SASL_SSL SCRAM-SHA-256 as user 'svc'"
        );
    }
}
