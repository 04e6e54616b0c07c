"""docker/compose.yaml under podman-compose, driven from the host: shared by
scripts/stack_check.py, scripts/stack_load.py and scripts/stack_faults.py.

Everything goes through the compose file (podman-compose 1.0.3 from Debian); where it
lacks a feature the steps are ordered here: 1.0.3 ignores `depends_on` conditions and
profiles, so services are brought up one by one by name and each is waited for (pg_isready,
/api/health, the pools job's exit status, the worker ONLINE in its pool). Flow runs are
created and watched through the server's REST API (the host needs no Prefect); they run
inside the worker containers.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker" / "compose.yaml"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def podman_env() -> dict[str, str]:
    """os.environ plus scripts/podman_env.sh (CONTAINERS_CONF: runc, cgroupfs, no ulimits; image names)."""
    out = subprocess.run(["bash", "-c", f"source {REPO}/scripts/podman_env.sh && env -0"],
                         check=True, capture_output=True).stdout.decode()
    return dict(kv.split("=", 1) for kv in out.split("\0") if "=" in kv)


def sh(cmd: list[str], env: dict | None = None, check: bool = True, timeout: float = 600,
       input: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, input=input)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... exit {res.returncode}: {(res.stderr or res.stdout)[-1500:]}")
    return res


def wait_for(what: str, probe, timeout: float, every: float = 1.0):
    t0 = time.time()
    last = None
    while time.time() - t0 < timeout:
        try:
            val = probe()
            if val:
                return val
        except Exception as e:  # noqa: BLE001 - reported when the wait gives up
            last = e
        time.sleep(every)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s ({last})")


class Stack:
    """One compose project: `podman-compose -p <project> -f docker/compose.yaml`."""

    def __init__(self, project: str, port: int, workers: int = 1, worker_limit: int = 2,
                 extra_compose: str = ""):
        self.project, self.port, self.workers = project, port, workers
        self.env = podman_env()
        self.env.update({
            "VTR_PREFECT_PORT": str(port),
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",
            "POSTGRES_PASSWORD": self.env.get("POSTGRES_PASSWORD") or secrets.token_hex(12),
            "VTR_CPU_WORKER_LIMIT": str(worker_limit),
            "VTR_CPU_THREADS": self.env.get("VTR_CPU_THREADS", "2"),
        })
        self.files = [str(COMPOSE)]
        override = _merge(yaml.safe_load(extra_compose) or {} if extra_compose else {},
                          {"services": {"worker-cpu": {"deploy": {"replicas": workers}}}} if workers > 1 else {})
        if override:  # ONE document: two concatenated `services:` blocks would keep only the last
            path = Path(self.env["VTR_IMAGES_CACHE"]) / f"{project}.override.yaml"
            path.write_text(yaml.safe_dump(override, sort_keys=False))
            self.files.append(str(path))
        self.api_url = f"http://127.0.0.1:{port}/api"

    # ------------------------------------------------------------------ compose
    def compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = ["podman-compose", "-p", self.project]
        for f in self.files:
            cmd += ["-f", f]
        return sh(cmd + list(args), env=self.env, check=check, timeout=timeout)

    def podman(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        return sh(["podman", *args], env=self.env, check=check, timeout=timeout)

    def cname(self, service: str, n: int = 1) -> str:
        return f"{self.project}_{service}_{n}"

    def containers(self) -> list[str]:
        out = self.podman("ps", "-a", "--filter", f"label=io.podman.compose.project={self.project}",
                          "--format", "{{.Names}}").stdout
        return [n for n in out.split() if n]

    def volume_path(self, volume: str) -> Path:
        return Path(self.podman("volume", "inspect", "--format", "{{.Mountpoint}}",
                                f"{self.project}_{volume}").stdout.strip())

    def exec(self, service: str, *cmd: str, n: int = 1, check: bool = True, timeout: float = 600):
        return self.podman("exec", self.cname(service, n), *cmd, check=check, timeout=timeout)

    # --------------------------------------------------------------- lifecycle
    def down(self) -> None:
        self.compose("down", "-v", "-t", "5", check=False, timeout=300)
        for name in self.containers():
            self.podman("rm", "-f", name, check=False)
        vols = self.podman("volume", "ls", "--format", "{{.Name}}", check=False).stdout.split()
        for v in vols:
            if v.startswith(self.project + "_"):
                self.podman("volume", "rm", "-f", v, check=False)
        self.podman("network", "rm", f"{self.project}_default", check=False)  # 1.0.3's down leaves it

    def up_postgres(self) -> None:
        self.compose("up", "-d", "--no-build", "postgres")
        wait_for("postgres", lambda: self.exec("postgres", "pg_isready", "-U", "prefect", "-d", "prefect",
                                               check=False).returncode == 0, 120)

    def up_server(self) -> None:
        try:
            self.api("GET", "/health", timeout=3)
        except OSError:
            pass
        else:
            raise RuntimeError(f"something already answers on 127.0.0.1:{self.port}: not starting a second server")
        self.compose("up", "-d", "--no-build", "--no-deps", "server")
        wait_for("server /api/health", lambda: self.api("GET", "/health") is not None, 240, 2)

    def up_pools(self) -> str:
        self.compose("up", "-d", "--no-build", "--no-deps", "pools")
        rc = self.podman("wait", self.cname("pools"), timeout=300).stdout.strip()
        logs = self.podman("logs", self.cname("pools"), check=False).stdout
        if rc != "0":
            raise RuntimeError(f"pools job exited {rc}: {logs[-800:]}")
        return logs

    def up_workers(self, pool: str = "vtr-local") -> list[dict]:
        self.compose("up", "-d", "--no-build", "--no-deps", "worker-cpu")
        return self.wait_workers(pool, self.workers, 240)

    def wait_workers(self, pool: str, n: int, timeout: float) -> list[dict]:
        def online():
            ws = self.api("POST", f"/work_pools/{pool}/workers/filter", {}) or []
            ws = [w for w in ws if w.get("status") == "ONLINE"]
            return ws if len(ws) >= n else None
        return wait_for(f"{n} worker(s) ONLINE in {pool}", online, timeout, 2)

    def up(self) -> None:
        self.down()
        self.up_postgres()
        self.up_server()
        self.up_pools()
        self.up_workers()

    # --------------------------------------------------------------------- API
    def api(self, method: str, path: str, body=None, timeout: float = 30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
        return json.loads(raw) if raw else {}

    def deploy_all(self) -> list[str]:
        res = self.exec("worker-cpu", "sh", "-c", "cd /app && prefect --no-prompt deploy --all", timeout=600)
        deps = self.api("POST", "/deployments/filter", {}) or []
        names = sorted(d["name"] for d in deps)
        if not names:
            raise RuntimeError("prefect deploy registered nothing: " + res.stdout[-800:])
        return names

    def create_run(self, deployment: str, params: dict | None = None, name: str | None = None) -> str:
        flow, dep = deployment.split("/")
        d = self.api("GET", f"/deployments/name/{flow}/{dep}")
        body = {"parameters": params or {}}
        if name:
            body["name"] = name
        return self.api("POST", f"/deployments/{d['id']}/create_flow_run", body)["id"]

    def run_state(self, run_id: str) -> dict:
        fr = self.api("GET", f"/flow_runs/{run_id}")
        return {"type": (fr.get("state") or {}).get("type"), "name": (fr.get("state") or {}).get("name"),
                "message": (fr.get("state") or {}).get("message"), "run_name": fr.get("name"),
                "run_count": fr.get("run_count")}

    def wait_runs(self, run_ids: list[str], timeout: float, poll: float = 3.0) -> dict[str, dict]:
        done: dict[str, dict] = {}
        t0 = time.time()
        while len(done) < len(run_ids) and time.time() - t0 < timeout:
            for rid in run_ids:
                if rid in done:
                    continue
                try:
                    st = self.run_state(rid)
                except (urllib.error.URLError, OSError, TimeoutError):
                    continue  # the server may be restarting: keep polling
                if st["type"] in TERMINAL:
                    st["seconds"] = round(time.time() - t0, 1)
                    done[rid] = st
            time.sleep(poll)
        for rid in run_ids:
            done.setdefault(rid, {"type": "TIMEOUT", "name": "not finished", "message": "", "seconds": None})
        return done

    def run(self, deployment: str, params: dict | None = None, timeout: float = 900) -> dict:
        rid = self.create_run(deployment, params)
        st = self.wait_runs([rid], timeout)[rid]
        st["id"] = rid
        return st

    def flow_run_logs(self, run_id: str, limit: int = 200) -> list[str]:
        rows = self.api("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": limit,
                                                  "sort": "TIMESTAMP_ASC"}) or []
        return [r.get("message", "") for r in rows]


class MemSampler:
    """Peak memory of containers, sampled with `podman stats` every `every` seconds."""

    def __init__(self, stack: Stack, names: list[str], every: float = 2.0):
        self.stack, self.names, self.every = stack, names, every
        self.peak: dict[str, float] = {n: 0.0 for n in names}
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            res = self.stack.podman("stats", "--no-stream", "--format", "json", *self.names, check=False)
            try:
                for row in json.loads(res.stdout or "[]"):
                    name = row.get("name") or row.get("Name")
                    used = str(row.get("mem_usage") or row.get("MemUsage") or "").split("/")[0].strip()
                    self.peak[name] = max(self.peak.get(name, 0.0), _bytes(used) / 2**20)
            except (ValueError, TypeError):
                pass
            self._stop.wait(self.every)

    def __enter__(self):
        self._th.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._th.join(30)


def _bytes(text: str) -> float:
    units = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "kB": 1e3}
    num = "".join(c for c in text if c.isdigit() or c == ".")
    unit = text[len(num):].strip().lower() or "b"
    return float(num) * units.get(unit, 1) if num else 0.0


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def machine_load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def table(rows: list[tuple], header: tuple) -> str:
    cols = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{c}}}" for c in cols)
    lines = [fmt.format(*header), fmt.format(*("-" * c for c in cols))]
    lines += [fmt.format(*(str(x) for x in r)) for r in rows]
    return "\n".join(lines)


def os_env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}
