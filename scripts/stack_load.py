#!/usr/bin/env python3
"""Load on the compose stack: 3 CPU workers, 24 small flow runs submitted at once, Postgres-backed
server vs the same server image on SQLite (side by side, same worker containers).

    flock /tmp/vtr-heavy.lock .venv/bin/python scripts/stack_load.py [--backend postgres|sqlite|both]

The 24 runs: 12 builds of 8 generated videos, each into its own data and output root
(data/lb<i>, out/lb<i>), 6 trainings (1 epoch, own run folders), 3 evaluations and 3 index builds
(own index folders) of a checkpoint made beforehand (setup, not timed). Checks: every run
Completed, exactly 24 runs exist for the submission (none lost, none duplicated), each ran once,
no database lock / connection errors in the server log. Records runs/minute and the peak memory
of the server (and Postgres) containers. Log: bench/results/stack-load-<date>.txt.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_lib import REPO, MemSampler, Stack, machine_load, table  # noqa: E402

SQLITE_OVERRIDE = """services:
  server:
    environment:
      PREFECT_API_DATABASE_CONNECTION_URL: sqlite+aiosqlite:////data/prefect/prefect.db
"""
DB_ERRORS = re.compile(r"database is locked|OperationalError|too many connections|ConnectionRefused|"
                       r"connection (?:was )?closed|InterfaceError|TimeoutError|QueuePool limit", re.I)
BASE_CKPT = "runs/hanet/load-base/best.pt"


def build_params(name: str) -> dict:
    return {"dataset": name, "dataset_root": f"data/{name}/videos", "annotation": f"data/{name}/annotation.json",
            "generate_sample": 8}


def setup(st: Stack, pool_limit: int) -> None:
    st.api("PATCH", "/work_pools/vtr-local", {"concurrency_limit": pool_limit})
    st.deploy_all()
    for dep, params in (("build-features/build-sample-features", build_params("load-base")),
                        ("train/train-hanet", {"dataset": "load-base", "epochs": 1, "run_name": "load-base"})):
        res = st.run(dep, params, 900)
        if res["type"] != "COMPLETED":
            raise RuntimeError(f"setup {dep}: {res}")


def submissions() -> list[tuple[str, dict]]:
    subs = [("build-features/build-sample-features", build_params(f"lb{i}")) for i in range(12)]
    subs += [("train/train-hanet", {"dataset": "load-base", "epochs": 1, "run_name": f"load-t{i}"})
             for i in range(6)]
    subs += [("evaluate/evaluate-hanet", {"dataset": "load-base", "checkpoint": BASE_CKPT}) for _ in range(3)]
    subs += [("build-index/build-index", {"dataset": "load-base", "checkpoint": BASE_CKPT,
                                          "index_dir": f"runs/hanet/load-base/index-{i}"}) for i in range(3)]
    return subs


def count_runs(st: Stack, since: str) -> int:
    runs = st.api("POST", "/flow_runs/filter", {"flow_runs": {"expected_start_time": {"after_": since},
                                                               "parent_task_run_id": {"is_null_": True}},
                                                 "limit": 200}) or []
    return len([r for r in runs if r.get("deployment_id")])


def load(backend: str, port: int, pool_limit: int, worker_limit: int) -> dict:
    st = Stack(f"vtr-load-{backend}", port, workers=3, worker_limit=worker_limit,
               extra_compose=SQLITE_OVERRIDE if backend == "sqlite" else "")
    out: dict = {"backend": backend}
    try:
        st.down()
        if backend == "postgres":
            st.up_postgres()
        st.up_server()
        st.up_pools()
        st.up_workers()
        setup(st, pool_limit)
        watch = [st.cname("server")] + ([st.cname("postgres")] if backend == "postgres" else [])
        since = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 5))
        with MemSampler(st, watch) as mem:
            t0 = time.time()
            ids = [st.create_run(dep, params) for dep, params in submissions()]
            states = st.wait_runs(ids, 3600, poll=5)
            wall = max((s["seconds"] or 0) for s in states.values()) or (time.time() - t0)
        log = st.podman("logs", st.cname("server"), check=False)
        errors = [ln for ln in (log.stdout + log.stderr).splitlines() if DB_ERRORS.search(ln)]
        kinds: dict[str, int] = {}
        for s in states.values():
            kinds[s["name"]] = kinds.get(s["name"], 0) + 1
        reruns = sum(1 for rid in ids if (st.api("GET", f"/flow_runs/{rid}").get("run_count") or 0) > 1)
        out.update(submitted=len(ids), states=kinds, runs_in_db=count_runs(st, since), reruns=reruns,
                   wall_s=round(wall, 1), runs_per_min=round(len(ids) / wall * 60, 2),
                   peak_mib={k.removeprefix(st.project + "_"): round(v) for k, v in mem.peak.items()},
                   db_errors=len(errors), db_error_lines=errors[:5])
        out["ok"] = (kinds == {"Completed": len(ids)} and out["runs_in_db"] == len(ids) and not errors
                     and reruns == 0)
    except Exception as e:  # noqa: BLE001 - recorded in the log
        out.update(ok=False, error=f"{type(e).__name__}: {e}")
    finally:
        st.down()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    ap.add_argument("--pool-limit", type=int, default=4, help="work pool concurrency limit (flow runs at once)")
    ap.add_argument("--worker-limit", type=int, default=2, help="flow runs at once per worker")
    ap.add_argument("--log", default=str(REPO / "bench" / "results" / f"stack-load-{time.strftime('%Y-%m-%d')}.txt"))
    args = ap.parse_args()
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    ports = {"postgres": 4393, "sqlite": 4391}
    lines = [f"stack-load {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}: 3 worker containers "
             f"(--limit {args.worker_limit} each), pool concurrency limit {args.pool_limit}, 24 flow runs "
             f"submitted at once (12 builds of 8 videos, 6 trains, 3 evaluates, 3 index builds)",
             f"load before: {machine_load()}"]
    results = []
    for b in backends:
        r = load(b, ports[b], args.pool_limit, args.worker_limit)
        results.append(r)
        lines.append(f"{b}: {r}")
        print(lines[-1], flush=True)
    lines.append(f"load after:  {machine_load()}")
    rows = [(r["backend"], r.get("states"), r.get("runs_in_db"), r.get("reruns"), r.get("wall_s"),
             r.get("runs_per_min"), r.get("peak_mib"), r.get("db_errors"), "PASS" if r.get("ok") else "FAIL")
            for r in results]
    lines += ["", table(rows, ("server db", "final states", "runs in db", "reruns", "wall s", "runs/min",
                               "peak MiB", "db errors", "result"))]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.log).write_text(text)
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
