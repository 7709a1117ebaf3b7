"""Embedding: device resolution, registry, image loading, batching/order/normalisation, real lite0 and a tiny dino."""
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw

from crop_cluster.embed import BACKENDS, EmbedError, backend_info, backend_of_model, load_backend
from crop_cluster.embed.base import EmbeddingBackend, EmbedResult, default_num_workers, embed_files
from crop_cluster.embed.data import ImageDataset, Preprocess, collate, describe_error, load_rgb
from crop_cluster.embed.device import resolve_device

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def draw_image(path, size=(48, 36), colour=(200, 40, 40), shape="ellipse", mode="RGB"):
    """Save a small drawing (a coloured shape on a pale background) to `path`; returns the path as str."""
    image = Image.new("RGB", size, (235, 230, 210))
    draw = ImageDraw.Draw(image)
    box = (size[0] // 6, size[1] // 6, size[0] * 5 // 6, size[1] * 5 // 6)
    if shape == "ellipse":
        draw.ellipse(box, fill=colour)
    elif shape == "rect":
        draw.rectangle(box, fill=colour)
    else:
        draw.line((0, 0) + size, fill=colour, width=4)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return str(path)


def drawn_set(folder, n=5):
    """n visibly different small images (different sizes, shapes, colours, formats)."""
    specs = [((48, 36), (200, 40, 40), "ellipse", "a.png"), ((30, 90), (40, 160, 40), "rect", "b.jpg"),
             ((64, 64), (30, 30, 200), "line", "c.bmp"), ((90, 20), (240, 200, 0), "ellipse", "d.webp"),
             ((40, 40), (120, 0, 120), "rect", "e.tiff"), ((50, 30), (0, 0, 0), "line", "f.png")]
    return [draw_image(folder / name, size, colour, shape) for size, colour, shape, name in specs[:n]]


def corrupt_file(path):
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    return str(path)


# --- device ---------------------------------------------------------------------------------------------------------

def cuda_available():
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("spec", ["cpu", "CPU", " cpu "])
def test_resolve_device_cpu(spec):
    assert resolve_device(spec) == "cpu"


def test_resolve_device_auto():
    assert resolve_device("auto") == ("cuda:0" if cuda_available() else "cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:7"])
def test_resolve_device_cuda_without_gpu_names_the_fix(spec):
    if cuda_available():
        pytest.skip("a CUDA GPU is available here")
    with pytest.raises(EmbedError) as excinfo:
        resolve_device(spec)
    assert "-d cpu" in str(excinfo.value)
    assert spec in str(excinfo.value)


@pytest.mark.parametrize("spec", ["gpu", "mps", "", "cuda:", "cuda:x", "cpu:0", "cuda0", "auto cpu"],
                         ids=lambda spec: f"spec={spec!r}")  # a bare id 'gpu' would read as the gpu marker
def test_resolve_device_bad_spec(spec):
    with pytest.raises(EmbedError, match="unknown device"):
        resolve_device(spec)


# --- registry -------------------------------------------------------------------------------------------------------

def test_backend_info_unknown_lists_available():
    with pytest.raises(EmbedError) as excinfo:
        backend_info("nope")
    message = str(excinfo.value)
    assert "'nope'" in message
    assert "dino" in message and "lite0" in message
    assert ", ".join(BACKENDS) in message


def test_load_backend_unknown_is_embed_error():
    with pytest.raises(EmbedError, match="available: "):
        load_backend("nope", "cpu")


def test_registry_entries():
    assert backend_info("lite0").default_model == "efficientnet-lite0"
    assert backend_info("dino").default_model == "facebook/dinov2-base"
    for info in BACKENDS.values():
        assert -1.0 <= info.default_threshold <= 1.0


@pytest.mark.parametrize("model,expected", [
    ("lite0:efficientnet-lite0", "lite0"), ("dino:facebook/dinov2-base", "dino"), ("dino:/some/path:x", "dino"),
    ("other:thing", None), ("lite0", "lite0"), ("", None)])
def test_backend_of_model(model, expected):
    assert backend_of_model(model) == expected


def test_embed_errors_are_value_errors():
    assert issubclass(EmbedError, ValueError)


