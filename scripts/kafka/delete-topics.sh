#!/usr/bin/env bash
# Delete the topics whose names match a regular expression on the local broker
# (127.0.0.1:9092): the suite and the benchmark clean up after themselves with it, so the
# broker's log directory (retention is off, see start.sh) does not grow with every run and
# its start-up does not slow down with thousands of dead partitions.
#   scripts/kafka/delete-topics.sh 'it-.*'
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 TOPIC-REGEX" >&2; exit 2; }
KAFKA_LIBS=${KAFKA_LIBS:-$HOME/.cache/lakestream-kafka/libs}
java -Xmx256m -Dlog4j2.level=warn -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.TopicCommand \
  --bootstrap-server 127.0.0.1:9092 --delete --if-exists --topic "$1"
