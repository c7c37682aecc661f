#!/usr/bin/env bash
# toolbox benchmarks against their peers, measured in the same run (root).
#
#   bench.sh OUTDIR
#
# 1. warm start: `toolbox true` with the image present vs bare
#    `systemd-nspawn … true` with the same options on the same tree;
# 2. cold pull + unpack from a local registry vs `skopeo copy` + `umoci unpack`
#    of the same image;
# 3. cold pull + unpack of the same image with zstd layers: against the
#    gzip one, and against `skopeo copy` + `tar --zstd -x` of each layer
#    (Debian 12's umoci 0.4.7 cannot read zstd layers);
# 4. the static binary's size.
#
# The image is built here from host files (busybox-static and Python's
# stdlib: ~4,000 files, ~55 MB, the shape of a small distribution image),
# pushed to Debian's docker-registry on 127.0.0.1. Writes OUTDIR/toolbox.md.
set -euo pipefail

out=${1:?usage: bench.sh OUTDIR}
mkdir -p "$out"
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (nspawn, owners)" >&2; exit 1; }
for t in docker-registry skopeo umoci systemd-nspawn busybox zstd; do
  command -v "$t" >/dev/null || { echo "bench.sh: $t not installed" >&2; exit 1; }
done

TARGET=x86_64-unknown-linux-musl
target_dir=${CARGO_TARGET_DIR:-$top/target}
(cd "$top" && cargo build --release --target "$TARGET" -p toolbox >&2)
bin=$target_dir/$TARGET/release/toolbox
runs=${TOOLBOX_BENCH_RUNS:-10}
cold_runs=${TOOLBOX_BENCH_COLD_RUNS:-3}

w=$(mktemp -d /var/tmp/toolbox-bench.XXXXXX)
reg_pids=()
cleanup() {
  local p
  for p in "${reg_pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$w"
}
trap cleanup EXIT

# --- the image ---------------------------------------------------------------
mkdir -p "$w/base/bin" "$w/base/etc"
cp /bin/busybox "$w/base/bin/busybox"
for a in sh true cat ls; do ln -s busybox "$w/base/bin/$a"; done
printf 'NAME=toolbox-bench\nID=toolbox-bench\n' > "$w/base/etc/os-release"
py=$(ls -d /usr/lib/python3.[0-9]* | head -n1)
# The OCI layout is written here with GNU tar + gzip (umoci insert produced a
# truncated layer from this tree on Debian 12's umoci 0.4.7).
mkdir -p "$w/layout/blobs/sha256"
echo '{"imageLayoutVersion":"1.0.0"}' > "$w/layout/oci-layout"
layers= diffs=
add_layer() { # tar args...
  tar --numeric-owner -cf "$w/layer.tar" "$@"
  local diff; diff=$(sha256sum < "$w/layer.tar" | cut -d' ' -f1)
  gzip -1 -n < "$w/layer.tar" > "$w/layer.tgz"
  local d; d=$(sha256sum < "$w/layer.tgz" | cut -d' ' -f1)
  mv "$w/layer.tgz" "$w/layout/blobs/sha256/$d"
  rm -f "$w/layer.tar"
  layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$d\",\"size\":$(stat -c %s "$w/layout/blobs/sha256/$d")}"
  diffs+="${diffs:+,}\"sha256:$diff\""
}
blob() { # content -> prints "digest size"
  local d; d=$(printf '%s' "$1" | sha256sum | cut -d' ' -f1)
  printf '%s' "$1" > "$w/layout/blobs/sha256/$d"
  echo "$d ${#1}"
}
add_layer -C / "${py#/}"
add_layer -C "$w/base" .
read -r cd cs < <(blob "{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diffs]}}")
read -r md ms < <(blob "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd\",\"size\":$cs},\"layers\":[$layers]}")
echo "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$md\",\"size\":$ms,\"annotations\":{\"org.opencontainers.image.ref.name\":\"bench\"}}]}" > "$w/layout/index.json"

