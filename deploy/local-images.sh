#!/usr/bin/env bash
# Images for a machine without a container registry, made from Debian's packages (debootstrap + podman import):
#   localhost/rnnserve-base:bookworm        minbase + python3 (3.11): the BASE_IMAGE, standing in for python:3.11-slim
#   localhost/rnnserve-nginx:bookworm       Debian's nginx 1.22, for NGINX_IMAGE
#   localhost/rnnserve-prometheus:bookworm  Debian's Prometheus 2.42, for PROMETHEUS_IMAGE
# Images that exist are kept (FORCE=1 remakes them). Needs root, debootstrap and podman.
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=${WORK:-/var/tmp/rnnserve-images}
BASE=localhost/rnnserve-base:bookworm
NGINX=localhost/rnnserve-nginx:bookworm
PROMETHEUS=localhost/rnnserve-prometheus:bookworm
mkdir -p "$WORK"

missing() {
  local name
  for name in "$@"; do
    if [[ -n ${FORCE:-} ]] || ! podman image exists "$name"; then return 0; fi
  done
  return 1
}

rootfs() {  # rootfs DIR PACKAGES: a Debian bookworm minbase tree with PACKAGES, as slim images are
  local dir=$1 packages=$2
  rm -rf "$dir"
  if ! debootstrap --variant=minbase --include="$packages" --cache-dir="$WORK/cache-${dir##*/}" bookworm "$dir" \
       "$MIRROR" >"$dir.log" 2>&1; then
    tail -n 20 "$dir.log" >&2
    return 1
  fi
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb \
         "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/* \
         "$dir"/var/log/*.log "$dir"/var/log/apt/*
}

t0=$SECONDS
pids=()
if missing "$BASE"; then
  mkdir -p "$WORK/cache-base"
  rootfs "$WORK/base" python3 & pids+=($!)
fi
if missing "$NGINX" "$PROMETHEUS"; then  # one tree for both: half the time of two
  mkdir -p "$WORK/cache-infra"
  rootfs "$WORK/infra" nginx,prometheus & pids+=($!)
fi
for pid in "${pids[@]}"; do wait "$pid"; done

if [[ -d $WORK/base ]]; then
  tar -C "$WORK/base" -c . | podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >/dev/null
  rm -rf "$WORK/base" "$WORK/base.log"
fi
if [[ -d $WORK/infra ]]; then
  mkdir -p "$WORK/infra/prometheus" && chown 65534:65534 "$WORK/infra/prometheus"  # as in the official image
  tar -C "$WORK/infra" -c . | podman import --change 'CMD ["nginx", "-g", "daemon off;"]' \
    --change 'STOPSIGNAL SIGQUIT' - "$NGINX" >/dev/null
  tar -C "$WORK/infra" -c . | podman import --change 'ENTRYPOINT ["/usr/bin/prometheus"]' --change 'USER 65534' \
    --change 'WORKDIR /prometheus' \
    --change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
    - "$PROMETHEUS" >/dev/null
  rm -rf "$WORK/infra" "$WORK/infra.log"
fi
podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -F -e "$BASE" -e "$NGINX" -e "$PROMETHEUS"
echo "local images ready in $((SECONDS - t0)) s"
