#!/usr/bin/env bash
# Builds the peer of the boot benchmark (issue 8): Debian 12 with systemd,
# the same kernel package as Keel's image, openssh-server, ifupdown +
# isc-dhcp-client and cloud-init, on an ext4 root, booted with Debian's own
# initramfs (initramfs-tools, as installed by the kernel package).
#
#   build-peer.sh KEEL_BUILD_DIR OUT_DIR
#
# Writes OUT_DIR/peer.qcow2 (GPT, one ext4 partition made with mkfs.ext4 -d,
# no loop devices, no mounts), OUT_DIR/peer.raw, OUT_DIR/vmlinuz,
# OUT_DIR/initrd.img and OUT_DIR/peer.env (ROOT_UUID, KVER, package list).
#
# The Debian tree is built with mmdebstrap the way Keel's own tree is
# (crates/keel-image: --variant=minbase, no Recommends, the same three
# mirrors), so the two systems differ by what they do at boot, not by how
# their packages were picked. The tree is cached in $KEEL_CACHE_DIR/peer,
# keyed by the mirror list, the package list (with the pinned kernel) and
# this script's tree hooks; downloads go to $KEEL_CACHE_DIR/peer/debs (Keel's
# own download cache is read, never written).
set -euo pipefail
build=${1:?usage: build-peer.sh KEEL_BUILD_DIR OUT_DIR}
out=${2:?usage: build-peer.sh KEEL_BUILD_DIR OUT_DIR}
cache=${KEEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keel}
mkdir -p "$out" "$cache/peer/debs"
say() { printf 'peer: %s\n' "$*" >&2; }

# --- the kernel: the very package Keel's image carries -----------------------
kver=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kernel_release"])' "$build/image.json")
kpkg=linux-image-$kver
kpin=
# keel-image keeps the tree's dpkg status as /usr/share/keel/dpkg-status.
for status in "$build/work/tree/usr/share/keel/dpkg-status" "$build/work/tree/var/lib/dpkg/status"; do
  [ -f "$status" ] && break
done
if [ -f "$status" ]; then
  kpin=$(awk -v p="$kpkg" '$1=="Package:" {cur=$2} cur==p && $1=="Version:" {print $2; exit}' "$status")
fi
kernel=$kpkg${kpin:+=$kpin}
say "kernel: $kernel (from $build)"

# --- package list -----------------------------------------------------------
# The issue's list (systemd, openssh-server, ifupdown + isc-dhcp-client,
# cloud-init) plus what a stock Debian boot of it needs: initramfs-tools
# with its recommended busybox and zstd (Debian's default initramfs is a
# zstd cpio with busybox), e2fsprogs for fsck and cloud-init's resize, sudo
# for the sudo rule cloud-init writes, and the same small tools Keel has
# (iproute2, procps, kmod, less, ca-certificates, dbus, libpam-systemd).
packages=(
  "$kernel" systemd systemd-sysv udev dbus libpam-systemd
  openssh-server ifupdown isc-dhcp-client cloud-init
  initramfs-tools busybox zstd e2fsprogs
  sudo iproute2 procps kmod less ca-certificates
)
mirrors=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
# The root file system's UUID: fixed, so that the cached tree's fstab and
# initramfs (whose fsck hook reads fstab) match every disk made from it.
uuid=8c3e6a7e-2d4b-4f0e-9a51-6b1f0c0de0a1
# Hooks run inside the tree after the packages are installed. They only do
# what an installer does: fstab, a loopback-only /etc/network/interfaces
# that sources interfaces.d (where cloud-init's fallback DHCP config goes),
# no machine-id (first boot, like a cloud image), and the initramfs rebuilt
# now that fstab names the root file system, as on an installed system.
# initramfs-tools finds the root's type for its fsck hook by probing the
# device, which does not exist here; FSTYPE=ext4 tells it what the probe
# would find on the installed machine, so the initramfs checks the root
# file system the way Debian's does. The locale is the installer's default
# (en_US.UTF-8 generated and set); without it cloud-init's locale module
# fails on a fresh tree and leaves the system degraded.
hook='set -e
sed -i "s/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/" "$1/etc/locale.gen"
chroot "$1" locale-gen
echo LANG=en_US.UTF-8 > "$1/etc/default/locale"
printf "UUID='"$uuid"' / ext4 errors=remount-ro 0 1\n" > "$1/etc/fstab"
echo FSTYPE=ext4 > "$1/etc/initramfs-tools/conf.d/fstype"
mkdir -p "$1/etc/network/interfaces.d"
printf "%s\n" "# The loopback network interface" "auto lo" "iface lo inet loopback" "" "source /etc/network/interfaces.d/*" > "$1/etc/network/interfaces"
echo localhost > "$1/etc/hostname"
printf "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n" > "$1/etc/hosts"
: > "$1/etc/machine-id"
rm -f "$1/var/lib/dbus/machine-id"
chroot "$1" update-initramfs -u -k all'
key=$(printf '%s\n' peer-tree-v1 "${mirrors[@]}" "$(printf '%s\n' "${packages[@]}" | sort)" "$hook" | sha256sum | cut -c1-24)
tarball=$cache/peer/tree-$key.tar
if [ -f "$tarball" ]; then
  say "tree cached: $tarball"
