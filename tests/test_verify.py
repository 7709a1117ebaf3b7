"""Pixel verification of the uncertain near-duplicate band (dedup/verify.py) and its links (near-verified)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from crop_cluster.dedup import VERIFY_MIN_DETAIL, VERIFY_MIN_SCORE
from crop_cluster.dedup import individuals as individuals_module
from crop_cluster.dedup.individuals import LinkParams, link_individuals
from crop_cluster.dedup.verify import THUMB, ThumbnailSource, pair_scores, same_picture, verify_pairs
from crop_cluster.inputs.sidecars import parse_crop_name


def picture(seed: int, size: int = 120) -> Image.Image:
    """A smooth random 'photo' (blobs of several sizes), RGB."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.uint8)
    fine = rng.uniform(0, 255, (20, 20, 3)).astype(np.uint8)
    big = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), dtype=np.float32)
    small = np.asarray(Image.fromarray(fine).resize((size, size), Image.BICUBIC), dtype=np.float32)
    return Image.fromarray(np.clip(0.6 * big + 0.4 * small, 0, 255).astype(np.uint8))


def recut(image: Image.Image, box, scale: float, quality: int) -> Image.Image:
    """Another crop of `image`: box, resize by `scale`, JPEG at `quality`."""
    view = image.crop(box)
    view = view.resize((int(view.width * scale), int(view.height * scale)), Image.BICUBIC)
    buffer = io.BytesIO()
    view.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def grey_thumb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((THUMB, THUMB), Image.BOX), dtype=np.uint8)


def test_another_cut_of_one_picture_scores_high_and_another_picture_low():
    photo = picture(1)
    tight = photo.crop((20, 20, 100, 100))
    copies = [recut(photo, (17, 22, 102, 98), 0.8, 60), recut(photo, (23, 18, 98, 103), 1.25, 90)]
    others = [picture(2).crop((20, 20, 100, 100)), picture(3).crop((20, 20, 100, 100))]
    a = np.stack([grey_thumb(tight)] * 4)
    b = np.stack([grey_thumb(v) for v in copies + others])
    grey, detail, fine = pair_scores(a, b)
    assert grey.shape == detail.shape == fine.shape == (4,) and grey.dtype == detail.dtype == np.float32
    assert (grey[:2] >= VERIFY_MIN_SCORE).all() and (detail[:2] >= VERIFY_MIN_DETAIL).all(), (grey, detail)
    assert (grey[2:] < 0.9).all(), grey
    assert same_picture(a, b).tolist() == [True, True, False, False]
    lazy = pair_scores(a, b, fine=np.array([True, False, True, True]), fine_from=(0.9, -1.0))[2]
    assert lazy[0] == pytest.approx(fine[0], abs=1e-6) and np.isnan(lazy[1:]).all()    # wanted and still deciding


def silhouette(seed: int, size: int = 120) -> Image.Image:
    """A bright ellipse on black whose inside carries the texture of picture(seed) at a low amplitude: pictures
    of different seeds share the outline (the Fashion-MNIST case) and differ inside."""
    yy, xx = np.mgrid[:size, :size]
    inside = ((xx - 60) ** 2 / 35 ** 2 + (yy - 60) ** 2 / 45 ** 2) <= 1
    texture = np.asarray(picture(seed, size).convert("L"), dtype=np.float32)
    grey = np.where(inside, 200 + 0.35 * (texture - texture.mean()), 10)
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")


def test_one_outline_with_another_inside_passes_the_grey_score_but_not_the_detail_score():
    one, two = silhouette(1), silhouette(3)
    a = np.stack([grey_thumb(one.crop((10, 10, 110, 110)))] * 3)
    b = np.stack([grey_thumb(recut(one, (8, 12, 112, 108), 0.8, 60)), grey_thumb(two.crop((10, 10, 110, 110))),
                  grey_thumb(recut(two, (8, 12, 112, 108), 1.2, 80))])
    grey, detail, _ = pair_scores(a, b)
    assert (grey >= VERIFY_MIN_SCORE).all(), grey                  # the outline alone aligns: grey NCC passes
    assert detail[0] >= VERIFY_MIN_DETAIL and (detail[1:] < VERIFY_MIN_DETAIL).all(), detail
    assert (pair_scores(b, a)[1][1:] < VERIFY_MIN_DETAIL).all()     # the other direction too
    assert same_picture(a, b).tolist() == [True, False, False]


