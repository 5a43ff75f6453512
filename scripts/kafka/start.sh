#!/usr/bin/env bash
# Configure and start a one-node Apache Kafka (KRaft, combined broker + controller) from the
# jars scripts/install-deps.sh copied into $KAFKA_LIBS. Idempotent: the CA, certificates,
# SCRAM users and the formatted log directory are made once and reused.
#
# Listeners (all on 127.0.0.1):
#   9092 PLAINTEXT
#   9093 SASL_SSL  SCRAM-SHA-512, SCRAM-SHA-256, PLAIN, OAUTHBEARER (Kafka's unsecured-JWT validator)
#   9094 SSL       client certificate required (mTLS)
#   9095 CONTROLLER (KRaft, internal)
# Test credentials (throw-away, this machine only): user "lakestream", password
# "lakestream-secret" for SCRAM and PLAIN; certificates under $KAFKA_DIR/tls.
set -euo pipefail

KAFKA_LIBS=${KAFKA_LIBS:-$HOME/.cache/lakestream-kafka/libs}
RUN_DIR=${LAKESTREAM_RUN_DIR:-$HOME/.cache/lakestream-run}
KAFKA_DIR="$RUN_DIR/kafka"
TLS="$KAFKA_DIR/tls"
USER_NAME=lakestream
USER_PASSWORD=lakestream-secret
log() { printf '[kafka] %s\n' "$*" >&2; }
mkdir -p "$KAFKA_DIR" "$TLS"
[ -d "$KAFKA_LIBS" ] || { log "no Kafka jars in $KAFKA_LIBS: run scripts/install-deps.sh"; exit 1; }

# A throw-away CA, the broker's certificate (SAN 127.0.0.1 and localhost) and a client
# certificate for the mTLS listener. PEM throughout: Kafka reads PEM key and trust stores.
make_cert() { # name subject-CN extensions
  openssl req -new -newkey rsa:2048 -nodes -keyout "$TLS/$1.key" -subj "/CN=$2" \
    -out "$TLS/$1.csr" 2>/dev/null
  openssl x509 -req -in "$TLS/$1.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile <(printf '%s\n' "$3") -out "$TLS/$1.pem" 2>/dev/null
  rm -f "$TLS/$1.csr"
}
if [ ! -s "$TLS/client.pem" ]; then
  log "making a throw-away CA and certificates in $TLS"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=lakestream test CA" \
    -keyout "$TLS/ca.key" -out "$TLS/ca.pem" 2>/dev/null
  make_cert broker localhost "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth,clientAuth"
  make_cert client "$USER_NAME" "extendedKeyUsage=clientAuth"
  # Kafka's PEM key store: an unencrypted PKCS#8 key followed by the certificate chain.
  openssl pkcs8 -topk8 -nocrypt -in "$TLS/broker.key" -out "$TLS/broker.pk8"
  cat "$TLS/broker.pk8" "$TLS/broker.pem" "$TLS/ca.pem" > "$TLS/broker-keystore.pem"
  rm -f "$TLS/broker.pk8"
fi

jaas_plain="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"$USER_NAME\" password=\"$USER_PASSWORD\" user_$USER_NAME=\"$USER_PASSWORD\";"
cat > "$KAFKA_DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:9095
listeners=PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9093,SSL://127.0.0.1:9094,CONTROLLER://127.0.0.1:9095
advertised.listeners=PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9093,SSL://127.0.0.1:9094
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$KAFKA_DIR/data
# Tests write to partitions 0-3 of topics their producers create on first use, and use
# Kafka timestamps from years ago: records are never deleted by age (topics that test
# retention set it themselves).
num.partitions=4
log.retention.ms=-1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests join and leave groups all the time: no initial delay, short minimum sessions, and a
# retention check every second so retention tests need not wait five minutes.
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
group.consumer.min.session.timeout.ms=1000
group.consumer.session.timeout.ms=6000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
log.retention.check.interval.ms=1000
log.segment.delete.delay.ms=0
file.delete.delay.ms=0
# TLS (both TLS listeners)
ssl.keystore.type=PEM
ssl.keystore.location=$TLS/broker-keystore.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS/ca.pem
listener.name.ssl.ssl.client.auth=required
# SASL on the SASL_SSL listener
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=$jaas_plain
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler
PROPS

cat > "$KAFKA_DIR/log4j2.yaml" <<'YAML'
Configuration:
  Appenders:
    Console: { name: STDOUT, PatternLayout: { pattern: "[%d] %p %m (%c)%n" } }
  Loggers:
    Root: { level: INFO, AppenderRef: [{ ref: STDOUT }] }
    Logger:
      - { name: kafka, level: WARN }
      - { name: org.apache.kafka, level: WARN }
      - { name: kafka.server.KafkaServer, level: INFO }
      - { name: kafka.server.BrokerServer, level: INFO }
YAML

java_run() { java -Xms512m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.yaml" -cp "$KAFKA_LIBS/*" "$@"; }

if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
  log "formatting the KRaft log directory $KAFKA_DIR/data (with the SCRAM users)"
  java_run kafka.tools.StorageTool format --standalone --ignore-formatted \
    --config "$KAFKA_DIR/server.properties" --cluster-id "$(java_run kafka.tools.StorageTool random-uuid)" \
    --add-scram "SCRAM-SHA-512=[name=$USER_NAME,password=$USER_PASSWORD]" \
    --add-scram "SCRAM-SHA-256=[name=$USER_NAME,password=$USER_PASSWORD]" >&2
fi

log "starting Apache Kafka on 127.0.0.1:9092-9094 (log: $KAFKA_DIR/kafka.log)"
setsid nohup java -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.yaml" -cp "$KAFKA_LIBS/*" \
  kafka.Kafka "$KAFKA_DIR/server.properties" >"$KAFKA_DIR/kafka.log" 2>&1 < /dev/null &
echo $! > "$KAFKA_DIR/kafka.pid"
