"""The committed zoo: cards that tell the truth, and metrics that `evaluate` reproduces from the data."""

import hashlib

import pytest

from conftest import DATA, needs_mitdb, needs_wrist
from models.architectures import parameter_count
from models.registry import REGISTRY, ZOO_DIR, load_model
from sdk.training.recipes import evaluate

CARD_FIELDS = {"task", "outputs", "fs", "window_samples", "preprocessing", "training_data", "parameters",
               "metrics", "data_split", "seed", "reproduce", "sha256"}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_card_describes_the_committed_weights(name):
    zoo = load_model(name)
    assert CARD_FIELDS <= set(zoo.card)
    assert zoo.card["parameters"] == parameter_count(zoo.model) < 50_000
    assert zoo.card["fs"] == zoo.spec.fs and zoo.card["window_samples"] == zoo.spec.window
    assert zoo.card["sha256"] == hashlib.sha256((zoo.directory / "model.pt").read_bytes()).hexdigest()


@needs_mitdb
def test_ecg_beat_ds2_metrics_are_reproduced():
    card = load_model("ecg_beat").card
    result = evaluate("ecg_beat", data_root=DATA, progress=False)
    assert result["split"] == "DS2"
    assert result["accuracy"] == card["metrics"]["DS2"]["accuracy"]
    assert result["per_class"] == card["metrics"]["DS2"]["per_class"]
    assert result["n"] > 49_000


@needs_mitdb
def test_ecg_af_cross_validation_is_reproduced_from_held_out_records():
    card = load_model("ecg_af").card
    result = evaluate("ecg_af", data_root=DATA, progress=False)
    held_out = [record for fold in result["folds"] for record in fold["held_out"]]
    assert len(held_out) == len(set(held_out)) == 44  # every non-paced record scored exactly once
    assert result["pooled"] == card["metrics"]["cross_validation"]["pooled"]


@needs_wrist
def test_ppg_hr_leave_one_subject_out_is_reproduced():
    card = load_model("ppg_hr").card
    result = evaluate("ppg_hr", data_root=DATA, progress=False)
    assert [f["held_out"] for f in result["folds"]] == [[s] for s in ("s2", "s3", "s4", "s5", "s6", "s8", "s9")]
    assert result["pooled"] == card["metrics"]["cross_validation"]["pooled"]


COMPRESSED = sorted(p.parent.name for p in ZOO_DIR.glob("*/card.json") if p.parent.name not in REGISTRY)


@needs_mitdb
@pytest.mark.parametrize("name", COMPRESSED)
def test_compressed_zoo_models_reproduce_their_ds2_scores_and_name_their_teacher(name):
    zoo = load_model(name)
    card = zoo.card
    assert card["compression"]["teacher_sha256"] == load_model(card["compression"]["teacher"]).card["sha256"]
    assert card["sha256"] == hashlib.sha256((zoo.directory / "model.pt").read_bytes()).hexdigest()
    assert card["size"]["params"] == parameter_count(zoo.model) < card["size"]["teacher"]["params"]
    result = evaluate(name, data_root=DATA, progress=False)
    assert result["accuracy"] == card["metrics"]["DS2"]["accuracy"]
    assert result["per_class"] == card["metrics"]["DS2"]["per_class"]
