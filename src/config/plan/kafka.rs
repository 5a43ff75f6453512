//! `[kafka]` checked and typed: the brokers, the group, where partitions start, the
//! librdkafka options lakestream does not own, and a security combination that can work
//! (secrets are read only when a client connects: `query` needs no Kafka password).

use std::collections::BTreeMap;
use std::time::Duration;

use super::super::security::{read_secret, Mechanism, Protocol, SecurityConfig};
use super::super::service::{IsolationLevel, KafkaConfig, StartingOffsets};
use super::check_name;
use crate::config::ConfigError;

/// How every Kafka client connects and reads.
#[derive(Debug, Clone)]
pub struct KafkaPlan {
    pub brokers: String,
    pub group_id: String,
    pub starting_offsets: StartingOffsets,
    pub isolation_level: IsolationLevel,
    pub seek_rewind: u32,
    pub fail_on_data_loss: bool,
    pub security: SecurityPlan,
    /// Extra librdkafka properties, none of them one lakestream owns.
    pub options: BTreeMap<String, String>,
    /// The group's session timeout (`session.timeout.ms`, librdkafka's default 45 s):
    /// how long a dead member keeps its partitions.
    pub session_timeout: Duration,
}

/// TLS and SASL as one combination that can work.
#[derive(Debug, Clone)]
pub struct SecurityPlan {
    pub protocol: Protocol,
    pub sasl: Option<Sasl>,
    /// With `ssl` and `sasl_ssl` only.
    pub tls: Option<TlsPlan>,
}

#[derive(Debug, Clone)]
pub enum Sasl {
    /// PLAIN or SCRAM.
    Password {
        mechanism: Mechanism,
        username: String,
        password: Secret,
    },
    OauthBearer(OidcPlan),
    AwsMskIam {
        region: Option<String>,
    },
}

/// OAUTHBEARER through an OIDC token endpoint (client credentials grant).
#[derive(Debug, Clone)]
pub struct OidcPlan {
    pub token_endpoint: url::Url,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TlsPlan {
    /// `None`: the system's trusted roots.
    pub ca_file: Option<String>,
    /// mTLS: the certificate (chain) and its key.
    pub client: Option<(String, String)>,
    pub key_password: Option<Secret>,
    pub verify_hostname: bool,
}

/// A secret's file or environment variable, and the config keys that name it.
#[derive(Debug, Clone)]
pub struct Secret {
    file: Option<String>,
    env: String,
    key: &'static str,
}

impl Secret {
    /// `key` names the config keys (`{key}_file`, `{key}_env`) in errors.
    pub(super) fn new(file: Option<String>, env: String, key: &'static str) -> Self {
        Self { file, env, key }
    }

    /// The secret now (first line of the file, else the variable).
    pub fn read(&self) -> Result<String, ConfigError> {
        read_secret(self.file.as_deref(), &self.env, self.key)
    }
}

/// librdkafka properties that `kafka.security` owns.
fn is_security_option(key: &str) -> bool {
    key == "security.protocol"
        || key.starts_with("sasl.")
        || key.starts_with("ssl.key")
        || key.starts_with("ssl.certificate")
        || key.starts_with("ssl.ca.")
        || key == "enable.sasl.oauthbearer.unsecure.jwt"
}

impl KafkaPlan {
    pub(super) fn compile(k: &KafkaConfig) -> Result<Self, ConfigError> {
        if k.brokers.trim().is_empty() {
            return Err(ConfigError::key("kafka.brokers", "must not be empty"));
        }
        check_name("kafka.group_id", &k.group_id, false)?;
        if k.options.contains_key("isolation.level") {
            return Err(ConfigError::key(
                "kafka.options.isolation.level",
                "set kafka.isolation_level instead (read_committed or read_uncommitted)",
            ));
        }
        // Security goes through kafka.security, which keeps secrets out of the file and
        // the logs and checks the combination once.
        if let Some(key) = k.options.keys().find(|k| is_security_option(k)) {
            return Err(ConfigError::key(
                format!("kafka.options.{key}"),
                "set TLS and SASL in kafka.security instead (protocol, mechanism, username, \
                 password_env or password_file, ca_file, certificate_file, key_file)",
            ));
        }
        let session_timeout = match k.options.get("session.timeout.ms") {
            None => Duration::from_secs(45),
            Some(ms) => ms.trim().parse().map(Duration::from_millis).map_err(|_| {
                ConfigError::key(
                    "kafka.options.session.timeout.ms",
                    format!("'{ms}' is not a number of milliseconds"),
                )
            })?,
        };
        Ok(Self {
            brokers: k.brokers.clone(),
            group_id: k.group_id.clone(),
            starting_offsets: k.starting_offsets.clone(),
            isolation_level: k.isolation_level,
            seek_rewind: k.seek_rewind,
            fail_on_data_loss: k.fail_on_data_loss,
            security: SecurityPlan::compile(&k.security)?,
            options: k.options.clone(),
            session_timeout,
        })
    }
}

const KEY: &str = "kafka.security";

impl SecurityPlan {
    fn compile(s: &SecurityConfig) -> Result<Self, ConfigError> {
        let sasl = match (s.protocol.is_sasl(), s.mechanism) {
            (true, None) => {
                return Err(ConfigError::key(
                    format!("{KEY}.mechanism"),
                    format!(
                        "protocol {} needs a mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, \
                         OAUTHBEARER or AWS_MSK_IAM",
                        s.protocol.as_str()
                    ),
                ))
            }
            (false, Some(m)) => {
                return Err(ConfigError::key(
                    format!("{KEY}.mechanism"),
                    format!(
                        "{} is a SASL mechanism, but protocol is {}; use sasl_ssl (or \
                         sasl_plaintext)",
                        m.name(),
                        s.protocol.as_str()
                    ),
                ))
            }
            (_, m) => m,
        };
        let tls = Self::tls(s)?;
        for (key, path) in [
            ("ca_file", &s.ca_file),
            ("certificate_file", &s.certificate_file),
            ("key_file", &s.key_file),
            ("oauth.ca_file", &s.oauth.ca_file),
        ] {
            if let Some(path) = path {
                std::fs::metadata(path).map_err(|e| {
                    ConfigError::key(format!("{KEY}.{key}"), format!("cannot read {path}: {e}"))
                })?;
            }
        }
        Ok(Self {
            protocol: s.protocol,
            sasl: sasl.map(|m| Self::sasl(s, m)).transpose()?,
            tls,
        })
    }

