#!/usr/bin/env bash
# Installs what building and testing Volli needs on a fresh Debian machine with rustup.
# Idempotent: every step checks first, so a second run does nothing.
set -euo pipefail

say() { printf '==> %s\n' "$*" >&2; }

# The Rust components CI checks with.
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    say "installing rustup component ${component}"
    rustup component add "${component}"
  fi
done

# Built-in plugins are WebAssembly components (wasm32-wasip2).
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  say "installing the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi
