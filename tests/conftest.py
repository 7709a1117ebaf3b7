"""Shared fixtures: drawn test images, the fast fake backend, the shared real crops, the gpu and ray markers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
SHARED_CROPS = REPO.parent / "shared" / "data" / "biodivx-crops"

# Distinct base colours: crops drawn from one colour are one "species" for the fake backend.
PALETTE = [(220, 40, 40), (40, 160, 60), (40, 70, 220), (230, 200, 30), (150, 60, 170), (20, 20, 20)]


def draw_crop(path: Path, colour, seed: int, size=(48, 40)) -> Path:
    """Write a small image: a `colour` ellipse on white with seeded jitter, format from the suffix."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, (255, 255, 255))
    jitter = rng.integers(-3, 4, size=4)
    shade = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in colour)
    ImageDraw.Draw(image).ellipse([4 + jitter[0], 4 + jitter[1], size[0] - 5 + jitter[2], size[1] - 5 + jitter[3]],
                                  fill=shade)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def draw_views(folder: Path, colours: int, views: int) -> None:
    """Draw `views` crops of each of the first `colours` PALETTE colours: folder/c{colour}_v{view}.png."""
    for colour in range(colours):
        for view in range(views):
            draw_crop(folder / f"c{colour}_v{view}.png", PALETTE[colour], seed=10 * colour + view)


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """Exported ONNX models go to a per-session folder (also for subprocesses), never to the user's ~/.cache."""
    import os

    folder = tmp_path_factory.mktemp("user-cache")
    previous = os.environ.get("CROP_CLUSTER_CACHE")
    os.environ["CROP_CLUSTER_CACHE"] = str(folder)
    yield folder
    if previous is None:
        del os.environ["CROP_CLUSTER_CACHE"]
    else:
        os.environ["CROP_CLUSTER_CACHE"] = previous


def loopback_only() -> bool:
    """True inside a network namespace whose only interface is loopback (where the ray tests may run)."""
    import socket

    try:
        return {name for _, name in socket.if_nameindex()} <= {"lo"}
    except OSError:
        return False


def _skip_ray_tests(items) -> None:
    """ray-marked tests (but the runner, tests/test_ray_netns.py) run only inside a loopback-only network and
    with Ray installed; elsewhere tests/test_ray_netns.py runs them in a child `unshare -n` pytest."""
    import importlib.util

    reason = ("Ray is not installed (bash install.sh --ray)" if importlib.util.find_spec("ray") is None else
              None if loopback_only() else
              "runs inside a private network namespace: tests/test_ray_netns.py starts it (unshare -n)")
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("ray") and item.path.name != "test_ray_netns.py":
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_collection_modifyitems(config, items):
    _skip_ray_tests(items)
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


@pytest.fixture
def fake_backend(monkeypatch):
    """Register the fast "fake" backend (3-d mean colour, default threshold 0.9) for this test."""
    from crop_cluster import embed

    monkeypatch.setitem(embed.BACKENDS, "fake", embed.BackendInfo(
        "fake_backend", "MeanColourBackend", "mean-colour", 0.9, "test backend"))
    return "fake"


@pytest.fixture
def fresh_checks(monkeypatch):
    """Every fast path unchecked for this test (crop_cluster/fallbacks.py; the process's verdicts come back after)."""
    from crop_cluster import fallbacks

    monkeypatch.setattr(fallbacks, "_verdicts", {})
    monkeypatch.setattr(fallbacks, "_taken", {})
    return fallbacks


@pytest.fixture
def shared_crops() -> Path:
    """The 26 real light-trap crops in ../shared/data; the test is skipped when they are absent."""
    if not SHARED_CROPS.is_dir():
        pytest.skip("../shared/data/biodivx-crops is not present")
    return SHARED_CROPS
