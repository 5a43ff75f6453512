#!/usr/bin/env bash
# Start the services lakestream's tests and demo use, unless they already answer:
# Apache Kafka on 127.0.0.1:9092 (PLAINTEXT), 9093 (SASL_SSL) and 9094 (mTLS), see
# scripts/kafka/start.sh, MariaDB on 127.0.0.1:3306 and Apicurio Registry (Confluent API at
# http://127.0.0.1:8081/apis/ccompat/v7, in-memory). LAKESTREAM_BROKER=tansu starts the
# tansu broker on 9092 instead (PLAINTEXT only; see docs/operations.md for what differs).
# Logs go to $LAKESTREAM_RUN_DIR (default ~/.cache/lakestream-run).
set -euo pipefail

RUN_DIR=${LAKESTREAM_RUN_DIR:-$HOME/.cache/lakestream-run}
mkdir -p "$RUN_DIR"
log() { printf '[services] %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 120); do port_open "$1" && return 0; sleep 0.5; done
  log "$2 did not come up on port $1; see $3"; return 1
}
# Kafka loads every partition of its log directory before it listens: after an unclean stop
# with thousands of partitions that takes minutes on a cold disk. Wait while it lives (up to
# ten minutes, with progress), and show why when it dies.
wait_kafka() {
  local pid log="$RUN_DIR/kafka/kafka.log" start=$SECONDS
  pid=$(cat "$RUN_DIR/kafka/kafka.pid")
  until port_open 9092 && port_open 9093 && port_open 9094; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "Kafka exited while starting; the end of $log:"; tail -n 30 "$log" >&2; return 1
    fi
    if (( SECONDS - start >= 600 )); then
      log "Kafka did not listen on 9092-9094 within 600 s; see $log"; return 1
    fi
    (( (SECONDS - start) % 15 == 14 )) && log "Kafka still starting after $(( SECONDS - start )) s ($(ls "$RUN_DIR/kafka/data" | wc -l) partition directories to load)"
    sleep 1
  done
  log "Kafka listening after $(( SECONDS - start )) s"
}

if port_open 9092; then
  log "broker already listening on 127.0.0.1:9092"
elif [ "${LAKESTREAM_BROKER:-kafka}" = kafka ]; then
  "$(dirname "$0")/kafka/start.sh"
  wait_kafka
else
  log "starting tansu on 127.0.0.1:9092 (log: $RUN_DIR/tansu.log)"
  setsid nohup tansu broker \
    --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine memory://tansu/ >"$RUN_DIR/tansu.log" 2>&1 < /dev/null &
  wait_port 9092 tansu "$RUN_DIR/tansu.log"
fi

if port_open 3306; then
  log "MariaDB already listening on 127.0.0.1:3306"
else
  log "starting MariaDB (log: $RUN_DIR/mariadb.log)"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  setsid nohup /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --port=3306 \
    >"$RUN_DIR/mariadb.log" 2>&1 < /dev/null &
  wait_port 3306 MariaDB "$RUN_DIR/mariadb.log"
fi

REGISTRY_APP=${REGISTRY_APP:-$HOME/.cache/lakestream-registry}
if port_open 8081; then
  log "Schema Registry already listening on 127.0.0.1:8081"
elif [ -f "$REGISTRY_APP/registry.jar" ]; then
  log "starting Apicurio Registry on 127.0.0.1:8081 (Confluent API at /apis/ccompat/v7; log: $RUN_DIR/registry.log)"
  setsid nohup java -Xmx512m -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port=8081 \
    -jar "$REGISTRY_APP/registry.jar" >"$RUN_DIR/registry.log" 2>&1 < /dev/null &
  wait_port 8081 "Apicurio Registry" "$RUN_DIR/registry.log"
else
  log "no Apicurio Registry in $REGISTRY_APP: run scripts/install-deps.sh (the Avro/Protobuf tests need it)"
fi

# Azurite (Azure Blob / ADLS Gen2 emulator, npm) on 127.0.0.1:10000, in memory, with the
# container `lake` the Azure tests and docs use; fake-gcs-server (Go, scripts/lakes/fake-gcs)
# on 127.0.0.1:4443 over plain HTTP, in memory, with the bucket `lake`. Both honour the conditional creates
# Delta commits rely on (If-None-Match: *, ifGenerationMatch=0).
if port_open 10000; then
  log "Azurite already listening on 127.0.0.1:10000"
elif command -v azurite-blob >/dev/null; then
  log "starting Azurite (Blob) on 127.0.0.1:10000 (log: $RUN_DIR/azurite.log)"
  # --skipApiVersionCheck: object_store may speak a newer REST version than this Azurite
  # knows; --loose: it ignores the headers it does not implement instead of failing.
  setsid nohup azurite-blob --blobHost 127.0.0.1 --blobPort 10000 --inMemoryPersistence \
    --extentMemoryLimit 4096 --skipApiVersionCheck --loose --disableTelemetry \
    >"$RUN_DIR/azurite.log" 2>&1 < /dev/null &
  wait_port 10000 Azurite "$RUN_DIR/azurite.log"
else
  log "no azurite-blob: run scripts/install-deps.sh (the Azure tests need it)"
fi
port_open 10000 && "$(dirname "$0")/lakes/azurite-container.sh" lake

FAKE_GCS=${FAKE_GCS:-$(go env GOPATH 2>/dev/null)/bin/lakestream-fake-gcs}
if port_open 4443; then
  log "fake-gcs-server already listening on 127.0.0.1:4443"
elif [ -x "$FAKE_GCS" ]; then
  log "starting fake-gcs-server on 127.0.0.1:4443 (log: $RUN_DIR/fake-gcs.log)"
  setsid nohup "$FAKE_GCS" -host 127.0.0.1 -port 4443 -buckets lake \
    >"$RUN_DIR/fake-gcs.log" 2>&1 < /dev/null &
  wait_port 4443 fake-gcs-server "$RUN_DIR/fake-gcs.log"
else
  log "no fake-gcs-server: run scripts/install-deps.sh (the GCS tests need it)"
fi
