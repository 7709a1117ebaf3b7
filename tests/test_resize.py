"""torch's resize (embed/resize.py) against PIL's: pixels, geometry, stage A and B, embeddings of real crops."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_CROPS, draw_crop
from crop_cluster.embed.data import Preprocess, collate
from crop_cluster.embed.parity import pixel_parity
from crop_cluster.embed.resize import default_resize, fit_batch, fit_tensor

PAD = Preprocess(32, mean=(127.0,) * 3, std=(128.0,) * 3)


def _photo_crops(folder, sizes):
    """JPEG crops of scikit-learn's sample photo at the given (width, height): real texture, so every rounding
    case of the resize filters occurs."""
    from sklearn.datasets import load_sample_images

    photo = Image.fromarray(load_sample_images().images[0])
    files = []
    for k, (width, height) in enumerate(sizes):
        path = folder / f"crop{k}.jpg"
        photo.crop((7 * k, 5 * k, 7 * k + width, 5 * k + height)).save(path, quality=90)
        files.append(str(path))
    return files


SIZES = [(40, 40), (80, 31), (31, 80), (33, 33), (120, 50), (50, 120), (17, 9), (9, 17), (32, 32), (300, 200)]


@pytest.mark.parametrize("geometry", ["pad", "crop"])
def test_float_passes_within_one_of_pil(tmp_path, geometry):
    files = _photo_crops(tmp_path, SIZES)
    report = pixel_parity(files, Preprocess(32, (0.0,) * 3, (1.0,) * 3, geometry=geometry))
    assert report["max_abs_diff"] <= 1


@pytest.mark.parametrize("geometry", ["pad", "crop"])
def test_uint8_kernel_close_to_pil(tmp_path, geometry):
    """torch's uint8 kernel: +-1, rarely +-2 (14-bit weights against PIL's 22-bit ones), on very few pixels."""
    files = _photo_crops(tmp_path, SIZES)
    report = pixel_parity(files, Preprocess(32, (0.0,) * 3, (1.0,) * 3, geometry=geometry), kernel="uint8")
    assert report["max_abs_diff"] <= 2
    assert report["share_pixels_diff_gt1"] <= 1e-3


def test_stage_a_has_its_own_cache_key(tmp_path):
    """Stage A misses the +-1 bar, so its embeddings never mix with PIL's; stage B and PIL share the old key."""
    from crop_cluster.embed.cache import EmbeddingCache
    from crop_cluster.embed.resize import cache_variant

    folders = {resize: EmbeddingCache(str(tmp_path), "lite0", "m", cache_variant(resize)).folder
               for resize in (None, "pil", "device", "torch")}
    assert folders[None] == folders["pil"] == folders["device"] == EmbeddingCache(str(tmp_path), "lite0", "m").folder
    assert folders["torch"] != folders["pil"]


def test_cli_stage_a_embeds_apart_from_pil(tmp_path):
    """A run with --resize torch into a folder embedded with PIL finds nothing in the cache and embeds again."""
    import json

    from crop_cluster.cli import main

    for k in range(3):
        draw_crop(tmp_path / "in" / f"c{k}.png", (200, 40 * k, 60), seed=k, size=(40 + 7 * k, 30))
    common = ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-e", "lite0", "-q", "--no_report"]
    computed = []
    for extra in ([], ["--resize", "torch"], ["--resize", "device"], ["--resize", "torch"]):
        assert main(common + extra) == 0
        computed.append(json.loads((tmp_path / "out" / "run.json").read_text())["counts"]["embeddings_computed"])
    assert computed == [3, 3, 0, 0]


def test_same_size_crop_untouched_and_white_padding():
    pixels = np.zeros((3, 20, 32), np.uint8)
    import torch

    fitted = fit_tensor(torch.from_numpy(pixels), 32, "pad", "bicubic").numpy()
    assert fitted.shape == (3, 32, 32)
    assert (fitted[:, :6] == 255).all() and (fitted[:, -6:] == 255).all() and (fitted[:, 7:25] == 0).all()
    square = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert torch.equal(fit_tensor(square, 32, "pad", "bicubic"), square)