    fn tls(s: &SecurityConfig) -> Result<Option<TlsPlan>, ConfigError> {
        if !s.protocol.is_tls() {
            for (key, set) in [
                ("ca_file", s.ca_file.is_some()),
                ("certificate_file", s.certificate_file.is_some()),
                ("key_file", s.key_file.is_some()),
            ] {
                if set {
                    return Err(ConfigError::key(
                        format!("{KEY}.{key}"),
                        format!(
                            "is a TLS setting, but protocol is {}; use ssl or sasl_ssl",
                            s.protocol.as_str()
                        ),
                    ));
                }
            }
        }
        let client =
            match (&s.certificate_file, &s.key_file) {
                (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
                (None, None) => None,
                _ => return Err(ConfigError::key(
                    format!("{KEY}.key_file"),
                    "a client certificate needs its key: set both certificate_file and key_file",
                )),
            };
        Ok(s.protocol.is_tls().then(|| TlsPlan {
            ca_file: s.ca_file.clone(),
            client,
            key_password: s.key_password_env.as_ref().map(|env| Secret {
                file: None,
                env: env.clone(),
                key: "kafka.security.key_password",
            }),
            verify_hostname: s.verify_hostname,
        }))
    }

    fn sasl(s: &SecurityConfig, m: Mechanism) -> Result<Sasl, ConfigError> {
        Ok(match m {
            Mechanism::Plain | Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let username = s.username.clone().unwrap_or_default();
                if username.is_empty() {
                    return Err(ConfigError::key(
                        format!("{KEY}.username"),
                        format!("{} needs a user name", m.name()),
                    ));
                }
                Sasl::Password {
                    mechanism: m,
                    username,
                    password: Secret {
                        file: s.password_file.clone(),
                        env: s.password_env.clone(),
                        key: "kafka.security.password",
                    },
                }
            }
            Mechanism::OauthBearer => {
                let o = &s.oauth;
                let endpoint = o.token_endpoint.as_deref().unwrap_or_default();
                let token_endpoint = url::Url::parse(endpoint)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https"))
                    .ok_or_else(|| {
                        ConfigError::key(
                            format!("{KEY}.oauth.token_endpoint"),
                            format!(
                                "OAUTHBEARER needs the OIDC token endpoint's http(s) URL \
                                 (got '{endpoint}')"
                            ),
                        )
                    })?;
                let client_id = o.client_id.clone().unwrap_or_default();
                if client_id.is_empty() {
                    return Err(ConfigError::key(
                        format!("{KEY}.oauth.client_id"),
                        "OAUTHBEARER needs the OIDC client id",
                    ));
                }
                Sasl::OauthBearer(OidcPlan {
                    token_endpoint,
                    client_id,
                    client_secret: Secret {
                        file: o.client_secret_file.clone(),
                        env: o.client_secret_env.clone(),
                        key: "kafka.security.oauth.client_secret",
                    },
                    scope: o.scope.clone(),
                    ca_file: o.ca_file.clone(),
                })
            }
            Mechanism::AwsMskIam => Sasl::AwsMskIam {
                region: s.aws.region.clone(),
            },
        })
    }

    /// How the connection is made, for errors and logs (never a secret): `SASL_SSL
    /// SCRAM-SHA-512 as user 'x'`.
    pub fn describe(&self) -> String {
        let mut out = self.protocol.as_str().to_uppercase();
        match &self.sasl {
            Some(Sasl::Password {
                mechanism,
                username,
                ..
            }) => out.push_str(&format!(" {} as user '{username}'", mechanism.name())),
            Some(Sasl::OauthBearer(_)) => out.push_str(" OAUTHBEARER"),
            Some(Sasl::AwsMskIam { .. }) => out.push_str(" AWS_MSK_IAM"),
            None => {}
        }
        if self.tls.as_ref().is_some_and(|t| t.client.is_some()) {
            out.push_str(" with a client certificate");
        }
        out
    }
}
