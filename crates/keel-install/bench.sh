#!/usr/bin/env bash
# keel-install benchmark (called by `./run bench` with an output directory;
# root): install time of the full disk image from a release tree served by
# nginx on loopback onto a loop device, against its peers on the same data,
# the same device and in the same run:
#   keel-install (verify every chunk, write, read back)   — what ships
#   keel-install --no-verify (no read-back)                — same work as the peers
#   curl URL | zstd -d | dd of=DEV bs=4M conv=fsync        — the issue's peer (target >= 0.9x)
#   dd if=RAW of=DEV bs=4M conv=fsync                      — writing the raw image
# Data: $KEEL_BUILD_DIR's release tree and raw image when built (./run image;
# ./run release), else a synthetic 1 GiB disk (256 MiB of data, the rest
# zeros, like a fresh image) made into a tree by examples/make_tree.rs.
# nginx and the timing come from tests/bench/lib/common.sh (shared with
# keel-update's bench).
# Writes keel-install.md (times and ratios peer/keel: > 1 means keel is faster).
set -euo pipefail
out=${1:-$(mktemp -d)}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$top/target}
build=${KEEL_BUILD_DIR:-$top/build}
mkdir -p "$out"
[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (loop devices)" >&2; exit 1; }
for t in nginx curl zstd dd losetup; do
  command -v $t >/dev/null || { echo "bench.sh: $t missing" >&2; exit 1; }
done
# shellcheck source=../../tests/bench/lib/common.sh
. "$top/tests/bench/lib/common.sh"
target=x86_64-unknown-linux-musl
# KEEL_INSTALL_BIN: an already built binary (skips the build).
bin=${KEEL_INSTALL_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet --target $target -p keel-install
  bin=$CARGO_TARGET_DIR/$target/release/keel-install
fi
work=$(mktemp -d "${TMPDIR:-/var/tmp}/keel-install-bench.XXXXXX")
bench_err=$work/last.err
lo=
cleanup() {
  [ -n "$bench_ngx" ] && kill "$bench_ngx" 2>/dev/null && wait "$bench_ngx" 2>/dev/null
  [ -n "$lo" ] && losetup -d "$lo" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

if [ -f "$build/release/stable/channel.json" ] && [ -f "$build/keel.img" ]; then
  tree=$build/release
  keys=(--keys "$build/dev-update-key")
  raw=$build/keel.img
  what="the built image ($build)"
else
  cargo build --release --quiet -p keel-install --example make_tree
  raw=$work/disk.raw
  truncate -s 1G "$raw"
  # 256 MiB of compressible data (text-like), then zeros.
  python3 -c "
import random,sys
r=random.Random(7); w=sys.stdout.buffer
words=[bytes(r.choice(b'abcdefghijklmnopqrstuvwxyz') for _ in range(r.randint(2,9))) for _ in range(5000)]
n=0
while n < 256<<20:
    b=b' '.join(r.choice(words) for _ in range(20000))+b'\n'; w.write(b); n+=len(b)
" | head -c $((256 << 20)) | dd of="$raw" bs=4M conv=notrunc status=none
  tree=$work/tree
  "$CARGO_TARGET_DIR/release/examples/make_tree" "$raw" "$tree"
  keys=(--key "$tree/key.pub")
  what="a synthetic 1 GiB disk (256 MiB data)"
fi
ver=$(python3 -c "import json;print(json.load(open('$tree/stable/channel.json'))['versions'][-1]['manifest'].split('/')[0])")
zst=$tree/stable/$ver/disk.img.zst
size=$(python3 -c "import json;print(json.load(open('$tree/stable/$ver/manifest.json'))['artifacts']['disk']['size'])")
csize=$(stat -c %s "$zst")

bench_nginx "$tree" "$work"
url=$bench_url

dev_file=$work/target.raw
truncate -s $((size + (64 << 20))) "$dev_file"
lo=$(losetup --find --show "$dev_file")
cat "$zst" > /dev/null   # the compressed file in the page cache for every run
cat "$raw" > /dev/null 2>&1 || true

reset_dev() { dd if=/dev/zero of="$lo" bs=1M count=1 conv=fsync status=none; }

reset_dev; t_ki=$(bench_t "$bin" "$lo" --channel stable --base-url "$url" "${keys[@]}" --yes)
cp "$work/last.err" "$out/keel-install.log"
reset_dev; t_kn=$(bench_t "$bin" "$lo" --channel stable --base-url "$url" "${keys[@]}" --yes --no-verify)
reset_dev; t_cz=$(bench_t bash -c "curl -sf '$url/stable/$ver/disk.img.zst' | zstd -dc | dd of='$lo' bs=4M conv=fsync status=none")
reset_dev; t_dd=$(bench_t dd if="$raw" of="$lo" bs=4M conv=fsync status=none)

r() { bench_ratio "$@"; }
{
  echo "# keel-install"
  echo
  echo "$(date -u +%F), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); data: $what;"
  echo "disk image $((size >> 20)) MiB, $((csize >> 20)) MiB compressed; nginx on loopback; a loop device over a file in ${TMPDIR:-/var/tmp}."
  echo
  echo "| run | seconds | peer / keel-install |"
  echo "|---|---|---|"
  echo "| keel-install (verify, write, read back) | $t_ki | |"
  echo "| keel-install --no-verify | $t_kn | |"
  echo "| curl \\| zstd -d \\| dd | $t_cz | $(r "$t_cz" "$t_ki") (vs --no-verify: $(r "$t_cz" "$t_kn")) |"
  echo "| dd of the raw image | $t_dd | $(r "$t_dd" "$t_ki") (vs --no-verify: $(r "$t_dd" "$t_kn")) |"
  echo
  echo "keel-install's own summary: $(grep '^installed' "$out/keel-install.log" || true)"
} > "$out/keel-install.md"
cat "$out/keel-install.md"
