//! `lakestream check`: the config compiled into a plan, then every external part it
//! names probed without writing anything anyone reads: Kafka (connection, each topic,
//! the group), the storage (a scratch object written and deleted, conditional puts),
//! MySQL (the account and the privileges the mirror needs), the catalog (its databases)
//! and each pipeline's SQL.

use std::sync::Arc;

use serde::Serialize;

use crate::config::{Mode, Plan, Topics};
use crate::pipeline::Pipeline;
use crate::report::Report;
use crate::source::Connection;
use crate::storage::Storage;
use crate::{Error, Result};

/// One probe's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    /// What was probed: `kafka`, `topic`, `storage`, `mysql`, `catalog`, `sql`.
    pub part: &'static str,
    pub ok: bool,
    /// What was found, or why it failed.
    pub detail: String,
}

impl CheckLine {
    fn ok(part: &'static str, detail: impl Into<String>) -> Self {
        Self {
            part,
            ok: true,
            detail: detail.into(),
        }
    }

    /// A failed part, saying the error and its causes (after `context`, if any).
    fn failed(part: &'static str, error: impl std::error::Error + 'static) -> Self {
        Self::failed_in(part, "", &error)
    }

    fn failed_in(
        part: &'static str,
        context: &str,
        error: &(dyn std::error::Error + 'static),
    ) -> Self {
        Self {
            part,
            ok: false,
            detail: format!("{context}{}", Report(error)),
        }
    }
}

/// `lakestream check`: one line per probe as it ends; an error naming the failed ones.
pub async fn check(config: Arc<Plan>, json: bool) -> Result<()> {
    let lines = probe_all(config, |line| match json {
        true => println!("{}", serde_json::to_string(line).unwrap_or_default()),
        false => println!(
            "{:<4} {:<8} {}",
            if line.ok { "ok" } else { "FAIL" },
            line.part,
            line.detail
        ),
    })
    .await;
    let failed: Vec<&str> = lines.iter().filter(|l| !l.ok).map(|l| l.part).collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::Check {
        failed: failed.len(),
        of: lines.len(),
        parts: failed.join(", "),
    })
}

/// Every probe of `plan`, in order; `print` is called as each one ends.
async fn probe_all(plan: Arc<Plan>, mut print: impl FnMut(&CheckLine)) -> Vec<CheckLine> {
    let mut lines = Vec::new();
    let mut add = |line: CheckLine| {
        print(&line);
        lines.push(line);
    };
    add(CheckLine::ok(
        "config",
        format!(
            "{} pipelines on {} sources; the plan compiles",
            plan.pipelines.len(),
            plan.sources.len()
        ),
    ));
    for line in kafka(&plan).await {
        add(line);
    }
    add(storage(&plan.storage.storage.clone()).await);
    if let Some(line) = mysql(&plan).await {
        add(line);
    }
    if let Some(c) = &plan.catalog {
        add(match crate::catalog::check(c).await {
            Ok(found) => CheckLine::ok("catalog", found.join("; ")),
            Err(e) => CheckLine::failed("catalog", e),
        });
    }
    for line in sql(&plan).await {
        add(line);
    }
    lines
}

async fn kafka(plan: &Plan) -> Vec<CheckLine> {
    let connection = match Connection::new(&plan.kafka) {
        Ok(c) => c,
        Err(e) => return vec![CheckLine::failed("kafka", e)],
    };
    let names: Vec<String> = plan.pipelines.keys().cloned().collect();
    let readers = match plan.readers(&names) {
        Ok(r) => r,
        Err(e) => return vec![CheckLine::failed("config", e)],
    };
    let probes: Vec<(String, Topics, String)> = readers
        .iter()
        .map(|r| (r.source.name.clone(), r.source.topics.clone(), r.group_id()))
        .collect();
    let brokers = connection.brokers().to_string();
    let run = move || {
        let mut lines = Vec::new();
        if let Err(e) = connection.check() {
            lines.push(CheckLine::failed("kafka", e));
            return lines;
        }
        lines.push(CheckLine::ok("kafka", format!("connected to {brokers}")));
        for (source, topics, group) in probes {
            let topics = match topics {
                Topics::One(t) => vec![t],
                Topics::List(ts) => ts,
                Topics::Pattern(p) => {
                    match crate::source::matching_topics(&connection, &p) {
                        Ok(ts) if ts.is_empty() => {
                            lines.push(CheckLine::ok(
                            "topic",
                            format!("source '{source}': no topic matches {p} yet (read once created)"),
                        ));
                            continue;
                        }
                        Ok(ts) => ts,
                        Err(e) => {
                            lines.push(CheckLine::failed("topic", e));
                            continue;
                        }
                    }
                }
            };
            for topic in topics {
                lines.push(match crate::source::check_access(&connection, &topic, &group) {
                    Ok(n) => CheckLine::ok(
                        "topic",
                        format!("'{topic}' (source '{source}'): {n} partitions, group '{group}' may read it"),
                    ),
                    Err(e) => CheckLine::failed("topic", e),
                });
            }
        }
        lines
    };
    tokio::task::spawn_blocking(run)
        .await
        .unwrap_or_else(|e| vec![CheckLine::failed("kafka", e)])
}

async fn storage(storage: &Storage) -> CheckLine {
    match crate::sink::check_storage(storage).await {
        Ok(what) => CheckLine::ok("storage", format!("{}: {what}", storage.root)),
        Err(e) => CheckLine::failed_in("storage", &format!("{}: ", storage.root), &e),
    }
}

async fn mysql(plan: &Plan) -> Option<CheckLine> {
    let cfg = plan
        .mirror
        .as_ref()
        .filter(|m| m.enabled && !m.mirror.is_empty())?;
    Some(match crate::sync::check_account(cfg).await {
        Ok(what) => CheckLine::ok("mysql", what),
        Err(e) => CheckLine::failed("mysql", e),
    })
}

/// Each SQL pipeline's query, planned against its source's columns.
async fn sql(plan: &Arc<Plan>) -> Vec<CheckLine> {
    let names: Vec<String> = plan.pipelines.keys().cloned().collect();
    let Ok(readers) = plan.readers(&names) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    for r in &readers {
        for spec in r
            .pipelines
            .iter()
            .filter(|p| matches!(p.mode, Mode::Query(_)))
        {
            let pipeline = Pipeline::new(
                spec.clone(),
                r.source.clone(),
                plan.clone(),
                Default::default(),
            );
            lines.push(match pipeline.check_sql().await {
                Ok(columns) => CheckLine::ok(
                    "sql",
                    format!("pipeline '{}': plans, {columns} output columns", spec.name),
                ),
                Err(e) => CheckLine::failed_in("sql", &format!("pipeline '{}': ", spec.name), &e),
            });
        }
    }
    lines
}
