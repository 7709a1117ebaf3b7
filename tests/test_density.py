"""Dense embedding neighbourhoods (dedup/density.py) and the strict pixel check they call for (dedup/individuals.py)."""
from __future__ import annotations

import numpy as np
import pytest

from crop_cluster.dedup import DENSE_CERTAIN, DENSE_MARGIN
from crop_cluster.dedup import density as density_module
from crop_cluster.dedup.density import BACKGROUND_RANK, Background
from crop_cluster.dedup.individuals import LinkParams, link_individuals
from crop_cluster.dedup.verify import ThumbnailSource
from tests.test_verify import picture, recut, write


def crowd_with_pair(crowd: int, pair_cosine: float, crowd_cosine: float = 0.9) -> np.ndarray:
    """float32 (crowd + 2, crowd + 3) unit rows: `crowd` rows at `crowd_cosine` to each other, then a pair p, q
    at `pair_cosine` to each other and `crowd_cosine` to every crowd row."""
    d = crowd + 3
    eye = np.eye(d, dtype=np.float64)
    shared, own = np.sqrt(crowd_cosine), np.sqrt(1 - crowd_cosine)
    rows = [shared * eye[0] + own * eye[1 + i] for i in range(crowd)]
    turn = (pair_cosine - crowd_cosine) / (1 - crowd_cosine)           # cosine between the pair's own parts
    rows.append(shared * eye[0] + own * eye[crowd + 1])
    rows.append(shared * eye[0] + own * (turn * eye[crowd + 1] + np.sqrt(1 - turn ** 2) * eye[crowd + 2]))
    return np.asarray(rows, dtype=np.float32)


def test_a_pair_in_a_crowd_is_dense_and_the_same_pair_alone_is_not():
    crowded = crowd_with_pair(20, 0.95)
    background = Background(crowded, np.arange(len(crowded)))
    p, q = len(crowded) - 2, len(crowded) - 1
    assert background(np.array([p, q])) == pytest.approx([0.9, 0.9], abs=1e-5)
    assert background.dense(np.array([p]), np.array([q]), np.array([0.95])).tolist() == [True]
    assert background.dense(np.array([p]), np.array([q]), np.array([0.9 + DENSE_MARGIN + 0.005])).tolist() == [False]
    assert background.dense(np.array([p]), np.array([q]), np.array([DENSE_CERTAIN])).tolist() == [False]
    lonely = crowd_with_pair(20, 0.95, crowd_cosine=0.3)
    assert Background(lonely, np.arange(len(lonely))).dense(np.array([p]), np.array([q]), np.array([0.95])).tolist() \
        == [False]


def test_near_certain_copies_do_not_raise_the_background():
    x = crowd_with_pair(BACKGROUND_RANK + 5, 0.95, crowd_cosine=0.3)
    copies = np.repeat(x[:1], BACKGROUND_RANK + 2, axis=0)          # many exact copies of crop 0
    rows = np.vstack([x, copies])
    assert Background(rows, np.arange(len(rows)))(np.array([0]))[0] == pytest.approx(0.3, abs=1e-5)


def test_a_run_of_few_crops_has_no_background_and_no_dense_pair():
    x = crowd_with_pair(BACKGROUND_RANK - 2, 0.95)                   # BACKGROUND_RANK distinct crops in all
    background = Background(x, np.arange(len(x)))
    assert (background(np.arange(len(x))) == -1).all()
    assert not background.dense(np.array([0]), np.array([1]), np.array([0.9])).any()


def test_the_sample_is_capped_and_drawn_the_same_way_every_run(monkeypatch):
    monkeypatch.setattr(density_module, "BACKGROUND_SAMPLE", 30)
    x = np.random.default_rng(3).normal(size=(200, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    one, two = Background(x, np.arange(200)), Background(x, np.arange(200))
    assert one.sample.shape == (30, 16)
    np.testing.assert_array_equal(one(np.arange(200)), two(np.arange(200)))
    full = np.sort(x[:50] @ x.T, axis=1)[:, ::-1]                    # the rank over all crops differs from the sample's
    assert one(np.arange(50)).shape == (50,) and not np.allclose(one(np.arange(50)), full[:, BACKGROUND_RANK])


def crowd_files(tmp_path, crowd: int, second):
    """Files for crowd_with_pair: `crowd` different pictures, then p and `second(p_image)` for q."""
    files = [write(tmp_path / f"c{i}.png", picture(100 + i).crop((20, 20, 100, 100))) for i in range(crowd)]
    photo = picture(50)
    files.append(write(tmp_path / "p.png", photo.crop((20, 20, 100, 100))))
    files.append(write(tmp_path / "q.jpg", second(photo)))
    return files


@pytest.mark.parametrize("same_picture", [True, False])
def test_a_near_duplicate_in_a_crowd_is_linked_only_when_the_strict_pixel_check_accepts_it(tmp_path, same_picture):
    crowd = 14
    emb = crowd_with_pair(crowd, 0.95)                               # p - q at 0.95: above the 0.93 threshold
    if same_picture:
        files = crowd_files(tmp_path, crowd, lambda photo: recut(photo, (18, 22, 101, 98), 0.9, 85))
    else:
        files = crowd_files(tmp_path, crowd, lambda photo: picture(51).crop((20, 20, 100, 100)))
    n = len(files)
    args = (emb, np.arange(n), files, [None] * n, np.full(n, np.nan), np.full((n, 4), np.nan))
    found = link_individuals(*args, LinkParams(dedup_threshold=0.93, track_max_seconds=0.0, verify_from=0.85),
                             thumbnails=ThumbnailSource(files, None))
    assert found.counts["near_dense"] == 1
    assert found.counts["verify_strict"] >= 1                        # the crowd's band pairs are dense too
    if same_picture:
        assert found.individual[-1] == found.individual[-2] and "near-verified" in found.linked_by[-2:]
        assert found.counts["near_dense_accepted"] == 1
    else:
        assert found.individual[-1] != found.individual[-2]
        assert found.counts["near_dense_accepted"] == 0
    assert len(set(found.individual[:crowd].tolist())) == crowd      # different pictures in the crowd stay apart
    unverified = link_individuals(*args, LinkParams(dedup_threshold=0.93, track_max_seconds=0.0))
    assert unverified.individual[-1] == unverified.individual[-2] and "near" in unverified.linked_by[-2:]


def test_a_near_duplicate_alone_of_its_kind_is_linked_without_decoding_a_pixel(tmp_path):
    crowd = 14
    emb = crowd_with_pair(crowd, 0.95, crowd_cosine=0.3)
    files = crowd_files(tmp_path, crowd, lambda photo: picture(51).crop((20, 20, 100, 100)))
    n = len(files)
    source = ThumbnailSource(files, None)
    found = link_individuals(emb, np.arange(n), files, [None] * n, np.full(n, np.nan), np.full((n, 4), np.nan),
                             LinkParams(dedup_threshold=0.93, track_max_seconds=0.0, verify_from=0.85),
                             thumbnails=source)
    assert "near" in found.linked_by[-2:] and found.counts["near_dense"] == 0 and source.decoded == 0
