#!/usr/bin/env bash
# Runs every test of the workspace, after installing what they need on a fresh machine:
# the wasm32-wasip2 target and a local PostgreSQL server (through .ci/postgres.sh) for the store's
# PostgreSQL half. Extra arguments go to the test runner, e.g. `tests/run.sh -p spindle-store`.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

if [ -z "${SPINDLE_TEST_POSTGRES_URL:-}" ]; then
  SPINDLE_TEST_POSTGRES_URL=$(.ci/postgres.sh)
  export SPINDLE_TEST_POSTGRES_URL
fi

# The plugin SDK's own unit tests run natively, in the plugin workspace's target folder.
locked=()
for arg in "$@"; do [ "$arg" = "--locked" ] && locked=(--locked); done
CARGO_TARGET_DIR=target/wasm-plugins cargo test --manifest-path plugins/Cargo.toml -p spindle-plugin-sdk "${locked[@]}"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
