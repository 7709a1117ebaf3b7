"""Detection boxes from BiodivX JSON sidecars (inputs/sidecars.py)."""
import json
import time

import numpy as np
import pytest

import crop_cluster.inputs.sidecars as sidecars
from crop_cluster.inputs.sidecars import SidecarError, SidecarResult, parse_crop_name, read_boxes

IMAGE = "20230908001617-00-06"


def crop(image, number, folder="/crops"):
    return f"{folder}/crop_{image}_CROPNUMBER_{number}_UUID_ChangeThisTEMPORARY.png"


def sidecar(folder, image, boxes, uuid="ChangeThisTEMPORARY", **extra):
    path = folder / f"metadata_{image}_UUID_{uuid}.json"
    path.write_text(json.dumps({"boxes": boxes, "confs": [0.9] * len(boxes), **extra}), encoding="utf-8")
    return str(path)


def reasons_for(result, path):
    return [reason for p, reason in result.problems if p == path]


def test_parse_crop_name():
    assert parse_crop_name(crop(IMAGE, 3)) == (IMAGE, 3)
    assert parse_crop_name("IMAGENAME_cam1-0042_CROPNUMBER_12.jpg") == ("cam1-0042", 12)
    assert parse_crop_name("crop_2023-09-08_00-16-17_CROPNUMBER_0_UUID_x.png") == ("2023-09-08_00-16-17", 0)
    for odd in ["img.png", "crop_CROPNUMBER_1.png", "crop_x_CROPNUMBER_.png", "crop_x_CROPNUMBER_-1.png",
                "x_CROPNUMBER_1.png", "crop_x_CROPNUMBER_²_UUID_y.png", ""]:
        assert parse_crop_name(odd) is None, odd


def test_good_sidecar(tmp_path):
    sidecar(tmp_path, IMAGE, [[10, 20, 30, 40], [5.5, 6, 7, 8], [100, 80, 50, 60]], image_width=4000)
    names = [crop(IMAGE, 1), crop(IMAGE, 0), crop(IMAGE, 2)]
    result = read_boxes(names, str(tmp_path))
    assert isinstance(result, SidecarResult)
    assert result.frame == [IMAGE] * 3
    assert result.crop_number.dtype == np.int64 and list(result.crop_number) == [1, 0, 2]
    assert result.boxes.dtype == np.float64 and result.boxes.shape == (3, 4)
    # corners given in either order describe the same rectangle: stored as x1<=x2, y1<=y2
    np.testing.assert_array_equal(result.boxes, [[5.5, 6, 7, 8], [10, 20, 30, 40], [50, 60, 100, 80]])
    assert result.problems == []


def test_missing_sidecar_keeps_frame(tmp_path):
    sidecar(tmp_path, "20230908001619-00-06", [[0, 0, 1, 1]])
    name = crop(IMAGE, 0)
    result = read_boxes([name], tmp_path)
    assert result.frame == [IMAGE] and result.crop_number[0] == 0
    assert np.isnan(result.boxes).all()
    [reason] = reasons_for(result, name)
    assert "no sidecar" in reason and IMAGE in reason


def test_image_must_match_whole_parts(tmp_path):
    sidecar(tmp_path, "img10", [[0, 0, 1, 1]])
    result = read_boxes([crop("img1", 0)], tmp_path)
    assert np.isnan(result.boxes).all() and "no sidecar" in result.problems[0][1]


def test_several_matching_sidecars_are_reported(tmp_path):
    sidecar(tmp_path, IMAGE, [[0, 0, 1, 1]], uuid="a")
    sidecar(tmp_path, IMAGE, [[0, 0, 2, 2]], uuid="b")
    result = read_boxes([crop(IMAGE, 0)], tmp_path)
    assert np.isnan(result.boxes).all()
    assert "2 sidecars" in result.problems[0][1]


def test_garbled_json_reported_once(tmp_path):
    path = tmp_path / f"metadata_{IMAGE}_UUID_x.json"
    path.write_text('{"boxes": [[1, 2, 3', encoding="utf-8")
    result = read_boxes([crop(IMAGE, 0), crop(IMAGE, 1)], tmp_path)
    assert result.frame == [IMAGE, IMAGE]
    assert np.isnan(result.boxes).all()
    assert len(result.problems) == 1 and result.problems[0][0] == str(path)
    assert "JSON" in result.problems[0][1]


