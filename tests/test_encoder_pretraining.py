"""MIM pretraining of the mini encoders (46_encoder_pretraining): the loss sees masked patches only, the saved encoder
fits the stages' models key for key, and pretraining lowers the held-out reconstruction loss."""
import json
import math

import pytest
import torch

from depth_anything_nb.models.encoder import create_encoder
from depth_anything_nb.models.registry import create_model
from depth_anything_nb.train.encoder_pretraining import (MaskedImageModel, PretrainConfig, masked_patch_loss,
                                                         patchify, pixel_targets, pretrain_encoder, random_patch_mask,
                                                         reconstruction_loss, unlabeled_images)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("mim")
    cfg = PretrainConfig(encoder="mini-t", images=16, heldout=8, steps=40, batch_size=8, warmup_steps=5)
    return cfg, pretrain_encoder(cfg, out / "runs", cache_dir=out / "cache", log_every=0)


def test_mask_counts_and_seed():
    a = random_patch_mask(4, 25, 0.6, torch.Generator().manual_seed(3))
    b = random_patch_mask(4, 25, 0.6, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.sum(1).tolist() == [15] * 4
    with pytest.raises(ValueError, match="mask ratio"):
        random_patch_mask(1, 4, 1.0)


def test_loss_is_on_masked_patches_only():
    g = torch.Generator().manual_seed(0)
    mask = random_patch_mask(2, 9, 0.5, g)
    target = torch.randn(2, 9, 6, generator=g)
    off = torch.randn(2, 9, 6, generator=g)
    pred = target + off
    closed = (off.pow(2).mean(-1)[mask]).mean().item()  # by hand: per-patch MSE averaged over masked patches
    assert math.isclose(masked_patch_loss(pred, target, mask).item(), closed, rel_tol=1e-6)
    noisy = torch.where(mask[..., None], pred, pred + 1e3 * torch.randn(2, 9, 6, generator=g))
    assert math.isclose(masked_patch_loss(noisy, target, mask).item(), closed, rel_tol=1e-6)
    # and every masked patch counts: change one, the loss changes
    i, j = mask.nonzero()[0].tolist()
    moved = pred.clone()
    moved[i, j] += 1.0
    assert masked_patch_loss(moved, target, mask).item() != pytest.approx(closed, rel=1e-6)


def test_masked_content_cannot_reach_the_prediction():
    torch.manual_seed(0)
    mim = MaskedImageModel(create_encoder("mini-t")).eval()
    imgs = torch.rand(1, 3, 42, 42)
    mask = torch.zeros(1, 9, dtype=torch.bool)
    mask[0, 4] = True  # the centre patch
    other = imgs.clone()
    other[0, :, 14:28, 14:28] = torch.rand(3, 14, 14)
    with torch.no_grad():
        assert torch.allclose(mim(imgs, mask), mim(other, mask), atol=1e-5)
        assert torch.allclose(mim.loss(imgs, mask), mim.loss(imgs, mask))
    t = pixel_targets(imgs, 14)
    assert torch.allclose(t[0, 4], pixel_targets(imgs[:, :, 14:28, 14:28], 14)[0, 0])
    assert torch.equal(patchify(imgs, 14)[0, 5].reshape(14, 14, 3), imgs[0, :, 14:28, 28:42].permute(1, 2, 0))


def test_saved_encoder_loads_into_a_stage_model_key_for_key(pretrained):
    _, path = pretrained
    saved = torch.load(path, weights_only=True)
    model = create_model("mini-t", seed=5, encoder_weights=path)
    enc = model.pretrained.state_dict()
    assert set(saved) == set(enc)
    for k, v in enc.items():
        assert torch.equal(v, saved[k]), k
    fresh = create_model("mini-t", seed=5).pretrained.state_dict()
    assert any(not torch.equal(fresh[k], saved[k]) for k in saved)  # the file really replaced the random weights


def test_a_wrong_encoder_is_refused(pretrained):
    _, path = pretrained
    with pytest.raises(Exception, match="does not fit"):
        create_model("mini-s", encoder_weights=path)


def test_pretraining_lowers_heldout_reconstruction_loss(pretrained, tmp_path):
    cfg, path = pretrained
    stats = json.loads((path.parent / "metrics.json").read_text())
    assert stats["config"]["encoder"] == "mini-t"
    # recomputed here on other held-out images, from the file, against the same encoder untrained
    held = unlabeled_images(8, cfg.size, seed=55, cache_dir=tmp_path)
    torch.manual_seed(0)
    before = MaskedImageModel(create_encoder("mini-t"))
    after = MaskedImageModel(create_encoder("mini-t"))
    after.encoder.load_state_dict(torch.load(path, weights_only=True))
    after.decoder = before.decoder  # the decoder is not saved: only the encoder's features differ
    assert stats["heldout_loss_after"] < stats["heldout_loss_before"]
    # a random decoder on pretrained features is no reconstruction; compare encoder quality via a fitted linear probe
    def probe_loss(mim):
        feats, targets, masks = [], [], []
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            m = random_patch_mask(len(held), 16, cfg.mask_ratio, g)
            tok = mim.encoder.forward_features((held - mim.mean) / mim.std, masks=m)["x_norm_patchtokens"]
        tgt = pixel_targets(held, 14)
        x, y = tok[m], tgt[m]
        x = torch.cat([x, torch.ones(len(x), 1)], 1)
        w = torch.linalg.lstsq(x, y).solution
        return (x @ w - y).pow(2).mean().item()
    pa, pb = probe_loss(after), probe_loss(before)
    assert pa < pb
    assert reconstruction_loss(before, held) > 0


def test_cached_by_configuration(pretrained):
    cfg, path = pretrained
    stamp = path.stat().st_mtime_ns
    assert pretrain_encoder(cfg, path.parent.parent) == path and path.stat().st_mtime_ns == stamp
    other = PretrainConfig(**{**cfg.__dict__, "seed": 1})
    assert other.digest() != cfg.digest()
