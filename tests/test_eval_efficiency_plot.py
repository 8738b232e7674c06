"""``bench/rollout.py --plot``: the per-chunk series it records and the figure it writes (paper Figure 5)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_rollout", ROOT / "bench" / "rollout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_chunk_series_known_answer():
    bench = _bench()
    # (frames done, seconds elapsed, cache bytes) after each chunk: chunk 1 adds frames 1..8, chunk 2 frames 9..16
    series = bench.chunk_series([(9, 0.8, 2**20, 0.008), (17, 1.2, 3 * 2**20, 0.024)])
    assert series["seconds_per_frame"] == pytest.approx([0.1, 0.05])
    assert series["read_ms_per_frame"] == pytest.approx([1.0, 2.0])
    assert series["cache_mib"] == [1.0, 3.0]
    runs = [{"a": [1.0, 5.0]}, {"a": [3.0, 4.0]}, {"a": [2.0, 9.0]}]
    assert bench.median_series(runs) == {"a": [2.0, 5.0]}


def test_plot_and_series_from_one_run(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    bench = _bench()
    path = tmp_path / "efficiency.png"
    assert bench.main(["--device", "cpu", "--plot", str(path), "--plot-chunks", "2", "--steps", "1", "--height", "32",
                       "--width", "64", "--repeats", "1"]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["chunks"] == 2 and set(meta["series"]) == {"latent memory", "RGB cache", "no memory"}
    latent, rgb, none = (meta["series"][k] for k in ("latent memory", "RGB cache", "no memory"))
    assert len(latent["seconds_per_frame"]) == 2 and all(t > 0 for t in latent["seconds_per_frame"])
    assert none["cache_mib"] == [0.0, 0.0] and none["read_ms_per_frame"] == [0.0, 0.0]
    assert all(t > 0 for t in rgb["read_ms_per_frame"] + latent["read_ms_per_frame"])
    assert rgb["cache_mib"][1] > rgb["cache_mib"][0] > latent["cache_mib"][0] > 0  # pixels vs latent cells


def test_model_option_runs_a_given_model_at_its_own_size(tmp_path):
    pytest.importorskip("matplotlib")
    bench = _bench()
    path = tmp_path / "shipped.png"
    assert bench.main(["--device", "cpu", "--model", "mirage-tiny", "--plot", str(path), "--plot-chunks", "1",
                       "--steps", "1", "--repeats", "1"]) == 0
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["image_size"] == [64, 96] and meta["title"].startswith("mirage-tiny, CPU")
