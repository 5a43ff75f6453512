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
#  (h) the same calls produced as Avro (`produce --format avro`, the schema in the Schema
#      Registry) read by an `avro` source, `calls` alone: Avro's decode against JSON's (b2);
#  (i) `calls` alone into Azurite (an abfss:// root) and into fake-gcs-server (gs://), the
#      object stores scripts/services.sh starts, against (b): what a remote store costs;
#  (c) `run --until-caught-up` with all four shipped pipelines (one shared reader), at the
#      default memory_limit: peak heap against the budget;
#  (f) the same on a 64-partition topic (the file once), batches spanning ~50 days of
#      call_date partitions;
#  (d) live: all four pipelines while a producer sends LIVE_RATE calls/s for LIVE_SECONDS;
#      latency = a record's Kafka timestamp to its batch's commit (progress records);
#      files per table partition of `calls` after the backfill (c) and the live run, before
#      and after `lakestream compact`;
#  (g) WRITERS members (default 8) of one group on a 16-partition topic at LIVE_RATE:
#      commit conflicts per commit and p99 latency;
#  (e) kafka-delta-ingest on the topic of (a)-(c), when KDI points at its binary.
# Peak heap is RssAnon sampled every 50 ms; peak RSS (the kernel's) also counts the
# binary's code pages. The shipped binary's size is printed when scripts/dist.sh built it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakestream-target}
DATA=${DATA:-../shared/data/sf-calls/police-department-calls-for-service.json.bz2}
REPEAT=${REPEAT:-5}
LIVE_RATE=${LIVE_RATE:-20000}
LIVE_SECONDS=${LIVE_SECONDS:-30}
WRITERS=${WRITERS:-8}
[ -f "$DATA" ] || { echo "dataset not found: $DATA (set DATA=...)" >&2; exit 1; }

scripts/services.sh >&2
cargo build --release --locked --bin lakestream >&2
bin="$CARGO_TARGET_DIR/release/lakestream"
work=$(mktemp -d)
topic="bench-$(date +%s)"
# The topics hold GBs (retention is off on the local broker): drop them when done.
trap 'rm -rf "$work"; scripts/kafka/delete-topics.sh "$topic.*" >/dev/null 2>&1 || true' EXIT
quiet=(--log "warn,buoyant_kernel=off,deltalake_core=error")
sets=(--set "sources.police_calls.topic=$topic" --set "storage.root=$work/tables"
      --set "kafka.group_id=$topic" --set mysql.enabled=false --set http.enabled=false)

echo "== producing $REPEAT x $(basename "$DATA") to $topic (4 partitions)" >&2
"$bin" "${sets[@]}" produce --file "$DATA" --repeat "$REPEAT" --partitions 4 --no-progress >&2

# Run a command; print its stdout, then its wall time, peak RSS (KiB, the kernel's),
# peak heap (RssAnon, KiB, sampled) and CPU seconds from the kernel's accounting.
measure() {
  python3 -c 'import resource, subprocess, sys, time
t = time.monotonic()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
heap = 0
import threading
out = []
reader = threading.Thread(target=lambda: out.append(p.stdout.read()))
reader.start()
while p.poll() is None:
    try:
        for line in open(f"/proc/{p.pid}/status"):
            if line.startswith("RssAnon:"):
                heap = max(heap, int(line.split()[1]))
    except OSError:
        pass
    time.sleep(0.05)
reader.join()
sys.stdout.write(out[0].decode())
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print("WALL_SECONDS", time.monotonic() - t)
print("PEAK_RSS_KB", u.ru_maxrss)
print("PEAK_HEAP_KB", heap)
print("CPU_SECONDS", u.ru_utime + u.ru_stime)
sys.exit(p.returncode)' "$@"
}

# Files of a table's partitions: count per partition and median size, as JSON.
files() {
  python3 - "$1" <<'PY'
import json, statistics, sys, pyarrow
from deltalake import DeltaTable
adds = pyarrow.table(DeltaTable(sys.argv[1]).get_add_actions(flatten=True)).to_pylist()
per = {}
for a in adds:
    key = tuple(sorted((k, v) for k, v in a.items() if k.startswith("partition.")))
    per.setdefault(key, []).append(a["size_bytes"])
counts = [len(v) for v in per.values()]
print(json.dumps({"files": len(adds), "partitions": len(per),
                  "per_partition_max": max(counts, default=0),
                  "per_partition_median": statistics.median(counts) if counts else 0,
                  "median_bytes": statistics.median(a["size_bytes"] for a in adds) if adds else 0}))
PY
}