def test_stage_b_fits_like_the_float_passes(tmp_path):
    """Stage B (raw crops, fitted together on the device, same-shape crops in one call) = fit_tensor's float32
    passes crop by crop, on every device."""
    import torch

    files = _photo_crops(tmp_path, SIZES + [(80, 31), (80, 31)])
    stage_b = PAD.with_resize("device")
    indices, batch, bad = collate([(i, stage_b.load(f)) for i, f in enumerate(files)], stack=False)
    assert isinstance(batch, list) and not bad
    assert [tuple(b.shape[1:]) for b in batch[:2]] == [(40, 40), (16, 40)]  # own sizes (JPEG draft: 1/2 scale)
    fitted = stage_b.to_device(batch, "cpu")
    expected = torch.stack([fit_tensor(crop, 32, "pad", "bicubic", "float32") for crop in batch])
    assert fitted.dtype == torch.uint8 and torch.equal(fitted, expected)
    assert torch.equal(fit_batch(batch[:1], 32, "pad", "bicubic", "cpu"), expected[:1])


def test_resize_choice():
    assert default_resize("cpu") == "pil" and default_resize("cuda:0") == "device"
    assert PAD.with_resize("torch").resize == "torch"
    assert Preprocess(32, (0.0,) * 3, (1.0,) * 3, resample=Image.LANCZOS).with_resize("device").resize == "pil"
    with pytest.raises(ValueError, match="available: pil, torch, device"):
        PAD.with_resize("cv2")


def test_normalise_same_values_as_before():
    import torch

    batch = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    mean = torch.tensor(PAD.mean).view(1, 3, 1, 1)
    std = torch.tensor(PAD.std).view(1, 3, 1, 1)
    assert torch.equal(PAD.normalise(batch), (batch.float() - mean) / std)


def test_embed_files_resize_modes_agree(tmp_path):
    """Every resize mode through embed_files, with a decodable and a broken file."""
    from crop_cluster.embed.base import embed_files
    from fake_backend import MeanColourBackend

    files = [str(draw_crop(tmp_path / f"c{k}.png", (200, 30 * k, 40), seed=k, size=(30 + 9 * k, 40))) for k in range(4)]
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    files.append(str(tmp_path / "bad.jpg"))
    results = {resize: embed_files(MeanColourBackend("cpu", "fake"), files, batch_size=2, num_workers=0, progress=False,
                                   resize=resize) for resize in ("pil", "torch", "device")}
    for result in results.values():
        assert result.ok_index.tolist() == [0, 1, 2, 3] and len(result.skipped) == 1
    for resize in ("torch", "device"):
        assert np.min(np.sum(results["pil"].embeddings * results[resize].embeddings, axis=1)) > 0.999


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_CROPS.is_dir(), reason="needs ../shared/data/biodivx-crops")
def test_lite0_parity_on_real_crops():
    """The issue's bar on the real crops with the bundled model: lite0 cosine >= 0.9999 to PIL's embeddings."""
    from crop_cluster.embed import load_backend
    from crop_cluster.embed.parity import embedding_parity

    files = sorted(str(p) for p in SHARED_CROPS.iterdir() if p.suffix.lower() == ".png")
    backend = load_backend("lite0", "cpu")
    assert pixel_parity(files, backend.preprocess)["max_abs_diff"] <= 1
    assert pixel_parity(files, backend.preprocess, kernel="uint8")["max_abs_diff"] <= 2
    report = embedding_parity(backend, files)
    assert report["torch"]["min_cosine"] >= 0.9999 and report["device"]["min_cosine"] >= 0.9999


def test_first_use_check_of_stage_b_agrees_with_pil_on_cpu_and_catches_a_wrong_filter(monkeypatch):
    from crop_cluster.embed import resize

    for size, geometry in [(48, "pad"), (224, "pad"), (224, "crop")]:
        assert resize.device_resize_disagreement(Preprocess(size, (0, 0, 0), (1, 1, 1), geometry=geometry),
                                                 "cpu") is None
    original = resize._interpolate
    monkeypatch.setattr(resize, "_interpolate", lambda pixels, height, width, mode, kernel: original(
        pixels, height, width, "bilinear", kernel))                      # bilinear where bicubic is asked for
    reason = resize.device_resize_disagreement(Preprocess(224, (0, 0, 0), (1, 1, 1)), "cpu")
    assert reason.startswith("differs from PIL on a 119x75 check crop (up to")


@pytest.mark.gpu
def test_cuda_first_use_check_of_stage_b_passes():
    from crop_cluster.embed import resize

    for size, geometry in [(224, "pad"), (224, "crop"), (518, "pad")]:
        assert resize.device_resize_disagreement(Preprocess(size, (0, 0, 0), (1, 1, 1), geometry=geometry),
                                                 "cuda:0") is None
