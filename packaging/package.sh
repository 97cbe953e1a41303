#!/usr/bin/env bash
# Builds the release tarball: dist/tessera-VERSION-TARGET.tar.gz with the stripped binary, the
# systemd unit, a configuration to start from, shell completions, the man page, README,
# CHANGELOG and LICENSE. Usage: packaging/package.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/tessera-target}"

cargo build --release --locked -p tessera
bin="$CARGO_TARGET_DIR/release/tessera"
version="$("$bin" --version | awk '{print $2}')"
target="$(rustc -vV | sed -n 's/^host: //p')"
name="tessera-$version-$target"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"

install -D -m 0755 "$bin" "$root/bin/tessera"
install -D -m 0644 packaging/tessera.service "$root/lib/systemd/system/tessera.service"
install -D -m 0644 packaging/tessera.toml "$root/etc/tessera/tessera.toml"
install -D -m 0644 README.md "$root/share/doc/tessera/README.md"
install -D -m 0644 CHANGELOG.md "$root/share/doc/tessera/CHANGELOG.md"
install -D -m 0644 LICENSE "$root/share/doc/tessera/LICENSE"
"$bin" generate man >"$stage/tessera.1"
install -D -m 0644 "$stage/tessera.1" "$root/share/man/man1/tessera.1"
for shell in bash zsh fish; do
  "$bin" generate completions "$shell" >"$stage/completion.$shell"
done
install -D -m 0644 "$stage/completion.bash" "$root/share/bash-completion/completions/tessera"
install -D -m 0644 "$stage/completion.zsh" "$root/share/zsh/site-functions/_tessera"
install -D -m 0644 "$stage/completion.fish" "$root/share/fish/vendor_completions.d/tessera.fish"

mkdir -p "$out"
tar -C "$stage" --owner=0 --group=0 --numeric-owner -czf "$out/$name.tar.gz" "$name"
echo "$out/$name.tar.gz"