else
  say "building the Debian tree (mmdebstrap, cache key $key)"
  extra=()
  [ -d "$cache/debs" ] && extra+=(--setup-hook="find '$cache/debs' -name '*.deb' -exec cp -t \"\$1\"/var/cache/apt/archives/ {} +")
  mmdebstrap --variant=minbase --mode=root --format=tar --skip=download/empty \
    --include="$(IFS=,; echo "${packages[*]}")" \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives' \
    --setup-hook="find '$cache/peer/debs' -name '*.deb' -exec cp -t \"\$1\"/var/cache/apt/archives/ {} +" \
    "${extra[@]}" \
    --customize-hook="sync-out /var/cache/apt/archives '$cache/peer/debs'" \
    --customize-hook="$hook" \
    bookworm "$tarball.part" "${mirrors[@]}"
  mv "$tarball.part" "$tarball"
fi

# --- the disk: GPT, one ext4 partition, same virtual size as Keel's ---------
tree=$out/tree
rm -rf "$tree" "$out/peer.raw" "$out/peer.qcow2"
mkdir -p "$tree"
tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$tarball" -C "$tree"
vsize=$(qemu-img info --output=json "$build/keel.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
truncate -s "$vsize" "$out/peer.raw"
printf 'label: gpt\nstart=2048, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root\n' | sfdisk -q "$out/peer.raw"
start=$(sfdisk -J "$out/peer.raw" | python3 -c 'import json,sys; p=json.load(sys.stdin)["partitiontable"]["partitions"][0]; print(p["start"], p["size"])')
read -r pstart psize <<<"$start"
# mke2fs writes the file system straight into the partition (-E offset):
# Debian's defaults from /etc/mke2fs.conf, the tree copied in with -d.
mkfs.ext4 -q -F -L root -U "$uuid" -E offset=$((pstart * 512)) -d "$tree" "$out/peer.raw" "$((psize / 2))k"
qemu-img convert -f raw -O qcow2 "$out/peer.raw" "$out/peer.qcow2"
initrd=$(ls "$tree"/boot/initrd.img-"$kver")
cp "$tree/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$initrd" "$out/initrd.img"
{
  echo "ROOT_UUID=$uuid"
  echo "KVER=$kver"
  echo "KERNEL_PACKAGE=$kernel"
  echo "TREE_KEY=$key"
  echo "PACKAGES=\"${packages[*]}\""
  echo "CLOUD_INIT=$(awk '$1=="Package:" {cur=$2} cur=="cloud-init" && $1=="Version:" {print $2; exit}' "$tree/var/lib/dpkg/status")"
  echo "SYSTEMD=$(awk '$1=="Package:" {cur=$2} cur=="systemd" && $1=="Version:" {print $2; exit}' "$tree/var/lib/dpkg/status")"
  echo "TREE_BYTES=$(du -sb "$tree" | cut -f1)"
} > "$out/peer.env"
rm -rf "$tree"
say "disk: $out/peer.qcow2 ($(stat -c %s "$out/peer.qcow2") bytes), initrd $(stat -c %s "$out/initrd.img") bytes"
