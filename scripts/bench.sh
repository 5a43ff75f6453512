#!/usr/bin/env bash
# Ingestion benchmark on the real SF dataset, every figure measured in the same run and
# reported as a ratio to a baseline from that run (shared machines are noisy).
#   scripts/bench.sh                       # 5 replays of the 200k-call file = 1M events
#   REPEAT=2 LIVE_SECONDS=20 scripts/bench.sh
#   KDI=/path/to/kafka-delta-ingest scripts/bench.sh   # adds kafka-delta-ingest, same topic
# Runs:
#  (a) broker ceiling: `count-topic`, a plain rdkafka BaseConsumer that only counts (the
#      faster of two reads);
#  (b) `run --until-caught-up --pipeline calls` into empty tables;
#  (b2) the same with the source's timezone unset (zone-less times read as UTC by
#      arrow's parser instead of as San Francisco local time): the cost of the zone;
#  (c) `run --until-caught-up` with all four shipped pipelines (one shared reader);
#  (d) live: all four pipelines while a producer sends LIVE_RATE calls/s for LIVE_SECONDS;
#      latency = a record's Kafka timestamp to its batch's commit (progress records);
#  (e) kafka-delta-ingest on the topic of (a)-(c), when KDI points at its binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakestream-target}
DATA=${DATA:-../shared/data/sf-calls/police-department-calls-for-service.json.bz2}
REPEAT=${REPEAT:-5}
LIVE_RATE=${LIVE_RATE:-20000}
LIVE_SECONDS=${LIVE_SECONDS:-30}
[ -f "$DATA" ] || { echo "dataset not found: $DATA (set DATA=...)" >&2; exit 1; }

scripts/services.sh >&2
cargo build --release --locked --bin lakestream >&2
bin="$CARGO_TARGET_DIR/release/lakestream"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
topic="bench-$(date +%s)"
quiet=(--log "warn,buoyant_kernel=off,deltalake_core=error")
sets=(--set "sources.police_calls.topic=$topic" --set "storage.root=$work/tables"
      --set "kafka.group_id=$topic" --set mysql.enabled=false --set http.enabled=false)

echo "== producing $REPEAT x $(basename "$DATA") to $topic (4 partitions)" >&2
"$bin" "${sets[@]}" produce --file "$DATA" --repeat "$REPEAT" --partitions 4 --no-progress >&2

# Run a command; print its stdout, then its wall time, peak RSS (KiB) and CPU seconds
# from the kernel's accounting of the child.
measure() {
  python3 -c 'import resource, subprocess, sys, time
t = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE)
sys.stdout.write(r.stdout.decode())
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print("WALL_SECONDS", time.monotonic() - t)
print("PEAK_RSS_KB", u.ru_maxrss)
print("CPU_SECONDS", u.ru_utime + u.ru_stime)
sys.exit(r.returncode)' "$@"
}

echo "== (a) broker ceiling: count-only consumer (best of two: the first read may be cold)" >&2
a1=$(measure "$bin" "${sets[@]}" "${quiet[@]}" count-topic --topic "$topic")
a2=$(measure "$bin" "${sets[@]}" "${quiet[@]}" count-topic --topic "$topic")
a=$(python3 - "$a1" "$a2" <<'PY'
import json, sys
runs = [(json.loads(next(l for l in t.splitlines() if l.startswith("{"))), t) for t in sys.argv[1:]]
print(max(runs, key=lambda r: r[0]["messages"] / r[0]["seconds"])[1])
PY
)
echo "== (b) run --until-caught-up --pipeline calls" >&2
b=$(measure "$bin" "${sets[@]}" "${quiet[@]}" run --until-caught-up --summary json --pipeline calls)
echo "== (b2) the same, timezone unset" >&2
rm -rf "$work/tables"
grep -v '^timezone = ' config/lakestream.toml > "$work/utc.toml"
b2=$(measure "$bin" --config "$work/utc.toml" "${sets[@]}" --set "kafka.group_id=$topic-utc" "${quiet[@]}" \
     run --until-caught-up --summary json --pipeline calls)
echo "== (c) run --until-caught-up, all four pipelines" >&2
rm -rf "$work/tables"
c=$(measure "$bin" "${sets[@]}" --set "kafka.group_id=$topic-all" "${quiet[@]}" run --until-caught-up --summary json)

echo "== (d) live: all four pipelines, $LIVE_RATE calls/s for ${LIVE_SECONDS}s" >&2
rm -rf "$work/tables"
live="$topic-live"
lsets=("${sets[@]}" --set "sources.police_calls.topic=$live" --set "kafka.group_id=$live"
       --set kafka.starting_offsets=latest)
