//! The Confluent Schema Registry API, read-only: a schema by id (cached for the life of
//! the process, so ids already seen decode through a registry outage), the subjects an
//! id is registered under, and a subject's versions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{RegistryAuth, RegistryPlan};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the schema registry at {url} cannot be reached")]
    Unreachable {
        url: String,
        #[source]
        cause: reqwest::Error,
    },
    #[error("the schema registry answered {status} to {url}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error(
        "the schema registry refused lakestream's credentials ({status} to {url}): check \
         schema_registry.username and its password, or the token"
    )]
    Refused { url: String, status: u16 },
    #[error("schema id {0} does not exist in the registry")]
    NoSuchId(u32),
    #[error(
        "subject '{subject}' has no schema in the registry at {url}: register one (a \
         serializer does with its first message), or check the source's subject_strategy"
    )]
    NoSubject { subject: String, url: String },
    #[error("the schema registry's answer to {url} is not what its API returns: {message}")]
    Answer { url: String, message: String },
    #[error("schema_registry: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("schema_registry.ca_file: {0}")]
    Ca(String),
    #[error("no version of subject '{subject}' can be the table's schema: {reasons}")]
    Unreadable { subject: String, reasons: String },
}

impl RegistryError {
    /// Worth waiting for: the registry is down, slow or overloaded.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

/// A schema as the registry stores it.
#[derive(Debug, Clone, Deserialize)]
pub struct Registered {
    pub schema: String,
    /// `AVRO` (the default when absent), `PROTOBUF` or `JSON`.
    #[serde(rename = "schemaType", default = "avro")]
    pub schema_type: String,
    #[serde(default)]
    pub references: Vec<Reference>,
}

fn avro() -> String {
    "AVRO".into()
}

/// A schema another one imports (Protobuf `import`, Avro named types).
#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// One version of a subject.
#[derive(Debug, Clone, Deserialize)]
pub struct Version {
    pub id: u32,
    pub version: i32,
    pub schema: String,
    #[serde(rename = "schemaType", default = "avro")]
    pub schema_type: String,
    #[serde(default)]
    pub references: Vec<Reference>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
}

#[derive(Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    by_id: Mutex<HashMap<u32, Arc<Registered>>>,
}

#[derive(Debug)]
enum Auth {
    None,
    Basic(String, String),
    Bearer(String),
}

impl RegistryClient {
    /// The client `plan` describes; its secrets are read here, once.
    pub fn new(plan: &RegistryPlan) -> Result<Self, RegistryError> {
        let mut http = reqwest::Client::builder().timeout(plan.timeout);
        if let Some(path) = &plan.ca_file {
            let path = crate::config::expand_home(path);
            let pem = std::fs::read(&path)
                .map_err(|e| RegistryError::Ca(format!("cannot read {}: {e}", path.display())))?;
            let ca = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| RegistryError::Ca(format!("{}: {e}", path.display())))?;
            http = http.add_root_certificate(ca);
        }
        let auth = match &plan.auth {
            RegistryAuth::None => Auth::None,
            RegistryAuth::Basic { username, password } => {
                Auth::Basic(username.clone(), password.read()?)
            }
            RegistryAuth::Bearer(token) => Auth::Bearer(token.read()?),
        };
        Ok(Self {
            http: http
                .build()
                .map_err(|e| RegistryError::Ca(format!("TLS setup: {e}")))?,
            base: plan.url.clone(),
            auth,
            by_id: Mutex::new(HashMap::new()),
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The schema `id` (from the cache once seen).
    pub async fn schema(&self, id: u32) -> Result<Arc<Registered>, RegistryError> {
        if let Some(found) = self.cached(id) {
            return Ok(found);
        }
        let found: Registered = match self.get(&format!("/schemas/ids/{id}")).await {
            Err(RegistryError::Status { status: 404, .. }) => {
                return Err(RegistryError::NoSuchId(id))
            }
            other => other?,
        };
        let found = Arc::new(found);
        if let Ok(mut cache) = self.by_id.lock() {
            cache.insert(id, found.clone());
        }
        Ok(found)
    }

    fn cached(&self, id: u32) -> Option<Arc<Registered>> {
        self.by_id.lock().ok()?.get(&id).cloned()
    }

    /// The subjects and versions `id` is registered under.
    pub async fn subjects_of(&self, id: u32) -> Result<Vec<SubjectVersion>, RegistryError> {
        match self.get(&format!("/schemas/ids/{id}/versions")).await {
            Err(RegistryError::Status { status: 404, .. }) => Err(RegistryError::NoSuchId(id)),
            other => other,
        }
    }

    /// Every version of `subject`, oldest first.
    pub async fn versions(&self, subject: &str) -> Result<Vec<Version>, RegistryError> {
        let path = format!("/subjects/{}/versions", encode(subject));
        let numbers: Vec<i32> = match self.get(&path).await {
            Err(RegistryError::Status { status: 404, .. }) => {
                return Err(RegistryError::NoSubject {
                    subject: subject.to_string(),
                    url: self.base.clone(),
                })
            }
            other => other?,
        };
        let mut versions = Vec::with_capacity(numbers.len());
        for n in numbers {
            let version: Version = self.get(&format!("{path}/{n}")).await?;
            if let Ok(mut cache) = self.by_id.lock() {
                cache.entry(version.id).or_insert_with(|| {
                    Arc::new(Registered {
                        schema: version.schema.clone(),
                        schema_type: version.schema_type.clone(),
                        references: version.references.clone(),
                    })
                });
            }
            versions.push(version);
        }
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    /// A version of `subject` (a reference's schema).
    pub async fn version(&self, subject: &str, version: i32) -> Result<Version, RegistryError> {
        self.get(&format!("/subjects/{}/versions/{version}", encode(subject)))
            .await
    }

    /// Register `schema` (Avro) under `subject`: its id (the existing one when the
    /// registry has it already).
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        #[derive(Deserialize)]
        struct Registered {
            id: u32,
        }
        let path = format!("/subjects/{}/versions", encode(subject));
        let body = serde_json::json!({ "schema": schema, "schemaType": "AVRO" });
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(body.to_string());
        let found: Registered = self.send(&path, request).await?;
        Ok(found.id)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, RegistryError> {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(path, request).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, RegistryError> {
        let url = format!("{}{path}", self.base);
        let request = request.header("Accept", "application/vnd.schemaregistry.v1+json");
        let request = match &self.auth {
            Auth::None => request,
            Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
            Auth::Bearer(token) => request.bearer_auth(token),
        };
        let unreachable = |cause| RegistryError::Unreachable {
            url: url.clone(),
            cause,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(unreachable)?;
        match status {
            200..=299 => serde_json::from_slice(&body).map_err(|e| RegistryError::Answer {
                url,
                message: e.to_string(),
            }),
            401 | 403 => Err(RegistryError::Refused { url, status }),
            _ => Err(RegistryError::Status {
                url,
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            }),
        }
    }
}

/// A subject in a URL path (record names hold dots, topic names may hold anything).
fn encode(subject: &str) -> String {
    url::form_urlencoded::byte_serialize(subject.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Wait for the registry while it is down: `attempt` (from 0) sleeps this long first.
pub(super) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(30))
}
