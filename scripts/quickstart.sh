#!/usr/bin/env bash
# One command from a fresh machine to a populated lake: install what is missing, start
# the broker and MariaDB, build, produce a burst of realistic synthetic calls, ingest them
# with the default config into tables/, and print a summary. Safe to re-run.
#   CALLS=200000 scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakestream-target}
CALLS=${CALLS:-100000}
# The demo manages the read-only BI account (mysql.bi_user) with this password; export
# your own before running to choose it.
export LAKESTREAM_BI_PASSWORD=${LAKESTREAM_BI_PASSWORD:-lakestream-demo}

scripts/install-deps.sh
scripts/services.sh
echo "[quickstart] building lakestream (release; the first build takes a while)" >&2
cargo build --release --locked --bin lakestream
bin="$CARGO_TARGET_DIR/release/lakestream"

# A new seed each run: re-running adds a fresh burst instead of repeating crime_ids.
seed=$(date +%s)
"$bin" produce --synthetic "$CALLS" --seed "$seed"
"$bin" run --until-caught-up --log "warn,buoyant_kernel=off,deltalake_core=error"
echo
python3 - <<'PY' || echo "(python deltalake not importable: skipped the independent read)"
from deltalake import DeltaTable
for name in ("calls", "calls_dead_letters"):
    t = DeltaTable(f"tables/{name}")
    print(f"tables/{name}: version {t.version()}, {t.to_pyarrow_dataset().count_rows()} rows, {len(t.file_uris())} files (read by Python deltalake)", flush=True)
import os; os._exit(0)  # deltalake can abort in interpreter teardown
PY

cat <<EOF

What to look at next:
  status page   $bin run
                then open http://127.0.0.1:8321/ (also /metrics, /status, /health); in another
                terminal: $bin produce --synthetic 50000 --rate 2000
  query         $bin query "SELECT original_crime_type_name, sum(calls) AS calls FROM crime_type_hourly GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
  time travel   $bin history calls --limit 5
                $bin query "SELECT count(*) FROM calls" --version 1
  MySQL views   mariadb -h 127.0.0.1 -u lakestream_bi -p'$LAKESTREAM_BI_PASSWORD' lakestream -e 'SELECT * FROM v_calls_per_disposition'
                (the read-only BI account: SELECT on the v_ views, nothing else)
  Grafana       config/grafana/provisioning (MySQL datasource + dashboard); the whole stack
                with Grafana: docker compose up -d --build (docs/operations.md)
  the guide     README.md, then docs/
EOF
