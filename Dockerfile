# The Fiso images, the same files and settings as `cargo xtask image` writes without Docker
# (a test in xtask/src/image/tests.rs keeps the two in step):
#   docker build -t fiso .                          the data plane (`fiso`; the default target)
#   docker build --target fiso-wasmer -t fiso-wasmer .   the data plane with Wasmer (apps)
#   docker build --target operator -t fiso-operator .
# Each final image is FROM scratch: the binary, exactly the shared libraries it loads, the CA
# bundle, /etc/passwd naming user 65532, and an empty /tmp. Builds need no cmake or protoc.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The release builds are optimised with the checked-in profile (`cargo xtask pgo` takes it again).
RUN gzip -dc pgo/fiso.profdata.gz > /tmp/fiso.profdata \
    && PGO=-Cprofile-use=/tmp/fiso.profdata \
    && RUSTFLAGS=$PGO cargo build --release -p fiso --bin fiso --features wasmer \
    && cp target/release/fiso target/release/fiso-wasmer \
    && RUSTFLAGS=$PGO cargo build --release -p fiso --bin fiso -p fiso-operator --bin fiso-operator \
    && cargo xtask image rootfs target/release /out

FROM scratch AS operator
COPY --from=build /out/operator/ /
USER 65532:65532
EXPOSE 8443 8080 9090
ENTRYPOINT ["/usr/local/bin/fiso-operator"]

# The data plane with Wasmer (WASIX apps, `runtime: wasmer` interceptors): the operator injects it
# into pods that select a WasmApp or a Wasmer interceptor (FISO_WASMER_IMAGE).
FROM scratch AS fiso-wasmer
COPY --from=build /out/fiso-wasmer/ /
USER 65532:65532
ENV FISO_CONFIG_DIR=/etc/fiso/flows FISO_METRICS_ADDR=:9090
EXPOSE 8081 3500 9090
ENTRYPOINT ["/usr/local/bin/fiso"]
CMD ["flow"]

FROM scratch AS fiso
COPY --from=build /out/fiso/ /
USER 65532:65532
ENV FISO_CONFIG_DIR=/etc/fiso/flows FISO_METRICS_ADDR=:9090
EXPOSE 8081 3500 9090
ENTRYPOINT ["/usr/local/bin/fiso"]
CMD ["flow"]
