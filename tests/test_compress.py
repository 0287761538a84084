"""Each compression method returns a real, smaller (or sparser, or int8) model that still works and reloads."""

import json

import numpy as np
import pytest
import torch

from conftest import TOY
from models.architectures import GapCnn, convolutions, fold_batch_norm, multiply_accumulates, parameter_count
from models.quantization import activation_quantizers, weight_scales
from models.registry import load_model
from sdk.compress import isometry, pruning
from sdk.compress.methods import L2_EPOCHS, Plan, run
from sdk.compress.report import explanation_report, size_report
from sdk.compress.wcam import Wcam
from sdk.errors import HeartSightError
from sdk.training.recipes import write_model
from models.architectures import predict



def _accuracy(model, data):
    return float(np.mean(predict(model, data.x).argmax(1) == data.y))


def test_removing_no_channel_keeps_the_function_and_removing_some_shrinks_the_model(toy):
    teacher, train, _ = toy
    x = torch.from_numpy(train.x[:32])
    same = pruning.remove_channels(teacher, pruning.channels_to_keep(teacher, teacher.widths))
    assert torch.allclose(same(x), teacher(x), atol=1e-6)
    keep = pruning.channels_to_keep(teacher, (8, 12))
    norms = pruning.l1_filter_norms(teacher)[0]
    assert set(keep[0].tolist()) == set(torch.topk(norms, 8).indices.tolist())
    smaller = pruning.remove_channels(teacher, keep)
    assert smaller.widths == (8, 12) and parameter_count(smaller) < parameter_count(teacher) / 2


@pytest.mark.parametrize("schedule", ["one-shot", "iterative"])
def test_structured_pruning_gives_a_smaller_dense_model_that_still_classifies(toy, schedule):
    teacher, train, held_out = toy
    model, spec, history, _ = run(Plan("structured", 0.5, schedule=schedule, epochs=6), TOY, teacher, train, held_out,
                               progress=False)
    assert spec.widths == (8, 12) and model.widths == (8, 12)
    assert multiply_accumulates(model, TOY.window) < multiply_accumulates(teacher, TOY.window) / 3
    assert len(history) == 6  # iterative: 3 rounds of 2 epochs
    assert _accuracy(model, held_out) > 0.9


def test_unstructured_pruning_reaches_the_sparsity_in_20_percent_rounds_and_keeps_the_masks(toy):
    teacher, train, held_out = toy
    assert pruning.sparsity_schedule(0.5) == pytest.approx([0.2, 0.36, 0.488, 0.5])
    model, spec, history, _ = run(Plan("unstructured", 0.5, epochs=2), TOY, teacher, train, held_out, progress=False)
    assert spec.widths == TOY.widths
    assert pruning.sparsity(model) == pytest.approx(0.5, abs=0.01)
    assert [h["sparsity"] for h in history] == pytest.approx([0.2, 0.2, 0.36, 0.36, 0.488, 0.488, 0.5, 0.5], abs=1e-3)
    assert size_report(model, spec)["params_nonzero"] < size_report(teacher, TOY)["params_nonzero"] * 0.6
    assert _accuracy(model, held_out) > 0.9


def test_distillation_trains_a_narrower_student(toy):
    teacher, train, held_out = toy
    model, spec, _, _ = run(Plan("distill", 0.5, epochs=30), TOY, teacher, train, held_out, progress=False)
    assert spec.widths == (8, 12)
    assert _accuracy(model, held_out) > 0.9


def test_batch_norm_folding_keeps_the_function(toy):
    teacher, train, _ = toy
    x = torch.from_numpy(train.x[:64])
    folded = fold_batch_norm(teacher)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.modules())
    assert torch.allclose(folded(x), teacher(x), atol=1e-5)


def test_qat_model_uses_int8_weights_and_ranges_and_reloads_from_its_card(toy, tmp_path):
    teacher, train, held_out = toy
    model, spec, _, _ = run(Plan("qat", 0.0, wcam_beta=10.0, epochs=3), TOY, teacher, train, held_out, progress=False)
    for layer in [m for m in model.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.Linear))]:
        levels = layer.weight / weight_scales(layer.weight).reshape(-1, *[1] * (layer.weight.ndim - 1))
        assert torch.allclose(levels, levels.round(), atol=1e-3) and levels.abs().max() <= 127.001
    quantizers = activation_quantizers(model)
    assert len(quantizers) == 1 + len(TOY.widths) and all(q.calibrated for q in quantizers)
    assert _accuracy(model, held_out) > 0.9
    card = {"name": "toy_qat", "architecture": "ecg_beat", "widths": list(spec.widths),
            "quantization": {"method": "qat"}}
    write_model(tmp_path, model, card)
    reloaded = load_model(tmp_path).model
    x = torch.from_numpy(held_out.x[:16])
    assert torch.equal(reloaded(x), model(x))
    assert json.loads((tmp_path / "card.json").read_text())["sha256"]


def test_wcam_fine_tuning_ends_closer_to_the_teacher_explanation_than_plain_fine_tuning(toy):
    teacher, train, held_out = toy
    x = torch.from_numpy(held_out.x)
    distance, fidelity = {}, {}
    for beta in (0.0, 10.0):
        model, spec, _, _ = run(Plan("structured", 0.5, wcam_beta=beta, epochs=4), TOY, teacher, train, held_out,
                             progress=False)
        with torch.no_grad():
            distance[beta] = Wcam(teacher, beta=1.0)(model, x)[2].item()
        fidelity[beta] = explanation_report(teacher, model, held_out, TOY.fs)["fidelity_cosine"]
    assert distance[10.0] < distance[0.0]
    assert fidelity[10.0] > fidelity[0.0]