def test_a_pair_passes_when_either_direction_passes():
    photo = picture(8)
    a = np.stack([grey_thumb(photo.crop((20, 20, 100, 100)))])
    b = np.stack([grey_thumb(recut(photo, (17, 22, 102, 98), 0.8, 60))])
    assert same_picture(a, b, min_score=2.0).tolist() == [False]     # unreachable: both directions fail
    forward, backward = pair_scores(a, b)[0][0], pair_scores(b, a)[0][0]
    middle = float(min(forward, backward) + max(forward, backward)) / 2
    assert same_picture(a, b, min_score=middle, min_detail=-1).tolist() == [True]
    assert same_picture(b, a, min_score=middle, min_detail=-1).tolist() == [True]


def test_a_flat_crop_scores_minus_one_not_nan():
    flat = np.full((1, THUMB, THUMB), 128, dtype=np.uint8)
    grey, detail, fine = pair_scores(flat, flat)
    assert grey[0] <= 0.0 and np.isfinite(detail[0]) and detail[0] < 0.01
    assert not same_picture(flat, flat)[0]


def write(path, image):
    image.save(path)
    return str(path)


def test_undecodable_crops_are_never_accepted_and_thumbnails_are_cached_by_content(tmp_path):
    photo = picture(4)
    files = [write(tmp_path / "a.png", photo.crop((20, 20, 100, 100))),
             write(tmp_path / "b.jpg", recut(photo, (18, 21, 101, 99), 1.1, 85)),
             str(tmp_path / "broken.png")]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    cache = tmp_path / "cache"
    source = ThumbnailSource(files, str(cache))
    accepted = verify_pairs(np.array([0, 0]), np.array([1, 2]), source)
    assert accepted.tolist() == [True, False]
    assert source.decoded == 2
    again = ThumbnailSource(files, str(cache))                   # a re-run: nothing decoded again
    thumbs, ok = again(np.array([0, 1, 2]))
    assert ok.tolist() == [True, True, False] and again.decoded == 0
    assert thumbs.shape == (3, THUMB, THUMB) and thumbs.dtype == np.uint8


def band_pair(cosine):
    """Two unit vectors (2, 8) with the given cosine."""
    a = np.zeros(8)
    a[0] = 1.0
    b = np.zeros(8)
    b[0], b[1] = cosine, np.sqrt(1 - cosine ** 2)
    return np.stack([a, b]).astype(np.float32)


@pytest.mark.parametrize("same_frame", [False, True])
def test_band_pairs_of_one_picture_are_linked_near_verified_except_within_one_frame(tmp_path, same_frame):
    photo = picture(5)
    other = picture(6)
    names = ["crop_f1_CROPNUMBER_0_UUID_x.png", f"crop_f{1 if same_frame else 2}_CROPNUMBER_1_UUID_x.jpg",
             "crop_f3_CROPNUMBER_0_UUID_x.png", "crop_f4_CROPNUMBER_0_UUID_x.png"]
    files = [write(tmp_path / names[0], photo.crop((20, 20, 100, 100))),
             write(tmp_path / names[1], recut(photo, (18, 22, 101, 98), 0.9, 70)),
             write(tmp_path / names[2], photo.crop((20, 20, 100, 100)).rotate(90)),
             write(tmp_path / names[3], other.crop((20, 20, 100, 100)))]
    emb = np.zeros((4, 8), dtype=np.float32)
    emb[:2] = band_pair(0.85)                              # in the band [0.75, 0.93) given below
    emb[2] = emb[0] * 0.86 + np.eye(8, dtype=np.float32)[2] * np.sqrt(1 - 0.86 ** 2)
    emb[3] = emb[0] * 0.88 + np.eye(8, dtype=np.float32)[3] * np.sqrt(1 - 0.88 ** 2)
    params = LinkParams(dedup_threshold=0.93, track_max_seconds=0.0, verify_from=0.75)
    frames = [(parse_crop_name(name) or (None,))[0] for name in names]
    found = link_individuals(emb, np.arange(4), files, frames, np.full(4, np.nan), np.full((4, 4), np.nan), params,
                             thumbnails=ThumbnailSource(files, None))
    if same_frame:
        assert found.individual.tolist() == [0, 1, 2, 3]
        assert found.counts["linked_near_verified"] == 0
    else:
        assert found.individual.tolist() == [0, 0, 1, 2]        # the rotated and the other picture stay apart
        assert sorted(found.linked_by) == ["", "", "", "near-verified"]
        assert found.counts["linked_near_verified"] == 1 and found.counts["verify_accepted"] == 1
    off = link_individuals(emb, np.arange(4), files, frames, np.full(4, np.nan), np.full((4, 4), np.nan),
                           LinkParams(dedup_threshold=0.93, track_max_seconds=0.0),
                           thumbnails=ThumbnailSource(files, None))
    assert off.individual.tolist() == [0, 1, 2, 3]              # verify_from None: verification off


