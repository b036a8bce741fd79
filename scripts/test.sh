#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: set-up, formatting, lints, every test.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

echo "==> cargo fmt --check" >&2
cargo fmt --all --check

echo "==> cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> plugins: fmt and clippy (wasm32-wasip2)" >&2
./scripts/lint-plugins.sh

echo "==> fuzz targets (bounded)" >&2
./scripts/fuzz.sh

echo "==> tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked
  cargo test --workspace --doc --locked
else
  cargo test --workspace --locked --no-fail-fast
fi
