"""I3D's inference form (channels_last_3d, TorchScript-frozen, bf16 weights when bf16 runs): the same
features as the plain eager model, at each precision's rounding; recorded in provenance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.config import I3DConfig
from pipeline.runtime import bf16_is_fast
from pipeline.video.backbones import load_backbone

EAGER = {"freeze": False, "channels_last": False}
# bf16 keeps 8 significant bits (unit roundoff 2^-8); through ~50 layers errors add up: allow 4 units
# relative to the largest feature (measured 0.0047 for the frozen graph, 0.0035 for eager autocast).
TOL = {False: 1e-5, True: 4 * 2.0 ** -8}


@pytest.fixture(scope="module")
def clips():
    return np.random.default_rng(0).integers(0, 256, (3, 4, 64, 64, 3), dtype=np.uint8)


def _cfg(**kw) -> I3DConfig:
    return I3DConfig(weights="random", clip_len=4, crop=64, short_side=72, device="cpu", **kw)


@pytest.mark.parametrize("bf16", [False, True])
def test_frozen_i3d_gives_the_eager_features(clips, one_torch_thread, bf16):
    if bf16 and not bf16_is_fast(torch.device("cpu")):
        pytest.fail("this test needs a CPU with native bf16 (AVX512-BF16/AMX), as CI's machines have")
    reference = load_backbone("i3d_r50", _cfg(bf16=False, **EAGER)).embed(clips)
    frozen = load_backbone("i3d_r50", _cfg(bf16=bf16))
    assert isinstance(frozen.model, torch.jit.ScriptModule)
    assert frozen.provenance["precision"] == ("bf16 weights, frozen graph" if bf16 else "fp32, frozen graph")
    got = frozen.embed(clips)
    assert got.dtype == np.float32 and got.shape == (3, 2048)
    assert np.abs(got - reference).max() <= TOL[bf16] * np.abs(reference).max()
    one_by_one = np.concatenate([frozen.embed(clips[i:i + 1]) for i in range(len(clips))])  # batch size free
    np.testing.assert_allclose(one_by_one, got, rtol=0, atol=TOL[bf16] * np.abs(reference).max())


def test_unfrozen_i3d_stays_an_eager_module(clips, one_torch_thread):
    bb = load_backbone("i3d_r50", _cfg(bf16=False, freeze=False))
    assert not isinstance(bb.model, torch.jit.ScriptModule) and bb.memory_format == torch.channels_last_3d
    assert bb.provenance["precision"] == "fp32"
