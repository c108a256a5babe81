# opportunity-service: release build with TLS-capable libpq (feature `postgres-tls`),
# run as a non-root user with the embedded SQLite database under /data.
#
#   docker build -t opportunity-service .
#   docker run -p 8080:8080 -v opportunity-data:/data opportunity-service
#
# .ci/run builds the binary with the same cargo command as the builder stage below.

# ---------------------------------------------------------------------------
# Builder
# ---------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder

# What the bundled C code needs: libsqlite3-sys (bundled) and pq-src (bundled libpq)
# are compiled with the `cc` crate (gcc + libc headers); libpq with OpenSSL links the
# system libssl, found by openssl-sys through pkg-config.
# Package versions are not pinned (DL3008): Debian drops superseded versions from the
# archive on every security update, so a pinned version would break the build later.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        gcc \
        libc6-dev \
        libssl-dev \
        pkg-config \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependency layer: build every dependency against placeholder sources, so that a
# change to src/ or migrations/ does not rebuild the dependencies.
COPY Cargo.toml Cargo.lock ./
# How the bundled SQLite is compiled (.cargo/config.toml): part of the dependencies' build.
COPY .cargo ./.cargo
# Cargo.toml declares the storage bench: its file must exist for any build.
COPY benches ./benches
# Cargo.toml is a workspace with the Rust client as a member: cargo reads every member's
# manifest (and needs its library target to exist) even when it builds only the service, the
# default member. The client is never built here: its placeholder is enough, for both builds.
COPY clients/rust/Cargo.toml ./clients/rust/
RUN mkdir src clients/rust/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs clients/rust/src/lib.rs \
    && cargo build --release --locked --features postgres-tls \
    && rm -rf src

# The real sources, with everything the code may embed at compile time (migrations,
# the OpenAPI document). Their mtimes may be older than the placeholders', so touch
# them to make cargo rebuild the crate itself.
COPY src ./src
COPY migrations ./migrations
COPY openapi ./openapi
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --features postgres-tls \
    && cp target/release/opportunity-service /usr/local/bin/opportunity-service

# ---------------------------------------------------------------------------
# Runtime
# ---------------------------------------------------------------------------
FROM debian:bookworm-slim

# libssl3 for libpq's TLS, ca-certificates to verify servers, curl for HEALTHCHECK.
# Not pinned for the same reason as above (DL3008).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        curl \
        libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /data \
    && chown app:app /data

COPY --from=builder /usr/local/bin/opportunity-service /usr/local/bin/opportunity-service

ENV LISTEN_ADDR=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///data/opportunity-service.db

WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

# Exec form (hadolint DL3025) around the shell command, so that any failure maps to
# exit 1, the status Docker documents for "unhealthy".
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS --max-time 4 http://127.0.0.1:8080/health || exit 1"]

# The user `app`, by number (hadolint DL3066), so that runtimes that check for a
# non-root user (Kubernetes runAsNonRoot) can tell without reading /etc/passwd.
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/opportunity-service"]
CMD ["serve"]
