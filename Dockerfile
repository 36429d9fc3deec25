# creditbook: a multi-stage build. The first stage compiles the release binary (about ten
# minutes from scratch); the second is a small Debian runtime that runs it as a non-root user.
#
#   docker build -t creditbook .
#   docker run -p 8080:8080 -v creditbook-data:/var/lib/creditbook creditbook
#
# The image serves examples/creditbook.toml, whose SQLite database lands in the volume
# (/var/lib/creditbook, the working directory), unless a config is mounted at
# /etc/creditbook/creditbook.toml. It listens on 0.0.0.0:8080 (CREDITBOOK_LISTEN); the other
# CREDITBOOK_* variables (CREDITBOOK_DATABASE_URL, CREDITBOOK_STRIPE_API_KEY, ...) override the
# config as everywhere.

# Any Rust 1.94 or later builds it; rust:1-bookworm is the newest stable 1.x.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin creditbook \
 && install -D target/release/creditbook /out/creditbook

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/creditbook --create-home --shell /usr/sbin/nologin creditbook
COPY --from=build /out/creditbook /usr/local/bin/creditbook
COPY examples/creditbook.toml /etc/creditbook/creditbook.toml
USER creditbook
WORKDIR /var/lib/creditbook
VOLUME ["/var/lib/creditbook"]
ENV CREDITBOOK_CONFIG=/etc/creditbook/creditbook.toml \
    CREDITBOOK_LISTEN=0.0.0.0:8080 \
    CREDITBOOK_LOG=info
EXPOSE 8080
# /healthz asks the database; a failing database makes the container unhealthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
# SIGTERM (docker stop) drains in-flight requests; give it more than shutdown_timeout_seconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/creditbook"]
CMD ["serve"]
