//! `[storage]` and `[http]` checked: the one `Storage` every table user shares, how data
//! files are written, and the status server.

use std::collections::HashMap;

use super::super::service::{HttpConfig, StorageConfig};
use crate::config::security::expand_home;
use crate::config::ConfigError;
use crate::storage::{Storage, Store};

/// Where tables live and how their files are written.
#[derive(Debug, Clone)]
pub struct StoragePlan {
    pub storage: Storage,
    /// zstd level for data files, 1..=22.
    pub zstd_level: i32,
    pub target_file_size: u64,
}

impl StoragePlan {
    pub(super) fn compile(s: &StorageConfig) -> Result<Self, ConfigError> {
        if !(1..=22).contains(&s.zstd_level) {
            return Err(ConfigError::key(
                "storage.zstd_level",
                format!("{} is outside 1..=22", s.zstd_level),
            ));
        }
        if s.root.trim().is_empty() {
            return Err(ConfigError::key("storage.root", "must not be empty"));
        }
        Store::of(&s.root).map_err(|e| ConfigError::key("storage.root", e.to_string()))?;
        Ok(Self {
            storage: Storage::new(&s.root, options(s)?),
            zstd_level: s.zstd_level,
            target_file_size: s.target_file_size,
        })
    }
}

/// Object store options by name.
type Options = HashMap<String, String>;

/// `storage.options` with the values `options_env` and `options_file` name, read now: the
/// object store is built from them once per table open.
fn options(s: &StorageConfig) -> Result<Options, ConfigError> {
    let mut options: Options = s.options.clone().into_iter().collect();
    let mut set = |map: &str, option: &str, value: String| {
        let key = format!("storage.{map}.{option}");
        if value.is_empty() {
            return Err(ConfigError::key(key, "the value it names is empty"));
        }
        match options.insert(option.to_string(), value) {
            Some(_) => Err(ConfigError::key(
                key,
                "this option is set more than once (storage.options, options_env, options_file)",
            )),
            None => Ok(()),
        }
    };
    for (option, var) in &s.options_env {
        let value = std::env::var(var).map_err(|_| {
            ConfigError::key(
                format!("storage.options_env.{option}"),
                format!(
                    "the environment variable {var} is not set; export it, or name a file in \
                     storage.options_file.{option}"
                ),
            )
        })?;
        set("options_env", option, value)?;
    }
    for (option, path) in &s.options_file {
        let text = std::fs::read_to_string(expand_home(path)).map_err(|e| {
            ConfigError::key(
                format!("storage.options_file.{option}"),
                format!("cannot read {path}: {e}"),
            )
        })?;
        set("options_file", option, text.trim().to_string())?;
    }
    Ok(options)
}

/// The status page, `/status`, `/metrics` and `/health`.
#[derive(Debug, Clone)]
pub struct HttpPlan {
    pub enabled: bool,
    pub listen: String,
    /// Not ready (`/health` 503) when a pipeline is this many records behind.
    pub max_ready_lag: i64,
}

impl HttpPlan {
    pub(super) fn compile(h: &HttpConfig) -> Self {
        Self {
            enabled: h.enabled,
            listen: h.listen.clone(),
            max_ready_lag: h.max_ready_lag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(root: &str) -> StorageConfig {
        StorageConfig {
            root: root.into(),
            ..Default::default()
        }
    }

    #[test]
    fn secrets_come_from_variables_and_files_and_errors_name_the_option() {
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("key.json");
        std::fs::write(&key, "{\"private_key\": \"k\"}\n").expect("key");
        // A name no other test uses: the process environment is shared.
        std::env::set_var("LAKESTREAM_UNIT_AZURE_KEY", "s3cret");
        let mut c = config("abfss://lake@acct.dfs.core.windows.net/sf");
        c.options
            .insert("azure_storage_account_name".into(), "acct".into());
        c.options_env.insert(
            "azure_storage_account_key".into(),
            "LAKESTREAM_UNIT_AZURE_KEY".into(),
        );
        c.options_file.insert(
            "google_service_account_key".into(),
            key.display().to_string(),
        );
        let plan = StoragePlan::compile(&c).expect("plan");
        let options = &plan.storage.options;
        assert_eq!(options["azure_storage_account_key"], "s3cret");
        assert_eq!(
            options["google_service_account_key"],
            "{\"private_key\": \"k\"}"
        );
        assert_eq!(options["azure_storage_account_name"], "acct");

        let message = |c: &StorageConfig| match StoragePlan::compile(c) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{c:?} compiled"),
        };
        let mut twice = c.clone();
        twice
            .options
            .insert("azure_storage_account_key".into(), "inline".into());
        assert!(message(&twice).contains("storage.options_env.azure_storage_account_key"));
        let mut unset = config("gs://b/p");
        unset.options_env.insert(
            "google_service_account_key".into(),
            "LAKESTREAM_UNIT_UNSET".into(),
        );
        let text = message(&unset);
        assert!(
            text.contains("LAKESTREAM_UNIT_UNSET") && text.contains("options_file"),
            "{text}"
        );
        assert!(message(&config("hdfs://nn/lake")).contains("storage.root"));
    }
}
