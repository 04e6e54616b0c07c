"""A small, deterministic, REAL video-text dataset: moving coloured shapes.

``generate_sample_dataset(root)`` writes ``root/videos/video<i>.mp4`` (MPEG-4
part 2, bit-exact: same seed -> identical bytes on the same FFmpeg build) and
``root/annotation.json`` in the MSR-VTT format (``videos`` with video_id and
split train/validate/test, ``sentences`` with caption, video_id, sen_id).
Each video shows one or two shapes (circle, square, triangle, diamond) of a
named colour on a plain background, each doing one motion (moving left,
right, up or down, growing, shrinking, bouncing side to side); its five
captions describe exactly that with varied nouns and verbs. Each video entry
also carries ``sample_spec`` (what was drawn) so tests can check captions
against pixels; MSR-VTT readers ignore the extra field.

Run: ``python -m pipeline.datasets.sample_data --out DIR [--n-videos N] [--seed S]``.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from storage import atomic_write_text
from storage.video_files import VideoSpec, write_video

SHAPE_NOUNS = {
    "circle": ["circle", "ball", "disc", "round shape", "dot"],
    "square": ["square", "box", "block", "square shape", "tile"],
    "triangle": ["triangle", "triangular shape", "triangle shape", "wedge", "three-sided shape"],
    "diamond": ["diamond", "rhombus", "diamond shape", "lozenge", "tilted square"],
}
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230), "yellow": (235, 210, 40),
           "purple": (150, 60, 190), "orange": (245, 140, 30)}
BACKGROUNDS = {"black": (0, 0, 0), "gray": (110, 110, 110), "white": (245, 245, 245)}
MOTION_PHRASES = {
    "left": ["moves to the left", "slides left", "travels from right to left", "glides leftward", "drifts to the left"],
    "right": ["moves to the right", "slides right", "travels from left to right", "glides rightward",
              "drifts to the right"],
    "up": ["moves up", "rises", "floats upward", "climbs toward the top", "goes up"],
    "down": ["moves down", "falls", "sinks", "drops toward the bottom", "slides downward"],
    "grow": ["grows", "gets bigger", "expands", "increases in size", "swells"],
    "shrink": ["shrinks", "gets smaller", "contracts", "decreases in size", "dwindles"],
    "bounce": ["bounces back and forth", "moves left and right", "bounces from side to side",
               "goes back and forth", "sways from side to side"],
}
ONE_OBJECT = [
    "{a} {c1} {n1} {p1}",
    "the {c1} {n1} {p1} on a {bg} background",
    "there is {a} {c1} {n1} that {p1}",
    "on a {bg} background {a} {c1} {n1} {p1}",
    "{a} {n1} colored {c1} {p1}",
]
TWO_OBJECTS = [
    "{a} {c1} {n1} {p1} while {b} {c2} {n2} {p2}",
    "two shapes: {a} {c1} {n1} {p1} and {b} {c2} {n2} {p2}",
    "the {c2} {n2} {p2} as the {c1} {n1} {p1}",
    "on a {bg} background {a} {c1} {n1} {p1} and {b} {c2} {n2} {p2}",
    "{a} {c1} {n1} and {b} {c2} {n2} appear; the {n1} {p1} and the {n2} {p2}",
]
SPLIT_FRACTIONS = (0.70, 0.15)  # train, validate; the rest is test (contiguous ids, as MSR-VTT)


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    colour: str
    motion: str
    lane: float  # fixed coordinate (fraction of the frame) across the motion's axis


@dataclass(frozen=True)
class VideoPlan:
    background: str
    objects: tuple[ShapeSpec, ...]


# ------------------------------------------------------------------ planning

def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def plan_video(rng: np.random.Generator, two_objects: bool) -> VideoPlan:
    """Random background and 1-2 objects with distinct shapes, colours and lanes."""
    background = _pick(rng, BACKGROUNDS)
    shapes = rng.permutation(list(SHAPE_NOUNS))[: 2 if two_objects else 1]
    colours = rng.permutation(list(COLOURS))[: len(shapes)]
    lanes = (0.3, 0.7) if two_objects else (0.5,)
    motions = [_pick(rng, MOTION_PHRASES) for _ in shapes]
    objects = tuple(ShapeSpec(str(s), str(c), m, lane) for s, c, m, lane in zip(shapes, colours, motions, lanes))
    return VideoPlan(background, objects)


# ------------------------------------------------------------------ drawing

def _centre_and_radius(obj: ShapeSpec, t: float, size: int) -> tuple[float, float, float]:
    """(x, y, r) in pixels at time t in [0, 1]."""
    lo, hi, mid, r = 0.2 * size, 0.8 * size, obj.lane * size, 0.12 * size
    sweep = lo + (hi - lo) * t
    bounce = lo + (hi - lo) * (1 - abs(2 * t - 1))  # out to the right edge and back
    return {
        "left": (hi + lo - sweep, mid, r), "right": (sweep, mid, r),
        "up": (mid, hi + lo - sweep, r), "down": (mid, sweep, r),
        "grow": (mid, 0.5 * size, 0.05 * size + 0.15 * size * t),
        "shrink": (mid, 0.5 * size, 0.20 * size - 0.15 * size * t),
        "bounce": (bounce, mid, r),
    }[obj.motion]


def shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, x: float, y: float, r: float) -> np.ndarray:
    dx, dy = xx - x, yy - y
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    return (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)  # triangle, apex up


def render_frames(plan: VideoPlan, n_frames: int, size: int) -> Iterator[np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(n_frames):
        frame = np.empty((size, size, 3), np.uint8)
        frame[:] = BACKGROUNDS[plan.background]
        for obj in plan.objects:
            x, y, r = _centre_and_radius(obj, i / max(n_frames - 1, 1), size)
            frame[shape_mask(obj.shape, xx, yy, x, y, r)] = COLOURS[obj.colour]
        yield frame


# ------------------------------------------------------------------ captions

def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _fill(template: str, plan: VideoPlan, nouns: list[str], phrases: list[str]) -> str:
    objs = plan.objects
    values = {"bg": plan.background, "c1": objs[0].colour, "n1": nouns[0], "p1": phrases[0],
              "a": _article(objs[0].colour)}
    if len(objs) > 1:
        values.update(c2=objs[1].colour, n2=nouns[1], p2=phrases[1], b=_article(objs[1].colour))
    return template.format(**values)


def captions_for(plan: VideoPlan, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` distinct true descriptions: a template, shape noun and motion phrase each."""
    templates = TWO_OBJECTS if len(plan.objects) > 1 else ONE_OBJECT
    order = rng.permutation(len(templates))
    phrase_orders = [rng.permutation(len(MOTION_PHRASES[o.motion])) for o in plan.objects]
    out = []
    for k in range(n):
        nouns = [_pick(rng, SHAPE_NOUNS[o.shape]) for o in plan.objects]
        phrases = [MOTION_PHRASES[o.motion][p[k % len(p)]] for o, p in zip(plan.objects, phrase_orders)]
        out.append(_fill(templates[order[k % len(templates)]], plan, nouns, phrases))
    return out


