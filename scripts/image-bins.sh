#!/usr/bin/env bash
# Sourced by scripts/up.sh and scripts/test.sh: builds this checkout's binaries for the images
# images/build.sh makes, and exports SIDECAR_BIN and OPERATOR_BIN for it. Debug builds: the
# local node and the tests need what the binaries do, not their speed, and release builds of
# both would add ~15 minutes to a cold run (images/build.sh alone builds release). The
# sidecar is built without the operator feature, as its Dockerfile builds it; copies, since a
# later `cargo test` rebuilds target/debug/bottle-sidecar with the default features.
bins="$PWD/target/image-bins"
mkdir -p "$bins"
cargo build --locked --quiet --no-default-features --bin bottle-sidecar
cp -f target/debug/bottle-sidecar "$bins/bottle-sidecar"
cargo build --locked --quiet --bin bottle-operator
cp -f target/debug/bottle-operator "$bins/bottle-operator"
export SIDECAR_BIN="$bins/bottle-sidecar" OPERATOR_BIN="$bins/bottle-operator"
