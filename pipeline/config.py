"""Typed configuration of every stage. The one place hyper-parameters live.

Each stage config is a pydantic model; flows take them as parameters (Prefect
renders them as forms), and each is written beside the outputs it produced
(``_stages/*.json``). Model/training configs live in ``models/config.py``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Device = str  # "auto" | "cpu" | "cuda" | "cuda:N"


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestConfig(_Config):
    format: Literal["msrvtt", "vatex", "manifest", "hgr-bundle"] = "msrvtt"
    dataset_root: str = Field(description="folder holding the videos; manifest paths may not escape it")
    annotation: str | dict[str, str] = Field(description=(
        "annotation file (MSR-VTT JSON, VATEX JSON, CSV/JSONL manifest), or several with their split roles: "
        "'train=/a/vatex_training.json,val+test=/a/vatex_validation.json' or a mapping {role: path}; role "
        "'val+test' divides that file's videos into val/test (val_fraction, split_seed)"))
    video_ext: str = Field(".mp4", description="extension appended to ids for MSR-VTT/VATEX")
    vatex_split: str = Field("train", description="split given to VATEX rows when the file has none")
    probe: bool = Field(True, description="open each video's header to fill n_frames/fps/duration")
    probe_workers: int = Field(4, ge=1, description="threads opening video headers in parallel at ingest")
    split_lists: dict[str, str] = Field(default_factory=dict, description=(
        "split -> file of video ids (.npy as HGR's public_split/*_names.npy, .json list, or .txt one per "
        "line); a listed video gets that split, overriding the annotation's"))
    val_fraction: float = Field(0.5, gt=0, lt=1, description=(
        "share of a 'val+test' role's videos that become val (VATEX: 1,500 of the 3,000 validation videos)"))
    split_seed: int = Field(0, description="seed of the 'val+test' division (documented in pipeline/datasets/ingest.py)")
    follow_symlinks: bool = Field(True, description=(
        "follow links placed inside dataset_root wherever they point (resolved path recorded); False = "
        "strict: a video resolving outside dataset_root is an error row. Annotation paths may never "
        "escape the root ('..', absolute paths elsewhere)"))


class DecodeConfig(_Config):
    frame_stride: int = Field(16, ge=1, description="one sampled frame per this many decoded frames (MSR-VTT)")
    max_frames: int = Field(20, ge=1, description="cap; longer videos are sampled uniformly")
    short_side: int = Field(256, ge=32)
    crop: int = Field(224, ge=32)
    threads: int = Field(0, ge=0, description="FFmpeg decode threads, 0 = auto")
    timeout_s: float = Field(120.0, gt=0, description="per-video decode time limit")
    prefetch: int = Field(2, ge=0, description="videos decoded ahead of the model (overlap)")
    interpolation: Literal["BILINEAR", "BICUBIC", "AREA"] = Field(
        "BILINEAR", description="swscale filter of the short-side resize (antialiased when shrinking)")
    max_missing_fraction: float = Field(
        0.1, ge=0, le=1, description="a video decoding fewer frames than its container states by more than "
        "this fraction (and more than missing_frames_slack) is an error (truncated); 1 disables")
    missing_frames_slack: int = Field(2, ge=0, description="frames that may always be missing (rounded durations)")
    max_decode_errors: int = Field(0, ge=0, description="decoder errors (bad packets) tolerated per video; "
                                   "more make the video an error")
    apply_rotation: bool = Field(True, description="turn frames upright by their display-matrix rotation "
                                 "(phone footage; multiples of 90 degrees) before the centre crop; the rotation "
                                 "is recorded either way (False reproduces the reference extractors)")


class ResNetConfig(_Config):
    enabled: bool = True
    weights: str = Field("imagenet", description="'imagenet' (torchvision cache/download), a local .pth path, or 'random'")
    batch_size: int = Field(32, ge=1, description="frames per forward pass, across videos")
    device: Device = "auto"
    bf16: bool = Field(True, description="bfloat16 autocast where the device has native bf16 (else fp32)")
    channels_last: bool = True
    seed: int = Field(0, description="initialisation seed for weights='random' (recorded in provenance)")
    fuse_bn: bool = Field(True, description="fold BatchNorm into the preceding convolution for inference "
                          "(same features up to fp32 rounding; ~1.2x faster on CPU)")


class I3DConfig(_Config):
    enabled: bool = True
    weights: str = Field("kinetics", description="'kinetics' (pytorchvideo hub), a local .pyth/.pth path, or 'random'")
    # Sampling per backbone: pytorchvideo's Kinetics-400 i3d_r50 is the "8x8" recipe (8 frames
    # 8 decoded frames apart, ~2.1 s at 30 fps); the defaults match it so pretrained features see
    # motion at the speed the model was trained on. Tiny videos (the sample) override clip_step.
    clip_len: int = Field(8, ge=4, description="frames per clip stack (8 for the pretrained 8x8 model)")
    clip_step: int = Field(8, ge=1, description="decoded-frame step inside a stack (8 for the pretrained 8x8 model)")
    max_clips: int = Field(8, ge=1, description="clips per video, uniformly placed")
    batch_size: int = Field(8, ge=1, description="clips per forward pass, across videos (GPU; see cpu_batch_size)")
    cpu_batch_size: int = Field(1, ge=1, description=(
        "clips per forward pass on a CPU device: oneDNN's 3D convolutions are cache-bound there and one clip per "
        "pass measured fastest (bench_extract, 2-core AVX-512 CPU, same run: 10.3 clips/s at 1 vs 6.7 at 8)"))
    device: Device = "auto"
    bf16: bool = Field(True, description="bfloat16 autocast where the device has native bf16 (else fp32)")
    short_side: int = Field(256, ge=32)
    crop: int = Field(224, ge=32)
    seed: int = Field(0, description="initialisation seed for weights='random' (recorded in provenance)")
    fuse_bn: bool = Field(True, description="fold BatchNorm into the preceding convolution for inference "
                          "(same features up to fp32 rounding; ~1.2x faster on CPU)")
    channels_last: bool = Field(True, description="channels_last_3d layout for weights and clips (oneDNN's fast 3D "
                                "convolutions; measured ~1.4x in bf16 on CPU)")
    freeze: bool = Field(True, description=(
        "TorchScript-trace and freeze the model once per process (oneDNN prepacks the 3D convolution weights "
        "instead of reordering them every forward; with bf16 the weights are cast to bf16). Same features "
        "(fp32: within 1e-6 relative; bf16: the same bf16 rounding as autocast). Measured ~2x on a 2-core CPU"))


class TextConfig(_Config):
    backend: Literal["spacy-dep", "hgr-json"] = "spacy-dep"
    spacy_model: str = Field("en_core_web_md", description=(
        "spaCy pipeline name or path; en_core_web_md (default: more verbs found than sm at the same "
        "speed, see pipeline/text/__init__.py) or en_core_web_sm, from requirements/text-models.txt"))
    hgr_json: str | None = Field(None, description="HGR sent2rolegraph.augment.json for backend hgr-json")
    batch_size: int = Field(256, ge=1, description="captions per nlp.pipe batch")
    n_process: int = Field(1, ge=1, description="nlp.pipe worker processes")
    max_caption_words: int = Field(200, ge=1, description="longer captions are truncated for parsing (status says so)")
    max_caption_chars: int = Field(2000, ge=1, description="character cap applied after the word cap (status 'truncated')")
    strip_html: bool = Field(True, description="unescape HTML entities and drop <tags> before parsing (stored caption untouched)")
    spacy_disable: tuple[str, ...] = Field(("ner", "lemmatizer"), description=(
        "spaCy components not run (lemmas come from WordNet; tagger, parser and attribute_ruler are needed)"))


class ConceptConfig(_Config):
    n_verbs: int = Field(512, ge=1)
    n_nouns: int = Field(1024, ge=1)
    lemmatize_all: bool = Field(True, description="False reproduces the reference (VB/NN tags left unlemmatized)")
    fix_lemmatizer: bool = Field(True, description=(
        "True: WordNet exception lists, then sense counts (men->man, riding->ride); "
        "False: NLTK's WordNetLemmatizer as is (shortest candidate), as in the reference"))


class VocabConfig(_Config):
    min_count: int = Field(1, ge=1, description="train-caption count for a word to enter the vocabulary")
    embeddings: str = Field("random", description=(
        "'random', 'glove-6b-50d' (registry package), a GloVe-format text file, or (format hgr-bundle) 'bundle': "
        "the bundle's results/RET.released/word_embeds*.th, the reference's init file"))
    random_dim: int = Field(300, ge=1, description="embedding size when embeddings='random'")
    random_std: float = Field(0.1, gt=0, description=(
        "std of random rows for embeddings='random' (with pretrained vectors, OOV rows use the vectors' std)"))
    seed: int = Field(0, description="seed of the random rows (OOV words, special tokens, 'random')")


class BundleConfig(_Config):
    """format='hgr-bundle': HGR/HANet released data (pipeline/datasets/bundle.py); dataset_root = the bundle folder."""

    features: tuple[str, ...] | None = Field(None, description=(
        "feature folders under ordered_feature/SA to import (e.g. ['resnet152.pth']); None = every folder"))
    concepts: Literal["auto", "hanet", "compute"] = Field("auto", description=(
        "'auto': import HANet's {verb,noun}_gt.json when present, else compute; 'hanet': require them; "
        "'compute': always our recipe (train captions)"))
    allow_pickle: bool = Field(False, description="read pickled (object) .npy names/vocabulary files; trusted bundles only")


class BuildConfig(_Config):
    """Everything one build of a dataset's shards depends on."""

    dataset: str = Field(description="name of the dataset folder under out_root")
    out_root: str
    ingest: IngestConfig
    shard_size: int = Field(64, ge=1, description="videos per feature shard (one task per shard)")
    max_failed_fraction: float = Field(0.5, ge=0, le=1, description=(
        "the build ends Failed (with a summary of the error kinds) when more than this share of the "
        "videos has no features (every video failing always fails it)"))
    decode: DecodeConfig = DecodeConfig()
    resnet: ResNetConfig = ResNetConfig()
    i3d: I3DConfig = I3DConfig()
    text: TextConfig = TextConfig()
    concepts: ConceptConfig = ConceptConfig()
    vocab: VocabConfig = VocabConfig()
    bundle: BundleConfig = BundleConfig()