def test_importing_embed_modules_does_not_import_torch_or_transformers():
    code = ("import sys, crop_cluster.embed.device, crop_cluster.embed.base, crop_cluster.embed.data, "
            "crop_cluster.embed.lite0, crop_cluster.embed.hf, crop_cluster.embed.cache, crop_cluster.embed.onnx\n"
            "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'onnx') if m in sys.modules]\n"
            "sys.exit(1 if heavy else 0)\n")
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert child.returncode == 0, child.stderr.decode(errors="replace")


# --- image loading --------------------------------------------------------------------------------------------------

def test_load_rgb_rgba_composited_onto_white(tmp_path):
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (255, 0, 0, 255))    # opaque red
    image.putpixel((1, 0), (0, 0, 255, 0))      # fully transparent blue
    image.putpixel((2, 0), (255, 0, 0, 128))    # half-transparent red
    image.save(tmp_path / "a.png")
    rgb = load_rgb(str(tmp_path / "a.png"))
    assert rgb.mode == "RGB" and rgb.size == (3, 1)
    assert rgb.getpixel((0, 0)) == (255, 0, 0)
    assert rgb.getpixel((1, 0)) == (255, 255, 255)
    r, g, b = rgb.getpixel((2, 0))
    assert r == 255 and abs(g - 127) <= 1 and abs(b - 127) <= 1


def test_load_rgb_la_composited_onto_white(tmp_path):
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (100, 255))
    image.putpixel((1, 0), (0, 0))
    image.save(tmp_path / "a.png")
    rgb = load_rgb(str(tmp_path / "a.png"))
    assert rgb.getpixel((0, 0)) == (100, 100, 100)
    assert rgb.getpixel((1, 0)) == (255, 255, 255)


def test_load_rgb_grey(tmp_path):
    Image.new("L", (4, 3), 100).save(tmp_path / "g.png")
    rgb = load_rgb(str(tmp_path / "g.png"))
    assert rgb.mode == "RGB" and rgb.size == (4, 3) and rgb.getpixel((1, 1)) == (100, 100, 100)


def test_load_rgb_palette_with_and_without_transparency(tmp_path):
    image = Image.new("P", (2, 1), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "t.png", transparency=0)
    rgb = load_rgb(str(tmp_path / "t.png"))
    assert rgb.getpixel((0, 0)) == (255, 255, 255)  # the transparent index becomes white, not black
    assert rgb.getpixel((1, 0)) == (255, 0, 0)
    image.save(tmp_path / "o.png")
    rgb = load_rgb(str(tmp_path / "o.png"))
    assert rgb.getpixel((0, 0)) == (0, 0, 0) and rgb.getpixel((1, 0)) == (255, 0, 0)


@pytest.mark.parametrize("suffix", [".jpg", ".tiff"])
def test_load_rgb_cmyk(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path)
    rgb = load_rgb(str(path))
    assert rgb.mode == "RGB"
    r, g, b = rgb.getpixel((4, 4))
    assert r > 230 and g < 30 and b < 30  # CMYK red stays red


def test_load_rgb_16bit_png_low_values(tmp_path):
    Image.fromarray(np.full((5, 4), 200, np.uint16)).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = load_rgb(str(tmp_path / "g16.png"))
    assert rgb.mode == "RGB" and rgb.size == (4, 5)


def test_load_rgb_16bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 30000, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    rgb = np.asarray(load_rgb(str(tmp_path / "g16.png")))
    np.testing.assert_allclose(rgb[0, :, 0], [0, 117, 255], atol=2)


