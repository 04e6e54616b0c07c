# Sourced by scripts/images.sh and bench/stack_check.py's shell steps: podman settings that
# work on these machines (no Docker daemon; cgroups v1 hybrid; no raising of ulimits).
export VTR_IMAGES_CACHE="${VTR_IMAGES_CACHE:-/var/tmp/vtr-images}"
export VTR_BASE_IMAGE="${VTR_BASE_IMAGE:-localhost/debian-py:3.11-bookworm}"
export VTR_SERVER_IMAGE="${VTR_SERVER_IMAGE:-localhost/vtr-prefect-server:3.8.8}"
export VTR_WORKER_IMAGE="${VTR_WORKER_IMAGE:-localhost/vtr-worker:dev}"
export VTR_POSTGRES_IMAGE="${VTR_POSTGRES_IMAGE:-localhost/vtr-postgres:15-bookworm}"
mkdir -p "$VTR_IMAGES_CACHE"
if [ -z "${CONTAINERS_CONF:-}" ]; then
    cat > "$VTR_IMAGES_CACHE/containers.conf" <<'CONF'
[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONF
    export CONTAINERS_CONF="$VTR_IMAGES_CACHE/containers.conf"
fi
