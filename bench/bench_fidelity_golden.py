"""Effect of each reference-fidelity switch on the golden fixture (same reference weights, same inputs).

    python bench/bench_fidelity_golden.py

Imports tests/fixtures/hanet_golden/ref_checkpoint.th (fidelity='reference'), then flips one
switch at a time to our 'improved' value and prints, against the reference's own matrices
(golden.npz), the max |difference| of every per-level score matrix, of the fused score, and
the rsum of the 16 x 60 retrieval. Appends to bench/results/bench_fidelity_golden-<date>.txt.
"""
import datetime as dt
import io
import json
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)
from tests.test_reference_parity import FIX, ZERO_DROPOUT, text_batch, video_batch  # noqa: E402
from models.config import FIDELITY_SWITCHES, HANetConfig  # noqa: E402
from pipeline.learn.config import TrainConfig  # noqa: E402
from models.hanet import HANet  # noqa: E402
from pipeline.learn.checkpoint_import import import_checkpoint  # noqa: E402
from models.metrics import retrieval_metrics  # noqa: E402
from pipeline.learn.graphs import build_graph  # noqa: E402
from storage.checkpoints import load_checkpoint  # noqa: E402


def main() -> int:
    g = dict(np.load(FIX / "golden.npz"))
    inp = dict(np.load(FIX / "inputs.npz"))
    caps = json.loads((FIX / "inputs.json").read_text())["captions"]
    meta = json.loads((FIX / "golden.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        import_checkpoint("hanet", FIX / "ref_checkpoint.th", Path(tmp) / "imp.pt", HANetConfig(**ZERO_DROPOUT))
        ck = load_checkpoint(Path(tmp) / "imp.pt")
    base = TrainConfig.model_validate_json(ck["config_json"]).net
    cap2vid = np.array([c["video"] for c in caps])
    nv, nc = len(inp["lengths"]), len(caps)

    def texts(edges_mode: str):
        tb = text_batch(g, np.arange(nc))
        if edges_mode == "reference":
            return tb  # the reference reader's own arrays
        for j, c in enumerate(caps):  # our loader's 'improved' graphs of the same captions
            keys = list(c["nodes"])
            nodes = [{"role": c["nodes"][k]["role"], "spans": c["nodes"][k]["spans"]} for k in keys]
            edges = [{"src": keys.index(s), "dst": keys.index(d), "role": r} for s, d, r in c["edges"]]
            m, ro, va, ad = build_graph(nodes, edges, min(len(c["text"].split()), 30), 30, 4, 6, True, "improved")
            L = tb.node_masks.shape[2]
            tb.node_masks[j] = torch.from_numpy(m[:, :L].astype(np.float32))
            tb.node_roles[j] = torch.from_numpy(ro)
            tb.node_valid[j] = torch.from_numpy(va)
            tb.adjacency[j] = torch.from_numpy(ad.astype(np.float32))
        return tb

    buf = io.StringIO()
    with redirect_stdout(buf):
        print(f"# bench_fidelity_golden {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} "
              f"reference {meta['reference_commit']}: rsum {meta['metrics']['rsum']:.2f} (16 videos x 60 captions)")
        runs = [("all reference", {})]
        runs += [(f"{k}={v[1]}", {k: v[1]}) for k, v in FIDELITY_SWITCHES.items()]
        runs += [("all improved", {"fidelity": "improved"})]
        for name, upd in runs:
            cfg = base.model_copy(update=upd)
            model = HANet(cfg)
            model.load_state_dict(ck["model"])
            model.eval()
            with torch.no_grad():
                parts = model.similarity_parts(model.encode_videos(video_batch(inp, np.arange(nv))),
                                               model.encode_texts(texts(cfg.deviation("graph_edges"))))
            fused = (parts["c_l"] + parts["c_p"]) / 2
            d = {k: (parts[k] - torch.from_numpy(g[f"score/{k}"])).abs().max().item() for k in meta["score_order"]}
            rsum = retrieval_metrics(fused.numpy(), cap2vid)["rsum"]
            print(f"{name:22s} max|d| " + " ".join(f"{k} {v:.1e}" for k, v in d.items())
                  + f" | fused {(fused - torch.from_numpy(g['fused'])).abs().max().item():.1e} | rsum {rsum:.2f}")
    text = buf.getvalue()
    print(text, end="")
    out = ROOT / "bench" / "results" / f"bench_fidelity_golden-{dt.date.today().isoformat()}.txt"
    with open(out, "a") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
