//! The Schema Registry checked: its URL parsed, how it is authenticated (one way only).

use std::time::Duration;

use super::super::registry::RegistryConfig;
use super::Secret;
use crate::config::ConfigError;

#[derive(Debug, Clone)]
pub struct RegistryPlan {
    /// The API's base, without a trailing `/`.
    pub url: String,
    pub auth: RegistryAuth,
    pub ca_file: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub enum RegistryAuth {
    None,
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

impl RegistryPlan {
    /// The `[schema_registry]` section, when there is one.
    pub(super) fn compile_any(
        r: Option<&RegistryConfig>,
    ) -> Result<Option<std::sync::Arc<Self>>, ConfigError> {
        Ok(r.map(Self::compile).transpose()?.map(std::sync::Arc::new))
    }

    pub(super) fn compile(r: &RegistryConfig) -> Result<Self, ConfigError> {
        let parsed = url::Url::parse(&r.url).map_err(|e| {
            ConfigError::key(
                "schema_registry.url",
                format!("'{}' is not a URL: {e}", r.url),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ConfigError::key(
                "schema_registry.url",
                format!("'{}' must start with http:// or https://", r.url),
            ));
        }
        let token_given = r.token_env.is_some() || r.token_file.is_some();
        let auth =
            match (&r.username, token_given) {
                (Some(_), true) => return Err(ConfigError::key(
                    "schema_registry.username",
                    "give either username (basic auth) or token_env/token_file (bearer), not both",
                )),
                (Some(username), false) => RegistryAuth::Basic {
                    username: username.clone(),
                    password: Secret::new(
                        r.password_file.clone(),
                        r.password_env.clone(),
                        "schema_registry.password",
                    ),
                },
                (None, true) => RegistryAuth::Bearer(Secret::new(
                    r.token_file.clone(),
                    r.token_env.clone().unwrap_or_default(),
                    "schema_registry.token",
                )),
                (None, false) => RegistryAuth::None,
            };
        if r.timeout.is_zero() {
            return Err(ConfigError::key(
                "schema_registry.timeout",
                "must be more than 0s",
            ));
        }
        Ok(Self {
            url: r.url.trim_end_matches('/').to_string(),
            auth,
            ca_file: r.ca_file.clone(),
            timeout: r.timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    fn load(sets: &[&str]) -> Result<crate::config::Plan, crate::config::ConfigError> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/examples/avro-registry.toml");
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        crate::config::load(&path, [], &sets)
    }

    #[test]
    fn the_example_loads_and_the_subject_follows_the_strategy() {
        let plan = load(&[]).expect("loads");
        let source = plan.sources["calls"]
            .decoder
            .registry
            .clone()
            .expect("registry");
        assert_eq!(source.subject("t"), "t-value");
        let plan = load(&[
            "sources.calls.subject_strategy=topic-record",
            "sources.calls.record=sf.Call",
        ])
        .expect("loads");
        let source = plan.sources["calls"]
            .decoder
            .registry
            .clone()
            .expect("registry");
        assert_eq!(source.subject("t"), "t-sf.Call");
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&[&str], &str)] = &[
            (&["schema_registry.url=ftp://x"], "schema_registry.url"),
            (&["schema_registry.url=not a url"], "schema_registry.url"),
            (
                &["schema_registry.username=u", "schema_registry.token_env=T"],
                "schema_registry.username",
            ),
            (
                &["sources.calls.subject_strategy=record"],
                "sources.calls.record",
            ),
            (
                &[r#"sources.calls.fields=["id BIGINT"]"#],
                "sources.calls.fields",
            ),
        ];
        for (sets, key) in cases {
            let err = load(sets).expect_err("refused").to_string();
            assert!(err.contains(key), "{sets:?}: {err}");
        }
    }
}
