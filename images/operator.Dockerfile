# The operator: one static-ish binary on distroless, non-root.
# Build from the repository root: docker build -f images/operator.Dockerfile -t bottle-operator/operator:dev .
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin bottle-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/bottle-operator /usr/local/bin/bottle-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/bottle-operator"]
