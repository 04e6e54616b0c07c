"""Inference fast paths of models/layers.py (used by evaluation's caption encoding): each equals
the general (autograd) path: exactly for MIL / phrase max-pooling, within bf16 rounding for the
bf16 GRU loop, whose weight cache follows in-place weight updates."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from models.layers import BiGRUEncoder, masked_max_pool, mil_pool

needs_bf16 = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN")


@pytest.mark.parametrize("L,divisor", [(5, 8), (14, 8), (30, 8), (20, 4), (9, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mil_pool_small_k_equals_topk(L, divisor, dtype):
    torch.manual_seed(L)
    probs = torch.rand(7, L, 13).to(dtype)
    probs[:, 1] = probs[:, 0]  # ties
    lengths = torch.randint(1, L + 1, (7,))
    lengths[0] = L
    mask = torch.arange(L)[None] < lengths[:, None]
    ref = mil_pool(probs.clone().requires_grad_(True), mask, divisor).detach()  # topk path
    with torch.no_grad():
        fast = mil_pool(probs, mask, divisor)
    assert torch.equal(fast, ref)


def test_masked_max_pool_inference_equals_autograd_path():
    torch.manual_seed(0)
    x = torch.randn(5, 9, 6)
    spans = torch.rand(5, 4, 9) < 0.3
    spans[0, 0] = False  # an empty span -> 0
    ref = masked_max_pool(x.clone().requires_grad_(True), spans.float()).detach()
    with torch.no_grad():
        fast = masked_max_pool(x, spans.float())
    assert torch.equal(fast, ref)
    assert fast[0, 0].abs().sum() == 0


def _reference_bf16(enc, word_ids, lengths):
    """The general bf16 path of BiGRUEncoder.forward (nn.GRU on bf16 weight copies)."""
    emb = enc.embedding(word_ids).to(torch.bfloat16)
    packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
    weights = {k: v.to(torch.bfloat16) for k, v in enc.gru.named_parameters()}
    out, _ = torch.func.functional_call(enc.gru, weights, (packed,))
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=word_ids.shape[1])
    return ((out[..., :enc.hidden] + out[..., enc.hidden:]) / 2).float()


@needs_bf16
def test_bf16_gru_loop_matches_nn_gru_and_cache_follows_weights():
    torch.manual_seed(0)
    enc = BiGRUEncoder(50, 12, 16, 0.0).eval()
    with torch.no_grad():
        for p in enc.gru.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases
    word_ids = torch.randint(0, 50, (6, 7))
    lengths = torch.tensor([3, 7, 1, 5, 7, 2])

    def fast():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return enc(word_ids, lengths)

    def check():
        out, ref = fast(), _reference_bf16(enc, word_ids, lengths)
        fp32 = enc(word_ids, lengths)
        assert out.dtype == torch.float32
        # word states lie in (-1, 1): one bf16 ulp there is <= 2^-8. Measured (20 seeds, 2026-12-07): max
        # 1.95e-3 vs nn.GRU on bf16 weights, 1.54e-3 vs fp32; the bound 2^-8 is a 2x margin on both
        assert (out - ref).abs().max() <= 2 ** -8
        assert (out - fp32).abs().max() <= 2 ** -8
        assert not torch.equal(out, fp32)  # bf16 really ran
        pad = torch.arange(7)[None] >= lengths[:, None]
        assert out[pad].abs().sum() == 0
        return out

    first = check()
    assert enc.__dict__.get("_bf16_cache") is not None
    with torch.no_grad():  # an optimiser-style in-place update must invalidate the cached copies
        enc.gru.weight_hh_l0_reverse.mul_(-1.0)
        enc.gru.bias_ih_l0.add_(0.5)
    second = check()
    assert not torch.equal(first, second)
    enc.gru.weight_ih_l0 = torch.nn.Parameter(torch.zeros_like(enc.gru.weight_ih_l0))  # replaced parameter
    check()
