#!/usr/bin/env bash
# Ingestion benchmark on the real SF dataset, measured against the broker's ceiling in the
# same run (shared machines are noisy: compare ratios, not absolute numbers).
#   scripts/bench.sh                 # 5 replays of the 200k-call file = 1M events
#   REPEAT=10 MAX_OFFSETS=200000 scripts/bench.sh
# (a) count-topic: a consumer with the pipelines' client settings that only counts;
# (b) lakestream run --until-caught-up of the append-only `calls` pipeline, empty tables;
# (c) the four flagship pipelines together (calls + the three SQL pipelines, each with
#     its own consumer), same data, fresh tables and groups.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakestream-target}
DATA=${DATA:-../shared/data/sf-calls/police-department-calls-for-service.json.bz2}
REPEAT=${REPEAT:-5}
MAX_OFFSETS=${MAX_OFFSETS:-100000}
TRIGGER=${TRIGGER:-1s}
[ -f "$DATA" ] || { echo "dataset not found: $DATA (set DATA=...)" >&2; exit 1; }

scripts/services.sh
cargo build --release --locked --bin lakestream >&2
bin="$CARGO_TARGET_DIR/release/lakestream"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
topic="bench-$(date +%s)"
sets=(--set "sources.police_calls.topic=$topic" --set "storage.root=$work/tables"
      --set "kafka.group_id=$topic" --set mysql.enabled=false)
for p in calls crime_type_windows crime_type_hourly disposition_summary; do
  sets+=(--set "pipelines.$p.max_offsets_per_trigger=$MAX_OFFSETS" --set "pipelines.$p.trigger_interval=$TRIGGER")
done

echo "== producing $REPEAT x $(basename "$DATA") to $topic (4 partitions)" >&2
"$bin" "${sets[@]}" produce --file "$DATA" --repeat "$REPEAT" --partitions 4 --no-progress >&2

# Peak RSS of a child, from the kernel's accounting (KiB), and its wall time.
peak_rss() {
  python3 -c 'import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)
sys.stdout.write(r.stdout.decode())
print("WALL_SECONDS", time.monotonic() - t)
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(r.returncode)' "$@"
}

echo "== (a) broker ceiling: count-only consumer" >&2
a=$(peak_rss "$bin" "${sets[@]}" --log "warn,buoyant_kernel=off,deltalake_core=error" count-topic --topic "$topic")
echo "== (b) lakestream run --until-caught-up --pipeline calls" >&2
b=$(peak_rss "$bin" "${sets[@]}" --log "warn,buoyant_kernel=off,deltalake_core=error" run --until-caught-up --summary json --pipeline calls)
echo "== (c) lakestream run --until-caught-up, all four pipelines" >&2
rm -rf "$work/tables"
c=$(peak_rss "$bin" "${sets[@]}" --set "kafka.group_id=$topic-all" --log "warn,buoyant_kernel=off,deltalake_core=error" run --until-caught-up --summary json)

python3 - "$a" "$b" "$MAX_OFFSETS" "$TRIGGER" "$c" <<'PY'
import json, sys
a_out, b_out, max_offsets, trigger, c_out = sys.argv[1:6]
def parse(text):
    rss = next(int(l.split()[1]) for l in text.splitlines() if l.startswith("PEAK_RSS_KB"))
    obj = next(json.loads(l) for l in text.splitlines() if l.startswith("{"))
    return obj, rss
def wall(text):
    return next(float(l.split()[1]) for l in text.splitlines() if l.startswith("WALL_SECONDS"))
a, a_rss = parse(a_out)
b, b_rss = parse(b_out)
_, c_rss = parse(c_out)
c_all = [json.loads(l) for l in c_out.splitlines() if l.startswith("{")]
a_eps, a_mbs = a["messages"] / a["seconds"], a["bytes"] / 1e6 / a["seconds"]
b_eps, b_mbs = b["records"] / b["activeSeconds"], b["bytes"] / 1e6 / b["activeSeconds"]
print(f"max_offsets_per_trigger={max_offsets} trigger_interval={trigger}")
print(f"{'':28}{'events':>10}{'events/s':>12}{'MB/s':>9}{'peak RSS':>11}")
print(f"{'(a) broker ceiling (count)':28}{a['messages']:>10}{a_eps:>12.0f}{a_mbs:>9.1f}{a_rss/1024:>9.0f}MB")
print(f"{'(b) lakestream run':28}{b['records']:>10}{b_eps:>12.0f}{b_mbs:>9.1f}{b_rss/1024:>9.0f}MB")
print(f"ratio (b)/(a): {b_eps / a_eps:.2f}   rows {b['rows']}  dead letters {b['dead_letters']}  batches {b['batches']}  table version {b['table_version']}")
# (c): topic events over the time until the slowest of the four pipelines committed its
# last batch; compared with (b) measured the same way (wall time of the whole process).
c_events = max(p["records"] for p in c_all)
b_wall, c_wall = wall(b_out), wall(c_out)
c_active = max(p["activeSeconds"] for p in c_all)
print(f"{'(c) four pipelines':28}{c_events:>10}{c_events / c_active:>12.0f}{'':>9}{c_rss/1024:>9.0f}MB")
print(f"ratio (c)/(b) events/s, first record to last commit: {(c_events / c_active) / b_eps:.2f}")
print(f"ratio (c)/(b) events/s, process wall time: {(c_events / c_wall) / (b['records'] / b_wall):.2f}")
for p in c_all:
    print(f"   {p['pipeline']:22} records {p['records']:>8}  rows {p['rows']:>8}  batches {p['batches']:>4}  "
          f"late {p.get('late_rows', 0)}  state rows {p.get('state_rows', 0)}  watermark {p.get('watermark')}  {p['active_seconds']:.1f}s")
PY
