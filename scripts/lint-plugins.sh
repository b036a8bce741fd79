#!/usr/bin/env bash
# Formatting and lints for the wasm side: the plugins workspace and the SDK template.
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
