"""The WCAM regularizer: the closed form equals exact double-backward Grad-CAM, and it measures what it should."""

import copy

import pytest
import torch
from torch import nn

from models.architectures import GapCnn
from models.registry import REGISTRY
from sdk.compress.wcam import Wcam, forward_with_map
from sdk.errors import HeartSightError
from sdk.explain import GradCam


def _model(widths, seed, in_channels=3, outputs=4):
    torch.manual_seed(seed)
    model = GapCnn(in_channels, widths, 5, outputs)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _loss_and_gradients(wcam, student, x, exact):
    wcam.exact = exact
    student.zero_grad()
    _, _, loss = wcam(student, x)
    loss.backward()
    return loss.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in student.parameters()]


@pytest.mark.parametrize("stochastic", [False, True])
def test_closed_form_and_exact_paths_give_the_same_loss_and_gradients(stochastic):
    teacher, student = _model((8, 12, 16), seed=0), _model((4, 6, 10), seed=1)
    x = torch.randn(6, 3, 96)
    closed = Wcam(teacher, beta=7.0, stochastic=stochastic, seed=3)
    exact = Wcam(teacher, beta=7.0, stochastic=stochastic, seed=3)  # same seed: the same dropped channels
    loss_closed, grads_closed = _loss_and_gradients(closed, student, x, exact=False)
    loss_exact, grads_exact = _loss_and_gradients(exact, student, x, exact=True)
    assert loss_closed > 0
    assert torch.allclose(loss_closed, loss_exact, rtol=1e-5, atol=1e-7)
    for a, b in zip(grads_closed, grads_exact):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in grads_closed)


def test_the_student_map_is_grad_cam_at_the_last_block():
    model = _model((8, 12), seed=2)
    x = torch.randn(4, 3, 64)
    target = torch.tensor([0, 1, 2, 3])
    _, maps = forward_with_map(model, x, target, exact=True)
    traces = GradCam(model).attribute(x, target)  # upsampled to the input
    upsampled = torch.nn.functional.interpolate(maps[:, None].detach(), size=64, mode="linear")[:, 0]
    assert torch.allclose(upsampled, traces, atol=1e-5)


def test_a_copy_of_the_teacher_has_zero_loss_and_a_different_model_does_not():
    teacher = _model((8, 12, 16), seed=0)
    x = torch.randn(8, 3, 96)
    wcam = Wcam(teacher, beta=100.0)
    _, _, same = wcam(copy.deepcopy(teacher), x)
    _, _, other = wcam(_model((8, 12, 16), seed=5), x)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    assert other.item() > 1.0


def test_loss_scales_with_beta_and_the_teacher_is_left_untouched():
    teacher, student = _model((8, 12), seed=0), _model((6, 6), seed=1)
    x = torch.randn(5, 3, 64)
    before = copy.deepcopy(teacher.state_dict())
    _, _, one = Wcam(teacher, beta=1.0)(student, x)
    _, _, hundred = Wcam(teacher, beta=100.0)(student, x)
    hundred.backward()
    assert torch.isclose(hundred, 100 * one)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_maps_at_different_resolutions_are_compared_after_interpolation():
    spec = REGISTRY["ecg_beat"]
    teacher = spec.build().eval()
    channels = len(spec.input_channels)
    shallow = GapCnn(channels, (8, 8, 8), 7, 4).eval()  # one pool fewer: twice the map length
    _, _, loss = Wcam(teacher, beta=1.0)(shallow, torch.randn(2, channels, spec.window))
    assert torch.isfinite(loss)


def test_a_teacher_without_the_zoo_head_is_refused():
    with pytest.raises(HeartSightError, match="GAP\\+linear"):
        Wcam(nn.Sequential(nn.Conv1d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)))
