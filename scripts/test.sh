#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: set-up, formatting, lints, every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean run builds the dependency set several ways (tests, clippy, fuzzing, wasm plugins);
# incremental caches would add gigabytes to that for nothing a one-shot run reuses.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac

./scripts/setup.sh

echo "==> web admin: type-check against the OpenAPI document, build, compare with dist/" >&2
./scripts/web-admin.sh check

echo "==> cargo fmt --check" >&2
cargo fmt --all --check

echo "==> cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "==> plugins: fmt and clippy (wasm32-wasip2)" >&2
./scripts/lint-plugins.sh

echo "==> fuzz targets (bounded)" >&2
./scripts/fuzz.sh

echo "==> the previous release's node, for the tests that run it beside this one" >&2
VOLLI_PREVIOUS_BIN=$(./scripts/previous-release.sh)
export VOLLI_PREVIOUS_BIN

echo "==> tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
  # The end-to-end tests run the `volli` binary that this same build makes for the node's
  # own integration tests, so it is never built a second time with other features.
  VOLLI_BIN="$target_dir/debug/volli" cargo nextest run --workspace --locked
  cargo test --workspace --doc --locked
  echo "==> API fuzzing (schemathesis)" >&2
  VOLLI_BIN="$target_dir/debug/volli" ./scripts/api-fuzz.sh
  echo "==> TypeScript client against a real node" >&2
  VOLLI_BIN="$target_dir/debug/volli" ./scripts/ts-client.sh test
  echo "==> admin page in Chromium" >&2
  VOLLI_BIN="$target_dir/debug/volli" ./scripts/web-admin.sh test
else
  cargo test --workspace --locked --no-fail-fast
  VOLLI_BIN="$target_dir/debug/volli" ./scripts/ts-client.sh test
  VOLLI_BIN="$target_dir/debug/volli" ./scripts/web-admin.sh test
fi
