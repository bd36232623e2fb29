"""``benchmarks/gpu.py`` runs: one tiny case of each kind on the CPU under Triton's
interpreter (a smoke test, so the script the GPU check runs does not rot; its numbers
mean nothing here), and its traffic model against hand-counted bytes."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")
pytestmark = pytest.mark.triton

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bytes_per_parameter_are_the_fused_pass():
    """fp32 plain: read p, g, v, write p, v = 20 bytes; momentum + centered: 36; int8
    state: one byte a code and a 4-byte scale per 256 (the design's 14 bytes for plain
    RMSprop is 12 + 2 x 1.0156)."""
    bench = _load()
    assert bench.step_bytes("plain", None) == 20
    assert bench.step_bytes("momentum+centered", None) == 36
    assert bench.step_bytes("plain", "bf16") == 16
    assert bench.step_bytes("plain", "int8") == 12 + 2 * (1 + 4 / 256)
    assert bench.parse_size("16M") == 16 * 2**20 and bench.parse_size("4096") == 4096


@pytest.mark.skipif(
    torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") != "1",
    reason="the smoke run is for the CPU under the interpreter; on a GPU gpu-check.sh runs it",
)
def test_quick_run_on_the_cpu_writes_its_json(tmp_path):
    bench = _load()
    out = tmp_path / "gpu.json"
    argv = ["--sizes", "4K", "--small", "3", "--repeats", "1", "--warmup", "0", "--device",
            "cpu", "--only", "rmsprop triton,torch foreach,torch for-loop", "--json", str(out)]  # fmt: skip
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["device"].startswith("cpu") and result["interpreter"]
    assert {"copy_GBps", "inplace_axpy_GBps"} <= set(result["probes"])
    rows = result["rows"]
    assert not [r for r in rows if "error" in r], rows
    kinds = {(r["suite"], r["config"], r["impl"], r["state"]) for r in rows}
    assert ("one tensor of 4,096", "momentum+centered", "rmsprop triton", "int8") in kinds
    assert ("3 small tensors", "plain", "torch for-loop", "fp32") in kinds
    assert len(rows) == 2 * 2 * 3 + 4  # 2 suites x 2 configs x 3 impls + compact state
    triton = [r for r in rows if r["impl"] == "rmsprop triton"]
    assert all(r["ran"] == "triton" and r["median_ms"] > 0 for r in triton)
    assert all("vs_torch_foreach" in r for r in rows)
