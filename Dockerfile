# syntax=docker/dockerfile:1
# The ingest image: both Cloud Run services (ROLE=device and ROLE=admin) run it.
#   docker build -t ingest .
#   docker run --rm -p 8080:8080 ingest       # device bridge on :8080, embedded SQLite registry
# Build stage: the Rust toolchain of the workspace's rust-version or newer, on Debian 12 so the
# binary's glibc matches the runtime image. aws-lc-sys, ring and rusqlite's bundled SQLite compile
# C code: on x86_64 and aarch64 Linux they need only the C compiler this image already has
# (aws-lc-rs wants CMake, Go or bindgen only for its FIPS build or other targets; no nasm on
# Linux; no protoc either, the Google API crates ship generated code).
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependency layer: the manifests and the lock file with empty sources, so the ~400 dependencies
# are compiled once and cached until Cargo.toml or Cargo.lock change, not on every source edit.
COPY Cargo.toml Cargo.lock ./
COPY shared/Cargo.toml shared/
COPY ingest/Cargo.toml ingest/
COPY device/Cargo.toml device/
# Members only the tests and benchmarks use: cargo needs their manifests (and a target each) to
# load the workspace, not their sources, so their placeholders stay.
COPY testkit/Cargo.toml testkit/
COPY tools/mqtt-load/Cargo.toml tools/mqtt-load/
RUN mkdir -p shared/src ingest/src ingest/benches device/src testkit/src tools/mqtt-load/src \
 && touch shared/src/lib.rs ingest/src/lib.rs device/src/lib.rs testkit/src/lib.rs \
 && echo 'fn main() {}' > tools/mqtt-load/src/main.rs \
 && echo 'fn main() {}' > ingest/src/main.rs \
 && echo 'fn main() {}' > ingest/benches/verify.rs \
 && echo 'fn main() {}' > device/src/main.rs \
 && cargo build --release --locked -p ingest \
 && rm -rf shared/src ingest/src ingest/benches device/src

# The real sources. COPY keeps the files' old modification times, which can be older than the
# placeholder build above; touching them makes cargo rebuild the workspace's own crates.
COPY shared/src shared/src
COPY ingest/src ingest/src
COPY ingest/benches ingest/benches
COPY device/src device/src
RUN touch shared/src/lib.rs ingest/src/lib.rs ingest/src/main.rs \
 && cargo build --release --locked -p ingest \
 && install -D -m 0555 target/release/ingest /out/ingest

# Runtime stage: distroless "cc" (glibc, libgcc, CA certificates, tzdata; no shell, no package
# manager), run as its non-root user "nonroot" (uid and gid 65532). ingest needs nothing else:
# TLS is rustls and SQLite is compiled in.
FROM gcr.io/distroless/cc-debian12:nonroot
# The non-root user's home: where the local defaults (sqlite:ingest.db, file:events.jsonl) can
# be written when the image runs outside Cloud Run.
WORKDIR /home/nonroot
COPY --from=build /out/ingest /usr/local/bin/ingest
USER 65532:65532

# The device bridge listens on $PORT (Cloud Run sets it; 8080 when unset). With ROLE=admin the
# admin API listens on ADMIN_ADDR instead; run.tf sets it to 0.0.0.0:8080.
# MQTT over TLS listens on 8883 (MQTT_ADDR; the embedded CA goes to mqtt-tls/ in the workdir
# unless MQTT_TLS_CERT/MQTT_TLS_KEY name mounted files); Cloud Run sets MQTT_ADDR=off and takes
# MQTT over WebSocket at /mqtt on $PORT.
ENV PORT=8080
EXPOSE 8080 8883

# Cloud Run ignores Docker's HEALTHCHECK and probes /readyz and /healthz itself (run.tf); a
# HEALTHCHECK would need a shell or an HTTP client inside an image that deliberately has neither.
HEALTHCHECK NONE

ENTRYPOINT ["/usr/local/bin/ingest"]
CMD ["serve"]
