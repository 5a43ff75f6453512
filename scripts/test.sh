#!/usr/bin/env bash
# The whole test suite, as CI runs it: start the services, then unit and integration
# tests (release profile: the same build serves the demo and the benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/lakestream-target}
# The code's shape (docs/architecture.md, "Layers"): no import up the layers or in a
# loop, no function over 80 lines, no file over 500, no thick mod.rs.
python3 scripts/structure.py --check
scripts/services.sh
# Each run's topics are named it-<test>-<random>: drop the previous runs' so the broker's
# log directory stays one run's size (Kafka's start-up time grows with its partitions).
if [ "${LAKESTREAM_BROKER:-kafka}" = kafka ]; then
  scripts/kafka/delete-topics.sh 'it-.*' || echo "[test] could not delete old it-* topics; going on" >&2
fi
# The integration tests run real consumers, producers and kill -9 loops against one broker
# on a 2-core machine: two at a time keeps their timing realistic.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-2}
cargo test --release --locked "$@"
