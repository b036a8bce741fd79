#!/usr/bin/env bash
# Builds the node of the previous release (tests/fixtures/previous-release/COMMIT) from this
# repository's history, in the same target directory (its dependencies are the same, so only
# the workspace's own crates are compiled), and prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
commit=$(cat tests/fixtures/previous-release/COMMIT)
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$root/$target_dir" ;; esac
dest="$target_dir/previous-release/volli-${commit:0:12}"
if [[ -x "$dest" ]]; then
  echo "$dest"
  exit 0
fi
if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
  echo "this clone's history lacks the previous release $commit (a shallow clone?)" >&2
  exit 1
fi
src="$target_dir/previous-release/src-${commit:0:12}"
rm -rf "$src"
mkdir -p "$src"
git archive "$commit" | tar -x -C "$src"
echo "==> building the previous release's node ($commit)" >&2
(cd "$src" && CARGO_TARGET_DIR="$target_dir" cargo build --locked --quiet --bin volli)
cp "$target_dir/debug/volli" "$dest.part"
mv "$dest.part" "$dest"
# The binary of this tree goes back in its place at its next build (cargo puts a missing
# one back, but never replaces one it believes is its own).
rm -f "$target_dir/debug/volli"
rm -rf "$src"
echo "$dest"