# --- registries ---------------------------------------------------------------
# Two: one for the gzip image, one for the zstd image. skopeo 1.9 keeps
# compressed layers as they are and, through its blob-info cache, reuses a
# blob the registry already has for the same content (a gzip push after a
# zstd one gets the zstd blobs): the two images live in two registries.
start_registry() { # NAME -> sets $reg_port
  local name=$1
  while :; do
    reg_port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$reg_port") 2>/dev/null || break
  done
  mkdir -p "$w/storage-$name"
  cat > "$w/registry-$name.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $w/storage-$name
http:
  addr: 127.0.0.1:$reg_port
EOF
  docker-registry serve "$w/registry-$name.yml" >"$w/registry-$name.log" 2>&1 &
  reg_pids+=($!)
  for _ in $(seq 100); do
    busybox wget -q -O /dev/null "http://127.0.0.1:$reg_port/v2/" 2>/dev/null && break
    sleep 0.1
  done
}
start_registry gzip; port=$reg_port
start_registry zstd; zport=$reg_port
skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
  "oci:$w/layout:bench" "docker://127.0.0.1:$port/keel/bench:v1"
# zstd from an uncompressed copy (compressed layers are kept as they are).
skopeo --insecure-policy copy --quiet --dest-decompress \
  "oci:$w/layout:bench" "dir:$w/plain"
skopeo --insecure-policy copy --quiet --dest-tls-verify=false --dest-compress-format zstd \
  "dir:$w/plain" "docker://127.0.0.1:$zport/keel/bench:v1"
rm -rf "$w/plain"
layer_types() { skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$1/keel/bench:v1" | grep -o 'layer.v1.tar+[a-z]*' | sort -u | tr '\n' ' '; }
[ "$(layer_types "$port")" = "layer.v1.tar+gzip " ] || { echo "bench.sh: the gzip image has $(layer_types "$port")" >&2; exit 1; }
[ "$(layer_types "$zport")" = "layer.v1.tar+zstd " ] || { echo "bench.sh: the zstd image has $(layer_types "$zport")" >&2; exit 1; }
zst_layers=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$zport/keel/bench:v1" | grep -o 'tar+zstd' | wc -l)

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f", m/1e6}'; }

mkdir -p "$w/home"
export HOME=$w/home
unset SUDO_USER JOURNAL_STREAM
cat > "$HOME/.toolboxrc" <<EOF
TOOLBOX_DOCKER_IMAGE=127.0.0.1:$port/keel/bench
TOOLBOX_DOCKER_TAG=v1
TOOLBOX_DIRECTORY=$w/store
TOOLBOX_NAME=bench
EOF

# --- cold: pull + unpack ------------------------------------------------------
: > "$w/cold-ours"; : > "$w/cold-peer"
for _ in $(seq "$cold_runs"); do
  rm -rf "$w/store" "$w/peer" "$w/bundle"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now); "$bin" pull; t1=$(now)
  echo $((t1 - t0)) >> "$w/cold-ours"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now)
  skopeo --insecure-policy copy --quiet --src-tls-verify=false \
    "docker://127.0.0.1:$port/keel/bench:v1" "oci:$w/peer:v1"
  umoci unpack --image "$w/peer:v1" "$w/bundle" >/dev/null
  t1=$(now)
  echo $((t1 - t0)) >> "$w/cold-peer"
done
cold_ours=$(median < "$w/cold-ours")
cold_peer=$(median < "$w/cold-peer")

# --- cold, zstd layers: toolbox vs skopeo copy + tar --zstd ------------------
# The peer extracts the layers in manifest order with GNU tar (no whiteout
# handling: the bench image has none).
: > "$w/cold-zst"; : > "$w/cold-zst-peer"; : > "$w/cold-zst-peer-sync"
for _ in $(seq "$cold_runs"); do
  rm -rf "$w/store" "$w/peerz" "$w/rootz"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now); "$bin" --image "127.0.0.1:$zport/keel/bench" pull; t1=$(now)
  echo $((t1 - t0)) >> "$w/cold-zst"
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  t0=$(now)
  skopeo --insecure-policy copy --quiet --src-tls-verify=false \
    "docker://127.0.0.1:$zport/keel/bench:v1" "dir:$w/peerz"
  mkdir -p "$w/rootz"
  # manifest.json lists the config digest first, then the layers in order.
  for d in $(grep -o '"digest": *"sha256:[0-9a-f]*"' "$w/peerz/manifest.json" | tail -n +2 | grep -o '[0-9a-f]\{64\}'); do
    tar --zstd --numeric-owner -xf "$w/peerz/$d" -C "$w/rootz"
  done
  t1=$(now)
  echo $((t1 - t0)) >> "$w/cold-zst-peer"
  # toolbox makes the tree durable (syncfs) before it appears under its
  # name; the same durability for the peer, timed apart.
  sync -f "$w/rootz"; t2=$(now)
  echo $((t2 - t0)) >> "$w/cold-zst-peer-sync"
