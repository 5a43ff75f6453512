#!/usr/bin/env bash
# What checkpoints do for a table after thousands of micro-batch commits, measured in one
# run: `lakestream query "SELECT count(*) FROM calls"` (open the table, read it) on
#   (base)  a table of 50 commits,
#   (ckpt)  a table of COMMITS commits with a checkpoint every 100 (the default),
#   (none)  the same without checkpoints (maintenance.checkpoint_interval=0).
# Prints the median wall time and peak RSS of 5 queries each, and the ratios to (base).
#   scripts/bench-log.sh               # COMMITS=5000
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakestream-target}
COMMITS=${COMMITS:-5000}
PER_COMMIT=10

scripts/services.sh
cargo build --release --locked --bin lakestream >&2
bin="$CARGO_TARGET_DIR/release/lakestream"
work=$(mktemp -d)
trap 'rm -rf "$work"; scripts/kafka/delete-topics.sh "bench-log-.*" >/dev/null 2>&1 || true' EXIT

# Build one table of `commits` micro-batches of 10 calls under root `name`.
build() {
  local name=$1 commits=$2 interval=$3 topic="bench-log-$1-$(date +%s)"
  local sets=(--set "sources.police_calls.topic=$topic" --set "storage.root=$work/$name"
    --set "kafka.group_id=$topic" --set mysql.enabled=false
    # Compaction on, as in production: without it every commit pays for every small file.
    --set maintenance.compact.schedule=5s --set maintenance.compact.min_small_files=4
    --set maintenance.vacuum.schedule=off --set "maintenance.checkpoint_interval=$interval"
    --set pipelines.calls.max_offsets_per_trigger=$PER_COMMIT
    --set pipelines.calls.partition_by=[])
  # One partition: every batch closes at exactly 10 records, one commit each.
  "$bin" "${sets[@]}" produce --synthetic $((commits * PER_COMMIT)) --partitions 1 --no-progress >&2
  echo "== $name: $commits commits (checkpoint_interval=$interval)" >&2
  "$bin" "${sets[@]}" --log warn run --until-caught-up --pipeline calls >&2
}

build base 50 100
build ckpt "$COMMITS" 100
build none "$COMMITS" 0

measure() {
  local name=$1
  python3 - "$bin" "$work/$name" <<'PY'
import resource, statistics, subprocess, sys, time
binary, root = sys.argv[1:3]
walls, rss = [], []
for _ in range(5):
    t = time.monotonic()
    out = subprocess.run([binary, "--set", f"storage.root={root}", "--set", "mysql.enabled=false",
                          "--log", "warn", "query", "--format", "csv", "SELECT count(*) AS n FROM calls"],
                         check=True, stdout=subprocess.PIPE).stdout.decode().split()
    walls.append(time.monotonic() - t)
    # The peak over this table's queries (ru_maxrss of children is a running maximum).
    rss.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(statistics.median(walls), max(rss), out[-1])
PY
}

python3 - "$(measure base)" "$(measure ckpt)" "$(measure none)" "$COMMITS" <<'PY'
import sys
rows = {}
for name, text in zip(["base", "ckpt", "none"], sys.argv[1:4]):
    wall, rss, n = text.split()
    rows[name] = (float(wall), int(rss) / 1024, int(n))
commits = sys.argv[4]
base = rows["base"][0]
labels = {"base": "50 commits", "ckpt": f"{commits} commits, checkpoints", "none": f"{commits} commits, no checkpoints"}
print(f"{'table':34}{'rows':>9}{'query wall':>12}{'ratio':>8}{'peak RSS':>11}")
for name, (wall, rss, n) in rows.items():
    print(f"{labels[name]:34}{n:>9}{wall*1000:>10.0f}ms{wall/base:>8.2f}{rss:>9.0f}MB")
PY
