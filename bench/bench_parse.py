"""Parse-stage throughput: captions/s of run_parse's parsing (spaCy + role graphs + lemmas).

Compares the stage's batched ``nlp.pipe`` path with a one-by-one ``nlp(text)``
baseline in the same run, on N generated MSR-VTT-like captions:

    .venv/bin/python bench/bench_parse.py [--n 3000] [--model en_core_web_md]
        [--batch-size 256] [--n-process 1] [--baseline-n 1000]

Target: >= 300 captions/s on 2 cores. Needs `make setup` (spaCy model, WordNet).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import TextConfig  # noqa: E402
from pipeline.text.lemmas import WordNetLemmas  # noqa: E402
from pipeline.text.parse import analyze, load_nlp, parse_captions, prepare_caption  # noqa: E402

SUBJECTS = ["a man", "a woman", "two girls", "a chef", "someone", "a group of people", "a little boy",
            "a dog", "the players", "a cartoon character"]
VERBS = [("cooking", "pasta"), ("playing", "a guitar"), ("riding", "a horse"), ("cutting", "an onion"),
         ("driving", "a red car"), ("talking", "to the camera"), ("throwing", "a ball"),
         ("singing", "a song"), ("folding", "paper"), ("showing", "how to make a cake")]
PLACES = ["in a kitchen", "on stage", "down the road", "at the beach", "in the park", "on a field"]
TEMPLATES = [
    "{s} is {v} {o} {p}",
    "{s} is {v} {o}",
    "{s} who is wearing a hat is {v} {o} {p}",
    "{s} is {v} {o} and smiling {p}",
    "{s} {p} is {v} {o} while music plays",
    "a video of {s} {v} {o}",
]


def generate(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        verb, obj = rng.choice(VERBS)
        out.append(rng.choice(TEMPLATES).format(s=rng.choice(SUBJECTS), v=verb, o=obj, p=rng.choice(PLACES)))
    return out


def rates(n: int, wall0: float, cpu0: float) -> tuple[float, float]:
    """(captions per wall second, captions per CPU second of this process)."""
    return n / (time.perf_counter() - wall0), n / max(time.process_time() - cpu0, 1e-9)


def batched(captions: list[str], cfg: TextConfig, nlp, lexicon) -> tuple[float, float]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    parsed = parse_captions(captions, cfg, nlp, lexicon)
    assert len(parsed) == len(captions)
    return rates(len(captions), wall0, cpu0)


def one_by_one(captions: list[str], cfg: TextConfig, nlp, lexicon) -> tuple[float, float]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for caption in captions:
        analyze(nlp(prepare_caption(caption, cfg).text), lexicon)
    return rates(len(captions), wall0, cpu0)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="captions for the batched run")
    ap.add_argument("--baseline-n", type=int, default=1000, help="captions for the one-by-one run")
    ap.add_argument("--model", default=TextConfig().spacy_model)
    ap.add_argument("--batch-size", type=int, default=TextConfig().batch_size)
    ap.add_argument("--n-process", type=int, default=1)
    args = ap.parse_args()
    cfg = TextConfig(spacy_model=args.model, batch_size=args.batch_size, n_process=args.n_process)
    t = time.perf_counter()
    nlp, lexicon = load_nlp(cfg), WordNetLemmas()
    print(f"load: {time.perf_counter() - t:.1f} s ({args.model})")
    captions = generate(args.n)
    parse_captions(captions[:200], cfg, nlp, lexicon)  # warm-up (lemma caches, first batch)
    fast, fast_cpu = batched(captions, cfg, nlp, lexicon)
    slow, slow_cpu = one_by_one(captions[: args.baseline_n], cfg, nlp, lexicon)
    print(f"load average: {load_average()} (other processes share the cores; "
          "per-CPU-second rates are what an idle core would give with n_process=1)")
    print(f"nlp.pipe batch={args.batch_size} n_process={args.n_process}: {fast:8.1f} captions/s "
          f"(per CPU-second of this process: {fast_cpu:.1f}; {args.n} captions)")
    print(f"one-by-one nlp(text):             {slow:8.1f} captions/s "
          f"(per CPU-second: {slow_cpu:.1f}; {args.baseline_n} captions)")
    print(f"[same run] ratio batched / one-by-one: {fast / slow:8.2f}x   (target >= 300 captions/s: "
          f"{'met' if fast >= 300 else 'NOT met'})")
    print("RESULTS " + json.dumps({"captions_per_s": fast, "baseline_per_s": slow, "ratio_same_run": fast / slow,
                                   "model": args.model, "n": args.n, "baseline_n": args.baseline_n}))


if __name__ == "__main__":
    main()
