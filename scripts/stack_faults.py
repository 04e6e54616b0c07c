#!/usr/bin/env python3
"""Faults on the compose stack (Postgres-backed server, one CPU worker), each with what the user
sees (the flow run's final state and message) and what is on disk afterwards.

    flock /tmp/vtr-heavy.lock .venv/bin/python scripts/stack_faults.py

1. SIGKILL the worker container in the middle of a build; then rerun the same build: every
   feature array must be bit-identical to an uninterrupted build of the same videos.
2. Restart the server container in the middle of a build.
3. Restart the Postgres container in the middle of a build.
4. Fill the output volume (a size-limited tmpfs volume `vtr-out-small` at /app/out-small, added by
   an override file, filled with a ballast file) before a build into it: a clear failure, nothing
   half-written committed; after freeing space the rerun completes.
Log: bench/results/stack-faults-<date>.txt.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_lib import REPO, Stack, machine_load, table, wait_for  # noqa: E402

BUILD = "build-features/build-sample-features"
N_VIDEOS = 24
OUT_VOLUME_MB = 64
SMALL_OUT = """services:
  worker-cpu:
    volumes:
      - vtr-out-small:/app/out-small
volumes:
  vtr-out-small:
"""


def params(dataset: str, out_root: str = "out") -> dict:
    return {"dataset": dataset, "dataset_root": "data/fsrc/videos", "annotation": "data/fsrc/annotation.json",
            "generate_sample": N_VIDEOS, "out_root": out_root}


def wait_running(st: Stack, rid: str, extra: float, out: Path | None = None) -> float:
    """Seconds until the run is RUNNING and (when `out` is given) has committed a first stage file."""
    t0 = time.time()
    wait_for("run RUNNING", lambda: st.run_state(rid)["type"] == "RUNNING", 600, 0.5)
    if out is not None:
        wait_for("a first committed stage", lambda: any((out / "_stages").glob("**/*")), 300, 0.5)
    time.sleep(extra)
    return time.time() - t0


def disk_report(root: Path) -> dict:
    import h5py
    import pyarrow.parquet as pq

    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    tmp = [str(p.relative_to(root)) for p in files if ".tmp-" in p.name]
    bad = []
    for p in files:
        try:
            if p.suffix == ".h5":
                with h5py.File(p, "r") as f:
                    f.visititems(lambda _n, o: o[()] if isinstance(o, h5py.Dataset) else None)
            elif p.suffix == ".parquet":
                pq.read_table(p)
        except Exception as e:  # noqa: BLE001 - a file that does not read is the finding
            bad.append(f"{p.relative_to(root)}: {type(e).__name__}")
    return {"files": len(files), "h5": sum(p.suffix == ".h5" for p in files), "tmp_left": tmp, "unreadable": bad}


def arrays(root: Path) -> dict[str, bytes]:
    import h5py

    out = {}
    for p in sorted((root / "features").rglob("*.h5")):
        with h5py.File(p, "r") as f:
            def visit(name, obj, rel=str(p.relative_to(root))):
                if isinstance(obj, h5py.Dataset):
                    out[f"{rel}:{name}"] = obj[()].tobytes()
            f.visititems(visit)
    return out


def same_arrays(a: Path, b: Path) -> str:
    x, y = arrays(a), arrays(b)
    if not x:
        return "no feature arrays"
    if x.keys() != y.keys():
        return f"different array sets ({len(x)} vs {len(y)})"
    diff = [k for k in x if x[k] != y[k]]
    return f"{len(x)} arrays bit-identical" if not diff else f"{len(diff)}/{len(x)} arrays differ"


def state_line(st: Stack, rid: str) -> str:
    s = st.run_state(rid)
    return f"{s['name']}: {(s['message'] or '')[:160]}"


def fault_kill(st: Stack, out: Path) -> dict:
    ref = st.run(BUILD, params("fref"), 1200)
    if ref["type"] != "COMPLETED":
        raise RuntimeError(f"reference build: {ref}")
    rid = st.create_run(BUILD, params("fkill"))
    t_kill = wait_running(st, rid, 3.0, out / "fkill")
    st.podman("kill", "--signal", "KILL", st.cname("worker-cpu"))
    seen, t0, to_final = [], time.time(), None
    while time.time() - t0 < 300:
        s = st.run_state(rid)["name"]
        if not seen or seen[-1] != s:
            seen.append(s)
        if st.run_state(rid)["type"] in {"CRASHED", "FAILED", "COMPLETED", "CANCELLED"}:
            to_final = round(time.time() - t0)
            break
        time.sleep(5)
    worker = st.podman("inspect", "--format", "{{.State.Status}} restarts={{.RestartCount}}",
                       st.cname("worker-cpu"), check=False).stdout.strip()
    after_kill = disk_report(out / "fkill")
    if worker.split()[0] != "running":
        st.podman("start", st.cname("worker-cpu"))
    st.wait_workers("vtr-local", 1, 240)
    rerun = st.run(BUILD, params("fkill"), 1200)
    return {"fault": "SIGKILL worker container mid-build",
            "killed_after_s": round(t_kill, 1), "states_seen_5min": " -> ".join(seen),
            "kill_to_final_state_s": to_final,
            "user_sees": state_line(st, rid), "worker_container": worker,
            "disk_after_kill": after_kill, "rerun": rerun["name"],
            "vs_uninterrupted": same_arrays(out / "fref", out / "fkill"),
            "disk_after_rerun": disk_report(out / "fkill")}


def fault_restart(st: Stack, out: Path, service: str, dataset: str) -> dict:
    rid = st.create_run(BUILD, params(dataset))
    t_at = wait_running(st, rid, 5.0, out / dataset)
    t0 = time.time()
    st.podman("restart", "-t", "10", st.cname(service))
    restart_s = time.time() - t0
    wait_for("API healthy again", lambda: st.api("GET", "/health") is not None, 300, 1)
    back = time.time() - t0
    final = st.wait_runs([rid], 1200)[rid]
    return {"fault": f"restart {service} container mid-build", "restarted_after_s": round(t_at, 1),
            "restart_s": round(restart_s, 1), "api_back_after_s": round(back, 1), "user_sees": state_line(st, rid),
            "final": final["name"], "vs_uninterrupted": same_arrays(out / "fref", out / dataset),
            "disk": disk_report(out / dataset)}


def fault_fill(st: Stack, out: Path) -> dict:
    small = st.volume_path("vtr-out-small")
    free = int(st.exec("worker-cpu", "sh", "-c", "df -B1 --output=avail /app/out-small | tail -1").stdout)
    leave = 256 * 1024
    st.exec("worker-cpu", "sh", "-c", f"head -c {free - leave} /dev/zero > /app/out-small/ballast", check=False)
    left = st.exec("worker-cpu", "sh", "-c", "df -B1 --output=avail /app/out-small | tail -1").stdout.strip()
    res = st.run(BUILD, params("ffill", "out-small"), 1200)
    logs = [ln[:300] for ln in st.flow_run_logs(res["id"], 200) if "space" in ln.lower() or "Error" in ln]
    disk = disk_report(small / "ffill")
    st.exec("worker-cpu", "rm", "-f", "/app/out-small/ballast")
    rerun = st.run(BUILD, params("ffill", "out-small"), 1200)
    return {"fault": f"output volume full ({OUT_VOLUME_MB} MiB tmpfs volume, {left} bytes left)",
            "user_sees": f"{res['name']}: {(res['message'] or '')[:200]}", "log_lines": logs[:3],
            "disk_when_full": disk, "rerun_after_freeing": rerun["name"],
            "vs_uninterrupted": same_arrays(out / "fref", small / "ffill"),
            "disk_after_rerun": disk_report(small / "ffill")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="kill,server,postgres,fill")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--log", default=str(REPO / "bench" / "results" / f"stack-faults-{time.strftime('%Y-%m-%d')}.txt"))
    args = ap.parse_args()
    st = Stack("vtr-faults", 4394, workers=1, worker_limit=1, extra_compose=SMALL_OUT)
    lines = [f"stack-faults {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}: compose project {st.project}, "
             f"Postgres-backed server, 1 CPU worker; builds of {N_VIDEOS} generated videos", f"load before: {machine_load()}"]
    results, rc = [], 0
    try:
        st.down()
        st.podman("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs", "--opt",
                  f"o=nr_blocks={OUT_VOLUME_MB * 256},uid=10001,gid=10001,mode=0755", f"{st.project}_vtr-out-small")
        st.up_postgres(), st.up_server(), st.up_pools(), st.up_workers()
        st.deploy_all()
        out = st.volume_path("vtr-out")
        todo = args.only.split(",")
        phases = [("kill", lambda: fault_kill(st, out)),
                  ("server", lambda: fault_restart(st, out, "server", "fsrv")),
                  ("postgres", lambda: fault_restart(st, out, "postgres", "fpg")),
                  ("fill", lambda: fault_fill(st, out))]
        for name, fn in phases:
            if name not in todo:
                continue
            t0 = time.time()
            try:
                r = fn()
            except Exception as e:  # noqa: BLE001 - recorded
                r, rc = {"fault": name, "error": f"{type(e).__name__}: {e}"}, 1
            r["seconds"] = round(time.time() - t0, 1)
            results.append(r)
            lines.append(f"{name}: {r}")
            print(lines[-1], flush=True)
    finally:
        if not args.keep:
            st.down()
    lines.append(f"load after:  {machine_load()}")
    rows = [(r["fault"], r.get("user_sees", r.get("error", ""))[:90], r.get("rerun", r.get("final", r.get(
        "rerun_after_freeing", ""))), r.get("vs_uninterrupted", "")) for r in results]
    lines += ["", table(rows, ("fault", "user sees", "then", "features vs uninterrupted"))]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.log).write_text(text)
    return rc


if __name__ == "__main__":
    sys.exit(main())
