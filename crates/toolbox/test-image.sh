#!/usr/bin/env bash
# Build a tiny toolbox image as an OCI archive, for VM tests and offline use:
# busybox-static (from the build host) plus an os-release, one layer.
#
#   test-image.sh OUT.tar [TAG]     (default tag: test)
#
# Use it as TOOLBOX_LOCAL_IMAGE=oci-archive:/oem/toolbox.tar or
# `toolbox --image oci-archive:OUT.tar --tag TAG`. Needs busybox-static,
# GNU tar, gzip, sha256sum; no root, no daemon.
set -euo pipefail
out=${1:?usage: test-image.sh OUT.tar [TAG]}
tag=${2:-test}
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
mkdir -p "$w/root/bin" "$w/root/etc" "$w/root/usr" "$w/root/tmp" "$w/oci/blobs/sha256"
cp /bin/busybox "$w/root/bin/busybox"
for a in sh cat ls true false echo id grep; do ln -s busybox "$w/root/bin/$a"; done
printf 'NAME="Keel toolbox test image"\nID=keel-toolbox-test\n' > "$w/root/etc/os-release"
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$w/root/etc/passwd"
printf 'root:x:0:\n' > "$w/root/etc/group"
chmod 1777 "$w/root/tmp"
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$w/root" -cf "$w/layer.tar" .
diff=$(sha256sum < "$w/layer.tar" | cut -d' ' -f1)
gzip -n -6 < "$w/layer.tar" > "$w/layer.tgz"
ld=$(sha256sum < "$w/layer.tgz" | cut -d' ' -f1)
ls=$(stat -c %s "$w/layer.tgz")
mv "$w/layer.tgz" "$w/oci/blobs/sha256/$ld"
blob() {
  local d; d=$(printf '%s' "$1" | sha256sum | cut -d' ' -f1)
  printf '%s' "$1" > "$w/oci/blobs/sha256/$d"
  echo "$d ${#1}"
}
read -r cd cs < <(blob "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff\"]}}")
read -r md ms < <(blob "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd\",\"size\":$cs},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$ld\",\"size\":$ls}]}")
printf '{"imageLayoutVersion":"1.0.0"}' > "$w/oci/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' "$md" "$ms" "$tag" > "$w/oci/index.json"
tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$w/oci" -cf "$out" oci-layout index.json blobs
echo "$out: oci-archive, tag $tag, manifest sha256:$md"