# ------------------------------------------------------------------ dataset

def split_of(i: int, n: int) -> str:
    n_train = max(1, round(SPLIT_FRACTIONS[0] * n))
    n_val = max(1, round(SPLIT_FRACTIONS[1] * n)) if n >= 3 else 0
    return "train" if i < n_train else "validate" if i < n_train + n_val else "test"


def _video_entry(i: int, n: int, plan: VideoPlan) -> dict:
    return {"video_id": f"video{i}", "id": i, "split": split_of(i, n),
            "sample_spec": {"background": plan.background, "objects": [asdict(o) for o in plan.objects]}}


def generate_sample_dataset(root: str | Path, n_videos: int = 120, seed: int = 0, *, size: int = 128,
                            n_frames: int = 48, fps: int = 12, two_object_fraction: float = 0.25,
                            captions_per_video: int = 5) -> Path:
    """Write the videos and the MSR-VTT-format annotation under ``root``; return the annotation path.

    Deterministic: the same arguments give byte-identical files.
    """
    root = Path(root)
    videos, sentences = [], []
    for i in range(n_videos):
        rng = np.random.default_rng([seed, i])
        plan = plan_video(rng, two_objects=bool(rng.random() < two_object_fraction))
        write_video(root / "videos" / f"video{i}.mp4", render_frames(plan, n_frames, size), VideoSpec(fps=fps))
        videos.append(_video_entry(i, n_videos, plan))
        for text in captions_for(plan, rng, captions_per_video):
            sentences.append({"caption": text, "video_id": f"video{i}", "sen_id": len(sentences)})
    info = {"description": "synthetic moving-shapes sample set", "seed": seed, "n_frames": n_frames, "fps": fps,
            "size": size}
    annotation = root / "annotation.json"
    atomic_write_text(annotation, json.dumps({"info": info, "videos": videos, "sentences": sentences}, indent=1))
    return annotation


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--n-videos", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = generate_sample_dataset(args.out, args.n_videos, args.seed)
    print(f"wrote {args.n_videos} videos and {path}\n"
          f"ingest with: IngestConfig(format='msrvtt', dataset_root='{args.out / 'videos'}', annotation='{path}')")
    return path


if __name__ == "__main__":
    main()
