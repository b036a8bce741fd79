#!/usr/bin/env bash
# Formatting, lints and unit tests for the wasm side: the plugins workspace and the SDK
# template.
# The SDK's kind features are exclusive, so plugins are checked one kind at a time.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}/wasm-plugins"
cargo fmt --manifest-path plugins/Cargo.toml --all --check
cargo fmt --manifest-path sdk/template/Cargo.toml --check

clippy() {
  cargo clippy --locked --release --target wasm32-wasip2 --target-dir "$target_dir" "$@" -- -D warnings
}
clippy --manifest-path plugins/Cargo.toml \
  -p volli-plugin-mdns -p volli-plugin-dht -p volli-plugin-rendezvous -p volli-plugin-invite -p volli-plugin-hostile
clippy --manifest-path plugins/Cargo.toml -p volli-plugin-friends-only
clippy --manifest-path plugins/Cargo.toml -p volli-plugin-fs -p volli-plugin-memory
clippy --manifest-path sdk/template/Cargo.toml

# The plugins' own unit tests (their logic, not their host imports) run natively.
cargo test --locked --manifest-path plugins/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-target}/plugins-native" -p volli-plugin-mdns
