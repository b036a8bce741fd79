#!/usr/bin/env bash
# The admin page (web-admin/): its npm packages, its type-check against openapi/openapi.json
# (through the TypeScript client package it is built on), its build, and its browser tests.
#
#   ./scripts/web-admin.sh build   regenerate web-admin/dist after changing the page (commit it)
#   ./scripts/web-admin.sh check   type-check, rebuild, and fail if dist/ is not what the sources make
#   ./scripts/web-admin.sh test    browser tests against $VOLLI_BIN [default: target/debug/volli]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac

# The page is built on clients/typescript, whose types come from openapi/openapi.json.
./scripts/ts-client.sh build
cd web-admin
# npm ci is exact (package-lock.json) and needs no network once node_modules matches it.
if ! npm ls --silent >/dev/null 2>&1; then
  echo "==> installing the admin page's npm packages" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

case "${1:-check}" in
  build)
    npm run --silent build
    ;;
  check)
    npm run --silent build
    if ! git diff --quiet -- dist || [[ -n $(git ls-files --others --exclude-standard -- dist) ]]; then
      git --no-pager diff --stat -- dist >&2
      echo "web-admin/dist is not what the sources make: run ./scripts/web-admin.sh build and commit it" >&2
      exit 1
    fi
    ;;
  test)
    # A plugin to install through the page: the SDK's template, as the plugin tests build it.
    wasm_target="$target_dir/wasm-plugins"
    env -u CARGO_TARGET_DIR -u RUSTFLAGS cargo build --quiet --release --target wasm32-wasip2 \
      --manifest-path "$root/sdk/template/Cargo.toml" --target-dir "$wasm_target"
    export PLUGIN_WASM="$wasm_target/wasm32-wasip2/release/static_peers.wasm"
    export VOLLI_BIN="${VOLLI_BIN:-$target_dir/debug/volli}"
    export CHROMIUM="${CHROMIUM:-$(command -v chromium || true)}"
    [[ -x "$VOLLI_BIN" ]] || { echo "no node binary at $VOLLI_BIN (build it first)" >&2; exit 1; }
    [[ -n "$CHROMIUM" ]] || { echo "chromium is not installed (./scripts/setup.sh installs it)" >&2; exit 1; }
    npm test
    ;;
  *)
    echo "usage: $0 build|check|test" >&2
    exit 2
    ;;
esac
