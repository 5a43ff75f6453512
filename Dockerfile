# syntax=docker/dockerfile:1
# lakestream as a container: a Rust build stage, then a small Debian runtime with the
# binary, the config and the SQL files. Build: `docker build -t lakestream .`
# Run (the service): `docker run --rm -v lake:/data lakestream run`

FROM rust:1.95-bookworm AS build
WORKDIR /src
# The release profile (no debug info), built once, without symbol names (a smaller image;
# build without this line to keep them for `perf`).
ENV CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lakestream \
    && cp target/release/lakestream /usr/local/bin/lakestream

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data lakestream \
    && mkdir -p /data && chown lakestream /data
COPY --from=build /usr/local/bin/lakestream /usr/local/bin/lakestream
# Config paths (SQL files, lookups) are relative to the working directory.
WORKDIR /opt/lakestream
COPY config ./config
COPY sql ./sql
ENV LAKESTREAM_CONFIG=/opt/lakestream/config/lakestream.toml \
    LAKESTREAM__STORAGE__ROOT=/data/tables \
    LAKESTREAM__HTTP__LISTEN=0.0.0.0:8321
USER lakestream
VOLUME ["/data"]
EXPOSE 8321
ENTRYPOINT ["lakestream"]
CMD ["run"]