@pytest.mark.parametrize("content", [{"confs": [0.9]}, [[1, 2, 3, 4]], {"boxes": {"0": [1, 2, 3, 4]}}])
def test_missing_boxes_key(tmp_path, content):
    path = tmp_path / f"metadata_{IMAGE}_UUID_x.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    result = read_boxes([crop(IMAGE, 0)], tmp_path)
    assert np.isnan(result.boxes).all()
    [reason] = reasons_for(result, str(path))
    assert "boxes" in reason


def test_crop_number_out_of_range(tmp_path):
    path = sidecar(tmp_path, IMAGE, [[0, 0, 1, 1], [1, 1, 2, 2]])
    names = [crop(IMAGE, 1), crop(IMAGE, 2)]
    result = read_boxes(names, tmp_path)
    np.testing.assert_array_equal(result.boxes[0], [1, 1, 2, 2])
    assert np.isnan(result.boxes[1]).all() and result.crop_number[1] == 2
    [reason] = reasons_for(result, names[1])
    assert "out of range" in reason and path in reason


@pytest.mark.parametrize("box", [[1, 2, 3], [1, 2, 3, "4"], [1, 2, 3, True], [1, 2, 3, None], 7, [0, 0, 10**400, 1]])
def test_malformed_box(tmp_path, box):
    sidecar(tmp_path, IMAGE, [box, [0, 0, 1, 1]])
    names = [crop(IMAGE, 0), crop(IMAGE, 1)]
    result = read_boxes(names, tmp_path)
    assert np.isnan(result.boxes[0]).all()
    np.testing.assert_array_equal(result.boxes[1], [0, 0, 1, 1])
    [reason] = reasons_for(result, names[0])
    assert "malformed" in reason


def test_non_crop_name(tmp_path):
    sidecar(tmp_path, IMAGE, [[0, 0, 1, 1]])
    names = ["/crops/IMG_0001.jpg", crop(IMAGE, 0)]
    result = read_boxes(names, tmp_path)
    assert result.frame == [None, IMAGE]
    assert result.crop_number[0] == -1 and np.isnan(result.boxes[0]).all()
    [reason] = reasons_for(result, names[0])
    assert "CROPNUMBER" in reason


def test_meta_folder_must_be_a_folder(tmp_path):
    with pytest.raises(SidecarError, match="does not exist"):
        read_boxes([crop(IMAGE, 0)], str(tmp_path / "nope"))
    a_file = tmp_path / "boxes.json"
    a_file.write_text("{}", encoding="utf-8")
    with pytest.raises(SidecarError, match="is not a folder"):
        read_boxes([crop(IMAGE, 0)], str(a_file))


def test_only_json_files_directly_in_the_folder(tmp_path):
    (tmp_path / f"metadata_{IMAGE}_UUID_x.md").write_text("# not a sidecar", encoding="utf-8")
    sub = tmp_path / "sub"
    sub.mkdir()
    sidecar(sub, IMAGE, [[0, 0, 1, 1]])
    (tmp_path / f"metadata_{IMAGE}_UUID_x.JSON").write_text(json.dumps({"boxes": [[1, 2, 3, 4]]}), encoding="utf-8")
    result = read_boxes([crop(IMAGE, 0)], tmp_path)
    np.testing.assert_array_equal(result.boxes[0], [1, 2, 3, 4])


def test_many_crops_share_few_sidecars_each_read_once(tmp_path, monkeypatch):
    images = [f"20230908{i:06d}-00-06" for i in range(200)]
    for image in images:
        sidecar(tmp_path, image, [[k, k, k + 10, k + 20] for k in range(500)])
    names = [crop(images[i % 200], i % 500) for i in range(100_000)]
    loads = []
    real_load = sidecars._load_boxes
    monkeypatch.setattr(sidecars, "_load_boxes", lambda path: loads.append(path) or real_load(path))
    began = time.perf_counter()
    result = read_boxes(names, tmp_path)
    elapsed = time.perf_counter() - began
    assert sorted(loads) == sorted(set(loads)) and len(loads) == 200
    assert result.problems == []
    np.testing.assert_array_equal(result.boxes[:, 0], np.arange(100_000) % 500)
    assert elapsed < 5.0
