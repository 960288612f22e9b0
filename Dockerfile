# verifyd's container image: the release binary on distroless, running as non-root.
#
#   docker build -t verifyd:dev .
#   docker run --rm -p 50051:50051 -p 9090:9090 \
#     -v "$PWD/verifyd.toml:/etc/verifyd/verifyd.toml:ro" \
#     -e VERIFYD_HMAC__KEY_FILE=/run/secrets/verifyd/hmac-key \
#     -v "$PWD/hmac-key:/run/secrets/verifyd/hmac-key:ro" \
#     verifyd:dev serve --config /etc/verifyd/verifyd.toml
#
# Without a configuration verifyd runs in dev mode, which binds loopback
# addresses only: in a container always pass one (docs/operations.md).
#
# The image writes nothing to its filesystem, so it runs with
# readOnlyRootFilesystem, as the Kubernetes manifests in k8s/ do.

# Builder: the toolchain CI lints and tests with (Cargo.toml's rust-version,
# 1.88, is the oldest that builds). Debian 12 (bookworm), like the runtime
# image, so the binary's glibc matches the one it runs on.
FROM rust:1.95.0-bookworm AS builder

WORKDIR /build
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto/ proto/
COPY src/ src/
# The workspace's other member (the load generator): cargo reads its
# manifest to resolve the workspace; only the service is built.
COPY tools/ tools/

# The cache mounts keep the crates.io downloads and the compiled dependencies
# between builds (BuildKit); the binary is copied out of the cached target/
# because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked --bin verifyd \
    && install -D -m 0755 target/release/verifyd /out/verifyd

# Runtime: glibc, libgcc, CA certificates (for Twilio, SMTP and rediss://)
# and tzdata; no shell, no package manager. The nonroot variant's user is
# 65532; it is set again by number so Kubernetes' runAsNonRoot can verify it
# without resolving a name. Distroless publishes moving tags only: pin the
# digest (gcr.io/distroless/cc-debian12:nonroot@sha256:...) in your release
# pipeline for reproducible images.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="verifyd" \
      org.opencontainers.image.description="Issues, delivers and checks one-time verification codes" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/verifyd /usr/local/bin/verifyd

USER 65532:65532

# gRPC API, admin (probes and /metrics), provider webhooks.
EXPOSE 50051 9090 8080

ENTRYPOINT ["/usr/local/bin/verifyd"]
CMD ["serve"]