def test_load_rgb_applies_exif_orientation(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    ImageDraw.Draw(image).rectangle((0, 0, 9, 19), fill=(255, 0, 0))  # red band on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    image.save(tmp_path / "o.jpg", exif=exif, quality=95)
    rgb = load_rgb(str(tmp_path / "o.jpg"))
    assert rgb.size == (20, 40)
    r, g, b = rgb.getpixel((10, 3))  # the left band is now at the top
    assert r > 200 and g < 60 and b < 60


def test_load_rgb_raises_for_non_image(tmp_path):
    (tmp_path / "t.jpg").write_text("hello, not an image\n")
    with pytest.raises(OSError):
        load_rgb(str(tmp_path / "t.jpg"))


def test_describe_error():
    assert describe_error(OSError("broken data stream\nmore")) == "cannot decode image (OSError: broken data stream)"
    assert describe_error(ValueError()) == "cannot decode image (ValueError)"


# --- dataset and collate --------------------------------------------------------------------------------------------

@pytest.fixture
def bad_files(tmp_path):
    good = draw_image(tmp_path / "good.png")
    truncated = tmp_path / "truncated.jpg"
    draw_image(tmp_path / "full.jpg", size=(64, 64))
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("this is a text file renamed to .jpg\n")
    return {"good": good, "corrupt": corrupt_file(tmp_path / "corrupt.png"), "truncated": str(truncated),
            "empty": str(empty), "text": str(text), "missing": str(tmp_path / "missing.png")}


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty", "text", "missing"])
def test_dataset_returns_reason_for_unreadable_file(bad_files, kind):
    dataset = ImageDataset([bad_files["good"], bad_files[kind]], TF16)
    index, reason = dataset[1]
    assert index == 1
    assert isinstance(reason, str) and reason.startswith("cannot decode image (")


def test_dataset_returns_tensor_for_good_file(bad_files):
    dataset = ImageDataset([bad_files["good"]], TF16)
    assert len(dataset) == 1
    index, tensor = dataset[0]
    assert index == 0 and tuple(tensor.shape) == (3, 16, 16) and str(tensor.dtype) == "torch.uint8"


TF16 = Preprocess(16, mean=(127.0,) * 3, std=(128.0,) * 3)


def test_collate_splits_good_and_bad():
    import torch

    items = [(0, torch.zeros(3, 2, 2)), (1, "cannot decode image (X)"), (2, torch.ones(3, 2, 2))]
    indices, batch, bad = collate(items)
    assert indices == [0, 2]
    assert tuple(batch.shape) == (2, 3, 2, 2) and float(batch[1].sum()) == 12.0
    assert bad == [(1, "cannot decode image (X)")]
    indices, batch, bad = collate([(5, "r")])
    assert indices == [] and batch is None and bad == [(5, "r")]


# --- Preprocess: geometry (uint8, in the workers), normalisation (on the device), JPEG draft ----------------------

TF = dict(mean=(127.0,) * 3, std=(128.0,) * 3)


def test_pad_fits_an_elongated_crop_whole_onto_white():
    image = Image.new("RGB", (100, 20), (255, 0, 0))
    pixels = np.asarray(Preprocess(50, **TF).fit(image))
    assert pixels.shape == (50, 50, 3)
    assert (pixels[0, 0] == 255).all() and (pixels[-1, -1] == 255).all()  # white above and below
    assert (pixels[25, 0] == [255, 0, 0]).all() and (pixels[25, -1] == [255, 0, 0]).all()  # both ends kept


@pytest.mark.parametrize("resample", [Image.NEAREST, Image.BILINEAR, Image.BICUBIC, Image.LANCZOS])
def test_pad_gives_the_pixels_of_resizing_the_padded_square(resample):
    """Wide crops skip the horizontal pass over the padding rows: byte-identical to padding first, then resizing."""
    rng = np.random.default_rng(resample)
    for size in (56, 224):
        preprocess = Preprocess(size, resample=resample, **TF)
        shapes = [(300, 7), (225, 224), (57, 1), (40, 13), (224, 100), (500, 499), *rng.integers(1, 600, (6, 2))]
        for width, height in shapes:
            image = Image.fromarray(rng.integers(0, 256, (int(height), int(width), 3), dtype=np.uint8))
            side = max(image.size)
            square = Image.new("RGB", (side, side), (255, 255, 255))
            square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
            expected = square if side == size else square.resize((size, size), resample)
            assert np.array_equal(np.asarray(preprocess.fit(image)), np.asarray(expected)), (width, height)


def test_centre_crop_cuts_the_ends_of_an_elongated_crop():
    image = Image.new("RGB", (100, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # a red end that a centre crop loses
    pixels = np.asarray(Preprocess(20, geometry="crop", **TF).fit(image))
    assert pixels.shape == (20, 20, 3) and (pixels[..., 0] < 50).all()


def test_preprocess_load_is_uint8_and_normalise_matches_tf_scaling(tmp_path):
    path = tmp_path / "x.png"
    Image.new("RGB", (8, 8), (127, 255, 0)).save(path)
    preprocess = Preprocess(8, **TF)
    tensor = preprocess.load(str(path))
    assert tuple(tensor.shape) == (3, 8, 8) and str(tensor.dtype) == "torch.uint8"
    normalised = preprocess.normalise(tensor[None])
    assert str(normalised.dtype) == "torch.float32"
    np.testing.assert_allclose(normalised[0, :, 3, 3].numpy(), [0.0, 1.0, -127 / 128], atol=1e-6)


def test_preprocess_rejects_unknown_geometry_and_keys_differ():
    with pytest.raises(ValueError, match="pad, crop"):
        Preprocess(8, geometry="stretch", **TF)
    assert Preprocess(8, **TF).key != Preprocess(8, geometry="crop", **TF).key != Preprocess(9, **TF).key


def test_large_jpeg_is_decoded_at_reduced_scale_keeping_enough_pixels(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 400), (10, 120, 200)).save(path, quality=90)
    assert load_rgb(str(path)).size == (1600, 400)
    assert load_rgb(str(path), (224, "pad")).size == (400, 100)      # 1/4 scale: long side 400 >= 224
    assert load_rgb(str(path), (224, "crop")).size == (1600, 400)    # short side may not shrink below 224
    assert tuple(Preprocess(224, **TF).load(str(path)).shape) == (3, 224, 224)


# --- embed_files with a fake backend (order, skipping, batching, normalisation) -----------------------------------

class FakeBackend(EmbeddingBackend):
    """Mean colour (+ offset, so rows are never unit) as a 3-d vector; records the batch sizes it saw."""

    name = "fake"

    def __init__(self):
        super().__init__("cpu", "fake-model")
        self.preprocess = Preprocess(8, **TF)
        self.batch_sizes = []

    def embed_batch(self, batch):
        self.batch_sizes.append(int(batch.shape[0]))
        return batch.mean(dim=(2, 3)) * 3 + 2


def test_fake_embed_order_normalisation_and_batches(tmp_path):
    files = drawn_set(tmp_path, 5)
    backend = FakeBackend()
    result = embed_files(backend, files, batch_size=2, num_workers=0, progress=False)
    assert isinstance(result, EmbedResult)
    assert backend.batch_sizes == [2, 2, 1]
    assert result.embeddings.shape == (5, 3) and result.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-6)
    assert result.ok_index.dtype == np.int64 and result.ok_index.tolist() == [0, 1, 2, 3, 4]
    assert result.skipped == []
    one_by_one = [embed_files(FakeBackend(), [f], batch_size=1, num_workers=0, progress=False).embeddings[0]
                  for f in files]
    np.testing.assert_allclose(result.embeddings, np.stack(one_by_one), atol=1e-6)
    assert backend.model_id == "fake:fake-model"


def test_fake_embed_skips_bad_files_and_keeps_order(tmp_path):
    good = drawn_set(tmp_path, 3)
    bad1, bad2 = corrupt_file(tmp_path / "x.png"), corrupt_file(tmp_path / "y.png")
    files = [good[0], good[1], bad1, bad2, good[2]]  # the second batch of two is entirely bad
    backend = FakeBackend()
    result = embed_files(backend, files, batch_size=2, num_workers=0, progress=False)
    assert result.ok_index.tolist() == [0, 1, 4]
    assert [f for f, _ in result.skipped] == [bad1, bad2]
    assert all(r.startswith("cannot decode image") for _, r in result.skipped)
    assert backend.batch_sizes == [2, 1]
    reference = embed_files(FakeBackend(), good, batch_size=3, num_workers=0, progress=False)
    np.testing.assert_allclose(result.embeddings, reference.embeddings, atol=1e-6)


def test_fake_embed_all_bad_or_empty(tmp_path):
    bad = [corrupt_file(tmp_path / "x.png"), str(tmp_path / "gone.jpg")]
    result = embed_files(FakeBackend(), bad, batch_size=4, num_workers=0, progress=False)
    assert result.embeddings.shape[0] == 0 and result.embeddings.dtype == np.float32
    assert result.ok_index.tolist() == [] and len(result.skipped) == 2
    result = embed_files(FakeBackend(), [], batch_size=4, num_workers=0, progress=False)
    assert result.embeddings.shape[0] == 0 and result.skipped == []


@pytest.mark.parametrize("cores,cpu,cuda", [(1, 0, 0), (2, 0, 1), (4, 2, 3), (16, 4, 15), (64, 4, 32)])
def test_default_num_workers(monkeypatch, cores, cpu, cuda):
    import crop_cluster.embed.base as embed_base

    monkeypatch.setattr(embed_base, "_usable_cores", lambda: cores)
    assert default_num_workers("cpu") == cpu
    assert default_num_workers("cuda:0") == cuda


def test_usable_cores_falls_back_to_cpu_count(monkeypatch):
    import crop_cluster.embed.base as embed_base

    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert embed_base._usable_cores() == 1


# --- real lite0 (bundled weights) -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lite0():
    return load_backend("lite0", "cpu")


@pytest.fixture(scope="module")
def lite0_images(tmp_path_factory):
    return drawn_set(tmp_path_factory.mktemp("lite0"), 5)


@pytest.fixture(scope="module")
def lite0_reference(lite0, lite0_images):
    return embed_files(lite0, lite0_images, batch_size=2, num_workers=0, progress=False)


def test_lite0_embeds_shape_dtype_unit_norm(lite0, lite0_reference):
    result = lite0_reference  # 5 images in batches of 2: the last batch holds one image
    assert result.embeddings.shape == (5, 1280)
    assert result.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)
    assert result.ok_index.tolist() == [0, 1, 2, 3, 4]
    assert result.skipped == []
    assert lite0.model_id == "lite0:efficientnet-lite0"
    assert os.path.isfile(lite0.weights_file)


