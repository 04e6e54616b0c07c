#!/usr/bin/env bash
# Build the project's container images on a machine WITHOUT Docker and without a
# base-image registry, with Debian's podman (recipe: docker/README.md, "Podman").
#
#   scripts/images.sh            (make images)   idempotent; ~12 min the first time
#
# 1. A Debian bookworm base image (python3 + venv) from debootstrap, using the Debian
#    mirror that this machine's apt sources name; skipped when the image exists.
# 2. The server and worker images from docker/Dockerfile.*, built FROM that base
#    (build arg PYTHON_IMAGE), in Docker image format (keeps SHELL and HEALTHCHECK),
#    with the host's pip configuration (files and the local folders they name, as
#    `pip config debug` reports them) mounted read-only into every RUN.
# 3. A Postgres image (docker/postgres: Debian's postgresql-15) standing in for
#    postgres:16-bookworm, which cannot be pulled here; compose selects it through
#    VTR_POSTGRES_IMAGE.
# Podman here needs runc (crun: "cgroups in hybrid mode not supported"), cgroupfs and no
# default ulimits: written to $VTR_IMAGES_CACHE/containers.conf; scripts/podman_env.sh
# exports CONTAINERS_CONF for later podman / podman-compose calls.
# Environment: VTR_IMAGES_CACHE (/var/tmp/vtr-images), VTR_BASE_IMAGE, VTR_SERVER_IMAGE,
# VTR_WORKER_IMAGE, VTR_POSTGRES_IMAGE, VTR_IMAGES (subset: "base server worker postgres").
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/podman_env.sh"
cd "$REPO"
WANT="${VTR_IMAGES:-base server worker postgres}"
log() { printf '[images %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
command -v podman >/dev/null || { echo "images: podman is not installed (apt-get install -y podman runc)" >&2; exit 2; }

debian_mirror() {  # the first Debian (not -security) mirror of this machine's apt sources
    python3 - <<'PY'
import glob, re, sys
def stanzas():
    for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")) + ["/etc/apt/sources.list.d/debian.sources"]:
        try:
            text = open(f).read()
        except OSError:
            continue
        for block in re.split(r"\n\s*\n", text):
            kv = dict(re.findall(r"^([A-Za-z-]+):\s*(.+)$", block, re.M))
            if "deb" in kv.get("Types", "").split() and kv.get("Enabled", "yes") != "no":
                yield kv.get("URIs", "").split(), kv.get("Suites", "").split()
    for f in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        try:
            lines = open(f).read().splitlines()
        except OSError:
            continue
        for line in lines:
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                yield [m.group(1)], [m.group(2)]
for uris, suites in stanzas():
    if any(s in ("bookworm", "stable") for s in suites):
        for u in uris:
            if "security" not in u:
                print(u); sys.exit(0)
sys.exit("images: no Debian bookworm mirror in the apt sources")
PY
}

pip_mounts() {  # -v options: the pip config files that exist + local paths they (or PIP_* env) name
    python3 - <<'PY'
import os, re, subprocess
out = subprocess.run(["python3", "-m", "pip", "config", "debug"], capture_output=True, text=True).stdout
paths = set()
for line in out.splitlines():
    m = re.match(r"\s+(/\S+), exists: True", line)
    if m:
        paths.add(m.group(1)); continue
    m = re.match(r"\s+(?:[\w.-]+\.)?(find-links|constraint|requirement|cert|client-cert|extra-index-url|index-url)\s*[:=]\s*(.+)$", line)
    m = m or re.match(r"\s+PIP_(FIND_LINKS|CONSTRAINT|CERT|EXTRA_INDEX_URL|INDEX_URL)='?([^']+)'?$", line)
    if m:
        for v in m.group(2).split():
            v = v.removeprefix("file://").rstrip("/")
            if m.group(1).lower().replace("_", "-").endswith("index-url"):
                v = os.path.dirname(v)  # a local PEP 503 index links to files beside simple/
            if v.startswith("/") and os.path.exists(v):
                paths.add(v)
for p in sorted(paths):
    if os.path.exists(p) and not any(p.startswith(q + "/") for q in paths):
        print(f"-v={p}:{p}:ro")
PY
}

build() {  # build TAG DOCKERFILE CONTEXT [extra args]
    local tag="$1" dockerfile="$2" context="$3"; shift 3
    local t0=$SECONDS mounts=""
    [ "${PIP_MOUNTS:-1}" = 1 ] && mounts="$(pip_mounts)"
    log "building $tag ($dockerfile)"
    # shellcheck disable=SC2046
    podman build --format docker --network=host --layers \
        $mounts -f "$dockerfile" -t "$tag" "$@" "$context"
    log "built $tag in $((SECONDS - t0)) s ($(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1/1e9}'))"
}

if [[ " $WANT " == *" base "* ]] || ! podman image exists "$VTR_BASE_IMAGE"; then
    if podman image exists "$VTR_BASE_IMAGE"; then
        log "base image $VTR_BASE_IMAGE exists (podman rmi it to rebuild)"
    else
        command -v debootstrap >/dev/null || { echo "images: apt-get install -y debootstrap" >&2; exit 2; }
        mirror="$(debian_mirror)"
        tarball="$VTR_IMAGES_CACHE/debian-py-bookworm.tar"
        if [ ! -s "$tarball" ]; then
            rootfs="$VTR_IMAGES_CACHE/rootfs.tmp"
            rm -rf "$rootfs"; mkdir -p "$rootfs"
            log "debootstrap bookworm from $mirror (~2.5 min)"
            debootstrap --variant=minbase \
                --include=python3,python3-venv,python-is-python3,ca-certificates,debian-archive-keyring \
                bookworm "$rootfs" "$mirror" >"$VTR_IMAGES_CACHE/debootstrap.log" 2>&1 \
                || { tail -20 "$VTR_IMAGES_CACHE/debootstrap.log" >&2; exit 1; }
            # the image's apt gets this machine's sources (same mirror, keyring included above)
            rm -f "$rootfs/etc/apt/sources.list"
            for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list; do
                case "$f" in *debian*|*sources.list) [ -s "$f" ] && cp "$f" "$rootfs${f}" ;; esac
            done
            chroot "$rootfs" sh -c 'apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin'
            tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
            rm -rf "$rootfs"
        else
            log "using cached root filesystem $tarball"
        fi
        podman import --change 'CMD ["python3"]' "$tarball" "$VTR_BASE_IMAGE" >/dev/null
        log "base image $VTR_BASE_IMAGE imported"
    fi
fi
if [[ " $WANT " == *" server "* ]]; then
    build "$VTR_SERVER_IMAGE" docker/Dockerfile.server . --build-arg "PYTHON_IMAGE=$VTR_BASE_IMAGE"
fi
if [[ " $WANT " == *" postgres "* ]]; then
    PIP_MOUNTS=0 build "$VTR_POSTGRES_IMAGE" docker/postgres/Dockerfile docker/postgres --build-arg "BASE_IMAGE=$VTR_BASE_IMAGE"
fi
if [[ " $WANT " == *" worker "* ]]; then
    build "$VTR_WORKER_IMAGE" docker/Dockerfile.worker . --build-arg "PYTHON_IMAGE=$VTR_BASE_IMAGE"
fi
podman images --filter reference=vtr-* --filter reference=debian-py 2>/dev/null || podman images
