#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (FUZZ_SECONDS each, default 20). Needs a nightly
# toolchain; installs cargo-fuzz if missing. Exits non-zero on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "==> fuzzing skipped: no nightly toolchain (the parsers' property tests still ran)" >&2
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz
fi
seconds="${FUZZ_SECONDS:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
for target in invite card record certificate wire envelope mdns pairing transfer vault_import; do
  echo "==> fuzz $target for ${seconds}s" >&2
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
done
