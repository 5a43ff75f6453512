#!/usr/bin/env bash
# Lint the Helm chart and render it with its defaults (no cluster is needed); the
# rendered manifests land in $CARGO_TARGET_DIR/helm/ for a look. tests/it/deploy.rs
# renders the chart again and checks it against the binary (args, ports, probe paths,
# environment keys, the consumer group KEDA watches).
set -euo pipefail
cd "$(dirname "$0")/.."
helm="$(command -v helm || echo "$(go env GOPATH)/bin/helm")"
out="${CARGO_TARGET_DIR:-$HOME/.cache/lakestream-target}/helm"
mkdir -p "$out"
"$helm" lint --strict deploy/helm/lakestream
"$helm" template lakestream deploy/helm/lakestream > "$out/lakestream.yaml"
# A maxReplicaCount above the partitions must be refused.
if "$helm" template lakestream deploy/helm/lakestream --set keda.maxReplicaCount=9 >/dev/null 2>&1; then
  echo "[helm] keda.maxReplicaCount above topicPartitions was not refused" >&2
  exit 1
fi
echo "[helm] chart lints and renders: $out/lakestream.yaml"
