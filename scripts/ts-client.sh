#!/usr/bin/env bash
# The TypeScript client package (clients/typescript/): its npm packages, its build (types
# generated from openapi/openapi.json, then tsc), and its tests against a real node.
#
#   ./scripts/ts-client.sh build   install and build the package (the admin page uses it)
#   ./scripts/ts-client.sh test    build, then its tests against $VOLLI_BIN [default: target/debug/volli]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac

cd clients/typescript
# npm ci is exact (package-lock.json) and needs no network once node_modules matches it.
if ! npm ls --silent >/dev/null 2>&1; then
  echo "==> installing the TypeScript client's npm packages" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build >/dev/null

case "${1:-build}" in
  build) ;;
  test)
    export VOLLI_BIN="${VOLLI_BIN:-$target_dir/debug/volli}"
    [[ -x "$VOLLI_BIN" ]] || { echo "no node binary at $VOLLI_BIN (build it first)" >&2; exit 1; }
    npm test
    ;;
  *)
    echo "usage: $0 build|test" >&2
    exit 2
    ;;
esac
