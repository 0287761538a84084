"""`heartsight compress` on the real zoo model and data: a smaller model, its card, and what it was scored on."""

import json

import pytest
import torch

from conftest import DATA, needs_mitdb
from models.registry import load_model


@needs_mitdb
def test_compress_writes_a_smaller_reloadable_model_with_its_scores_and_explanation_metrics(tmp_path, heartsight_main):
    out = tmp_path / "pruned"
    run = heartsight_main("compress", "--model", "ecg_beat", "--method", "structured", "--ratio", 0.5, "--wcam", 10,
                          "--epochs", 1, "--out", out, "--data-dir", DATA)
    assert run.returncode == 0, run.stderr
    card = json.loads((out / "card.json").read_text())
    teacher = load_model("ecg_beat")
    assert card["widths"] == [8, 16, 16, 24, 32]
    assert card["compression"]["teacher_sha256"] == teacher.card["sha256"]
    assert card["size"]["params"] < card["size"]["teacher"]["params"] / 3
    assert card["size"]["macs"] < card["size"]["teacher"]["macs"] / 3
    ds2 = card["metrics"]["DS2"]
    assert ds2["split"] == "DS2" and ds2["n"] == sum(v["n"] for v in ds2["per_class"].values()) == 49_705
    assert ds2["accuracy"] > 0.5  # one epoch of fine-tuning: a working classifier, not a good one
    explanation = card["metrics"]["explanation"]
    assert 0 < explanation["fidelity_cosine"] <= 1 and 0 <= explanation["pointing_game"] <= 1
    assert explanation["teacher"]["loc_auc"] > 0.5
    model = load_model(out).model
    x = torch.randn(2, len(load_model(out).spec.input_channels), 768)
    assert model(x).shape == (2, 4)
    assert "heartsight compress --model ecg_beat --method structured --ratio 0.5 --wcam 10" in card["reproduce"]
    isometry = card["isometry"]  # the dynamical-isometry diagnostic around the removal
    assert set(isometry) >= {"before", "after_removal", "final"}
    assert all(isometry[stage]["jsv_cond"] >= 1 and 0 <= isometry[stage]["accuracy"] <= 1
               for stage in ("before", "after_removal", "final"))


@pytest.mark.parametrize("args, message", [
    (["--method", "prune"], "unknown compression method"),
    (["--method", "structured", "--ratio", "1.5"], "--ratio"),
    (["--method", "structured", "--wcam", "-3"], "--wcam"),
    (["--method", "structured", "--model", "ppg_hr"], "beat models"),
    (["--method", "structured", "--repair", "qr-orthogonal"], "batch norm"),
    (["--method", "unstructured", "--repair", "growing-l2"], "removes none"),
    (["--method", "qat", "--fold-bn"], "always folds"),
    (["--method", "structured", "--lr", "0"], "--lr"),
])
def test_bad_compression_requests_get_one_clear_line(tmp_path, heartsight_main, args, message):
    run = heartsight_main("compress", *args, "--out", tmp_path / "x", "--data-dir", tmp_path)
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "x").exists()
