#!/usr/bin/env bash
# Keel against its peer (issue 8): first boot to SSH, kernel → switch_root,
# the initramfs phase, multi-user, memory after boot and disk size, for
#   - the peer: Debian 12 + cloud-init with Debian's own initramfs, built
#     here (tests/bench/peer/build-peer.sh), provisioned from a cidata ISO;
#   - Keel's image from $KEEL_BUILD_DIR (read only), provisioned with the
#     same key and hostname from the same cidata ISO, and from Ignition
#     over fw_cfg;
# under identical QEMU settings, KEEL_BENCH_RUNS (default 3) cold first
# boots each (tests/bench/peer/bench.py). Called by `./run bench` with an
# output directory; writes OUT/peers.md, OUT/peers/peers.json (raw data and
# console logs) and docs/bench-peers.md.
#
# Needs root (mmdebstrap --mode=root like keel-image, dropping the page
# cache), and the Debian packages mmdebstrap, genisoimage, fdisk, e2fsprogs,
# qemu-system-x86, qemu-utils, openssh-client (all in ./run's DEBS).
set -euo pipefail
out=${1:-build/bench}
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build=${KEEL_BUILD_DIR:-$top/build}
[ "$(id -u)" = 0 ] || { echo "peer.sh: needs root (mmdebstrap, drop_caches)" >&2; exit 1; }
[ -f "$build/image.json" ] || { echo "peer.sh: no $build/image.json (./run image)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
bash "$top/tests/bench/peer/build-peer.sh" "$build" "$out/peer"
# A boot that fails is named in the report, and makes this script fail.
rc=0
python3 "$top/tests/bench/peer/bench.py" --build "$build" --peer "$out/peer" --out "$out/peers" \
  --runs "${KEEL_BENCH_RUNS:-3}" || rc=$?
[ -s "$out/peers/peers.md" ] || exit "$((rc ? rc : 1))"
cp "$out/peers/peers.md" "$out/peers.md"
cp "$out/peers/peers.md" "$top/docs/bench-peers.md"
exit "$rc"
