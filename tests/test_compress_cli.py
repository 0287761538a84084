"""`heartsight compress` on the real zoo model and data: a smaller model, its card, and what it was scored on."""

import json

import pytest
import torch

from conftest import DATA, needs_mitdb
from firmware_export.target import toolchain_missing
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


@needs_mitdb
@pytest.mark.skipif(toolchain_missing() is not None, reason=str(toolchain_missing()))
def test_a_kernel_codebook_model_exports_packed_and_verifies_bit_exact_on_a_cortex_m4(tmp_path, heartsight_main):
    """The whole path of a seed method: compress, reload from its card, export the packed C library, verify it."""
    out = tmp_path / "codebook"
    run = heartsight_main("compress", "--method", "kernel-codebook", "--ratio", 0.5, "--bits", 4, "--wcam", 1,
                          "--epochs", 1, "--out", out, "--data-dir", DATA)
    assert run.returncode == 0, run.stderr
    card = json.loads((out / "card.json").read_text())
    assert card["structure"] == [{"kind": "codebook", "codes": 16}] * 5
    assert "--method kernel-codebook --ratio 0.5 --wcam 1" in card["reproduce"] and "--bits 4" in card["reproduce"]
    run = heartsight_main("export", "--model", out, "--out", tmp_path / "c", "--no-head-updates", "--data-dir", DATA)
    assert run.returncode == 0, run.stderr
    assert "256/256 held-out windows bit-exact" in run.stdout  # the ONNX graph computes the same integers
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    conv_weights = 4 * 8 * 7 + 8 * 16 * 7 + 16 * 16 * 7 + 16 * 24 * 7 + 24 * 32 * 7
    kernels = conv_weights // 7
    stored = sum(-(-n * 4 // 8) for n in (32, 128, 256, 384, 768)) + 5 * 16 * 7  # packed indices + codebooks
    assert report["conv_weights"] == {"count": conv_weights, "stored_bytes": stored, "kernels": ["codebook"],
                                      "bits_per_weight": round(8 * stored / conv_weights, 4)}
    assert kernels * 4 / 8 < stored < conv_weights / 4
    assert "hs_conv1d_codebook_relu" in (tmp_path / "c" / "heartsight_model.c").read_text()
    run = heartsight_main("verify-firmware", tmp_path / "c", "--qemu", "--n", 8, "--json", "--data-dir", DATA)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["host"] == {"n": 8, "exact": 8} and result["qemu"]["exact"] == result["qemu"]["n"] == 8


@pytest.mark.parametrize("args, message", [
    (["--method", "unify", "--block", "channels:3"], "does not divide the layer"),
    (["--method", "mpd", "--groups", "5"], "cannot split the layer into equal groups"),
    (["--method", "kernel-codebook", "--bits", "6"], "64 codewords"),
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
