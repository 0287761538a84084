"""Every attribution method obeys the same contract; CAM is Grad-CAM at the last block for the zoo's head."""

import pytest
import torch
from torch import nn

from models.architectures import GapCnn
from models.registry import REGISTRY
from sdk.errors import HeartSightError
from sdk.explain import ClassActivationMap, GradCam, InputXGradient, IntegratedGradients

METHODS = {
    "cam": lambda m: ClassActivationMap(m),
    "gradcam": lambda m: GradCam(m),
    "gradcam_block2": lambda m: GradCam(m, m.features[4]),
    "input_x_gradient": lambda m: InputXGradient(m),
    "integrated_gradients": lambda m: IntegratedGradients(m, steps=8),
}


def _model(seed=0, in_channels=3, outputs=4):
    torch.manual_seed(seed)
    model = GapCnn(in_channels, (8, 12, 16), 5, outputs)
    for module in model.modules():  # non-trivial batch-norm statistics
        if isinstance(module, nn.BatchNorm1d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_trace_is_aligned_with_the_input_and_leaves_no_hooks(method):
    model = _model()
    x = torch.randn(5, 3, 100)
    trace = METHODS[method](model).attribute(x, target=1)
    assert trace.shape == (5, 100) and torch.isfinite(trace).all()
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_default_target_is_the_top1_class(method):
    model = _model(seed=1)
    x = torch.randn(4, 3, 64)
    explainer = METHODS[method](model)
    top1 = model(x).argmax(1)
    assert torch.allclose(explainer.attribute(x), explainer.attribute(x, top1), atol=1e-6)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_cam_equals_gradcam_at_the_last_block_for_every_zoo_architecture(name):
    spec = REGISTRY[name]
    model = spec.build().eval()
    x = torch.randn(6, len(spec.input_channels), spec.window)
    for target in range(len(spec.outputs)):
        for relu in (True, False):
            cam = ClassActivationMap(model, relu=relu).attribute(x, target)
            gradcam = GradCam(model, relu=relu).attribute(x, target)
            assert torch.allclose(cam, gradcam, atol=1e-5, rtol=1e-4)


def test_signed_cam_averages_to_the_logit_minus_bias():
    model = _model(seed=2)
    x = torch.randn(3, 3, 64)
    cam_at_layer_resolution = torch.einsum("k,nkt->nt", model.head.weight[2], model.features(x))
    assert torch.allclose(cam_at_layer_resolution.mean(-1) + model.head.bias[2], model(x)[:, 2], atol=1e-5)


def test_integrated_gradients_is_complete():
    model = _model(seed=3)
    x = torch.randn(2, 3, 64)
    trace = IntegratedGradients(model, steps=256).attribute(x, target=0)
    difference = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]
    assert torch.allclose(trace.sum(-1), difference, atol=2e-2 * difference.abs().max().item() + 1e-3)


def test_input_x_gradient_of_a_linear_model_is_weight_times_input():
    class Linear(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.randn(2, 3, 10)

        def forward(self, x):
            return torch.einsum("ncl,kcl->nk", x, self.w)

    model = Linear()
    x = torch.randn(4, 3, 10)
    trace = InputXGradient(model).attribute(x, target=1)
    assert torch.allclose(trace, (model.w[1] * x).sum(1), atol=1e-6)


def test_bad_arguments_say_what_is_supported():
    model = _model()
    with pytest.raises(HeartSightError, match=r"\(N, C, L\)"):
        ClassActivationMap(model).attribute(torch.randn(3, 100))
    with pytest.raises(HeartSightError, match=r"\[0, 3\]"):
        GradCam(model).attribute(torch.randn(1, 3, 64), target=7)
    with pytest.raises(HeartSightError, match="GradCam"):
        ClassActivationMap(nn.Sequential(nn.Conv1d(3, 4, 3)))
    with pytest.raises(HeartSightError, match="not a module"):
        GradCam(model, nn.Conv1d(3, 3, 3))
