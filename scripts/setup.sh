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

# API fuzzing (scripts/api-fuzz.sh) runs schemathesis from a virtualenv in the target dir.
target_dir="${CARGO_TARGET_DIR:-target}"
venv="$target_dir/venv"
schemathesis_version="4.32.5"
if ! "$venv/bin/st" --version 2>/dev/null | grep -q "$schemathesis_version"; then
  say "installing schemathesis $schemathesis_version (API fuzzing) in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

# Partition and NAT tests cut links between network namespaces and build home routers with
# nftables; the UPnP router in the NAT tests is Debian's miniupnpd (nftables flavour). Its
# package would start a system daemon and ask questions on install: neither happens here.
# Their delay lines (a few ms between a home and the internet) run on python3.
net_missing=()
command -v nft >/dev/null 2>&1 || net_missing+=(nftables)
command -v python3 >/dev/null 2>&1 || net_missing+=(python3)
[[ -x /usr/sbin/miniupnpd ]] || net_missing+=(miniupnpd-nftables)
if [[ ${#net_missing[@]} -gt 0 ]] && command -v apt-get >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]]; then
    say "installing ${net_missing[*]} (partition and NAT tests)"
    no_start=/usr/sbin/policy-rc.d
    had_policy=0
    [[ -e $no_start ]] && had_policy=1
    [[ $had_policy -eq 1 ]] || { printf '#!/bin/sh\nexit 101\n' >"$no_start"; chmod +x "$no_start"; }
    install_net() {
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${net_missing[@]}" >/dev/null
    }
    install_net || { apt-get update -qq >/dev/null && install_net; }
    [[ $had_policy -eq 1 ]] || rm -f "$no_start"
    # The tests start their own daemons in their own namespaces.
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now miniupnpd >/dev/null 2>&1 || true; fi
  else
    say "missing ${net_missing[*]} and this is not root: the partition and NAT tests will be skipped"
  fi
fi

# The admin page's browser tests drive Debian's Chromium (browsers cannot be downloaded here);
# its build needs Node.js and npm.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing[*]} (admin page build and browser tests)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }
  else
    say "missing ${missing[*]}: install them (the admin page's checks need them)"
    exit 1
  fi
fi
