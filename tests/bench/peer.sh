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
# console logs), docs/bench-peers.md and its plot docs/bench-peers.svg, the
# boot profile's timeline docs/bench-boot-profile.svg and the median boots'
# systemd-analyze plots docs/bench-boot-plot-<configuration>.svg.
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

# A consistent copy of Keel's build: other work may rebuild $build while
# this runs (the boots take half an hour), and every boot must see the same
# image, kernel command line (verity root hash) and initramfs. keel-image
# writes image.json last, so a disk newer than it means a build in progress.
keel=$out/keel
files=(image.json keel.qcow2 keel.img vmlinuz initramfs.img work/tree/usr/share/keel/dpkg-status)
stamp() { (cd "$build" && stat -c '%n %Y %s' "${files[@]}" 2>/dev/null) || true; }
consistent=no
for try in 1 2 3 4 5 6; do
  before=$(stamp)
  if [ -z "$(find "$build" -maxdepth 1 \( -name '*.qcow2' -o -name '*.img' \) -newer "$build/image.json")" ]; then
    rm -rf "$keel"
    mkdir -p "$keel/work/tree/usr/share/keel"
    for f in "${files[@]}"; do
      if [ -e "$build/$f" ]; then cp --sparse=always --preserve=timestamps "$build/$f" "$keel/$f"; fi
    done
    [ "$before" = "$(stamp)" ] && { consistent=yes; break; }
  fi
  echo "peer.sh: $build is being rebuilt (try $try); waiting" >&2
  sleep 30
done
[ $consistent = yes ] || { echo "peer.sh: no consistent copy of $build" >&2; exit 1; }

bash "$top/tests/bench/peer/build-peer.sh" "$keel" "$out/peer"
# A boot that fails is named in the report, and makes this script fail.
rc=0
python3 "$top/tests/bench/peer/bench.py" --build "$keel" --peer "$out/peer" --out "$out/peers" \
  --runs "${KEEL_BENCH_RUNS:-3}" || rc=$?
[ -s "$out/peers/peers.md" ] || exit "$((rc ? rc : 1))"
cp "$out/peers/peers.md" "$out/peers.md"
cp "$out/peers/peers.md" "$top/docs/bench-peers.md"
cp "$out/peers/peers.svg" "$top/docs/bench-peers.svg"
# The boot profile's pictures (issue 21): the timeline of the median boots
# and systemd-analyze plot of each configuration's median boot.
cp "$out/peers/boot-profile.svg" "$top/docs/bench-boot-profile.svg"
for f in "$out"/peers/boot-plot-*.svg; do
  [ -e "$f" ] && cp "$f" "$top/docs/bench-${f##*/}"
done
exit "$rc"
