# mcpgate container image: a release build of the gateway and the example plugins on a small,
# non-root runtime image (distroless, ~25 MB with the binary).
#
#   docker build -t mcpgate .
#   docker run --rm -p 8080:8080 -v "$PWD/deploy/mcpgate.yaml:/etc/mcpgate/mcpgate.yaml:ro" \
#     -v "$PWD/plugins:/plugins:ro" -e MCPGATE_SESSION_KEY=... -e REDIS_URL=... mcpgate
#
# /plugins holds the example plugins built here; mount your own folder over it to use others.

FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mcpgate \
 && (cd plugins && cargo build --release --locked --target wasm32-wasip2 \
       -p arg-guard -p quota -p redact -p template) \
 && mkdir -p /out/plugins \
 && cp target/release/mcpgate /out/ \
 && cp target/wasm32-wasip2/release/arg_guard.wasm target/wasm32-wasip2/release/quota.wasm \
       target/wasm32-wasip2/release/redact.wasm target/wasm32-wasip2/release/template.wasm \
       /out/plugins/

# glibc and libgcc only: mcpgate uses rustls, so no OpenSSL. Runs as uid 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mcpgate /usr/local/bin/mcpgate
COPY --from=build /out/plugins /plugins
COPY deploy/mcpgate.yaml /etc/mcpgate/mcpgate.yaml
USER 65532:65532
ENV MCPGATE_CONFIG=/etc/mcpgate/mcpgate.yaml \
    XDG_CACHE_HOME=/tmp/cache
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/mcpgate"]
CMD ["start", "--log-format", "json"]
