//! `/metrics` in the Prometheus text format. Labels are bounded: pipeline and table
//! names come from the config, partitions from the topic, error kinds are modules.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::status::Observed;
use crate::maintenance::COUNTERS;
use crate::metrics::{recent_errors, PipelineState, DURATION_BUCKETS_MS};

struct Out(String);

impl Out {
    fn help(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

pub fn render(observed: &Observed) -> String {
    let mut out = Out(String::new());
    pipelines(&mut out, observed);
    tables(&mut out, observed);
    sync(&mut out, observed);
    maintenance(&mut out);
    errors(&mut out);
    out.0
}

fn pipelines(out: &mut Out, observed: &Observed) {
    type Counter = fn(&crate::metrics::PipelineMetrics) -> &AtomicU64;
    let counters: [(&str, &str, Counter); 8] = [
        ("lakestream_batches_total", "Micro-batches committed", |m| {
            &m.batches
        }),
        (
            "lakestream_input_records_total",
            "Kafka records consumed and committed",
            |m| &m.records,
        ),
        (
            "lakestream_input_bytes_total",
            "Kafka payload bytes consumed and committed",
            |m| &m.bytes,
        ),
        (
            "lakestream_output_rows_total",
            "Rows written to the output table",
            |m| &m.rows,
        ),
        (
            "lakestream_dead_letters_total",
            "Records written to the dead-letter table",
            |m| &m.dead_letters,
        ),
        (
            "lakestream_late_rows_total",
            "Rows dropped behind the watermark",
            |m| &m.late_rows,
        ),
        (
            "lakestream_data_loss_events_total",
            "Times records were found lost before ingestion (retention, recreated topic)",
            |m| m.data_loss_events.as_ref(),
        ),
        (
            "lakestream_commit_conflicts_total",
            "Commit attempts redone because another writer committed first",
            |m| &m.conflicts,
        ),
    ];
    for (name, help, counter) in counters {
        out.help(name, "counter", help);
        for p in &observed.pipelines {
            out.sample(name, &[("pipeline", &p.name)], get(counter(&p.metrics)));
        }
    }
    out.help(
        "lakestream_state_rows",
        "gauge",
        "Open aggregate rows held in state",
    );
    for p in &observed.pipelines {
        let rows = get(&p.metrics.state_rows);
        out.sample("lakestream_state_rows", &[("pipeline", &p.name)], rows);
    }
    out.help(
        "lakestream_pipeline_up",
        "gauge",
        "1 while the pipeline runs",
    );
    for p in &observed.pipelines {
        let up = u8::from(p.metrics.state() == PipelineState::Running);
        out.sample("lakestream_pipeline_up", &[("pipeline", &p.name)], up);
    }
    out.help(
        "lakestream_consumer_lag_records",
        "gauge",
        "Records behind the partition's latest offset",
    );
    for p in &observed.pipelines {
        for (partition, lag) in p.metrics.lag() {
            let partition = partition.to_string();
            let labels = [
                ("pipeline", p.name.as_str()),
                ("partition", partition.as_str()),
            ];
            out.sample("lakestream_consumer_lag_records", &labels, lag);
        }
    }
    let name = "lakestream_batch_duration_seconds";
    out.help(
        name,
        "histogram",
        "First record of a micro-batch to its commit",
    );
    for p in &observed.pipelines {
        let h = p.metrics.histogram();
        for (count, bound) in h.buckets.iter().zip(DURATION_BUCKETS_MS) {
            let le = format!("{}", bound as f64 / 1000.0);
            let labels = [("pipeline", p.name.as_str()), ("le", le.as_str())];
            out.sample(&format!("{name}_bucket"), &labels, count);
        }
        let labels = [("pipeline", p.name.as_str()), ("le", "+Inf")];
        out.sample(&format!("{name}_bucket"), &labels, h.count);
        let labels = [("pipeline", p.name.as_str())];
        out.sample(&format!("{name}_sum"), &labels, h.sum_ms as f64 / 1000.0);
        out.sample(&format!("{name}_count"), &labels, h.count);
    }
}

fn tables(out: &mut Out, observed: &Observed) {
    let tables = observed
        .tables
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    out.help(
        "lakestream_table_version",
        "gauge",
        "Latest Delta version of the table",
    );
    for (name, (version, _)) in &tables {
        out.sample("lakestream_table_version", &[("table", name)], version);
    }
    out.help(
        "lakestream_table_files",
        "gauge",
        "Live data files of the table",
    );
    for (name, (_, stats)) in &tables {
        out.sample("lakestream_table_files", &[("table", name)], stats.files);
    }
}

fn sync(out: &mut Out, observed: &Observed) {
    let Some(sync) = &observed.sync else {
        return;
    };
    out.help(
        "lakestream_mysql_sync_rows_total",
        "counter",
        "Rows written to MySQL",
    );
    out.sample("lakestream_mysql_sync_rows_total", &[], get(&sync.rows));
    out.help(
        "lakestream_mysql_sync_errors_total",
        "counter",
        "Failed sync passes",
    );
    out.sample("lakestream_mysql_sync_errors_total", &[], get(&sync.errors));
    let name = "lakestream_mysql_sync_table_failing";
    out.help(
        name,
        "gauge",
        "1 while the last sync of the table failed (the other tables go on)",
    );
    let failing = sync.failing();
    let mut tables: std::collections::BTreeSet<String> =
        observed.sync_lag().into_iter().map(|(t, _, _)| t).collect();
    tables.extend(failing.keys().cloned());
    for table in tables {
        out.sample(
            name,
            &[("table", &table)],
            u8::from(failing.contains_key(&table)),
        );
    }
    let name = "lakestream_mysql_sync_versions_behind";
    out.help(
        name,
        "gauge",
        "Delta versions the MySQL mirror of the table is behind",
    );
    for (table, _, behind) in observed.sync_lag() {
        out.sample(name, &[("table", &table)], behind);
    }
    if let Some(seconds) = observed.sync_seconds_behind() {
        let name = "lakestream_mysql_sync_seconds_behind";
        out.help(
            name,
            "gauge",
            "Seconds since the mirror last reached every table",
        );
        out.sample(name, &[], format!("{seconds:.3}"));
    }
}

fn maintenance(out: &mut Out) {
    let name = "lakestream_maintenance_runs_total";
    out.help(
        name,
        "counter",
        "Scheduled maintenance runs by task and result",
    );
    let runs = [
        ("compact", "ok", get(&COUNTERS.compactions)),
        ("compact", "skipped", get(&COUNTERS.compactions_skipped)),
        ("vacuum", "ok", get(&COUNTERS.vacuums)),
        ("any", "failed", get(&COUNTERS.failures)),
    ];
    for (task, result, n) in runs {
        out.sample(name, &[("task", task), ("result", result)], n);
    }
    out.help(
        "lakestream_vacuum_files_deleted_total",
        "counter",
        "Files deleted by vacuum",
    );
    out.sample(
        "lakestream_vacuum_files_deleted_total",
        &[],
        get(&COUNTERS.files_deleted),
    );
}

fn errors(out: &mut Out) {
    let (_, counts) = recent_errors();
    out.help(
        "lakestream_log_events_total",
        "counter",
        "Warnings and errors logged, by level and module",
    );
    for ((level, kind), n) in counts {
        out.sample(
            "lakestream_log_events_total",
            &[("level", &level), ("kind", &kind)],
            n,
        );
    }
}
