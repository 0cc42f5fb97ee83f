#!/usr/bin/env bash
# `make cuda-check`: builds the CUDA binaries and runs the test suite against them with
# runtime.device = "auto", proving that the build compiles, links, starts and, where no GPU
# answers, falls back to the CPU. Also run by CI, which has no GPU. The toolkit and the
# driver library it builds with: crates/bench/cuda-env.sh.
set -euo pipefail
source "$(dirname "$0")/cuda-env.sh"
cargo build --release --locked --workspace $CARGO_FLAGS
# The suite as `make test` runs it; pipeline.toml and the tests' configs leave
# runtime.device at its default, "auto".
cargo test --release --locked --workspace $CARGO_FLAGS