done
cold_zst=$(median < "$w/cold-zst")
cold_zst_peer=$(median < "$w/cold-zst-peer")
cold_zst_peer_sync=$(median < "$w/cold-zst-peer-sync")
zst_bytes=$(du -cb "$w"/peerz/[0-9a-f]* | tail -n1 | cut -f1)
rm -rf "$w/store" "$w/peerz" "$w/rootz"
"$bin" pull >/dev/null 2>&1  # the gzip tree again, for the warm runs

# --- warm: toolbox true vs bare nspawn on the same tree --------------------------
tree=$w/store/bench
"$bin" true  # settle: nspawn creates its mount points once
nspawn_args=(--quiet "--directory=$tree" --capability=all --machine=bench --register=no --keep-unit
  --user=root --console=pipe --as-pid2
  --bind=/:/media/root --bind=/usr:/media/root/usr --bind=/run:/media/root/run)
: > "$w/warm-ours"; : > "$w/warm-peer"
for _ in $(seq "$runs"); do
  t0=$(now); "$bin" true </dev/null; t1=$(now)
  echo $((t1 - t0)) >> "$w/warm-ours"
  t0=$(now); systemd-nspawn "${nspawn_args[@]}" -- true </dev/null; t1=$(now)
  echo $((t1 - t0)) >> "$w/warm-peer"
done
warm_ours=$(median < "$w/warm-ours")
warm_peer=$(median < "$w/warm-peer")

size=$(stat -c %s "$bin")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
files=$(find "$tree" -xdev | wc -l)
mb=$(du -sm "$tree" | cut -f1)

report=$(cat <<EOF
## toolbox

Image: busybox-static + $(basename "$py") stdlib, $files entries, ${mb} MiB unpacked, 2 layers, served by docker-registry on 127.0.0.1 (gzip and zstd images in two registries).
The zstd image is the same tree pushed by \`skopeo copy --dest-compress-format zstd\` ($zst_layers zstd layers, $zst_bytes bytes of blobs); toolbox decodes zstd in pure Rust (ruzstd), the peer's tar runs libzstd's \`zstd -d\`.
Medians of $runs warm / $cold_runs cold runs; page cache dropped before each cold run. Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores.

| measurement | toolbox | peer | ratio | target |
|---|---:|---:|---:|---:|
| warm start: \`toolbox true\` vs \`systemd-nspawn … true\` (ms) | $warm_ours | $warm_peer | $(ratio "$warm_ours" "$warm_peer") | ≤ 1.10 |
| cold pull + unpack vs \`skopeo copy\` + \`umoci unpack\` (ms) | $cold_ours | $cold_peer | $(ratio "$cold_ours" "$cold_peer") | ≤ 1.00 |
| cold pull + unpack, zstd layers vs the same image with gzip layers, both toolbox (ms) | $cold_zst | $cold_ours | $(ratio "$cold_zst" "$cold_ours") | — |
| cold pull + unpack, zstd layers vs \`skopeo copy\` + \`tar --zstd -x\` per layer (ms) | $cold_zst | $cold_zst_peer | $(ratio "$cold_zst" "$cold_zst_peer") | ≤ 1.00 |
| the same, the peer followed by \`sync -f\` of the tree (toolbox's syncfs before install) (ms) | $cold_zst | $cold_zst_peer_sync | $(ratio "$cold_zst" "$cold_zst_peer_sync") | — |
| static binary size (bytes, $TARGET) | $size | 4194304 | $(ratio "$size" 4194304) | ≤ 1.00 |
EOF
)
echo "$report"
echo "$report" > "$out/toolbox.md"
