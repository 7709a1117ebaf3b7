"""The fused Triton graph kernel (clustering/triton_graph.py): its checks under Triton's CPU interpreter run in a
child process (tests/interpreted_triton.py, TRITON_INTERPRET=1); the choice of kernel; on CUDA (marked gpu) the
compiled kernel against the float32 torch path."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from crop_cluster.clustering.graph import graph_kernel, torch_forest_edges
from triton_shared import blobs, partition

HERE = Path(__file__).resolve().parent


def test_kernel_under_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "interpreted_triton.py")]
    done = subprocess.run(command,
                          cwd=HERE.parent, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout


def test_kernel_choice(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert graph_kernel("cpu") == "torch"
    with pytest.raises(ValueError, match="needs the triton package"):
        graph_kernel("cpu", kernel="triton")
    with pytest.raises(ValueError, match="available: auto, torch, triton"):
        graph_kernel("cpu", kernel="cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert graph_kernel("cpu") == "torch"  # the interpreter is for tests, never chosen by itself
    with pytest.raises(ValueError, match="float16 tiles"):
        graph_kernel("cpu", precision="float32", kernel="triton")


@pytest.mark.gpu
def test_cuda_kernel_same_partition_as_float32_brute_force():
    x = blobs(20000, 128, seed=5)
    stats = {}
    rows, cols, _ = torch_forest_edges(x, 0.8, "cuda:0", stats=stats)
    assert stats["kernel"] == "triton"
    reference = torch_forest_edges(x, 0.8, "cuda:0", precision="float32", kernel="torch")
    assert partition(len(x), rows, cols) == partition(len(x), reference[0], reference[1])


@pytest.mark.parametrize("verdict", [None, "disagrees with the torch tiles on a 300x72 check block: 3 of 700 edges "
                                           "missing, 0 extra, 0 with another similarity"])
def test_auto_picks_the_fused_kernel_on_cuda_only_once_it_passed_its_check(monkeypatch, caplog, fresh_checks,
                                                                          verdict):
    """The wiring, on any machine: CUDA and triton pretended, the check's verdict given; checked once per device."""
    from crop_cluster.clustering import kernel_check, triton_graph

    fallbacks = fresh_checks
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(triton_graph, "triton_usable", lambda device: True)
    calls = []
    monkeypatch.setattr(kernel_check, "fused_kernel_disagreement", lambda device: calls.append(device) or verdict)
    expected = "triton" if verdict is None else "torch"
    assert graph_kernel("cuda:0") == graph_kernel("cuda:0") == expected and calls == ["cuda:0"]
    assert graph_kernel("cuda:0", precision="float32") == "torch" and calls == ["cuda:0"]   # no fp16: no check
    if verdict is None:
        assert fallbacks.taken() == []
    else:
        assert fallbacks.taken() == [{"path": "fused Triton graph kernel on cuda:0", "reason": verdict,
                                      "used": "torch tiles (fp16, re-scored in float32)"}]
        assert "fused Triton graph kernel on cuda:0 disagrees" in caplog.text


@pytest.mark.gpu
def test_cuda_first_use_check_of_the_fused_kernel_passes():
    pytest.importorskip("triton")
    from crop_cluster.clustering.kernel_check import fused_kernel_disagreement

    assert fused_kernel_disagreement("cuda:0") is None
