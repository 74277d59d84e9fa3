"""The README's main job, end to end on a slice of the data (the full run takes about two minutes)."""

import json

from bertkit.cli import main


def test_demo_runs_end_to_end(tmp_path, minilm_dir, capsys):
    assert main(["demo", "--out", str(tmp_path), "--limit", "120", "--model", str(minilm_dir)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["data"] == {"train": 120, "dev": 120, "test": 120}
    assert results["round_trip_max_abs_diff"] == 0.0
    knn, majority = results["test_accuracy"].values()
    assert knn > majority + 0.2  # embeddings of a real model separate topics even with 120 neighbours to pick from
    assert "| 10-NN on all-MiniLM-L6-v2 embeddings |" in capsys.readouterr().out
