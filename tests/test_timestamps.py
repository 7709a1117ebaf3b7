"""Timestamps read from basenames with --time_format (inputs/timestamps.py)."""
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from crop_cluster.inputs.timestamps import TimeFormatError, TimestampResult, normalise_time_format, parse_timestamps

SHARED_CROPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "biodivx-crops"


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def test_biodivx_spelling_is_normalised():
    assert normalise_time_format("%YYYY-%mm-%dd_%HH-%MM-%SS") == "%Y-%m-%d_%H-%M-%S"
    assert normalise_time_format("%Y%m%d%H%M%S") == "%Y%m%d%H%M%S"
    assert normalise_time_format("img_%Y.%j") == "img_%Y.%j"
    # '%%' is a literal percent sign, so the 'mm' after it stays literal text
    assert normalise_time_format("%%mm%Y") == "%%mm%Y"


@pytest.mark.parametrize("fmt", ["", "crop_", "%%", "%Q", "%Y%Y", "%Y-%", "%-d%m"])
def test_unusable_formats_are_rejected_with_an_example(fmt):
    with pytest.raises(TimeFormatError) as info:
        normalise_time_format(fmt)
    message = str(info.value)
    assert repr(fmt) in message
    assert "%Y%m%d%H%M%S" in message  # an example of a valid format


def test_real_crop_names():
    names = [
        "crops/crop_20230908001617-00-06_CROPNUMBER_0_UUID_ChangeThisTEMPORARY.png",
        "crops/crop_20230908001619-00-06_CROPNUMBER_8_UUID_ChangeThisTEMPORARY.png",
    ]
    result = parse_timestamps(names, "%Y%m%d%H%M%S")
    assert isinstance(result, TimestampResult)
    assert result.seconds.dtype == np.float64 and result.seconds.shape == (2,)
    np.testing.assert_array_equal(result.seconds, [utc(2023, 9, 8, 0, 16, 17), utc(2023, 9, 8, 0, 16, 19)])
    assert result.n_unmatched == 0 and result.examples_unmatched == []


def test_biodivx_style_names():
    names = ["2023-09-08_00-16-17.jpg", "cam2_2023-09-08_23-59-59_x.JPG"]
    result = parse_timestamps(names, "%YYYY-%mm-%dd_%HH-%MM-%SS")
    np.testing.assert_array_equal(result.seconds, [utc(2023, 9, 8, 0, 16, 17), utc(2023, 9, 8, 23, 59, 59)])


def test_folders_are_ignored():
    names = ["/data/2022-01-01_00-00-00/2023-09-08_00-16-17.jpg", "/data/2022-01-01_00-00-00/img.jpg"]
    result = parse_timestamps(names, "%Y-%m-%d_%H-%M-%S")
    assert result.seconds[0] == utc(2023, 9, 8, 0, 16, 17)
    assert np.isnan(result.seconds[1])
    assert result.n_unmatched == 1 and result.examples_unmatched == ["img.jpg"]


def test_invalid_dates_and_odd_names_are_unmatched():
    names = [
        "crop_20231308001617-00-06_CROPNUMBER_0.png",  # month 13
        "crop_20230230001617_CROPNUMBER_0.png",  # 30 February
        "",
        "no-digits.png",
        "2023090800161.png",  # one digit short
        "crop_20230908001617_CROPNUMBER_1.png",
    ]
    result = parse_timestamps(names, "%Y%m%d%H%M%S")
    assert np.isnan(result.seconds[:5]).all()
    assert result.seconds[5] == utc(2023, 9, 8, 0, 16, 17)
    assert result.n_unmatched == 5
    assert result.examples_unmatched == names[:3]  # at most three, in input order


def test_leftmost_match_wins():
    result = parse_timestamps(["a_20230101000000_b_20240101000000.png"], "%Y%m%d%H%M%S")
    assert result.seconds[0] == utc(2023, 1, 1)


def test_fractional_seconds_and_offsets():
    names = ["f_20230908_001617.250000.png", "f_20230908_001617.5.png"]
    result = parse_timestamps(names, "%Y%m%d_%H%M%S.%f")
    np.testing.assert_allclose(result.seconds - utc(2023, 9, 8, 0, 16, 17), [0.25, 0.5])
    aware = parse_timestamps(["x_2023-09-08T02-16-17+0200.jpg"], "%Y-%m-%dT%H-%M-%S%z")
    assert aware.seconds[0] == utc(2023, 9, 8, 0, 16, 17)


def test_empty_input():
    result = parse_timestamps([], "%Y%m%d")
    assert result.seconds.shape == (0,) and result.n_unmatched == 0


def test_shared_example_crops_parse():
    if not SHARED_CROPS.is_dir():
        pytest.skip("shared BiodivX example crops not present")
    names = sorted(str(p) for p in SHARED_CROPS.glob("crop_*.png"))
    result = parse_timestamps(names, "%Y%m%d%H%M%S")
    assert result.n_unmatched == 0
    assert (result.seconds >= utc(2023, 9, 8, 0, 16, 17)).all()


def test_hundred_thousand_distinct_names_are_fast():
    start = datetime(2023, 9, 8)
    names = [
        f"/d/crop_{(start + timedelta(seconds=3 * i)).strftime('%Y%m%d%H%M%S')}-00-06_CROPNUMBER_{i % 7}_UUID_x.png"
        for i in range(100_000)
    ]
    began = time.perf_counter()
    result = parse_timestamps(names, "%Y%m%d%H%M%S")
    elapsed = time.perf_counter() - began
    assert result.n_unmatched == 0
    assert result.seconds[-1] - result.seconds[0] == 3 * 99_999
    assert elapsed < 4.0  # about 1 s on a 2-core machine with every timestamp distinct
