//! The config compiled once: `config::load` reads the file into serde structs, and
//! `Plan::compile` checks each setting (every error names the key) while it turns it
//! into a typed value: topics as a list or a compiled pattern, fields parsed, the zone
//! resolved, each pipeline's mode matched into one `Mode`, one `Storage`, secrets'
//! sources. Nothing after `compile` sees a serde struct or looks a setting up by name.

mod catalog;
mod kafka;
mod lookup;
mod maintenance;
mod mirror;
mod names;
mod pipeline;
mod reader;
mod registry;
mod source;
mod storage;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use catalog::{CatalogName, CatalogPlan};
pub use kafka::{KafkaPlan, OidcPlan, Sasl, Secret, SecurityPlan, TlsPlan};
pub use lookup::LookupPlan;
pub use maintenance::{CompactPlan, MaintenancePlan, TablePlan, VacuumPlan};
pub use mirror::{GrainPlan, MirrorPlan};
pub use pipeline::{CommitPolicy, Mode, PipelinePlan, QuerySpec, Trigger};
pub use reader::ReaderPlan;
pub use registry::{RegistryAuth, RegistryPlan};
pub use source::{DecoderSpec, RegistrySource, SourcePlan, Topics};
pub use storage::{HttpPlan, StoragePlan};

use names::{check_name, check_table_owners};

use super::fields::is_identifier;
use super::pipeline::TOPIC;
use super::{Config, ConfigError};

/// Everything a command needs, checked and parsed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kafka: KafkaPlan,
    pub storage: StoragePlan,
    pub lookups: BTreeMap<String, LookupPlan>,
    pub mirror: Option<MirrorPlan>,
    pub maintenance: MaintenancePlan,
    pub http: HttpPlan,
    pub sources: BTreeMap<String, Arc<SourcePlan>>,
    pub pipelines: BTreeMap<String, Arc<PipelinePlan>>,
    /// `[schema_registry]`, when configured.
    pub registry: Option<Arc<RegistryPlan>>,
    /// `[catalog]`, when configured, with the tables registered in it.
    pub catalog: Option<Arc<CatalogPlan>>,
    /// `memory_limit` in bytes.
    pub memory_limit: u64,
}

impl Plan {
    /// Check `config` (every error names the key) by compiling it.
    pub fn compile(config: Config) -> Result<Self, ConfigError> {
        let kafka = KafkaPlan::compile(&config.kafka)?;
        let storage = StoragePlan::compile(&config.storage)?;
        let memory_limit = super::check_memory_limit(config.memory_limit)?;
        let registry = RegistryPlan::compile_any(config.schema_registry.as_ref())?;
        let mut sources = BTreeMap::new();
        for (name, s) in &config.sources {
            let plan = SourcePlan::compile(name, s, &kafka.group_id, &config.pipelines, &registry)?;
            sources.insert(name.clone(), Arc::new(plan));
        }
        let mut pipelines = BTreeMap::new();
        for (name, p) in &config.pipelines {
            let source = sources.get(&p.source).ok_or_else(|| {
                let known: Vec<&str> = sources.keys().map(String::as_str).collect();
                ConfigError::key(
                    format!("pipelines.{name}.source"),
                    format!("no source '{}' (known: {})", p.source, known.join(", ")),
                )
            })?;
            let plan = PipelinePlan::compile(name, p, source)?;
            pipelines.insert(name.clone(), Arc::new(plan));
        }
        check_table_owners(&pipelines)?;
        let catalog = CatalogPlan::compile(config.catalog.as_ref(), &config.pipelines)?;
        let mut lookups = BTreeMap::new();
        for (name, l) in &config.lookups {
            if sources.contains_key(name) {
                return Err(ConfigError::key(
                    format!("lookups.{name}"),
                    "a source has the same name; SQL could not tell them apart",
                ));
            }
            lookups.insert(name.clone(), LookupPlan::compile(name, l)?);
        }
        let mirror = match &config.mysql {
            Some(m) => Some(MirrorPlan::compile(m, &pipelines, &sources)?),
            None => None,
        };
        let maintenance = MaintenancePlan::compile(
            &config.maintenance,
            storage.target_file_size,
            pipelines.values().map(Arc::as_ref),
        )?;
        Ok(Self {
            registry,
            catalog: catalog.map(Arc::new),
            kafka,
            storage,
            lookups,
            mirror,
            maintenance,
            http: HttpPlan::compile(&config.http),
            sources,
            pipelines,
            memory_limit,
        })
    }

    /// Every table the pipelines write (outputs and dead letters), with the pipeline
    /// that writes it; per-topic tables by their templates (`raw_{topic}`).
    pub fn tables(&self) -> BTreeMap<String, String> {
        self.pipelines
            .values()
            .flat_map(|p| p.tables().map(|t| (t, p.name.clone())))
            .collect()
    }

    /// Whether `name` is a table the pipelines write: a configured one, or one a
    /// per-topic table (`raw_{topic}`) names for some topic.
    pub fn is_table(&self, name: &str) -> bool {
        let tables = self.tables();
        tables.contains_key(name)
            || tables.keys().any(|t| {
                let Some((prefix, suffix)) = t.split_once(TOPIC) else {
                    return false;
                };
                name.len() > prefix.len() + suffix.len()
                    && name.starts_with(prefix)
                    && name.ends_with(suffix)
                    && is_identifier(name)
            })
    }

    /// The pipeline named `name`, or an error naming the ones there are.
    pub fn pipeline(&self, name: &str) -> Result<&Arc<PipelinePlan>, ConfigError> {
        self.pipelines.get(name).ok_or_else(|| {
            let known: Vec<&String> = self.pipelines.keys().collect();
            ConfigError::key(
                format!("pipelines.{name}"),
                format!("no such pipeline (known: {known:?})"),
            )
        })
    }

    /// Topics of `source` whose per-topic tables would be one table (`sf-a` and `sf_a`
    /// both make `raw_sf_a`): for each such table, the topics that name it, sorted.
    pub fn topic_collisions<'t>(
        &self,
        source: &str,
        topics: impl IntoIterator<Item = &'t String>,
    ) -> BTreeMap<String, Vec<String>> {
        let tables = self
            .pipelines
            .values()
            .map(|p| (p.source.as_str(), p.table.as_str()));
        source::collisions(tables, source, topics)
    }
}
