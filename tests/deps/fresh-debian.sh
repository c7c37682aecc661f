#!/usr/bin/env bash
# The `deps` tier: `./run deps` on a fresh Debian 12 machine, in a container.
#
# A clean bookworm tree (mmdebstrap) that carries a backports qemu-utils, as
# some machines of this project's kind come, boots `./run deps` under
# systemd-nspawn with this checkout and the host's Rust toolchain bound in
# read-only. Then, from outside the container:
#   - deps exited 0 and every tool the build and the tests call is there,
#     qemu-utils replaced by bookworm's in the same transaction (the bug of
#     issue 13: apt removed it and nothing checked);
#   - no unit that the installed packages ship became enabled, peers'
#     services (docker-registry, …) are masked, policy-rc.d is gone;
#   - a tool removed by hand afterwards makes deps fail naming its package.
# The base tree is cached in $KEEL_CACHE_DIR/deps-test (rebuilt when this
# script's recipe changes) and so are the downloaded .debs, so a rerun
# costs the apt transaction only.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cache=${KEEL_CACHE_DIR:-$HOME/.cache/keel}/deps-test
mkdir -p "$cache/archives/partial"

say() { printf '\033[1m[deps test]\033[0m %s\n' "$*" >&2; }
fail() { printf '[deps test] FAIL: %s\n' "$*" >&2; exit 1; }

recipe='bookworm minbase+systemd+ca-certificates, qemu-utils from bookworm-backports, v1'
key=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
base=$cache/base-$key.tar
if [ ! -s "$base" ]; then
  say "building the base tree ($recipe)"
  t0=$(date +%s)
  mmdebstrap --quiet --format=tar --variant=minbase --include=systemd,systemd-sysv,ca-certificates,apt-utils \
    --customize-hook='chroot "$1" apt-get install -y -qq -t bookworm-backports qemu-utils' \
    --customize-hook='printf "deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n" >"$1/etc/apt/sources.list"' \
    bookworm "$base.tmp" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main" \
    "deb http://deb.debian.org/debian bookworm-backports main"
  mv "$base.tmp" "$base"
  say "base tree built in $(( $(date +%s) - t0 )) s"
fi

work=$(mktemp -d /var/tmp/keel-deps-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir "$root"
tar -C "$root" -xf "$base"
grep -q '~bpo12' <(chroot "$root" dpkg-query -W -f='${Version}' qemu-utils) \
  || fail "the base tree should carry a backports qemu-utils"

links() { (cd "$root/etc/systemd/system" && find . -type l | sort); }
links >"$work/links.before"

rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
in_container() {
  systemd-nspawn --quiet --register=no --keep-unit -D "$root" \
    --bind-ro="$top:/src" --bind-ro="$rustup_home:/opt/rustup" --bind-ro="$cargo_home:/opt/cargo" \
    --bind="$cache/archives:/var/cache/apt/archives" \
    --setenv=RUSTUP_HOME=/opt/rustup --setenv=CARGO_HOME=/opt/cargo \
    --setenv=PATH=/opt/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --setenv=KEEL_CACHE_DIR=/var/tmp/keel-cache \
    "$@"
}

say "./run deps in a fresh bookworm container"
t0=$(date +%s)
in_container /src/run deps >"$work/deps.log" 2>&1 || { tail -40 "$work/deps.log" >&2; fail "./run deps failed"; }
say "./run deps took $(( $(date +%s) - t0 )) s"

# Every tool, checked from outside deps' own verification: the list in run.
tools=$(sed -n '/^DEBS=(/,/^)/p' "$top/run" | grep -o '"[^"]*"' | tr -d '"' | awk '{print $2}')
missing=()
for t in $tools; do
  case $t in
    /*) [ -e "$root$t" ] || missing+=("$t") ;;
    *) chroot "$root" sh -c "command -v $t" >/dev/null || missing+=("$t") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] || fail "tools missing after ./run deps: ${missing[*]}"
v=$(chroot "$root" dpkg-query -W -f='${Version}' qemu-utils)
case $v in *bpo*) fail "qemu-utils is still the backports one ($v)" ;; esac
chroot "$root" qemu-img --version >/dev/null || fail "qemu-img does not run"
say "all $(echo $tools | wc -w) tools present; qemu-utils $v"

# No service of a peer package became enabled; peers' services masked.
links >"$work/links.after"
enabled=$(comm -13 "$work/links.before" "$work/links.after" | grep -E '\.(wants|requires)/' || true)
[ -z "$enabled" ] || fail "units enabled by ./run deps: $enabled"
for u in docker-registry.service etcd.service nginx.service; do
  [ "$(readlink "$root/etc/systemd/system/$u")" = /dev/null ] || fail "$u is not masked"
done
[ ! -e "$root/usr/sbin/policy-rc.d" ] || fail "policy-rc.d left behind"
say "no unit enabled; docker-registry, etcd and nginx masked"

# A second run changes nothing and passes; a tool removed by hand is named.
in_container /src/run deps >"$work/deps2.log" 2>&1 || { tail -20 "$work/deps2.log" >&2; fail "second ./run deps failed"; }
grep -q 'installing Debian packages' "$work/deps2.log" && fail "second ./run deps installed again"
rm "$root/usr/bin/umoci"
if in_container /src/run deps >"$work/deps3.log" 2>&1; then fail "./run deps passed without umoci"; fi
grep -q 'umoci (Debian package umoci)' "$work/deps3.log" || { cat "$work/deps3.log" >&2; fail "deps did not name umoci's package"; }
say "rerun is a no-op; a missing tool is named with its package"
echo "deps: 1 passed, 0 failed"
