# The Fiso data-plane image: one binary, `fiso flow` by default (`fiso link` / `fiso run` are
# the other entry points as they land). Built from source; needs no cmake or protoc.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p fiso && strip target/release/fiso

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 65532 --no-create-home fiso
COPY --from=build /src/target/release/fiso /usr/local/bin/fiso
USER 65532
ENV FISO_CONFIG_DIR=/etc/fiso/flows FISO_METRICS_ADDR=:9090
EXPOSE 8081 3500 9090
ENTRYPOINT ["/usr/local/bin/fiso"]
CMD ["flow"]
