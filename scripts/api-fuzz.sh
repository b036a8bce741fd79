#!/usr/bin/env bash
# Fuzzes the API of a real node from its own OpenAPI document with schemathesis: every check
# but positive_data_acceptance (a schema-valid invite that is not a real invite is rightly a
# 400). Fails on any server error, undocumented status, response that breaks its schema or
# schema-violating request accepted. Needs the debug `volli` binary and the virtualenv that
# scripts/setup.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
bin="${VOLLI_BIN:-$target_dir/debug/volli}"
st="$target_dir/venv/bin/st"
examples="${API_FUZZ_EXAMPLES:-100}"

work="$(mktemp -d)"
cleanup() {
  if [[ -n "${node:-}" ]]; then kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The public rate limit would answer the fuzzer's unauthenticated cases with 429 (documented,
# but it would hide what the handlers do).
cat >"$work/volli.toml" <<CONF
[network]
lan = false
[api]
public_burst = 1000000
public_per_second = 1000000
CONF
VOLLI_PLUGINS_CACHE_DIR="$target_dir/tmp/plugin-cache" "$bin" serve --config "$work/volli.toml" \
  --data-dir "$work/node" --api-listen 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 \
  >"$work/node.log" 2>&1 &
node=$!
for _ in $(seq 1 600); do
  [[ -s "$work/node/api.url" ]] && break
  kill -0 "$node" 2>/dev/null || { cat "$work/node.log" >&2; exit 1; }
  sleep 0.1
done
url="$(cat "$work/node/api.url")"
token="$(cat "$work/node/admin.token")"
echo "==> schemathesis against $url ($examples cases per operation)" >&2
# Its cache of found failures goes in the temporary dir, not in the repository.
cd "$work"
"$st" run "$url/openapi.json" --wait-for-schema 60 \
  -H "Authorization: Bearer $token" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "$examples" --generation-deterministic \
  --report junit --report-junit-path "$target_dir/api-fuzz.xml"
