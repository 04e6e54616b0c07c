#!/usr/bin/env python3
"""make stack-check: docker/compose.yaml brought up with podman-compose, the sample pipeline run
INSIDE the containers, its outputs read from the volume, the UI checked in a headless browser.

    flock /tmp/vtr-heavy.lock .venv/bin/python scripts/stack_check.py [--keep] [--log PATH]

Needs the images of `make images` (scripts/images.sh). Project `vtr-stack-check`, API published
on 127.0.0.1:4390 (VTR_STACK_PORT), so it never meets a server on 4200. Prints a table
(step, seconds, result), writes it with the machine load to --log, exits 1 on any failure,
and tears the stack down (volumes included) unless --keep.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack_lib import REPO, Stack, machine_load, table  # noqa: E402

PORT = int(os.environ.get("VTR_STACK_PORT", "4390"))
CKPT = "runs/hanet/stack-check/best.pt"


def check_images(st: Stack) -> str:
    names = [st.env[k] for k in ("VTR_POSTGRES_IMAGE", "VTR_SERVER_IMAGE", "VTR_WORKER_IMAGE")]
    missing = [n for n in names if st.podman("image", "exists", n, check=False).returncode != 0]
    if missing:
        raise RuntimeError(f"images missing: {missing} (run `make images`)")
    return ", ".join(names)


def check_users(st: Stack) -> str:
    out = []
    for svc in ("server", "worker-cpu"):
        uid = st.exec(svc, "id", "-u").stdout.strip()
        if uid == "0":
            raise RuntimeError(f"{svc} runs as root")
        out.append(f"{svc} uid {uid}")
    return ", ".join(out)


def check_worker_stack(st: Stack) -> str:
    code = ("import torch, av, spacy; from nltk.corpus import wordnet as wn; "
            "from pipeline.text.resources import load_spacy; nlp = load_spacy('en_core_web_md'); "
            "print('torch', torch.__version__, 'av', av.__version__, 'spacy', spacy.__version__, "
            "nlp.meta['name'], 'wordnet', len(wn.synsets('dog')))")
    out = st.exec("worker-cpu", "python", "-c", code).stdout.strip()
    if "wordnet 0" in out:
        raise RuntimeError("WordNet has no synsets for 'dog'")
    return out


def flow_step(st: Stack, deployment: str, params: dict, timeout: float, ids: dict) -> str:
    res = st.run(deployment, params, timeout)
    ids[deployment] = res["id"]
    if res["type"] != "COMPLETED":
        logs = "\n".join(st.flow_run_logs(res["id"])[-15:])
        raise RuntimeError(f"{deployment} ended {res['name']}: {res['message']}\n{logs}")
    return f"{res['name']} (flow run {res['run_name']})"


def read_shards(st: Stack) -> str:
    import h5py
    import numpy as np
    import pyarrow.parquet as pq

    root = st.volume_path("vtr-out") / "sample"
    videos = pq.read_table(root / "videos.parquet")
    n_arrays = 0
    for h5 in sorted(root.rglob("*.h5")):
        with h5py.File(h5, "r") as f:
            def visit(_name, obj):
                nonlocal n_arrays
                if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" and obj.size:
                    a = obj[()]
                    if not np.isfinite(a).all():
                        raise RuntimeError(f"{h5}:{obj.name} has non-finite values")
                    n_arrays += 1
            f.visititems(visit)
    parquets = sorted(p.relative_to(root) for p in root.rglob("*.parquet"))
    if videos.num_rows == 0 or n_arrays == 0:
        raise RuntimeError(f"empty outputs: {videos.num_rows} videos, {n_arrays} float arrays")
    runs = st.volume_path("vtr-runs")
    index = sorted(p.name for p in (runs / "hanet" / "stack-check" / "index").glob("*"))
    if not index:
        raise RuntimeError("no search index under runs/hanet/stack-check/index on the vtr-runs volume")
    return (f"videos.parquet {videos.num_rows} rows, {len(parquets)} parquet files, {n_arrays} finite float "
            f"arrays in {len(list(root.rglob('*.h5')))} h5 files; index: {len(index)} entries")


def check_ui(st: Stack, run_id: str, shot: Path) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{st.port}/", timeout=10) as r:
        html = r.read().decode(errors="replace")
    if r.status != 200 or "<html" not in html.lower():
        raise RuntimeError(f"GET / -> {r.status}, not the UI")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    try:
        run_name = st.run_state(run_id)["run_name"]
        d.get(f"http://127.0.0.1:{st.port}/runs/flow-run/{run_id}")
        want = f"Flow Run: {run_name}"  # the UI titles a flow-run page "Flow Run: <name> • Prefect Server"
        WebDriverWait(d, 60).until(lambda x: (x.title or "").startswith(want))
        time.sleep(3)  # let the run's graph and logs render before the screenshot
        shot.parent.mkdir(parents=True, exist_ok=True)
        d.save_screenshot(str(shot))
        body = d.find_element("tag name", "body").text
        if run_name not in body:
            raise RuntimeError(f"flow-run page does not show {run_name!r}")
        where = shot.relative_to(REPO) if shot.is_relative_to(REPO) else shot
        return f"title {d.title!r}; screenshot {where}"
    finally:
        d.quit()


def check_ports(st: Stack) -> str:
    published = []
    for name in st.containers():
        for line in st.podman("port", name, check=False).stdout.splitlines():
            host = line.split("->")[-1].strip()
            published.append(f"{name.removeprefix(st.project + '_')} {line.strip()}")
            if not host.startswith("127.0.0.1:"):
                raise RuntimeError(f"{name} publishes {line.strip()} beyond 127.0.0.1")
    if not any(f"127.0.0.1:{st.port}" in p for p in published):
        raise RuntimeError(f"the API is not published on 127.0.0.1:{st.port}: {published}")
    if any(p.startswith("postgres") for p in published):
        raise RuntimeError("postgres is published to the host")
    return "; ".join(published)


def steps(st: Stack, ids: dict, shot: Path):
    sample = {"generate_sample": int(os.environ.get("VTR_STACK_SAMPLE", "120"))}
    yield "images present", lambda: check_images(st)
    yield "clean slate (compose down -v)", lambda: (st.down(), "ok")[1]
    yield "up postgres (pg_isready)", lambda: (st.up_postgres(), "ready")[1]
    yield "up server (/api/health)", lambda: (st.up_server(), "healthy")[1]
    yield "pools job (exit 0)", lambda: (st.up_pools(), ", ".join(sorted(
        p["name"] for p in st.api("POST", "/work_pools/filter", {}))))[1]
    yield "up worker-cpu (ONLINE)", lambda: ", ".join(w["name"][:28] for w in st.up_workers())
    yield "non-root containers", lambda: check_users(st)
    yield "worker stack (torch/av/spacy/wordnet)", lambda: check_worker_stack(st)
    yield "prefect deploy --all (in worker)", lambda: f"{len(st.deploy_all())} deployments"
    yield "build-sample-features", lambda: flow_step(st, "build-features/build-sample-features", sample, 1200, ids)
    yield "train (2 epochs)", lambda: flow_step(st, "train/train-hanet", {"epochs": 2, "run_name": "stack-check"},
                                                  900, ids)
    yield "evaluate", lambda: flow_step(st, "evaluate/evaluate-hanet", {"checkpoint": CKPT}, 600, ids)
    yield "build-index", lambda: flow_step(st, "build-index/build-index", {"checkpoint": CKPT}, 600, ids)
    yield "shards read from volume (pyarrow/h5py)", lambda: read_shards(st)
    yield "UI: flow-run page in chromium", lambda: check_ui(st, ids["train/train-hanet"], shot)
    yield "published ports only 127.0.0.1", lambda: check_ports(st)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="leave the stack running")
    ap.add_argument("--log", default=str(REPO / "bench" / "results" / f"stack-check-{time.strftime('%Y-%m-%d')}.txt"))
    ap.add_argument("--screenshot", default=str(REPO / "bench" / "results" / "stack-check-ui.png"))
    args = ap.parse_args()
    st = Stack("vtr-stack-check", PORT, workers=1)
    rows, ids, failed = [], {}, False
    t_all = time.time()
    load_before = machine_load()
    for name, fn in steps(st, ids, Path(args.screenshot)):
        t0 = time.time()
        try:
            result, ok = fn(), True
        except Exception as e:  # noqa: BLE001 - every failure becomes a FAIL row
            result, ok = f"{type(e).__name__}: {e}", False
            traceback.print_exc()
        rows.append((name, f"{time.time() - t0:.1f}", ("PASS " if ok else "FAIL ") + str(result).replace("\n", " | ")))
        print(f"{rows[-1][0]:<40} {rows[-1][1]:>7} s  {rows[-1][2][:160]}", flush=True)
        if not ok:
            failed = True
            break
    if not args.keep:
        t0 = time.time()
        st.down()
        rows.append(("teardown (compose down -v)", f"{time.time() - t0:.1f}", "PASS"))
    text = (f"stack-check {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}: docker/compose.yaml under "
            f"podman-compose, project {st.project}, API 127.0.0.1:{PORT}\nload before: {load_before}\n"
            f"load after:  {machine_load()}\n\n{table(rows, ('step', 'seconds', 'result'))}\n\n"
            f"total {time.time() - t_all:.0f} s: {'FAILED' if failed else 'PASSED'}\n")
    print("\n" + text)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    Path(args.log).write_text(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
