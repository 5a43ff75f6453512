//! `[catalog]`: where the tables are registered so engines find them by name.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogKind {
    /// AWS Glue Data Catalog (Athena, EMR, Redshift Spectrum, Spark with the Glue
    /// metastore).
    Glue,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogConfig {
    pub kind: CatalogKind,
    /// Glue: the AWS region (default: the standard AWS chain's, e.g. AWS_REGION).
    pub region: Option<String>,
    /// Glue: another endpoint (a VPC endpoint, or a local test server).
    pub endpoint: Option<String>,
    /// A failed registration is retried with backoff up to this interval between tries.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: std::time::Duration,
}

fn default_max_backoff() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}
