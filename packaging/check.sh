#!/usr/bin/env bash
# Checks a release tarball as a new user meets it (run by .ci/run): installs it by the
# README's steps into a scratch root, verifies the systemd unit there, and starts the
# installed binary with the packaged configuration. Usage: packaging/check.sh TARBALL
set -euo pipefail
tarball="$(realpath "$1")"
work="$(mktemp -d)"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "package check: $*" >&2; exit 1; }

# The README's install steps, with "/" replaced by a scratch root.
root="$work/root"
mkdir -p "$root"
tar -C "$work" -xzf "$tarball"
dir="$(find "$work" -maxdepth 1 -name 'tessera-*' -type d | head -n1)"
[ -n "$dir" ] || fail "the tarball holds no tessera-VERSION-TARGET directory"
cd "$dir"
install -D -m 0755 bin/tessera "$root/usr/local/bin/tessera"
install -D -m 0644 etc/tessera/tessera.toml "$root/etc/tessera/tessera.toml"
install -D -m 0644 lib/systemd/system/tessera.service "$root/etc/systemd/system/tessera.service"
for file in share/man/man1/tessera.1 share/bash-completion/completions/tessera \
  share/zsh/site-functions/_tessera share/fish/vendor_completions.d/tessera.fish \
  share/doc/tessera/LICENSE share/doc/tessera/README.md share/doc/tessera/CHANGELOG.md; do
  [ -s "$file" ] || fail "$file is missing or empty"
done

# A shipped binary is stripped and small: 32 MiB at most (it is 25.0 MiB since passkeys, whose
# WebAuthn attestation formats bring RSA, P-384 and X.509 parsing).
size=$(stat -c %s bin/tessera)
echo "binary: $size bytes"
[ "$size" -le $((32 * 1024 * 1024)) ] || fail "the binary is $size bytes (more than 32 MiB)"
if file bin/tessera 2>/dev/null | grep -q "not stripped"; then fail "the binary is not stripped"; fi

# The unit: syntax, directives, and that ExecStart names an executable, checked by systemd
# itself. (Not with --root: the scratch root has no sysinit.target and the like.) A copy
# whose ExecStart names the installed binary in the scratch root.
unit="$work/tessera.service"
sed "s#^ExecStart=/usr/local/bin/tessera #ExecStart=$root/usr/local/bin/tessera #" \
  "$root/etc/systemd/system/tessera.service" >"$unit"
grep -q "^ExecStart=$root/usr/local/bin/tessera serve " "$unit" \
  || fail "the unit's ExecStart is not /usr/local/bin/tessera serve"
# verify exits 0 on directives it ignores (a misspelt key, a bad value): any word from it fails.
findings="$(systemd-analyze verify "$unit" 2>&1)" || fail "systemd-analyze verify: $findings"
[ -z "$findings" ] || fail "systemd-analyze verify found: $findings"
echo "unit: systemd-analyze verify passed"

# The installed binary runs with the packaged configuration (as the unit runs it: data from
# TESSERA_DATA, the working directory its state directory).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
state="$work/state"
mkdir -p "$state"
(cd "$state" && TESSERA_DATA="$state" TESSERA_LISTEN="127.0.0.1:$port" \
  TESSERA_ARGON2_MEMORY_KIB=1024 TESSERA_ARGON2_ITERATIONS=1 \
  exec "$root/usr/local/bin/tessera" serve --config "$root/etc/tessera/tessera.toml") \
  2>"$work/serve.log" &
server=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; fail "the server exited"; }
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$work/serve.log" >&2; fail "no answer on /healthz"; }
grep -q 'created user "admin" with password' "$work/serve.log" || fail "no first admin notice"
[ "$(stat -c %a "$state")" = 700 ] || fail "the state directory is not owner-only"
"$root/usr/local/bin/tessera" --version
echo "package check: $(basename "$tarball") passed"
