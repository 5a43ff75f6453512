#!/usr/bin/env bash
# One command from a fresh machine to a populated lake: install what is missing, start
# the broker and MariaDB, create the mirror's MySQL account (never root), build, check
# the setup, produce a burst of realistic synthetic calls, ingest them with the default
# config into tables/, mirror them to MySQL and print a summary. Safe to re-run.
#   CALLS=200000 scripts/quickstart.sh
# Any config key can be overridden from the environment as usual
# (LAKESTREAM__STORAGE__ROOT, LAKESTREAM__MYSQL__PORT, ...); scripts/mysql-accounts.sh
# and the summary below follow the MySQL and storage ones.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakestream-target}
CALLS=${CALLS:-100000}
# The demo manages the read-only BI account (mysql.bi_user) with this password; export
# your own before running to choose it.
export LAKESTREAM_BI_PASSWORD=${LAKESTREAM_BI_PASSWORD:-lakestream-demo}
# The sync account's password comes from the file scripts/mysql-accounts.sh writes.
export LAKESTREAM__MYSQL__PASSWORD_FILE=${LAKESTREAM__MYSQL__PASSWORD_FILE:-$HOME/.config/lakestream/mysql-sync.password}
root=${LAKESTREAM__STORAGE__ROOT:-tables}
database=${LAKESTREAM__MYSQL__DATABASE:-lakestream}
port=${LAKESTREAM__MYSQL__PORT:-3306}

step() { printf '\n[quickstart] %s\n' "$*" >&2; }

scripts/install-deps.sh
scripts/services.sh
step "MySQL accounts (root through the unix socket, once)"
LAKESTREAM_MYSQL_DATABASE=$database LAKESTREAM_MYSQL_USER=${LAKESTREAM__MYSQL__USER:-lakestream_sync} \
  LAKESTREAM_MYSQL_PASSWORD_FILE=$LAKESTREAM__MYSQL__PASSWORD_FILE scripts/mysql-accounts.sh
if [ -n "${LAKESTREAM_BIN:-}" ]; then
  bin=$LAKESTREAM_BIN  # a binary built already (the suite's own, which holds cargo's lock)
else
  step "building lakestream (release; the first build takes a while)"
  cargo build --release --locked --bin lakestream
  bin="$CARGO_TARGET_DIR/release/lakestream"
fi

# A new seed each run: re-running adds a fresh burst instead of repeating crime_ids.
seed=$(date +%s)
step "producing $CALLS synthetic calls"
"$bin" produce --synthetic "$CALLS" --seed "$seed" --no-progress
step "checking Kafka, the storage, MySQL and the SQL (lakestream check)"
"$bin" check
step "ingesting until caught up, then the MySQL mirror"
"$bin" run --until-caught-up --log "warn,buoyant_kernel=off,deltalake_core=error"
echo
LAKESTREAM_ROOT=$root python3 - <<'PY' || echo "(python deltalake not importable: skipped the independent read)"
import os
from deltalake import DeltaTable
root = os.environ["LAKESTREAM_ROOT"]
for name in ("calls", "calls_dead_letters"):
    t = DeltaTable(f"{root}/{name}")
    print(f"{root}/{name}: version {t.version()}, {t.to_pyarrow_dataset().count_rows()} rows, {len(t.file_uris())} files (read by Python deltalake)", flush=True)
os._exit(0)  # deltalake can abort in interpreter teardown
PY
client=$(command -v mariadb || command -v mysql)
# The BI account's password on stdin's option file, not the command line.
views=$("$client" --defaults-extra-file=<(printf '[client]\npassword=%s\n' "$LAKESTREAM_BI_PASSWORD") \
  -h 127.0.0.1 -P "$port" -u lakestream_bi "$database" -N \
  -e 'SELECT count(*), coalesce(sum(calls), 0) FROM v_calls_per_disposition')
echo "MySQL view v_calls_per_disposition as the read-only BI account: $(awk '{print $1" dispositions, "$2" calls"}' <<<"$views")"

cat <<EOF

What to look at next:
  status page   $bin run
                then open http://127.0.0.1:8321/ (also /metrics, /status, /health); in another
                terminal: $bin produce --synthetic 50000 --rate 2000
  query         $bin query "SELECT original_crime_type_name, sum(calls) AS calls FROM crime_type_hourly GROUP BY 1 ORDER BY 2 DESC LIMIT 5"
  time travel   $bin history calls --limit 5
                $bin query "SELECT count(*) FROM calls" --version 1
  MySQL views   mariadb -h 127.0.0.1 -P $port -u lakestream_bi -p'$LAKESTREAM_BI_PASSWORD' $database -e 'SELECT * FROM v_calls_per_disposition'
                (the read-only BI account: SELECT on the v_ views, nothing else; the mirror
                syncs as ${LAKESTREAM__MYSQL__USER:-lakestream_sync}, its password in $LAKESTREAM__MYSQL__PASSWORD_FILE)
  setup check   $bin check
  Grafana       config/grafana/provisioning (MySQL datasource + dashboard); the whole stack
                with Grafana: docker compose up -d --build (docs/operations.md)
  the guide     README.md, then docs/
EOF