@pytest.mark.parametrize("plan, message", [
    (Plan("prune", 0.5), "unknown compression method"),
    (Plan("structured", 1.0), "--ratio"),
    (Plan("structured", 0.0), "--ratio"),
    (Plan("structured", 0.5, wcam_beta=-1), "--wcam"),
    (Plan("structured", 0.5, schedule="gradual"), "schedule"),
    (Plan("structured", 0.5, repair="orthogonal"), "unknown repair"),
    (Plan("unstructured", 0.5, repair="growing-l2"), "removes none"),
    (Plan("distill", 0.5, repair="qr-orthogonal"), "removes none"),
    (Plan("structured", 0.5, repair="growing-l2", schedule="iterative"), "one-shot"),
    (Plan("structured", 0.5, repair="qr-orthogonal"), "batch norm"),
    (Plan("qat", 0.5, fold_bn=True), "always folds"),
    (Plan("structured", 0.5, lr=2.0), "--lr"),
])
def test_bad_plans_are_refused_with_the_option_to_fix(plan, message):
    with pytest.raises(HeartSightError, match=message):
        plan.check()


def test_jacobian_singular_values_are_those_of_the_full_input_logit_jacobian(toy):
    teacher, _, held_out = toy
    x = torch.from_numpy(held_out.x[:3])
    values = isometry.jacobian_singular_values(teacher, x)
    for i in range(3):
        full = torch.autograd.functional.jacobian(lambda v: teacher(v[None])[0], x[i])  # (classes, C, L)
        assert torch.allclose(values[i], torch.linalg.svdvals(full.flatten(1)), rtol=1e-4, atol=1e-6)
    report = isometry.isometry(teacher, x)
    assert report["jsv_cond"] >= 1 and report["jsv_mean"] > 0


def test_qr_re_orthogonalisation_makes_every_slimmed_layer_orthogonal_and_refuses_batch_norm(toy):
    teacher, _, _ = toy
    slim = pruning.remove_channels(teacher, pruning.channels_to_keep(teacher, (8, 12)))
    with pytest.raises(HeartSightError, match="--fold-bn"):
        isometry.qr_orthogonalize(slim)
    folded = fold_batch_norm(slim)
    before = [m.weight.detach().clone() for m in [*convolutions(folded), folded.head]]
    isometry.qr_orthogonalize(folded)
    for old, layer in zip(before, [*convolutions(folded), folded.head]):
        w = layer.weight.detach().flatten(1)
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
        assert torch.allclose(gram, torch.eye(len(gram)), atol=1e-5)
        # the orthogonal factor keeps each row's direction where the QR is triangular: the first row is old's, scaled
        assert torch.nn.functional.cosine_similarity(w[0], old.flatten(1)[0], dim=0) > 0.999


def test_growing_l2_drives_the_filters_to_be_removed_to_zero_so_removal_keeps_the_function(toy):
    teacher, train, held_out = toy
    model, _, history, diagnostics = run(Plan("structured", 0.5, epochs=2, lr=1e-2, repair="growing-l2"), TOY, teacher,
                                         train, held_out, progress=False)
    assert [h.get("phase") for h in history] == ["growing-l2"] * L2_EPOCHS + [None, None]
    assert set(diagnostics) == {"before", "regularised", "after_removal", "final"}
    regularised, removed = diagnostics["regularised"], diagnostics["after_removal"]
    assert removed["accuracy"] == regularised["accuracy"] > 0.9  # the removed filters carried nothing any more
    assert removed["jsv_mean"] == pytest.approx(regularised["jsv_mean"], rel=1e-3)
    assert _accuracy(model, held_out) > 0.9


def test_growing_l2_decay_grows_then_holds_and_reaches_the_promised_shrink():
    keep = [torch.tensor([0, 1]), torch.tensor([0])]
    penalty = isometry.GrowingL2(keep, (4, 2), steps=100)
    model = GapCnn(4, (4, 2), 3, 4)
    initial = convolutions(model)[0].weight.detach().abs().max().item()
    coefficients = []
    for _ in range(100):
        penalty(model)
        coefficients.append(penalty.coefficient)
    assert coefficients[0] < coefficients[49] == pytest.approx(coefficients[99])
    first = convolutions(model)[0].weight
    assert first[2:].abs().max() < 1e-4 * initial  # exp(-12) of their size
    assert first[:2].abs().sum() > 0


def test_qr_repaired_structured_pruning_fine_tunes_without_batch_norm_and_reloads(toy, tmp_path):
    teacher, train, held_out = toy
    model, spec, _, diagnostics = run(Plan("structured", 0.5, epochs=4, repair="qr-orthogonal", fold_bn=True, lr=1e-2),
                                      TOY, teacher, train, held_out, progress=False)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    # the QR changes the function; fine-tuning rebuilds it
    assert diagnostics["final"]["accuracy"] > max(0.5, diagnostics["after_removal"]["accuracy"])
    write_model(tmp_path, model, {"name": "toy_qr", "architecture": "ecg_beat", "widths": list(spec.widths),
                                  "batch_norm": "folded"})
    x = torch.from_numpy(held_out.x[:16])
    assert torch.equal(load_model(tmp_path).model(x), model(x))
