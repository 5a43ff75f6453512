//! Table roots in object stores: S3 (a private moto per test), Azure (the Azurite that
//! scripts/services.sh starts, container `lake`) and GCS (its fake-gcs-server, bucket
//! `lake`). Each test gets a folder of its own under the shared container or bucket.

use std::path::Path;
use std::process::Command;

use super::s3::S3Server;

/// Azurite's published development account and key (not a secret).
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const FAKE_GCS: &str = "http://127.0.0.1:4443";

/// A table root in an object store, the options an in-process reader (and Python
/// deltalake) opens it with, and how the CLI gets them: secrets the documented ways
/// (an environment variable, a file), the rest as `storage.options`.
pub(crate) struct RemoteRoot {
    pub root: String,
    pub options: Vec<(String, String)>,
    /// Options handed to the CLI as `storage.options_env.<option>` = variable.
    secret_env: Vec<(String, String, String)>,
    /// Options handed to the CLI as `storage.options_file.<option>` = path.
    secret_file: Vec<(String, String)>,
}

fn pairs(options: &[(&str, &str)]) -> Vec<(String, String)> {
    options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl RemoteRoot {
    pub(crate) fn s3(server: &S3Server, folder: &str) -> Self {
        Self {
            root: format!("s3://{}/{folder}", super::s3::BUCKET),
            options: server.options(),
            secret_env: Vec::new(),
            secret_file: Vec::new(),
        }
    }

    /// `scheme` is `az` (`az://lake/<folder>`) or `abfss`
    /// (`abfss://lake@<account>.dfs.core.windows.net/<folder>`, as ADLS Gen2 names it);
    /// the account key reaches the CLI through an environment variable.
    pub(crate) fn azurite(scheme: &str, folder: &str) -> Self {
        let root = match scheme {
            "abfss" => format!("abfss://lake@{AZURITE_ACCOUNT}.dfs.core.windows.net/{folder}"),
            _ => format!("az://lake/{folder}"),
        };
        Self {
            root,
            options: pairs(&[
                ("azure_storage_account_name", AZURITE_ACCOUNT),
                ("azure_storage_account_key", AZURITE_KEY),
                ("azure_storage_use_emulator", "true"),
            ]),
            secret_env: vec![(
                "azure_storage_account_key".into(),
                "LAKESTREAM_TEST_AZURE_KEY".into(),
                AZURITE_KEY.into(),
            )],
            secret_file: Vec::new(),
        }
    }

    /// `gs://lake/<folder>` on fake-gcs-server, reached with a service-account key file
    /// (no OAuth: the emulator takes no token) that the CLI reads through
    /// `storage.options_file`.
    pub(crate) fn fake_gcs(dir: &Path, folder: &str) -> Self {
        let key = dir.join("gcs-service-account.json");
        let json = serde_json::json!({
            "type": "service_account",
            "client_email": "lakestream-test@example.iam.gserviceaccount.com",
            "private_key_id": "test",
            "private_key": "",
            "disable_oauth": true,
            "gcs_base_url": FAKE_GCS,
        });
        std::fs::write(&key, json.to_string()).expect("service account key");
        let path = key.display().to_string();
        Self {
            root: format!("gs://lake/{folder}"),
            options: pairs(&[("google_service_account", &path)]),
            secret_env: Vec::new(),
            secret_file: vec![("google_service_account_key".into(), path)],
        }
    }

    /// Point `cmd` at this root's store.
    pub(crate) fn configure(&self, cmd: &mut Command) {
        for (k, v) in &self.options {
            let secret = self.secret_env.iter().any(|(o, _, _)| o == k)
                || self.secret_file.iter().any(|(o, _)| o == k)
                || (k == "google_service_account" && !self.secret_file.is_empty());
            // Credentials the documented way (environment), the rest as config.
            match k.as_str() {
                "aws_access_key_id" => cmd.env("AWS_ACCESS_KEY_ID", v),
                "aws_secret_access_key" => cmd.env("AWS_SECRET_ACCESS_KEY", v),
                _ if secret => cmd,
                _ => cmd.arg("--set").arg(format!("storage.options.{k}={v}")),
            };
        }
        for (option, var, value) in &self.secret_env {
            cmd.env(var, value)
                .arg("--set")
                .arg(format!("storage.options_env.{option}={var}"));
        }
        for (option, path) in &self.secret_file {
            cmd.arg("--set")
                .arg(format!("storage.options_file.{option}={path}"));
        }
    }
}