"$bin" "${lsets[@]}" produce --synthetic 1 --partitions 4 --no-progress >/dev/null 2>&1
"$bin" "${lsets[@]}" "${quiet[@]}" run --progress json 2>"$work/live.progress" >/dev/null &
runner=$!
sleep 5 # joined and positioned before the feed starts
"$bin" "${lsets[@]}" produce --synthetic $((LIVE_RATE * LIVE_SECONDS)) --rate "$LIVE_RATE" \
  --partitions 4 --no-progress >&2
sleep 4 # the last batches close and commit
kill -INT "$runner"; wait "$runner" || true

e=""
if [ -n "${KDI:-}" ]; then
  echo "== (e) kafka-delta-ingest on the same topic" >&2
  mkdir -p "$work/kdi"
  python3 - "$work/kdi/calls" <<'PY'
import sys, pyarrow as pa, deltalake
deltalake.write_deltalake(sys.argv[1], pa.table({"crime_id": pa.array([], pa.string())}), mode="overwrite")
PY
  e=$(measure timeout 600 "$KDI" ingest "$topic" "$work/kdi/calls" -l 1 -m 100000 -e \
      --kafka "${BROKERS:-127.0.0.1:9092}" -g "$topic-kdi" -a "$topic-kdi" 2>/dev/null || true)
fi

python3 - "$a" "$b" "$c" "$work/live.progress" "$(stat -c %s "$bin")" "$LIVE_RATE" "$e" "$b2" <<'PY'
import json, sys
a_out, b_out, c_out, live_path, size, rate, e_out, b2_out = sys.argv[1:9]
def field(text, name):
    return next(float(l.split()[1]) for l in text.splitlines() if l.startswith(name))
def objects(text):
    return [json.loads(l) for l in text.splitlines() if l.startswith("{")]
a = objects(a_out)[0]
b = objects(b_out)[0]
cs = objects(c_out)
ceiling = a["messages"] / a["seconds"]
events = b["records"]
b_rate = events / b["activeSeconds"]
c_rate = max(p["records"] for p in cs) / max(p["activeSeconds"] for p in cs)
rows = []
def row(name, rate, out, ratio):
    cpu = field(out, "CPU_SECONDS") / (events / 1e6)
    rows.append((name, f"{rate/1e3:.0f}k", ratio, f"{field(out, 'PEAK_RSS_KB')/1024:.0f} MiB",
                 f"{cpu:.1f}", f"{field(out, 'WALL_SECONDS'):.1f} s"))
row("(a) broker ceiling (count only)", ceiling, a_out, "1.00 x ceiling")
row("(b) `calls` alone", b_rate, b_out, f"{b_rate/ceiling:.2f} x ceiling")
b2 = objects(b2_out)[0]
b2_rate = b2["records"] / b2["activeSeconds"]
row("(b2) `calls`, timezone unset (UTC)", b2_rate, b2_out, f"(b) is {b_rate/b2_rate:.2f} x (b2)")
row("(c) all four pipelines", c_rate, c_out, f"{c_rate/b_rate:.2f} x (b)")
if e_out.strip():
    e_rate = events / field(e_out, "WALL_SECONDS")
    b_wall_rate = events / field(b_out, "WALL_SECONDS")
    row("(e) kafka-delta-ingest", e_rate, e_out, f"(b) is {b_wall_rate/e_rate:.1f} x faster by wall")
print(f"{events} calls, 4 partitions, 2 cores; rates from first record to last commit")
print()
print("| run | calls/s | ratio | peak RSS | CPU-s per 1M calls | process wall |")
print("|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
tail = field(b_out, "WALL_SECONDS") - b["activeSeconds"]
print()
print(f"start-up + caught-up tail of (b): {tail:.2f} s (process wall minus first-record-to-last-commit)")
print(f"release binary: {int(size)/1e6:.0f} MB")
lat = []
for line in open(live_path):
    if line.startswith("{"):
        p = json.loads(line)
        if p.get("latencyMs") and p["numInputRows"]:
            lat.append((p["latencyMs"]["p50"], p["latencyMs"]["p99"], p["numInputRows"]))
def weighted(values, q):
    values = sorted(values)
    total = sum(w for _, w in values)
    acc = 0
    for v, w in values:
        acc += w
        if acc >= q * total:
            return v
    return float("nan")
if lat:
    p50 = weighted([(x[0], x[2]) for x in lat], 0.5)
    p99 = weighted([(x[1], x[2]) for x in lat], 0.99)
    print(f"live, all four pipelines at {rate} calls/s, trigger 1 s: produced-to-committed "
          f"p50 {p50} ms, p99 {p99} ms over {sum(x[2] for x in lat)} pipeline-rows in {len(lat)} batches")
else:
    print("live: no progress records (see the run's stderr)")
PY
