"""Output writers: atomic files, embeddings.pkl (safe reading), cluster folders, skipped.csv / CSV helpers."""
import os
import pickle
import stat
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from crop_cluster.outputs.atomic import atomic_open
from crop_cluster.outputs.embeddings import EmbeddingsFileError, StoredEmbeddings, read_embeddings, write_embeddings
from crop_cluster.outputs.folders import NOT_CLUSTERED, write_cluster_folders
from crop_cluster.outputs.table import CONTRACT_COLUMNS, order_columns, write_csv, write_skipped

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def unit_rows(n, d, seed=0):
    rows = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def dump(path, payload):
    with open(path, "wb") as handle:
        pickle.dump(payload, handle, protocol=4)
    return str(path)


def leftovers(folder):
    """Names of temporary files/folders left behind by atomic writes or folder swaps."""
    return [n for n in os.listdir(folder) if n.startswith(".")]


# --- atomic_open ----------------------------------------------------------------------------------------------------

def test_atomic_open_writes_text_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.csv"
    with atomic_open(str(target), "w", encoding="utf-8") as handle:
        handle.write("héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    assert leftovers(tmp_path) == []
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644


def test_atomic_open_binary_replaces_existing(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with atomic_open(str(target), "wb") as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
    assert leftovers(tmp_path) == []


def test_atomic_open_exception_keeps_old_content_and_removes_temp(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old content", encoding="utf-8")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_open(str(target), "w", encoding="utf-8") as handle:
            handle.write("half-written")
            raise RuntimeError("boom")
    assert target.read_text(encoding="utf-8") == "old content"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_atomic_open_exception_without_previous_file_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(str(tmp_path / "new.csv")) as handle:
            handle.write("x")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_atomic_open_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with atomic_open("rel.txt") as handle:
        handle.write("ok")
    assert (tmp_path / "rel.txt").read_text() == "ok"


# --- embeddings.pkl -------------------------------------------------------------------------------------------------

def test_embeddings_round_trip(tmp_path):
    path = str(tmp_path / "embeddings.pkl")
    names = ["crops/a.jpg", "crops/b.jpg", "other/ä b.png"]
    vectors = unit_rows(3, 8)
    write_embeddings(path, names, vectors, "lite0:efficientnet-lite0")
    stored = read_embeddings(path)
    assert isinstance(stored, StoredEmbeddings)
    assert stored.filenames == names
    assert stored.model == "lite0:efficientnet-lite0"
    assert stored.embedding.dtype == np.float32
    assert stored.embedding.shape == (3, 8)
    np.testing.assert_array_equal(stored.embedding, vectors)
    assert leftovers(tmp_path) == []


def test_embeddings_file_follows_contract(tmp_path):
    path = str(tmp_path / "embeddings.pkl")
    write_embeddings(path, ("a.jpg", "b.jpg"), unit_rows(2, 5).astype(np.float64), "dino:x")
    with open(path, "rb") as handle:
        payload = pickle.load(handle)  # our own file, written just above
    assert set(payload) == {"filename", "embedding", "model", "dim", "base"}    # base: the writer's working folder
    assert payload["base"] == os.getcwd()
    assert payload["filename"] == ["a.jpg", "b.jpg"] and isinstance(payload["filename"], list)
    assert payload["embedding"].dtype == np.float32 and payload["embedding"].shape == (2, 5)
    assert payload["embedding"].flags.c_contiguous
    assert payload["dim"] == 5 and type(payload["dim"]) is int
    assert payload["model"] == "dino:x"


def test_relative_names_in_an_embeddings_file_resolve_against_its_writers_folder(tmp_path, monkeypatch):
    path = str(tmp_path / "embeddings.pkl")
    monkeypatch.chdir(tmp_path)
    write_embeddings(path, ["crops/a.jpg"], unit_rows(1, 3), "lite0:x", ["d" * 32])
    monkeypatch.chdir("/")
    stored = read_embeddings(path)
    assert stored.digests == ["d" * 32] and stored.resolved().filenames == [str(tmp_path / "crops" / "a.jpg")]


def test_embeddings_round_trip_empty(tmp_path):
    path = str(tmp_path / "e.pkl")
    write_embeddings(path, [], np.zeros((0, 4), np.float32), "lite0:x")
    stored = read_embeddings(path)
    assert stored.filenames == [] and stored.embedding.shape == (0, 4)


def test_embeddings_without_dim_key_and_float64_are_accepted(tmp_path):
    vectors = unit_rows(2, 3).astype(np.float64)
    path = dump(tmp_path / "e.pkl", {"filename": ["a", "b"], "embedding": vectors, "model": "m"})
    stored = read_embeddings(path)
    assert stored.embedding.dtype == np.float32
    np.testing.assert_allclose(stored.embedding, vectors, atol=1e-7)


def test_non_unit_rows_are_renormalised(tmp_path):
    path = dump(tmp_path / "e.pkl", {"filename": ["a", "b"], "model": "m", "dim": 2,
                                     "embedding": np.array([[3.0, 4.0], [0.0, 2.0]], np.float32)})
    stored = read_embeddings(path)
    np.testing.assert_allclose(stored.embedding, [[0.6, 0.8], [0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(stored.embedding, axis=1), 1.0, atol=1e-6)


class _RunsCommand:
    """Pickles to a call of os.system: loading it with plain pickle would run the command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Evaluates:
    def __reduce__(self):
        return eval, ("__import__('os').getcwd()",)


@pytest.mark.parametrize("where", ["top", "value"])
def test_malicious_pickle_is_refused_and_not_executed(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = _RunsCommand(f"touch {marker}")
    payload = evil if where == "top" else {"filename": ["a"], "embedding": evil, "model": "m"}
    path = dump(tmp_path / "evil.pkl", payload)
    with pytest.raises(EmbeddingsFileError) as excinfo:
        read_embeddings(path)
    assert not marker.exists()
    assert path in str(excinfo.value)


def test_pickle_calling_eval_is_refused(tmp_path):
    path = dump(tmp_path / "evil.pkl", {"filename": ["a"], "embedding": _Evaluates(), "model": "m"})
    with pytest.raises(EmbeddingsFileError, match="refusing"):
        read_embeddings(path)


def test_pickle_of_other_class_is_refused(tmp_path):
    path = dump(tmp_path / "e.pkl", {"filename": ["a"], "embedding": unit_rows(1, 2), "model": "m",
                                     "extra": pd.Timestamp("2024-01-01")})
    with pytest.raises(EmbeddingsFileError):
        read_embeddings(path)


@pytest.mark.parametrize("payload,fragment", [
    ({"filename": ["a"], "model": "m"}, "expected a dict with keys"),
    ({"files": ["a"], "embedding": np.ones((1, 2), np.float32), "model": "m"}, "expected a dict with keys"),
    ({"filename": ["a"], "embedding": np.ones((1, 2), np.float32)}, "expected a dict with keys"),
    ([["a"], np.ones((1, 2), np.float32)], "expected a dict with keys"),
    ("just a string", "expected a dict with keys"),
    ({"filename": ["a", "b"], "embedding": np.ones((3, 2), np.float32), "model": "m"}, "one row per filename"),
    ({"filename": ["a", "b"], "embedding": np.ones(2, np.float32), "model": "m"}, "one row per filename"),
    ({"filename": ["a", "b"], "embedding": [[1.0, 0.0], [0.0, 1.0]], "model": "m"}, "one row per filename"),
    ({"filename": ["a", "a"], "embedding": np.eye(2, dtype=np.float32), "model": "m"}, "appears twice"),
    ({"filename": ["a", "b"], "embedding": np.array([[1.0, 0.0], [np.nan, 1.0]], np.float32), "model": "m"}, "NaN"),
    ({"filename": ["a", "b"], "embedding": np.array([[1.0, 0.0], [np.inf, 1.0]], np.float32), "model": "m"},
     "infinite"),
])
def test_invalid_embeddings_content(tmp_path, payload, fragment):
    path = dump(tmp_path / "bad.pkl", payload)
    with pytest.raises(EmbeddingsFileError) as excinfo:
        read_embeddings(path)
    assert fragment in str(excinfo.value)
    assert path in str(excinfo.value)


def test_missing_embeddings_file(tmp_path):
    path = str(tmp_path / "nope.pkl")
    with pytest.raises(EmbeddingsFileError) as excinfo:
        read_embeddings(path)
    assert path in str(excinfo.value) and "no such file" in str(excinfo.value)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}"])
def test_unreadable_embeddings_file(tmp_path, content):
    path = tmp_path / "e.pkl"
    path.write_bytes(content)
    with pytest.raises(EmbeddingsFileError, match="not a readable embeddings file"):
        read_embeddings(str(path))


def test_embeddings_path_is_a_folder(tmp_path):
    with pytest.raises(EmbeddingsFileError):
        read_embeddings(str(tmp_path))


@pytest.mark.parametrize("case", ["frame_overflow", "filename_int", "filename_unhashable", "embedding_strings"])
def test_malformed_embeddings_give_embeddings_file_error(tmp_path, case):
    path = tmp_path / "bad.pkl"
    if case == "frame_overflow":  # a corrupt FRAME header: pickle raises OverflowError
        path.write_bytes(b"\x80\x04\x95" + b"\xff" * 8 + b"}.")
    elif case == "filename_int":  # len(5) -> TypeError
        dump(path, {"filename": 5, "embedding": np.eye(2, dtype=np.float32), "model": "m"})
    elif case == "filename_unhashable":  # set([[...]]) -> TypeError
        dump(path, {"filename": [["a"], ["b"]], "embedding": np.eye(2, dtype=np.float32), "model": "m"})
    else:  # astype(float32) of a string array -> plain ValueError
        dump(path, {"filename": ["a", "b"], "embedding": np.array([["x", "y"], ["z", "w"]]), "model": "m"})
    with pytest.raises(EmbeddingsFileError):
        read_embeddings(str(path))


def test_corrupt_dtype_state_does_not_crash_the_interpreter(tmp_path):
    path = tmp_path / "e.pkl"
    write_embeddings(str(path), ["a", "b"], np.eye(2, 3, dtype=np.float32), "lite0:x")
    data = path.read_bytes()
    state = b"\x8c\x01<\x94NNN"  # dtype state (3, '<', None, None, None, -1, -1, 0) as numpy 2 pickles it
    if data.count(state) != 1:
        pytest.skip("this numpy pickles dtypes differently")
    path.write_bytes(data.replace(state, b"\x8c\x01<\x94NbN"))  # BUILD(None) on the None: drops one item
    code = ("import sys\nfrom outputs.embeddings import read_embeddings, EmbeddingsFileError\n"
            "try:\n    read_embeddings(sys.argv[1])\nexcept EmbeddingsFileError:\n    sys.exit(3)\n")
    child = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO, capture_output=True, timeout=60)
    assert child.returncode == 3, child.stderr.decode(errors="replace")[-500:]


# --- cluster folders ------------------------------------------------------------------------------------------------

def make_file(path, content):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, (1_000_000_000, 1_000_000_000))  # an old, known mtime
    return str(path)


def tree(folder):
    """{relative path: bytes} of every file under folder."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            full = os.path.join(root, name)
            with open(full, "rb") as handle:
                out[os.path.relpath(full, folder)] = handle.read()
    return out


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return str(folder)


def test_cluster_folders_layout_and_counts(tmp_path, out):
    files = [make_file(tmp_path / "in" / f"{n}.jpg", n.encode()) for n in "abcde"]
    clusters = np.array([0, 1, 0, -1, -1])
    copied = write_cluster_folders(out, files, clusters, np.ones(5, bool))
    assert copied.counts == {"0": 2, "1": 1, NOT_CLUSTERED: 2} and copied.missing == []
    assert copied.manifest() == {"folders": 3, "copied": 5, "missing": 0, "missing_examples": []}
    assert tree(os.path.join(out, "clusters")) == {
        "0/a.jpg": b"a", "0/c.jpg": b"c", "1/b.jpg": b"b", f"{NOT_CLUSTERED}/d.jpg": b"d",
        f"{NOT_CLUSTERED}/e.jpg": b"e"}
    assert sorted(os.listdir(out)) == ["clusters"]  # no staging folders left behind


def test_same_basename_from_two_folders_gives_two_files(tmp_path, out):
    first = make_file(tmp_path / "day1" / "crop.jpg", b"first")
    second = make_file(tmp_path / "day2" / "crop.jpg", b"second")
    third = make_file(tmp_path / "day3" / "crop.jpg", b"third")
    write_cluster_folders(out, [first, second, third], np.array([4, 4, 4]), np.ones(3, bool))
    assert tree(os.path.join(out, "clusters")) == {
        "4/crop.jpg": b"first", "4/crop__2.jpg": b"second", "4/crop__3.jpg": b"third"}


def test_case_insensitive_collision(tmp_path, out):
    upper = make_file(tmp_path / "x" / "A.JPG", b"upper")
    lower = make_file(tmp_path / "y" / "a.jpg", b"lower")
    write_cluster_folders(out, [upper, lower], np.array([0, 0]), np.ones(2, bool))
    names = os.listdir(os.path.join(out, "clusters", "0"))
    assert len(names) == 2
    assert len({n.lower() for n in names}) == 2
    got = tree(os.path.join(out, "clusters", "0"))
    assert sorted(got.values()) == [b"lower", b"upper"]
    assert got["A.JPG"] == b"upper"


def test_renamed_copy_does_not_clash_with_a_real_file_of_that_name(tmp_path, out):
    a1 = make_file(tmp_path / "x" / "a.jpg", b"1")
    a2 = make_file(tmp_path / "y" / "a.jpg", b"2")
    real = make_file(tmp_path / "z" / "a__2.jpg", b"3")
    write_cluster_folders(out, [a1, a2, real], np.array([0, 0, 0]), np.ones(3, bool))
    got = tree(os.path.join(out, "clusters", "0"))
    assert len(got) == 3
    assert sorted(got.values()) == [b"1", b"2", b"3"]


def test_same_basename_in_different_clusters_keeps_name(tmp_path, out):
    a1 = make_file(tmp_path / "x" / "a.jpg", b"1")
    a2 = make_file(tmp_path / "y" / "a.jpg", b"2")
    write_cluster_folders(out, [a1, a2], np.array([0, -1]), np.ones(2, bool))
    assert tree(os.path.join(out, "clusters")) == {"0/a.jpg": b"1", f"{NOT_CLUSTERED}/a.jpg": b"2"}


def test_keep_mask_is_respected(tmp_path, out):
    files = [make_file(tmp_path / "in" / f"{n}.png", n.encode()) for n in "abcd"]
    copied = write_cluster_folders(out, files, np.array([0, 0, 1, -1]), np.array([True, False, False, True]))
    assert copied.counts == {"0": 1, NOT_CLUSTERED: 1}
    assert tree(os.path.join(out, "clusters")) == {"0/a.png": b"a", f"{NOT_CLUSTERED}/d.png": b"d"}


def test_nothing_kept_gives_empty_clusters_folder(tmp_path, out):
    files = [make_file(tmp_path / "in" / "a.png", b"a")]
    assert write_cluster_folders(out, files, np.array([0]), np.zeros(1, bool)).counts == {}
    assert os.listdir(os.path.join(out, "clusters")) == []


def test_second_call_replaces_previous_tree_whole(tmp_path, out):
    files = [make_file(tmp_path / "in" / f"{n}.jpg", n.encode()) for n in "abc"]
    write_cluster_folders(out, files, np.array([0, 1, 2]), np.ones(3, bool))
    stale = os.path.join(out, "clusters", "1", "user-added.txt")
    with open(stale, "w") as handle:
        handle.write("stale")
    write_cluster_folders(out, files, np.array([0, 0, -1]), np.ones(3, bool))
    assert tree(os.path.join(out, "clusters")) == {"0/a.jpg": b"a", "0/b.jpg": b"b",
                                                   f"{NOT_CLUSTERED}/c.jpg": b"c"}
    assert sorted(os.listdir(out)) == ["clusters"]


def test_originals_unchanged(tmp_path, out):
    files = [make_file(tmp_path / "in" / f"{n}.jpg", n.encode() * 100) for n in "ab"]
    before = [(open(f, "rb").read(), os.stat(f).st_mtime_ns) for f in files]
    write_cluster_folders(out, files, np.array([0, -1]), np.ones(2, bool))
    write_cluster_folders(out, files, np.array([1, 1]), np.ones(2, bool))
    after = [(open(f, "rb").read(), os.stat(f).st_mtime_ns) for f in files]
    assert before == after
    assert sorted(os.listdir(tmp_path / "in")) == ["a.jpg", "b.jpg"]


def test_failure_keeps_previous_tree_and_cleans_staging(tmp_path, out, monkeypatch):
    import errno
    import shutil

    from crop_cluster.outputs.atomic import OutputError

    files = [make_file(tmp_path / "in" / f"{n}.jpg", n.encode()) for n in "abc"]
    write_cluster_folders(out, files[:2], np.array([0, 0]), np.ones(2, bool))
    copy = shutil.copy2

    def full_disk(source, target):
        if source == files[2]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return copy(source, target)

    monkeypatch.setattr(shutil, "copy2", full_disk)
    with pytest.raises(OutputError, match=r"cannot write .*clusters/1/c\.jpg: no space left"):
        write_cluster_folders(out, files, np.array([1, 1, 1]), np.ones(3, bool))
    assert tree(os.path.join(out, "clusters")) == {"0/a.jpg": b"a", "0/b.jpg": b"b"}
    assert sorted(os.listdir(out)) == ["clusters"]


def test_a_missing_original_is_left_out_and_reported(tmp_path, out):
    files = [make_file(tmp_path / "in" / f"{n}.jpg", n.encode()) for n in "ab"]
    gone = str(tmp_path / "in" / "gone.jpg")
    copied = write_cluster_folders(out, files + [gone, gone], np.array([0, 0, 0, 1]), np.ones(4, bool))
    assert tree(os.path.join(out, "clusters")) == {"0/a.jpg": b"a", "0/b.jpg": b"b"}   # no empty folder 1/
    assert [path for path, _ in copied.missing] == [gone, gone]
    assert copied.manifest()["missing"] == 2 and copied.manifest()["missing_examples"] == [gone, gone]


def test_names_fit_the_limit_and_stay_unique():
    from crop_cluster.outputs.folders import _free_name, safe_folder_name

    used = set()
    names = [_free_name("\u00e9" * 12 + ".png", used, limit=20) for _ in range(12)]
    assert len(set(names)) == 12 and all(len(n.encode()) <= 20 and n.endswith(".png") for n in names)
    assert names[0] == "\u00e9" * 8 + ".png" and names[1] == "\u00e9" * 6 + "__2.png"
    assert names[11] == "\u00e9" * 6 + "__12.png"
    assert safe_folder_name("Noctua/pronuba" * 30, limit=16) == "Noctua_pronubaNo"


def test_clusters_folder_permissions_follow_umask(tmp_path, out):
    files = [make_file(tmp_path / "in" / "a.jpg", b"a")]
    write_cluster_folders(out, files, np.array([0]), np.ones(1, bool))
    umask = os.umask(0)
    os.umask(umask)
    mode = stat.S_IMODE(os.stat(os.path.join(out, "clusters")).st_mode)
    assert mode == 0o777 & ~umask


# --- CSV tables -----------------------------------------------------------------------------------------------------

def test_write_skipped_header_only_when_empty(tmp_path):
    path = tmp_path / "skipped.csv"
    write_skipped([], str(path))
    assert path.read_text(encoding="utf-8") == "filename,reason\n"
    assert leftovers(tmp_path) == []


def test_write_skipped_rows_round_trip_with_commas_quotes_unicode(tmp_path):
    path = tmp_path / "skipped.csv"
    rows = [("crops/ä, b.jpg", 'cannot decode image (OSError: "truncated")'), ("x.gif", "not a supported image")]
    write_skipped(rows, str(path))
    frame = pd.read_csv(path, keep_default_na=False)
    assert list(frame.columns) == ["filename", "reason"]
    assert list(frame.itertuples(index=False, name=None)) == rows


def test_write_csv_no_index_and_float_format(tmp_path):
    path = tmp_path / "t.csv"
    write_csv(pd.DataFrame({"filename": ["a"], "sim": [0.123456789]}), str(path))
    assert path.read_text(encoding="utf-8").splitlines() == ["filename,sim", "a,0.123457"]


def test_order_columns_contract_first_then_extras_in_given_order():
    frame = pd.DataFrame({"label": [1], "representative": [True], "site": ["x"], "filename": ["a"], "cluster": [0],
                          "individual": [0], "sim_to_centroid": [1.0], "cluster_size": [1]})
    assert list(order_columns(frame).columns) == CONTRACT_COLUMNS + ["label", "site"]


def test_atomic_write_that_fails_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    from crop_cluster.outputs.atomic import OutputError, atomic_open

    target = tmp_path / "t.csv"
    target.write_text("previous")
    with pytest.raises(OutputError, match=r"cannot write .*t\.csv: no space left on the device .*MB free.*"
                                          r"free some space.*previous t\.csv \(if any\) is unchanged"):
        with atomic_open(str(target)) as handle:
            handle.write("new")
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OutputError, match=r"Permission denied; make its folder writable"):
        monkeypatch.setattr("tempfile.mkstemp", lambda **kw: (_ for _ in ()).throw(
            PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".t.csv.x.tmp"))))
        with atomic_open(str(target)):
            pass
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError):               # about another file (a source read in the block): as is
        with atomic_open(str(target)):
            open(tmp_path / "absent.jpg", "rb")
    assert target.read_text() == "previous" and sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
