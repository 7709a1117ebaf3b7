"""--filter: the parser (no eval), evaluation on --metadata columns, and the command line (skipped.csv, errors);
--time_format tracking and the individual flags end to end."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crop_cluster.cli import main
from conftest import PALETTE, draw_crop
from crop_cluster.inputs.filters import Clause, FilterError, evaluate, exclusion_reasons, parse_filter


def test_parse_clauses_and_precedence():
    flt = parse_filter("ood_score > 0.4 and trap == 'A' or `night id` != x2")
    assert flt.groups == ((Clause("ood_score", ">", 0.4), Clause("trap", "==", "A")),
                          (Clause("night id", "!=", "x2"),))
    assert parse_filter("score>=1").groups == ((Clause("score", ">=", 1.0),),)
    assert parse_filter('a = "two words" AND b<-1e-3').groups == ((Clause("a", "==", "two words"),
                                                                  Clause("b", "<", -0.001)),)


@pytest.mark.parametrize("text", ["", "ood_score >", "ood_score 0.4", "a > 1 xor b < 2", "a > 1 and",
                                  "__import__('os').system('x')", "a > > 1", "a > 'unclosed"])
def test_bad_expressions_say_how_to_write_one(text):
    with pytest.raises(FilterError, match="COLUMN OP VALUE|cannot read|expected 'and' or 'or'"):
        parse_filter(text)


def test_evaluate_numbers_text_and_missing_values():
    frame = pd.DataFrame({"ood_score": [0.1, 0.5, np.nan, 0.9], "trap": ["A", "B", "A", None]})
    keep = evaluate([parse_filter("ood_score > 0.4")], frame, "meta.csv")
    assert keep.tolist() == [False, True, False, True]
    assert evaluate([parse_filter("trap != B")], frame, "m").tolist() == [True, False, True, False]  # missing fails
    both = [parse_filter("ood_score > 0.4"), parse_filter("trap == B or trap == A")]
    assert evaluate(both, frame, "m").tolist() == [False, True, False, False]
    reasons = exclusion_reasons(both, frame, evaluate(both, frame, "m"))
    assert len(reasons) == 3 and "ood_score=0.1, trap=A" in reasons[0] and "ood_score=missing" in reasons[1]


def test_unknown_column_and_wrong_type_are_named():
    frame = pd.DataFrame({"ood_score": [0.1], "trap": ["A"]})
    with pytest.raises(FilterError, match="no column 'score' in --metadata m.csv; columns: ood_score, trap"):
        evaluate([parse_filter("score > 1")], frame, "m.csv")
    with pytest.raises(FilterError, match="'ood_score' of m.csv holds numbers"):
        evaluate([parse_filter("ood_score > high")], frame, "m.csv")


# --- command line ------------------------------------------------------------------------------------------------

def run_cli(*args) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def scored(tmp_path):
    crops = tmp_path / "crops"
    names = [f"c{k}.png" for k in range(6)]
    for k, name in enumerate(names):
        draw_crop(crops / name, PALETTE[k % 2], seed=k)
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"filename": names[:5], "ood_score": [0.9, 0.8, 0.1, 0.7, 0.95]}).to_csv(meta, index=False)
    return crops, meta


def test_filter_lists_excluded_crops_in_skipped(scored, tmp_path, fake_backend):
    crops, meta = scored
    out = tmp_path / "out"
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "--metadata", meta, "--filter", "ood_score > 0.4",
                   "-q", "--no_report") == 0
    table = pd.read_csv(out / "clusters.csv")
    skipped = pd.read_csv(out / "skipped.csv")
    assert sorted(map(os.path.basename, table.filename)) == ["c0.png", "c1.png", "c3.png", "c4.png"]
    assert sorted(map(os.path.basename, skipped.filename)) == ["c2.png", "c5.png"]
    assert skipped.reason.str.startswith("excluded by --filter ood_score > 0.4 (ood_score=").all()
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["counts"]["inputs"] == 6 and manifest["counts"]["skipped"] == 2
    assert manifest["parameters"]["filters"] == ["ood_score > 0.4"]
    # reusing the embeddings with another filter: no re-embedding, the same reporting
    out2 = tmp_path / "out2"
    assert run_cli("--embeddings", out / "embeddings.pkl", "-o", out2, "--metadata", meta,
                   "--filter", "ood_score >= 0.9", "-q", "--no_report") == 0
    assert sorted(map(os.path.basename, pd.read_csv(out2 / "clusters.csv").filename)) == ["c0.png", "c4.png"]
    assert len(pd.read_csv(out2 / "skipped.csv")) == 2


@pytest.mark.parametrize("args, message", [
    (["--filter", "ood_score > 0.4"], "--filter chooses crops by --metadata columns; add --metadata"),
    (["--metadata", "{meta}", "--filter", "score > 0.4"], "no column 'score' in --metadata .*columns: ood_score"),
    (["--metadata", "{meta}", "--filter", "ood_score >"], "incomplete comparison"),
    (["--track_max_seconds", "5"], "--track_max_seconds needs --time_format"),
    (["--time_format", "%Y", "--track_max_distance", "2"], "--track_max_distance needs -mf/--meta_folder"),
    (["--dedup_threshold", "1.5"], r"--dedup_threshold 1.5: a cosine similarity in \(0, 1\]"),
    (["--track_min_similarity", "2"], "--track_min_similarity 2.0"),
])
def test_bad_individual_options_exit_2(scored, tmp_path, fake_backend, caplog, args, message):
    crops, meta = scored
    args = [a.format(meta=meta) for a in args]
    assert run_cli("-i", crops, "-o", tmp_path / "out", "-e", fake_backend, *args) == 2
    assert any(pytest.importorskip("re").search(message, r.getMessage()) for r in caplog.records), caplog.text


def test_time_format_tracks_the_same_insect_across_frames(tmp_path, fake_backend):
    """Two insects (red, blue) in three frames 2 s apart, a third (green) only in the last frame, and an exact copy;
    the fake backend's mean colour stays within one insect and differs between insects."""
    crops = tmp_path / "crops"
    for k, stamp in enumerate(("001617", "001619", "001621")):
        for number, colour in enumerate(PALETTE[:2] + ([PALETTE[2]] if k == 2 else [])):
            draw_crop(crops / f"crop_20230908{stamp}-00-06_CROPNUMBER_{number}_UUID_x.png", colour,
                      seed=10 * k + number)
    copy = crops / "copy" / "crop_20230908001617-00-06_CROPNUMBER_0_UUID_x.png"
    copy.parent.mkdir()
    copy.write_bytes((crops / "crop_20230908001617-00-06_CROPNUMBER_0_UUID_x.png").read_bytes())
    out = tmp_path / "out"
    assert run_cli("-i", crops, "-o", out, "-e", fake_backend, "--time_format", "%Y%m%d%H%M%S",
                   "--track_min_similarity", "0.95", "-q", "--no_report") == 0
    table = pd.read_csv(out / "clusters.csv", keep_default_na=False)
    table["number"] = table.filename.str.extract(r"CROPNUMBER_(\d)").astype(int)
    assert table.groupby("number").individual.nunique().tolist() == [1, 1, 1]
    assert table.individual.nunique() == 3 and table.representative.sum() == 3
    assert sorted(table.linked_by) == ["", "", "", "exact", "track", "track", "track", "track"]
    manifest = json.loads((out / "run.json").read_text())
    individuals = manifest["individuals"]
    assert (individuals["linked_exact"], individuals["linked_track"], individuals["individuals"]) == (1, 4, 3)
    assert individuals["parameters"]["track_max_seconds"] == 30.0
    assert individuals["parameters"]["dedup_threshold"] is None        # no calibrated default for the fake backend
    # without --time_format nothing is tracked
    out2 = tmp_path / "out2"
    assert run_cli("-i", crops, "-o", out2, "-e", fake_backend, "-q", "--no_report") == 0
    assert pd.read_csv(out2 / "clusters.csv").individual.nunique() == 7


def test_real_crops_make_the_labelled_individuals(shared_crops, tmp_path):
    """Done-when check of issue 5: on the shared light-trap crops with lite0 defaults, each individual labelled by
    eye (bench/calibrate_threshold.py) is exactly one `individual`."""
    from bench.calibrate_threshold import BIODIVX_INDIVIDUALS

    out = tmp_path / "out"
    assert run_cli("-i", shared_crops, "-o", out, "-e", "lite0", "--time_format", "%Y%m%d%H%M%S", "-q",
                   "--no_report") == 0
    table = pd.read_csv(out / "clusters.csv")
    names = table.filename.map(lambda f: Path(f).name)
    truth = [BIODIVX_INDIVIDUALS[(n.split("_")[1][8:14], int(n.split("CROPNUMBER_")[1].split("_")[0]))]
             for n in names]
    pairs = set(zip(truth, table.individual))
    assert len(pairs) == len(set(truth)) == table.individual.nunique() == 9
