# Multi-stage build: compile in the official Rust image, run as a non-root user in a slim image.
#   docker build -t slotproxy .
#   docker run -p 6380:6380 -p 9180:9180 -e SLOTPROXY_UPSTREAM=redis://redis-node-0:6379 slotproxy
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin slotproxy

FROM debian:bookworm-slim
# CA certificates for TLS to the backends (rediss://); nothing else: the health check below
# needs only bash, which the base image has.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home slotproxy
COPY --from=build /src/target/release/slotproxy /usr/local/bin/slotproxy
# The documented defaults; mount your own (read-only) and pass --config or SLOTPROXY_CONFIG.
COPY config/slotproxy.toml /etc/slotproxy/slotproxy.toml
USER 10001
# In a container the listeners must not be loopback-only. Flags and the environment of
# `docker run -e` / a Kubernetes env list override these; SLOTPROXY_UPSTREAM (or --upstream)
# is all a deployment must add.
ENV SLOTPROXY_LISTEN=0.0.0.0:6380 \
    SLOTPROXY_ADMIN_LISTEN=0.0.0.0:9180
EXPOSE 6380 9180
# Liveness through /healthz on the admin port taken from SLOTPROXY_ADMIN_LISTEN, with bash's
# /dev/tcp instead of installing curl. tests/entrypoint.rs runs this exact command against
# the binary. (Readiness, /readyz, is for orchestrators: see config/kubernetes-sidecar.yaml.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${SLOTPROXY_ADMIN_LISTEN##*:} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && read -r -t 2 _ status _ <&3 && [ \"$status\" = 200 ]"]
# SIGTERM (docker stop, Kubernetes) makes /readyz answer 503 and the proxy exit cleanly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/slotproxy"]
