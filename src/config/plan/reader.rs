//! The pipelines that read together: one consumer and one decode for those of one
//! source, unless a pipeline asks for a consumer group of its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::pipeline::{PipelinePlan, Trigger};
use super::source::SourcePlan;
use crate::config::ConfigError;

/// The pipelines that share one reader: one consumer, one decode.
#[derive(Debug, Clone)]
pub struct ReaderPlan {
    pub source: Arc<SourcePlan>,
    pub pipelines: Vec<Arc<PipelinePlan>>,
}

impl ReaderPlan {
    /// This read on one topic of its multi-topic source: the source reading only it,
    /// each pipeline's tables and group named for it (see `PipelinePlan::for_topic`).
    pub fn for_topic(&self, topic: &str) -> Self {
        Self {
            source: Arc::new(self.source.for_topic(topic)),
            pipelines: self
                .pipelines
                .iter()
                .map(|p| Arc::new(p.for_topic(topic)))
                .collect(),
        }
    }

    /// The names of its pipelines.
    pub fn names(&self) -> Vec<String> {
        self.pipelines.iter().map(|p| p.name.clone()).collect()
    }

    /// The consumer group of the reader. One pipeline keeps its own group; several get
    /// one named after the source and all of them, so a process running a different set
    /// of pipelines never splits partitions with this one (each set must read every
    /// partition).
    pub fn group_id(&self) -> String {
        match self.pipelines.as_slice() {
            [one] => one.group_id(&self.source),
            _ => {
                let mut sorted = self.names();
                sorted.sort_unstable();
                format!(
                    "{}.{}.{}",
                    self.source.group_prefix,
                    self.source.name,
                    sorted.join("+")
                )
            }
        }
    }

    /// A batch closes at the smallest trigger and size any of its pipelines asks for,
    /// so none waits longer or holds more than it configured.
    pub fn trigger(&self) -> Trigger {
        let each = || self.pipelines.iter().map(|p| p.trigger);
        Trigger {
            interval: each().map(|t| t.interval).min().unwrap_or_default(),
            max_records: each().map(|t| t.max_records).min().unwrap_or(1),
            max_bytes: each().map(|t| t.max_bytes).min().unwrap_or(1),
        }
    }
}

impl super::Plan {
    /// Which of `names` share a reader: those of one source, unless a pipeline names
    /// its own consumer group (then it reads alone in that group, as it asked).
    pub fn readers(&self, names: &[String]) -> Result<Vec<ReaderPlan>, ConfigError> {
        let mut readers: BTreeMap<(String, Option<String>), ReaderPlan> = BTreeMap::new();
        for name in names {
            let p = self.pipeline(name)?;
            let key = (p.source.clone(), p.own_group.as_ref().map(|_| name.clone()));
            readers
                .entry(key)
                .or_insert_with(|| ReaderPlan {
                    source: self.sources[&p.source].clone(),
                    pipelines: Vec::new(),
                })
                .pipelines
                .push(p.clone());
        }
        Ok(readers.into_values().collect())
    }
}
