#!/usr/bin/env bash
# Builds the Debian package (target/debian/volli_<version>_<arch>.deb): the release binary,
# the hardened systemd unit (packaging/volli.service, Type=notify), a `volli` system user and
# /etc/volli/volli.toml. Installs cargo-deb from crates.io if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo_deb_version="3.8.0"
if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
  echo "==> installing cargo-deb $cargo_deb_version" >&2
  cargo install --locked --quiet cargo-deb --version "$cargo_deb_version"
fi
cargo deb -p volli-node --locked "$@"
