import numpy as np
import torch
from torch import nn

from sdk.explain import metrics


def test_fidelity_metrics_on_hand_made_traces():
    a = np.array([[0.0, 1.0, 2.0, 3.0]])
    assert np.isclose(metrics.cosine_similarity(a, 2 * a)[0], 1.0)
    assert np.isclose(metrics.pearson_r(a, 5 + 2 * a)[0], 1.0)
    assert np.isclose(metrics.pearson_r(a, -a)[0], -1.0)
    assert metrics.cosine_similarity(a, np.zeros_like(a))[0] == 0.0
    x = np.arange(10.0)[None]
    y = x.copy()
    y[0, 8] = 100.0  # top-2 of x: {9, 8}; of y: {8, 9}
    assert metrics.top_k_iou(x, y, fraction=0.2)[0] == 1.0
    y[0, 0] = 200.0  # top-2 of y: {0, 8}: one shared of three
    assert np.isclose(metrics.top_k_iou(x, y, fraction=0.2)[0], 1 / 3)


def test_pointing_game_and_localization_auc():
    fs = 100.0
    mask = metrics.qrs_mask(200, centre=100, fs=fs)
    assert mask.sum() == 17 and mask[92] and mask[108] and not mask[109]  # 75 ms at 100 Hz: 8 samples
    on_beat = np.zeros((1, 200))
    on_beat[0, 95:105] = 1.0
    off_beat = np.roll(on_beat, 50, axis=1)
    assert metrics.pointing_game(np.vstack([on_beat, off_beat]), mask).tolist() == [1.0, 0.0]
    auc = metrics.localization_auc(np.vstack([on_beat, off_beat, np.ones((1, 200))]), mask)
    assert np.isclose(auc[0], (10 + 0.5 * 7) / 17)  # 10 of 17 QRS samples above every other sample, 7 tied
    assert auc[1] < 0.5 and np.isclose(auc[2], 0.5)
    ramp = -np.abs(np.arange(200) - 100.0)[None]  # highest at the R peak, falling away: perfect ranking
    assert np.isclose(metrics.localization_auc(ramp, mask)[0], 1.0)


def test_deletion_and_insertion_reward_the_trace_that_points_at_the_evidence():
    class Detector(nn.Module):
        """Class 1 logit = sum of the signal over samples 40..49; class 0 logit = 0."""

        def forward(self, x):
            evidence = x[:, 0, 40:50].sum(dim=1)
            return torch.stack([torch.zeros_like(evidence), evidence], dim=1)

    x = torch.zeros(1, 1, 100)
    x[0, 0, 40:50] = 1.0
    target = torch.tensor([1])
    right = np.zeros((1, 100))
    right[0, 40:50] = 1.0
    wrong = np.zeros((1, 100))
    wrong[0, 80:90] = 1.0
    deletion_right, insertion_right = metrics.deletion_insertion(Detector(), x, right, target, steps=10)
    deletion_wrong, insertion_wrong = metrics.deletion_insertion(Detector(), x, wrong, target, steps=10)
    assert deletion_right[0] < deletion_wrong[0]
    assert insertion_right[0] > insertion_wrong[0]
