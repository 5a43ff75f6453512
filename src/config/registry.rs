//! `[schema_registry]`: the Confluent-API Schema Registry that Avro, Protobuf and JSON
//! Schema sources read their schemas from.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of the Confluent-compatible API (`http://registry:8081`; Apicurio:
    /// `http://registry:8080/apis/ccompat/v7`).
    pub url: String,
    /// Basic auth user (Confluent Cloud: the API key); the password comes from
    /// `password_env` or `password_file`.
    pub username: Option<String>,
    #[serde(default = "default_password_env")]
    pub password_env: String,
    pub password_file: Option<String>,
    /// A bearer token (OAuth) from this environment variable or file, instead of basic auth.
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    /// PEM file of the CA that signed the registry's certificate (unset: the system's roots).
    pub ca_file: Option<String>,
    /// How long one request may take before it counts as the registry being down.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: std::time::Duration,
}

fn default_password_env() -> String {
    "LAKESTREAM_REGISTRY_PASSWORD".into()
}

fn default_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

/// Which registry subject holds a source's value schemas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectStrategy {
    /// `<topic>-value` (Confluent's TopicNameStrategy).
    #[default]
    Topic,
    /// The record's full name, `record` (RecordNameStrategy).
    Record,
    /// `<topic>-<record>` (TopicRecordNameStrategy).
    TopicRecord,
}
