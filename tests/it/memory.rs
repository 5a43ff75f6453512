//! `memory_limit` bounds what a backlog costs: the reader's batches and librdkafka's
//! prefetch are sized from it, and the heap stays within it plus the fixed part.

use std::time::Duration;

use crate::common::{summary_of, tail, TestEnv};

/// What the process needs beyond the budget (docs/operations.md, "Memory": ~80 MiB at
/// the default budget), with room for the noise of one run: at this small budget the
/// peak measured 125-143 MiB alone or beside two busy loops, and 152 MiB in CI beside
/// another integration test (jemalloc purges later when the process is starved of CPU).
const FIXED_MIB: u64 = 120;

/// Peak `RssAnon` of `pid` (KiB), sampled until it exits.
fn peak_heap_kib(pid: u32) -> u64 {
    let mut peak = 0;
    while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        if status.contains("State:\tZ") {
            break;
        }
        let anon = status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        peak = peak.max(anon.unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    peak
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_stays_within_the_memory_limit() {
    let mut env = TestEnv::new("memory");
    env.pipelines.clear(); // all four shipped pipelines on one reader
    let records: u64 = 300_000;
    env.produce_synthetic(records, 240);
    let limit_mib: u64 = 48;
    env.overrides.push(format!("memory_limit={limit_mib}MiB"));
    // The suite's quick triggers (300 ms, 5,000 records) would cut the batches first; a
    // backlog run as users configure it leaves the budget to do that.
    for p in [
        "calls",
        "crime_type_windows",
        "crime_type_hourly",
        "disposition_summary",
    ] {
        env.overrides
            .push(format!("pipelines.{p}.max_offsets_per_trigger=100000"));
        env.overrides
            .push(format!("pipelines.{p}.trigger_interval=10s"));
    }
    let child = env.spawn(
        &["run", "--until-caught-up", "--summary", "json"],
        "run.log",
    );
    let peak_mib = peak_heap_kib(child.id()) / 1024;
    eprintln!("peak heap {peak_mib} MiB with memory_limit {limit_mib} MiB");
    let out = child.wait_with_output().expect("run");
    let log = std::fs::read(env.dir.path().join("run.log")).unwrap_or_default();
    assert!(out.status.success(), "run failed: {}", tail(&log));
    let summary = summary_of(&out.stdout, "calls");
    assert_eq!(summary["records"], records);
    env.assert_each_offset_once(records as i64).await;

    // The batches were cut to the share (48 MiB / 7 with one appending pipeline), not
    // at max_offsets_per_trigger: the budget did the bounding.
    let bytes = summary["bytes"].as_u64().expect("bytes");
    let batches = summary["batches"].as_u64().expect("batches");
    let largest = (limit_mib << 20) / 7 + (1 << 20);
    assert!(
        batches >= bytes / largest,
        "{batches} batches for {bytes} bytes: larger than the budget's {largest}"
    );
    assert!(
        peak_mib <= limit_mib + FIXED_MIB,
        "peak heap {peak_mib} MiB over memory_limit {limit_mib} MiB + {FIXED_MIB} MiB"
    );
}
