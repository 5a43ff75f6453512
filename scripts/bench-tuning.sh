#!/usr/bin/env bash
# How max_offsets_per_trigger and trigger_interval trade throughput for latency, on the
# real SF dataset, all settings in one run (compare the rows, not absolute numbers).
# For each setting, the `calls` pipeline reads the same topic from the start with a fresh
# group into fresh tables (`run --until-caught-up --progress json`); from the progress
# records: events/s (first record to last commit), batches, median and p95 batch duration
# (first record of a batch to its commit: what a record waits at most once it arrived,
# plus the trigger interval when the stream is live) and peak RSS.
#   scripts/bench-tuning.sh                       # REPEAT=2: 400k events
#   SETTINGS="10000:1s 100000:1s" scripts/bench-tuning.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakestream-target}
DATA=${DATA:-../shared/data/sf-calls/police-department-calls-for-service.json.bz2}
REPEAT=${REPEAT:-2}
SETTINGS=${SETTINGS:-"5000:1s 20000:1s 100000:1s 400000:1s 100000:250ms 100000:5s"}
[ -f "$DATA" ] || { echo "dataset not found: $DATA (set DATA=...)" >&2; exit 1; }

scripts/services.sh
cargo build --release --locked --bin lakestream >&2
bin="$CARGO_TARGET_DIR/release/lakestream"
work=$(mktemp -d)
trap 'rm -rf "$work"; scripts/kafka/delete-topics.sh "bench-tuning-.*" >/dev/null 2>&1 || true' EXIT
topic="bench-tuning-$(date +%s)"
base=(--set "sources.police_calls.topic=$topic" --set mysql.enabled=false
      --set maintenance.enabled=false --set http.enabled=false)
"$bin" "${base[@]}" produce --file "$DATA" --repeat "$REPEAT" --partitions 4 --no-progress >&2

i=0
for setting in $SETTINGS; do
  i=$((i + 1))
  max=${setting%%:*} trigger=${setting#*:}
  echo "== max_offsets_per_trigger=$max trigger_interval=$trigger" >&2
  python3 - "$bin" "$max" "$trigger" "$work/t$i" "$topic-$i" "${base[@]}" <<'PY'
import json, resource, statistics, subprocess, sys
binary, max_offsets, trigger, root, group, *base = sys.argv[1:]
cmd = [binary, *base, "--set", f"storage.root={root}", "--set", f"kafka.group_id={group}",
       "--set", f"pipelines.calls.max_offsets_per_trigger={max_offsets}",
       "--set", f"pipelines.calls.trigger_interval={trigger}", "--log", "warn",
       "run", "--until-caught-up", "--pipeline", "calls", "--summary", "json", "--progress", "json"]
r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=True)
summary = json.loads(r.stdout.decode().strip().splitlines()[-1])
progress = [json.loads(l) for l in r.stderr.decode().splitlines() if l.startswith("{")]
durations = sorted(p["durationMs"]["total"] for p in progress)
p95 = durations[int(0.95 * (len(durations) - 1))]
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
eps = summary["records"] / summary["activeSeconds"]
print(f"RESULT {max_offsets} {trigger} {eps:.0f} {len(progress)} "
      f"{statistics.median(durations):.0f} {p95} {rss:.0f}")
PY
done | tee "$work/results" >&2

python3 - "$work/results" <<'PY'
import sys
rows = [l.split()[1:] for l in open(sys.argv[1]) if l.startswith("RESULT")]
best = max(float(r[2]) for r in rows)
print(f"{'max_offsets':>12}{'trigger':>9}{'events/s':>10}{'vs best':>8}{'batches':>9}"
      f"{'median ms':>11}{'p95 ms':>8}{'peak RSS':>10}")
for m, t, eps, n, med, p95, rss in rows:
    print(f"{int(m):>12,}{t:>9}{float(eps):>10,.0f}{float(eps)/best:>8.2f}{n:>9}{med:>11}{p95:>8}{rss:>8}MB")
PY
