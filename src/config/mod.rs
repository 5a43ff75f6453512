//! Configuration: plain serde structs (`file.rs` and the section files), loaded from
//! TOML, overridden from the command line (`--set section.key=value`) and the
//! environment (`LAKESTREAM__SECTION__KEY`), then checked and compiled once into the
//! typed `Plan` (`plan/`). Every error names the key at fault.

mod catalog;
mod error;
mod fields;
mod file;
pub mod kafka_columns;
mod load;
mod pipeline;
mod plan;
mod registry;
mod schedule;
mod security;
mod service;
mod source;

pub use catalog::CatalogKind;
pub use error::{ConfigError, ParseError};
pub use fields::{arrow_schema as fields_schema, is_identifier, json_schema, FieldSpec, FieldType};
pub use file::{Config, MIN_MEMORY_LIMIT};
pub use load::{load, load_str};
pub use pipeline::{render_table, Derived, LookupFormat, OutputMode, TOPIC};
pub use plan::{
    CatalogName, CatalogPlan, CommitPolicy, CompactPlan, DecoderSpec, GrainPlan, HttpPlan,
    KafkaPlan, LookupPlan, MaintenancePlan, MirrorPlan, Mode, OidcPlan, PipelinePlan, Plan,
    QuerySpec, ReaderPlan, RegistryAuth, RegistryPlan, RegistrySource, Sasl, Secret, SecurityPlan,
    SourcePlan, StoragePlan, TablePlan, TlsPlan, Topics, Trigger, VacuumPlan,
};
pub use registry::SubjectStrategy;
pub use schedule::{Cron, Schedule};
pub use security::{expand_home, read_secret, Mechanism, Protocol};
pub use service::{parse_time, IsolationLevel, MysqlTls, Start, StartingOffsets};
pub use source::{SchemaEvolution, SourceFormat};

use file::check_memory_limit;
