from dataclasses import replace

import numpy as np
import torch

from models.registry import get_spec
from sdk.training import metrics
from sdk.data.datasets import Dataset
from models.architectures import predict
from sdk.training.train import TrainConfig, class_weights, epoch_indices, fit


# The ecg_beat recipe shrunk so that a few epochs take a second.
TOY = replace(get_spec("ecg_beat"), window=128, widths=(8, 16))


def _toy_beats(n_per_class: int, seed: int) -> Dataset:
    """Beat-shaped inputs whose class is written in the ECG channel amplitude around the centre."""
    spec = TOY
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), n_per_class)
    x = rng.normal(0, 0.05, size=(len(y), len(spec.input_channels), spec.window)).astype(np.float32)
    x[:, 0, 54:74] += (y[:, None] - 1.5).astype(np.float32)
    return Dataset(x, y, np.array(["toy"] * len(y)))


def test_training_is_deterministic_for_a_seed_and_learns():
    spec = TOY
    data = _toy_beats(24, seed=1)
    config = TrainConfig(epochs=15, batch_size=16, max_lr=1e-2, seed=3)
    first, history = fit(spec, data, config, progress=False)
    second, _ = fit(spec, data, config, progress=False)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    assert len(history) == 15 and history[-1]["loss"] < history[0]["loss"]
    accuracy = np.mean(predict(first, data.x).argmax(1) == data.y)
    assert accuracy > 0.9


def test_checkpoint_is_the_best_validation_epoch():
    spec = TOY
    data = _toy_beats(16, seed=2)
    scores = iter([0.2, 0.9, 0.1])
    model, history = fit(spec, data, TrainConfig(epochs=3, batch_size=32, seed=0), data,
                         lambda y, out: next(scores), progress=False)
    assert [h["validation"] for h in history] == [0.2, 0.9, 0.1]
    replay, _ = fit(spec, data, TrainConfig(epochs=3, batch_size=32, seed=0), progress=False)
    # the returned weights are those after epoch 2, not after epoch 3 (which `replay` has)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), replay.state_dict().values()))


def test_epoch_indices_cap_the_majority_class():
    y = np.array([0] * 100 + [1] * 10)
    chosen = epoch_indices(y, 30, np.random.default_rng(0))
    assert np.sum(y[chosen] == 0) == 30 and np.sum(y[chosen] == 1) == 10
    assert len(set(chosen.tolist())) == 40


def test_class_weights_favour_rare_classes_by_inverse_square_root():
    weights = class_weights(np.array([100, 25]))
    assert torch.isclose(weights[1] / weights[0], torch.tensor(2.0))


def test_ec57_report_matches_a_hand_count():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    y_pred = np.array([0, 0, 1, 1, 0, 2, 2, 0, 0])
    report = metrics.classification_report(y_true, y_pred, ("N", "S", "V", "F"))
    assert report["accuracy"] == round(5 / 9, 4)
    assert report["per_class"]["N"] == {"se": round(2 / 3, 4), "ppv": 0.4, "f1": 0.5, "n": 3}
    assert report["per_class"]["S"]["se"] == 0.5 and report["per_class"]["S"]["ppv"] == 0.5
    assert report["per_class"]["F"] == {"se": 0.0, "ppv": 0.0, "f1": 0.0, "n": 1}
    assert report["confusion"][2] == [1, 0, 2, 0]


def test_regression_report_in_bpm():
    report = metrics.regression_report(np.array([60, 80, 100]), np.array([63, 76, 100]))
    assert report["mae_bpm"] == round(7 / 3, 3)
    assert report["rmse_bpm"] == round(np.sqrt(25 / 3), 3)