def test_lite0_different_images_give_different_rows(lite0_reference):
    similarity = lite0_reference.embeddings @ lite0_reference.embeddings.T
    assert (similarity[~np.eye(5, dtype=bool)] < 0.999).all()


def test_lite0_batch_size_does_not_change_results(lite0, lite0_images, lite0_reference):
    whole = embed_files(lite0, lite0_images, batch_size=5, num_workers=0, progress=False)
    np.testing.assert_allclose(whole.embeddings, lite0_reference.embeddings, atol=1e-5)


def test_lite0_same_image_twice_gives_identical_rows(lite0, lite0_images, tmp_path):
    copy = tmp_path / ("copy" + os.path.splitext(lite0_images[0])[1])
    shutil.copyfile(lite0_images[0], copy)
    result = embed_files(lite0, [lite0_images[0], lite0_images[0], str(copy)], batch_size=3, num_workers=0,
                         progress=False)
    np.testing.assert_allclose(result.embeddings[1:], result.embeddings[[0, 0]], rtol=0, atol=1e-6)


def test_lite0_corrupt_file_in_the_middle_is_skipped(lite0, lite0_images, lite0_reference, tmp_path):
    bad = corrupt_file(tmp_path / "bad.png")
    files = lite0_images[:2] + [bad] + lite0_images[2:]
    result = embed_files(lite0, files, batch_size=2, num_workers=0, progress=False)
    assert result.ok_index.tolist() == [0, 1, 3, 4, 5]
    assert len(result.skipped) == 1 and result.skipped[0][0] == bad
    assert result.skipped[0][1].startswith("cannot decode image")
    np.testing.assert_allclose(result.embeddings, lite0_reference.embeddings, atol=1e-5)


