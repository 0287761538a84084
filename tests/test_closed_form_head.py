"""The closed-form decision layer (seed method 6): fitted without gradients, exact CAM, clear errors."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.closed_form_head import fit_head, flexible_stiefel_projection, patient_head, pooled_embeddings, with_head
from models.registry import get_spec
from sdk.errors import HeartSightError
from sdk.explain import ClassActivationMap

CLASSES = ("N", "S", "V", "F")


def clusters(n_per_class: np.ndarray, rng: np.random.Generator, centres: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters around centres (drawn when not given), offset from the origin like ReLU embeddings."""
    centres = rng.normal(0, 2.0, (len(n_per_class), 12)) if centres is None else centres
    labels = np.repeat(np.arange(len(n_per_class)), n_per_class)
    return centres[labels] + rng.normal(0, 1.0, (len(labels), centres.shape[1])) + 5.0, labels


def test_the_closed_form_head_separates_classes_and_finds_the_rare_ones():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2.0, (4, 12))
    train, test = (clusters(np.array([2000, 60, 200, 30]), rng, centres) for _ in range(2))
    weight, bias = fit_head(*train, CLASSES)
    predicted = (test[0] @ weight.T + bias).argmax(1)
    for k in range(len(CLASSES)):
        assert np.mean(predicted[test[1] == k] == k) > 0.8, CLASSES[k]


def test_the_adaptive_svm_steps_move_the_boundary_beyond_plain_ridge():
    """Ridge on ±1 targets is pulled by the far, easy examples; the SVM steps fit only the ones near the margin."""
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(0, 1, (400, 2)) + [-2, 0], rng.normal(0, 1, (400, 2)) + [2, 0]]
    x[:200] += [-30, 0]  # half of the first class lies far away
    labels = np.repeat([0, 1], 400)
    accuracy = {}
    for steps in (0, 5):
        weight, bias = fit_head(x, labels, ("a", "b"), svm_steps=steps)
        accuracy[steps] = np.mean((x @ weight.T + bias).argmax(1) == labels)
    assert accuracy[5] > accuracy[0] and accuracy[5] > 0.95, accuracy


def test_a_refitted_zoo_head_keeps_the_class_activation_map_exact():
    spec = replace(get_spec("ecg_beat"), window=128, widths=(8, 16))
    torch.manual_seed(0)
    model = spec.build().eval()
    x = torch.randn(64, len(spec.input_channels), spec.window).numpy()
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 64)
    weight, bias = fit_head(pooled_embeddings(model, x), labels, CLASSES, svm_steps=1)
    refitted = with_head(model, weight, bias)
    logits = refitted(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(logits, pooled_embeddings(model, x) @ weight.T + bias, atol=1e-4)
    features = refitted.features(torch.from_numpy(x)).detach()
    expected = torch.einsum("k,nkt->nt", torch.from_numpy(weight[2]).float(), features).clamp(min=0)
    cam = ClassActivationMap(refitted).attribute(torch.from_numpy(x), 2)
    assert torch.allclose(cam, torch.nn.functional.interpolate(expected[:, None], size=spec.window, mode="linear",
                                                                align_corners=False)[:, 0], atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(model.features.state_dict().values(),
                                                 refitted.features.state_dict().values()))  # backbone untouched


def test_too_few_examples_of_a_class_and_a_head_of_the_wrong_shape_are_refused():
    rng = np.random.default_rng(3)
    x, labels = clusters(np.array([100, 3, 50, 20]), rng)
    with pytest.raises(HeartSightError, match=r"S \(3\).*at least 5"):
        fit_head(x, labels, CLASSES)
    model = replace(get_spec("ecg_beat"), widths=(8, 16)).build()
    with pytest.raises(HeartSightError, match="does not fit this backbone"):
        with_head(model, np.zeros((4, 12)), np.zeros(4))


def test_a_reduced_rank_head_reads_the_embeddings_through_an_orthonormal_projection():
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 2.0, (4, 12))
    train, test = (clusters(np.array([1500, 80, 200, 60]), rng, centres) for _ in range(2))
    x = (train[0] - train[0].mean(0)) / train[0].std(0)
    targets = np.where(np.arange(4) == train[1][:, None], 1.0, -1.0)
    projection = flexible_stiefel_projection(x, targets, np.ones(len(x)), 3, 1.0)
    assert projection.shape == (12, 3) and np.allclose(projection.T @ projection, np.eye(3), atol=1e-9)
    weight, bias = fit_head(*train, CLASSES, rank=3)
    assert np.linalg.matrix_rank(weight, tol=1e-8) == 3
    predicted = (test[0] @ weight.T + bias).argmax(1)
    assert min(np.mean(predicted[test[1] == k] == k) for k in range(4)) > 0.7
    with pytest.raises(HeartSightError, match="rank 5 must be between 1 and the number of classes"):
        fit_head(*train, CLASSES, rank=5)


def test_the_heads_probabilities_are_calibrated_and_a_patients_beats_outweigh_the_population():
    rng = np.random.default_rng(5)
    centres = rng.normal(0, 1.0, (4, 12))
    train, test = (clusters(np.array([3000, 300, 300, 300]), rng, centres) for _ in range(2))
    weight, bias = fit_head(*train, CLASSES)
    probabilities = torch.softmax(torch.from_numpy(test[0] @ weight.T + bias), dim=1).numpy()
    accuracy = np.mean(probabilities.argmax(1) == test[1])
    assert abs(probabilities.max(1).mean() - accuracy) < 0.05  # the alert policy reads these as confidences
    # one patient whose N beats look like the population's V: counted many times, they win the boundary back
    patient = centres[2] + 5.0 + rng.normal(0, 0.3, (20, 12))
    for times, expected in ((1.0, 2), (500.0, 0)):
        weight, bias = patient_head(train, (patient, np.zeros(20, int)), CLASSES, patient_weight=times)
        assert np.bincount((patient @ weight.T + bias).argmax(1), minlength=4).argmax() == expected


def test_a_quantization_aware_head_takes_the_refitted_weights():
    from models.architectures import fold_batch_norm
    from models.quantization import prepare_qat

    spec = replace(get_spec("ecg_beat"), window=128, widths=(8, 16))
    torch.manual_seed(0)
    model = prepare_qat(fold_batch_norm(spec.build().eval()))
    weight = np.random.default_rng(6).normal(size=model.head.weight.shape)
    refitted = with_head(model, weight, np.zeros(4))
    assert np.allclose(refitted.head.weight.detach().numpy(), weight, atol=np.abs(weight).max() / 127)