# The files of `calls`, then the same after `compact` (from 2 small files per partition, so
# the figures show what it does); arguments: the run's --set options.
files_and_compacted() {
  files "$work/tables/calls"
  "$bin" "$@" "${quiet[@]}" --set maintenance.compact.min_small_files=2 compact calls >&2
  files "$work/tables/calls"
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
echo "== (h) the same calls as Avro through the Schema Registry, \`calls\` alone" >&2
rm -rf "$work/tables"
avro="$topic-avro"
registry=${REGISTRY_URL:-http://127.0.0.1:8081/apis/ccompat/v7}
# The shipped config with the source's declared fields given way to the registry's schema.
python3 - config/lakestream.toml "$registry" > "$work/avro.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r'(\[sources\.police_calls\][^\[]*?)fields = \[[^\]]*\]\n', r'\1format = "avro"\n',
              text, count=1, flags=re.S)
print(text + f'\n[schema_registry]\nurl = "{sys.argv[2]}"')
PY
"$bin" "${sets[@]}" --set "schema_registry.url=$registry" produce --file "$DATA" --repeat "$REPEAT" \
  --partitions 4 --format avro --topic "$avro" --source police_calls --no-progress >&2
h=$(measure "$bin" --config "$work/avro.toml" "${sets[@]}" --set "sources.police_calls.topic=$avro" \
    --set "kafka.group_id=$avro" "${quiet[@]}" run --until-caught-up --summary json --pipeline calls)
echo "== (i) \`calls\` alone into Azurite (abfss://) and fake-gcs-server (gs://)" >&2
# Azurite's published development key; fake-gcs-server takes a key file without OAuth.
azurite_key=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==
printf '{"type":"service_account","client_email":"bench@example.com","private_key_id":"b","private_key":"","disable_oauth":true,"gcs_base_url":"http://127.0.0.1:4443"}' > "$work/gcs.json"
i_az=$(measure env AZURITE_KEY="$azurite_key" "$bin" "${sets[@]}" --set "kafka.group_id=$topic-az" \
       --set "storage.root=abfss://lake@devstoreaccount1.dfs.core.windows.net/$topic" \
       --set storage.options.azure_storage_account_name=devstoreaccount1 \
       --set storage.options.azure_storage_use_emulator=true \
       --set storage.options_env.azure_storage_account_key=AZURITE_KEY \
       "${quiet[@]}" run --until-caught-up --summary json --pipeline calls)
i_gs=$(measure "$bin" "${sets[@]}" --set "kafka.group_id=$topic-gs" --set "storage.root=gs://lake/$topic" \
       --set "storage.options.google_service_account=$work/gcs.json" \
       "${quiet[@]}" run --until-caught-up --summary json --pipeline calls)
echo "== (c) run --until-caught-up, all four pipelines" >&2
rm -rf "$work/tables"
c=$(measure "$bin" "${sets[@]}" --set "kafka.group_id=$topic-all" "${quiet[@]}" run --until-caught-up --summary json)
mapfile -t backfill < <(files_and_compacted "${sets[@]}")

echo "== (f) all four pipelines, 64 partitions" >&2
rm -rf "$work/tables"
wide="$topic-64"
wsets=("${sets[@]}" --set "sources.police_calls.topic=$wide" --set "kafka.group_id=$wide")
"$bin" "${wsets[@]}" produce --file "$DATA" --partitions 64 --no-progress >&2
f=$(measure "$bin" "${wsets[@]}" "${quiet[@]}" run --until-caught-up --summary json)

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
mapfile -t live_files < <(files_and_compacted "${lsets[@]}")

echo "== (g) $WRITERS members on a 16-partition topic, $LIVE_RATE calls/s for ${LIVE_SECONDS}s" >&2
rm -rf "$work/tables"
many="$topic-many"
msets=("${sets[@]}" --set "sources.police_calls.topic=$many" --set "kafka.group_id=$many"
       --set kafka.starting_offsets=latest)
"$bin" "${msets[@]}" produce --synthetic 1 --partitions 16 --no-progress >/dev/null 2>&1
members=()
for i in $(seq 1 "$WRITERS"); do
  "$bin" "${msets[@]}" "${quiet[@]}" run --progress json --summary json \
    2>"$work/member$i.progress" >"$work/member$i.summary" &
  members+=($!)
done
sleep 15 # every member joined and was assigned its partitions
"$bin" "${msets[@]}" produce --synthetic $((LIVE_RATE * LIVE_SECONDS)) --rate "$LIVE_RATE" \
  --partitions 16 --no-progress >&2
sleep 6
kill -INT "${members[@]}"; wait "${members[@]}" || true

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

dist_size=$( [ -f dist/lakestream ] && stat -c %s dist/lakestream || echo 0)
limit=$(grep -m1 "^memory_limit" config/lakestream.toml | cut -d\" -f2)
python3 - "$a" "$b" "$c" "$work/live.progress" "$(stat -c %s "$bin")" "$LIVE_RATE" "$e" "$b2" \
  "$f" "${backfill[0]}" "${backfill[1]}" "${live_files[0]}" "${live_files[1]}" "$work" "$WRITERS" \
  "$dist_size" "$limit" "$h" "$i_az" "$i_gs" <<'PY'
import glob, json, sys
a_out, b_out, c_out, live_path, size, rate, e_out, b2_out = sys.argv[1:9]
f_out, bf, bfc, lf, lfc, work, writers, dist_size, limit, h_out = sys.argv[9:19]
i_az_out, i_gs_out = sys.argv[19:21]
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
def row(name, rate, out, ratio, calls=None):
    cpu = field(out, "CPU_SECONDS") / ((calls or events) / 1e6)
    rows.append((name, f"{rate/1e3:.0f}k", ratio, f"{field(out, 'PEAK_HEAP_KB')/1024:.0f} MiB",
                 f"{field(out, 'PEAK_RSS_KB')/1024:.0f} MiB", f"{cpu:.1f}",
                 f"{field(out, 'WALL_SECONDS'):.1f} s"))
row("(a) broker ceiling (count only)", ceiling, a_out, "1.00 x ceiling")
row("(b) `calls` alone", b_rate, b_out, f"{b_rate/ceiling:.2f} x ceiling")
b2 = objects(b2_out)[0]
b2_rate = b2["records"] / b2["activeSeconds"]
row("(b2) `calls`, timezone unset (UTC)", b2_rate, b2_out, f"(b) is {b_rate/b2_rate:.2f} x (b2)")
h = objects(h_out)[0]
h_rate = h["records"] / h["activeSeconds"]
h_cpu = field(h_out, "CPU_SECONDS") / field(b2_out, "CPU_SECONDS")
row("(h) `calls` from Avro (Schema Registry)", h_rate, h_out,
    f"{h_rate/b2_rate:.2f} x (b2), CPU {h_cpu:.2f} x (b2)")
for name, out in (("(i) `calls` into Azurite (abfss://)", i_az_out),
                  ("(i) `calls` into fake-gcs-server (gs://)", i_gs_out)):
    i = objects(out)[0]
    i_rate = i["records"] / i["activeSeconds"]
    row(name, i_rate, out, f"{i_rate/b_rate:.2f} x (b), CPU "
        f"{field(out, 'CPU_SECONDS') / field(b_out, 'CPU_SECONDS'):.2f} x (b)")
row("(c) all four pipelines", c_rate, c_out, f"{c_rate/b_rate:.2f} x (b)")
fs = objects(f_out)
f_rate = max(p["records"] for p in fs) / max(p["activeSeconds"] for p in fs)
row("(f) all four, 64 partitions (200k calls)", f_rate, f_out, f"{f_rate/c_rate:.2f} x (c)",
    max(p["records"] for p in fs))
if e_out.strip():
    e_rate = events / field(e_out, "WALL_SECONDS")
    b_wall_rate = events / field(b_out, "WALL_SECONDS")
    row("(e) kafka-delta-ingest", e_rate, e_out, f"(b) is {b_wall_rate/e_rate:.1f} x faster by wall")
print(f"{events} calls, 4 partitions, 2 cores; rates from first record to last commit")
print()
print(f"| run | calls/s | ratio | peak heap (memory_limit {limit} + ~80 MiB) | peak RSS | CPU-s per 1M calls | process wall |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
tail = field(b_out, "WALL_SECONDS") - b["activeSeconds"]
print()
print(f"start-up + caught-up tail of (b): {tail:.2f} s (process wall minus first-record-to-last-commit)")
print(f"release binary: {int(size)/1e6:.0f} MB" + (f"; shipped (scripts/dist.sh): {int(dist_size)/1e6:.0f} MB"
      if int(dist_size) else "; shipped: run scripts/dist.sh first"))
def files_line(name, before, after):
    b, a = json.loads(before), json.loads(after)
    print(f"{name}: {b['files']} files in {b['partitions']} partitions, per partition median "
          f"{b['per_partition_median']} / max {b['per_partition_max']}, median file {b['median_bytes']/1e3:.0f} kB; "
          f"after `compact`: {a['files']} files, per partition max {a['per_partition_max']}, "
          f"median file {a['median_bytes']/1e3:.0f} kB")
files_line("files of `calls` after the backfill (c)", bf, bfc)
files_line("files of `calls` after the live run (d)", lf, lfc)
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
mlat, commits, conflicts = {}, {}, {}
for path in glob.glob(f"{work}/member*.progress"):
    for line in open(path):
        if line.startswith("{"):
            p = json.loads(line)
            if p.get("latencyMs") and p["numInputRows"]:
                mlat.setdefault(p["name"], []).append((p["latencyMs"]["p99"], p["numInputRows"]))
for path in glob.glob(f"{work}/member*.summary"):
    for p in objects(open(path).read()):
        commits[p["pipeline"]] = commits.get(p["pipeline"], 0) + p["batches"]
        conflicts[p["pipeline"]] = conflicts.get(p["pipeline"], 0) + p["commitConflicts"]
if mlat:
    every = [x for v in mlat.values() for x in v]
    total, lost = sum(commits.values()), sum(conflicts.values())
    print(f"{writers} members, 16 partitions, {rate} calls/s: {lost} commit conflicts in {total} "
          f"commits ({lost/max(total,1):.2f} per commit), p99 {weighted(every, 0.99)} ms")
    for name in sorted(mlat):
        print(f"  {name}: {conflicts.get(name, 0)/max(commits.get(name, 0), 1):.2f} conflicts per commit, "
              f"p99 {weighted(mlat[name], 0.99)} ms")
else:
    print(f"{writers} members: no progress records (see {work})")
PY