def test_lite0_decoding_workers_keep_order(lite0, lite0_images, lite0_reference):
    result = embed_files(lite0, lite0_images, batch_size=2, num_workers=2, progress=False)
    assert result.ok_index.tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(result.embeddings, lite0_reference.embeddings, atol=1e-5)


def test_lite0_runs_in_onnxruntime_with_the_same_embeddings_as_torch(lite0, lite0_images, lite0_reference,
                                                                      user_cache):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from crop_cluster.embed.lite0 import Lite0Backend

    assert lite0.runtime == "onnxruntime"
    exported = list((user_cache / "onnx").glob("lite0-*.onnx"))
    assert len(exported) == 1
    eager = Lite0Backend("cpu", "efficientnet-lite0", onnx=False)
    assert eager.runtime == "torch" and eager.model_id == lite0.model_id
    result = embed_files(eager, lite0_images, batch_size=2, num_workers=0, progress=False)
    np.testing.assert_allclose(result.embeddings, lite0_reference.embeddings, rtol=0, atol=1e-4)
    stamp = exported[0].stat().st_mtime_ns
    assert load_backend("lite0", "cpu").runtime == "onnxruntime"   # the export is reused, not redone
    assert exported[0].stat().st_mtime_ns == stamp and len(list((user_cache / "onnx").iterdir())) == 1


