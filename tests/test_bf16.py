"""bfloat16 evaluation: the query-chunked attention and the whole model stay within bounds derived from bf16's
precision (8 significant bits, unit roundoff u = 2^-8) of a higher-precision evaluation. Not a timing test."""
import math

import pytest
import torch

from depth_anything_nb import DepthAnythingV2
from depth_anything_nb.models.dpt import perturbed_state_dict
from depth_anything_nb.models.encoder import DinoAttention, chunked_attention

U = 2.0**-8  # bf16 unit roundoff


def _qkv(b, h, n, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g).bfloat16() for _ in range(3)]


@pytest.mark.parametrize("n,chunk", [(30, 7), (30, 30), (30, 256), (97, 32), (1, 4)])
def test_chunked_attention_within_bf16_bound(n, chunk):
    """Scores are exact products accumulated in fp32 and rounded once (|Δs| ≤ u|s|); the softmax turns that into
    a relative error ≤ 2u·max|s| per probability; probabilities and output are rounded once more each:
    |Δo| ≤ (2·max|s| + 2)·u·max|v| to first order (the test allows + 3)."""
    q, k, v = _qkv(2, 3, n, 16)
    q64, k64, v64 = (t.double() for t in (q, k, v))
    scores = (q64 * 0.25) @ k64.transpose(-2, -1)  # 1/sqrt(16) is exact in bf16
    ref = scores.softmax(-1) @ v64
    out = chunked_attention(q * 0.25, k, v, chunk)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    bound = (2 * scores.abs().max().item() + 3) * U * v64.abs().max().item()
    assert (out.double() - ref).abs().max().item() <= bound


def test_chunked_attention_takes_strided_qkv_views():
    "The encoder passes views of the packed qkv tensor: same values as contiguous inputs, bit for bit."
    qkv = torch.randn(2, 41, 3 * 4 * 8, generator=torch.Generator().manual_seed(1)).bfloat16()
    q, k, v = qkv.reshape(2, 41, 3, 4, 8).permute(2, 0, 3, 1, 4).unbind(0)
    assert not k.is_contiguous()
    a = chunked_attention(q, k, v, 16)
    b = chunked_attention(q.contiguous(), k.contiguous(), v.contiguous(), 16)
    assert torch.equal(a, b)


def test_attention_paths():
    attn = DinoAttention(32, 4, query_chunk=5).eval()
    x = torch.randn(1, 23, 32, generator=torch.Generator().manual_seed(2))
    xb = x.bfloat16()
    with torch.no_grad():
        assert attn.path(x) == "fused" and attn.path(xb) == "chunked"
        exact_free = attn(x)
        attn.fused_attn = False
        assert attn.path(xb) == "exact"
        exact = attn(x)
        attn.fused_attn = True
    assert (exact_free - exact).abs().max().item() < 1e-5
    with torch.enable_grad():  # autograd cannot trace out=: the fused kernel takes over
        assert attn.path(xb.requires_grad_()) == "fused"
    with pytest.raises(ValueError, match="mask"):
        attn(x, attn_mask=torch.ones(23, 23, dtype=torch.bool))


def test_model_bf16_within_bound_of_fp32():
    """ViT-S with perturbed weights under bf16 autocast, attention chunked into ragged blocks, against float32.
    Each bf16 layer on the path rounds its inputs or output (relative error ≤ u); over L such layers in sequence
    (12 blocks × 6 products: qkv, q·kᵀ, p·v, proj, fc1, fc2; 18 decoder convolutions on the deepest path) independent
    roundings grow like √L·u in the mean relative error, the bound checked here."""
    model = DepthAnythingV2.from_config("vits").eval()
    model.load_state_dict(perturbed_state_dict(model), strict=True)
    for blk in model.pretrained.blocks:
        blk.attn.query_chunk = 16
    x = torch.randn(1, 3, 112, 140, generator=torch.Generator().manual_seed(123))  # 81 tokens: ragged blocks
    with torch.inference_mode():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model.pretrained.blocks[0].attn.path(torch.zeros(1, dtype=torch.bfloat16)) == "chunked"
            low = model(x)
    assert low.shape == ref.shape and torch.isfinite(low).all()
    rel = ((low.float() - ref).abs().mean() / ref.abs().mean()).item()
    bound = math.sqrt(12 * 6 + 18) * U
    print(f"bf16 mean relative error {rel:.2e}, bound {bound:.2e}")
    assert rel <= bound


def test_default_query_chunk_is_256_per_thread(monkeypatch):
    "query_chunk=None: blocks of 256 queries per torch thread (fewer parallel regions with more threads)."
    import depth_anything_nb.models.encoder as enc

    seen = []
    real = enc.chunked_attention
    monkeypatch.setattr(enc, "chunked_attention", lambda q, k, v, chunk: seen.append(chunk) or real(q, k, v, chunk))
    attn = DinoAttention(32, 4).eval()
    assert attn.query_chunk is None
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                attn(torch.randn(1, 5, 32))
    finally:
        torch.set_num_threads(threads)
    assert seen == [256, 512]
