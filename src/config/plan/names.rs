//! Names the plan holds to: identifiers that become folders and SQL names, and one
//! writer per table.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::pipeline::PipelinePlan;
use crate::config::{is_identifier, ConfigError};

/// Each table has one writer: two pipelines committing to one table would each skip
/// what the other's offsets say nothing about, or fight over its state.
pub(super) fn check_table_owners(
    pipelines: &BTreeMap<String, Arc<PipelinePlan>>,
) -> Result<(), ConfigError> {
    let mut owners: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for (name, p) in pipelines {
        for (table, key) in [
            (&p.table, "table"),
            (&p.dead_letter_table, "dead_letter_table"),
        ] {
            if let Some((other, other_key)) = owners.get(table) {
                return Err(ConfigError::key(
                    format!("pipelines.{name}.{key}"),
                    format!(
                        "table '{table}' is already written by pipelines.{other}.{other_key}; \
                         each table must have exactly one pipeline"
                    ),
                ));
            }
            owners.insert(table.clone(), (name, key));
        }
    }
    Ok(())
}

/// Table, pipeline and source names become folder names and SQL identifiers later, so
/// they are held to a strict pattern. Group ids may also hold dots and dashes.
pub(crate) fn check_name(key: &str, value: &str, identifier: bool) -> Result<(), ConfigError> {
    let ok = if identifier {
        is_identifier(value)
    } else {
        !value.is_empty()
            && value.len() <= 200
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    if ok {
        Ok(())
    } else if identifier {
        Err(ConfigError::key(
            key,
            format!("'{value}' must match [A-Za-z_][A-Za-z0-9_]{{0,63}}"),
        ))
    } else {
        Err(ConfigError::key(
            key,
            format!("'{value}' may hold only letters, digits, '.', '_' and '-'"),
        ))
    }
}
