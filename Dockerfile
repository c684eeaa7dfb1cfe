# Multi-stage build: compile in the official Rust image, run as a non-root user in a slim image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin slotproxy

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home slotproxy
COPY --from=build /src/target/release/slotproxy /usr/local/bin/slotproxy
COPY config/slotproxy.toml /etc/slotproxy/slotproxy.toml
USER 10001
# In a container the listeners must not be loopback-only. Flags still override these, so
# `docker run slotproxy --upstream redis://node:6379` is all a deployment needs.
ENV SLOTPROXY_LISTEN=0.0.0.0:6380 \
    SLOTPROXY_ADMIN_LISTEN=0.0.0.0:9180
EXPOSE 6380 9180
ENTRYPOINT ["/usr/local/bin/slotproxy"]