def test_lite0_missing_weights_file(tmp_path):
    with pytest.raises(EmbedError) as excinfo:
        load_backend("lite0", "cpu", str(tmp_path / "nope.pth"))
    assert "nope.pth" in str(excinfo.value) and "leave out -fp" in str(excinfo.value)


def test_lite0_unloadable_weights_file(tmp_path):
    weights = tmp_path / "garbage.pth"
    weights.write_bytes(b"not a state dict")
    with pytest.raises(EmbedError) as excinfo:
        load_backend("lite0", "cpu", str(weights))
    assert "garbage.pth" in str(excinfo.value) and "leave out -fp" in str(excinfo.value)


# --- dino on a tiny random model ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_dino(tmp_path_factory):
    """Folder holding a random 32-d Dinov2Model and its image processor, as save_pretrained writes them."""
    import torch
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder = tmp_path_factory.mktemp("tiny-dino")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                             patch_size=14, image_size=56)).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}).save_pretrained(folder)
    return str(folder)


def backend_processor_mean(folder):
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder).image_mean


def test_dino_local_folder_embeds(tiny_dino, tmp_path):
    backend = load_backend("dino", "cpu", tiny_dino)
    assert backend.model_id == f"dino:{tiny_dino}"
    files = drawn_set(tmp_path, 4)
    _, tensor = ImageDataset(files[:1], backend.preprocess)[0]
    assert tuple(tensor.shape) == (3, 56, 56)
    assert backend.preprocess.mean == pytest.approx([m * 255 for m in backend_processor_mean(tiny_dino)])
    result = embed_files(backend, files, batch_size=3, num_workers=0, progress=False)
    assert result.embeddings.shape == (4, 32) and result.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)
    assert result.ok_index.tolist() == [0, 1, 2, 3]
    whole = embed_files(backend, files, batch_size=4, num_workers=0, progress=False)
    np.testing.assert_allclose(whole.embeddings, result.embeddings, atol=1e-5)


def test_dino_missing_local_folder_points_to_lite0(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EmbedError) as excinfo:
        load_backend("dino", "cpu", "./nope")
    assert "./nope" in str(excinfo.value) and "-e lite0" in str(excinfo.value)


def test_dino_file_instead_of_folder(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"x")
    with pytest.raises(EmbedError, match="not a model folder"):
        load_backend("dino", "cpu", str(path))


def test_dino_folder_without_preprocessor_config(tiny_dino, tmp_path):
    folder = tmp_path / "incomplete"
    folder.mkdir()
    for name in os.listdir(tiny_dino):
        if name != "preprocessor_config.json":
            shutil.copy(os.path.join(tiny_dino, name), folder / name)
    with pytest.raises(EmbedError) as excinfo:
        load_backend("dino", "cpu", str(folder))
    assert str(folder) in str(excinfo.value) and "-e lite0" in str(excinfo.value)


def test_dino_hub_id_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    start = time.monotonic()
    with pytest.raises(EmbedError) as excinfo:
        load_backend("dino", "cpu", "no-such-org/no-such-model-for-tests")
    assert time.monotonic() - start < 10
    assert "no-such-org/no-such-model-for-tests" in str(excinfo.value)
    assert "-e lite0" in str(excinfo.value)


def test_dino_hub_unreachable_fails_fast(tmp_path, monkeypatch):
    with socket.socket() as probe:  # a local port with nothing listening: connections are refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    start = time.monotonic()
    with pytest.raises(EmbedError) as excinfo:
        load_backend("dino", "cpu", "no-such-org/no-such-model-for-tests")
    assert time.monotonic() - start < 10
    assert "cannot be reached" in str(excinfo.value) and "-e lite0" in str(excinfo.value)