def test_when_the_forest_pair_fails_another_pair_between_the_two_individuals_is_tried(tmp_path):
    photo = picture(7)
    names = ["a.png", "a_turned.png", "b.jpg"]
    files = [write(tmp_path / names[0], photo.crop((20, 20, 100, 100))),
             write(tmp_path / names[1], photo.crop((20, 20, 100, 100)).rotate(90)),
             write(tmp_path / names[2], recut(photo, (18, 22, 101, 98), 0.9, 70))]
    y = (0.9 - 0.95 * 0.85) / np.sqrt(1 - 0.95 ** 2)
    emb = np.array([[1.0, 0.0, 0.0], [0.95, np.sqrt(1 - 0.95 ** 2), 0.0],
                    [0.85, y, np.sqrt(1 - 0.85 ** 2 - y ** 2)]], dtype=np.float32)
    # a - a_turned: 0.95, near-duplicates by the embedding; b - a_turned: 0.90 is the forest pair (fails the pixel
    # check: turned by 90 degrees); b - a: 0.85 is the alternative that passes
    found = link_individuals(emb, np.arange(3), files, [None] * 3, np.full(3, np.nan), np.full((3, 4), np.nan),
                             LinkParams(dedup_threshold=0.93, track_max_seconds=0.0, verify_from=0.75),
                             thumbnails=ThumbnailSource(files, None))
    assert found.individual.tolist() == [0, 0, 0]
    assert found.counts["verify_candidates"] == 2 and found.counts["verify_accepted"] == 1
    assert found.linked_by.count("near-verified") == 1


@pytest.mark.parametrize("budget", [1.0, 0.0])
def test_two_cuts_whose_forest_links_go_to_another_picture_are_tried_against_each_other(tmp_path, monkeypatch,
                                                                                     budget):
    monkeypatch.setattr(individuals_module, "VERIFY_EXTRA_PER_CROP", budget)
    photo, other = picture(9), picture(10)
    files = [write(tmp_path / "x.png", other.crop((20, 20, 100, 100))),
             write(tmp_path / "a.png", photo.crop((20, 20, 100, 100))),
             write(tmp_path / "b.jpg", recut(photo, (18, 22, 101, 98), 0.9, 70))]
    s = np.sqrt(1 - 0.9 ** 2)
    t = (0.8 - 0.81) / s
    emb = np.array([[1.0, 0.0, 0.0], [0.9, s, 0.0], [0.9, t, np.sqrt(1 - 0.81 - t * t)]], dtype=np.float32)
    # x - a and x - b: 0.90, the forest's pairs (another picture: refused, and no other pair between x and a or
    # x and b); a - b: 0.80, in the band but not a forest pair: only the sibling round (a, b both next to x) tries it
    found = link_individuals(emb, np.arange(3), files, [None] * 3, np.full(3, np.nan), np.full((3, 4), np.nan),
                             LinkParams(dedup_threshold=0.93, track_max_seconds=0.0, verify_from=0.65),
                             thumbnails=ThumbnailSource(files, None))
    if budget:
        assert found.individual.tolist() == [0, 1, 1]
        assert found.counts["verify_candidates"] == 3 and found.counts["verify_accepted"] == 1
    else:                                                         # no budget for the later rounds
        assert found.individual.tolist() == [0, 1, 2]
        assert found.counts["verify_candidates"] == 2 and found.counts["verify_accepted"] == 0


def test_thumbnails_decoded_in_threads_keep_their_order_and_report_each_broken_file(tmp_path, monkeypatch):
    from crop_cluster.dedup import verify as verify_module
    from crop_cluster.dedup.verify import make_thumbnail

    monkeypatch.setattr(verify_module, "DECODE_THREADS", 2)
    files = [write(tmp_path / f"p{i}.png", picture(20 + i, 60)) for i in range(9)]
    (tmp_path / "p4.png").write_bytes(b"broken")
    source = ThumbnailSource(files, str(tmp_path / "cache"))
    thumbs, ok = source(np.arange(9))
    assert ok.tolist() == [i != 4 for i in range(9)] and source.decoded == 8
    for i in (0, 5, 8):
        np.testing.assert_array_equal(thumbs[i], make_thumbnail(files[i]))
