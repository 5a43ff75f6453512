#!/usr/bin/env bash
# Install what lakestream's tests and demo need on a fresh Debian/Ubuntu machine that has
# the Rust toolchain, Java 17+ with Maven, and Python: Apache Kafka (jars from Maven Central),
# MariaDB (apt), the Python `deltalake` reader, `confluent-kafka` (a second Kafka client for
# the tests) and `moto_server` (PyPI), Chromium (apt), and a C toolchain with OpenSSL's headers
# for librdkafka, helm (Go module proxy) and Apicurio Registry (Maven Central). Skips what is already there. LAKESTREAM_BROKER=tansu also installs the tansu
# broker (crates.io), the opt-in alternative.
set -euo pipefail

log() { printf '[install-deps] %s\n' "$*" >&2; }
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_updated=0
apt_install() {
  if [ "$apt_updated" -eq 0 ]; then $SUDO apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# rust-toolchain.toml pins the toolchain; rustup would try to download it on first use,
# and only the registries are reachable here: a `stable` of the same version serves.
pinned=$(sed -n 's/^channel = "\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
if command -v rustup >/dev/null && ! rustup toolchain list | grep -q "^$pinned"; then
  stable_version=$(RUSTUP_TOOLCHAIN=stable rustc --version 2>/dev/null | awk '{print $2}')
  if [ "$stable_version" = "$pinned" ]; then
    log "using the installed stable toolchain ($stable_version) as $pinned (rust-toolchain.toml)"
    # rustup refuses custom names that look like releases: link the folder itself.
    host=$(RUSTUP_TOOLCHAIN=stable rustc -vV | sed -n 's/^host: //p')
    toolchains="${RUSTUP_HOME:-$HOME/.rustup}/toolchains"
    ln -sfn "$toolchains/stable-$host" "$toolchains/$pinned-$host"
  else
    log "rust-toolchain.toml pins Rust $pinned; installing it with rustup"
    rustup toolchain install "$pinned" --profile minimal --component rustfmt,clippy
  fi
fi

if ! command -v make >/dev/null || ! command -v g++ >/dev/null || ! command -v pkg-config >/dev/null \
   || [ ! -f /usr/include/openssl/ssl.h ] || ! command -v openssl >/dev/null; then
  log "installing a C/C++ toolchain and OpenSSL (librdkafka is built with TLS; the test broker's certificates are made with openssl)"
  apt_install build-essential pkg-config libssl-dev openssl
fi

KAFKA_LIBS=${KAFKA_LIBS:-$HOME/.cache/lakestream-kafka/libs}
kafka_pom="$(cd "$(dirname "$0")" && pwd)/kafka/pom.xml"
# The folder is stamped with the pom it was made from, so a version change re-assembles it.
if [ "$(cat "$KAFKA_LIBS/.pom.sha" 2>/dev/null)" != "$(sha256sum < "$kafka_pom")" ]; then
  if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    log "installing Java 17 and Maven (Apache Kafka runs on the JVM)"
    apt_install openjdk-17-jre-headless maven
  fi
  log "assembling Apache Kafka from Maven Central into $KAFKA_LIBS"
  rm -rf "$KAFKA_LIBS.tmp"
  mvn -q -B -f "$kafka_pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KAFKA_LIBS.tmp"
  rm -rf "$KAFKA_LIBS" && mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
  sha256sum < "$kafka_pom" > "$KAFKA_LIBS/.pom.sha"
fi

REGISTRY_APP=${REGISTRY_APP:-$HOME/.cache/lakestream-registry}
registry_pom="$(cd "$(dirname "$0")" && pwd)/registry/pom.xml"
if [ "$(cat "$REGISTRY_APP/.pom.sha" 2>/dev/null)" != "$(sha256sum < "$registry_pom")" ]; then
  log "assembling Apicurio Registry (the Schema Registry of the Avro/Protobuf tests) from Maven Central into $REGISTRY_APP"
  rm -rf "$REGISTRY_APP.build" && mkdir -p "$REGISTRY_APP.build"
  cp "$registry_pom" "$REGISTRY_APP.build/pom.xml"
  mvn -q -B -f "$REGISTRY_APP.build/pom.xml" package -DskipTests
  rm -rf "$REGISTRY_APP" && mkdir -p "$REGISTRY_APP"
  mv "$REGISTRY_APP.build/target/lib" "$REGISTRY_APP/lib"
  mv "$REGISTRY_APP.build/target/registry-1-runner.jar" "$REGISTRY_APP/registry.jar"
  rm -rf "$REGISTRY_APP.build"
  sha256sum < "$registry_pom" > "$REGISTRY_APP/.pom.sha"
fi
if ! python3 -c 'import fastavro, google.protobuf, jsonschema, referencing, authlib, cachetools' 2>/dev/null; then
  log "installing confluent-kafka's Schema Registry serializers (fastavro, protobuf, jsonschema): the tests' second Avro/Protobuf/JSON Schema client"
  python3 -m pip install --quiet --disable-pip-version-check 'confluent-kafka[avro,protobuf,json,schemaregistry]>=2.6'
fi

if [ "${LAKESTREAM_BROKER:-kafka}" = tansu ] && ! command -v tansu >/dev/null; then
  log "installing the tansu Kafka-compatible broker from crates.io (about 10 minutes)"
  # Its own throw-away target dir, not the project's (CARGO_TARGET_DIR may be exported).
  env -u CARGO_TARGET_DIR cargo install tansu --locked --features dynostore,libsql
fi

if [ ! -x /usr/sbin/mariadbd ] && ! command -v mariadbd >/dev/null; then
  log "installing MariaDB"
  apt_install mariadb-server
fi

if ! command -v chromium >/dev/null; then
  log "installing Chromium (the status page is tested in headless Chromium)"
  apt_install chromium
fi

if ! python3 -c 'import deltalake, pyarrow' 2>/dev/null; then
  log "installing the Python deltalake reader (independent check of our tables)"
  python3 -m pip install --quiet --disable-pip-version-check deltalake pyarrow
fi
if ! python3 -c 'import confluent_kafka' 2>/dev/null; then
  log "installing confluent-kafka (the tests' second Kafka client: codecs, transactions)"
  python3 -m pip install --quiet --disable-pip-version-check 'confluent-kafka>=2.6'
fi
if ! command -v moto_server >/dev/null; then
  log "installing moto_server (a local S3-compatible server for the object-storage tests)"
  python3 -m pip install --quiet --disable-pip-version-check 'moto[server]>=5.1'
fi
# helm: the chart under deploy/helm is linted and rendered in CI (scripts/helm-check.sh),
# built from the Go module proxy (no download site is reachable).
# A build from source does not know its own version: a stamp beside it does.
HELM_VERSION=v3.22.0
helm_bin="$(go env GOPATH)/bin/helm"
if [ "$(cat "$helm_bin.version" 2>/dev/null)" != "$HELM_VERSION" ] || ! "$helm_bin" version >/dev/null 2>&1; then
  log "installing helm $HELM_VERSION from the Go module proxy (about 3 minutes)"
  go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "$HELM_VERSION" > "$helm_bin.version"
fi
# Azurite (npm) and fake-gcs-server (Go module proxy): the Azure and GCS object stores of
# the storage tests, started by scripts/services.sh.
if ! command -v azurite-blob >/dev/null; then
  log "installing Azurite (an Azure Blob / ADLS Gen2 emulator) from npm"
  $SUDO npm install -g --silent 'azurite@3' >/dev/null
fi
# fake-gcs-server's library plus the XML upload object_store uses (see its main.go),
# built from the Go module proxy; the stamp is the source's hash, so an edit rebuilds it.
fake_gcs_src="$(cd "$(dirname "$0")" && pwd)/lakes/fake-gcs"
fake_gcs="$(go env GOPATH)/bin/lakestream-fake-gcs"
fake_gcs_sum=$(cat "$fake_gcs_src"/main.go "$fake_gcs_src"/go.mod "$fake_gcs_src"/go.sum | sha256sum)
if [ "$(cat "$fake_gcs.sha" 2>/dev/null)" != "$fake_gcs_sum" ] || [ ! -x "$fake_gcs" ]; then
  log "building fake-gcs-server (a Google Cloud Storage emulator) from the Go module proxy"
  (cd "$fake_gcs_src" && go build -o "$fake_gcs" .)
  echo "$fake_gcs_sum" > "$fake_gcs.sha"
fi
# Apache Spark with Delta Lake and Polars: the second and third engines that read our
# tables in the tests. delta-spark's jars come from Maven Central through Spark's own
# resolver (Ivy) at the first session, fetched here once so the tests do not wait for it.
if ! python3 -c 'import pyspark, delta, polars' 2>/dev/null; then
  log "installing pyspark, delta-spark and polars from PyPI (the tests' other Delta readers)"
  python3 -m pip install --quiet --disable-pip-version-check 'delta-spark==4.4.0' 'polars>=1.20'
fi
if ! ls "$HOME"/.ivy2*/jars/io.delta_delta-spark_* >/dev/null 2>&1; then
  log "fetching delta-spark's jars from Maven Central (Spark's first Delta session)"
  python3 "$(dirname "$0")/lakes/spark_warmup.py"
fi
log "all dependencies present"
