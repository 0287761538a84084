"""The closed-form decision layer (models.closed_form_head) against SGD heads, on ecg_beat's frozen backbone.

Inter-patient: heads are fitted on DS1's embeddings, the closed form's class weighting and SVM steps chosen on the
DS1 patients held out for checkpoints (recipes.BEAT_VALIDATION_RECORDS; mean F1 of N, S and V; with the rank of the
flexible Stiefel projection among the choices), then refitted on all
of DS1 and scored on DS2 at the reference beats. Compared with the shipped head (trained by SGD with the backbone)
and with an SGD head trained on the same frozen embeddings (class-weighted softmax regression, AdamW): DS2 class
metrics, fit time (median of 5), and the trace fidelity of each refitted model to the shipped one (CAM cosine and
top-10% IoU on a class-balanced DS2 sample, for the shipped model's class).

Writes benchmarks/results/closed_form_head.json and .md. Usage: python -m benchmarks.closed_form_head [DATA_DIR]
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import describe
from models.closed_form_head import fit_head, pooled_embeddings, with_head
from models.registry import load_model
from sdk.compress.report import explanation_sample, fidelity
from sdk.data import mitdb
from sdk.data.datasets import beat_dataset
from sdk.training import metrics
from sdk.training.recipes import BEAT_VALIDATION_RECORDS
from sdk.training.train import class_weights

RESULTS = Path(__file__).resolve().parent / "results"
POWERS, STEPS, RANKS = (0.25, 0.5, 1.0), (0, 5), (2, 3, None)  # None: as many as classes (no projection)
SGD_EPOCHS = 30
RUNS = 5


def sgd_head(embeddings: np.ndarray, labels: np.ndarray, n_classes: int, power: float) -> tuple[np.ndarray, np.ndarray]:
    """Class-weighted softmax regression on the frozen embeddings, by AdamW minibatches (the gradient way)."""
    torch.manual_seed(0)
    x, y = torch.from_numpy(embeddings.astype(np.float32)), torch.from_numpy(labels)
    mean, spread = x.mean(0), x.std(0) + 1e-6
    head = torch.nn.Linear(x.shape[1], n_classes)
    loss = torch.nn.CrossEntropyLoss(weight=class_weights(np.bincount(labels, minlength=n_classes), power))
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    for _ in range(SGD_EPOCHS):
        for batch in torch.randperm(len(y)).split(256):
            optimizer.zero_grad()
            loss(head((x[batch] - mean) / spread), y[batch]).backward()
            optimizer.step()
    weight = (head.weight.detach() / spread).double().numpy()
    return weight, head.bias.detach().double().numpy() - weight @ mean.double().numpy()


def macro_f1(report: dict, classes) -> float:
    return float(np.mean([report["per_class"][c]["f1"] for c in classes]))


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    zoo = load_model("ecg_beat")
    spec, classes = zoo.spec, zoo.spec.outputs
    ds1, ds2 = beat_dataset(spec, mitdb.DS1, data_root), beat_dataset(spec, mitdb.DS2, data_root)
    e1, e2 = pooled_embeddings(zoo.model, ds1.x), pooled_embeddings(zoo.model, ds2.x)
    held_out = ds1.in_groups(BEAT_VALIDATION_RECORDS)

    def scores(weight, bias, embeddings, labels) -> dict:
        return metrics.classification_report(labels, (embeddings @ weight.T + bias).argmax(1), classes)

    choice = {}
    for power, steps, rank in itertools.product(POWERS, STEPS, RANKS):
        weight, bias = fit_head(e1[~held_out], ds1.y[~held_out], classes, power, svm_steps=steps, rank=rank)
        choice[(power, steps, rank)] = macro_f1(scores(weight, bias, e1[held_out], ds1.y[held_out]), ("N", "S", "V"))
    power, steps, rank = max(choice, key=choice.get)
    heads = {"shipped (SGD with the backbone)": (zoo.model.head.weight.detach().double().numpy(),
                                                 zoo.model.head.bias.detach().double().numpy(), None)}
    for label, fit in ((f"closed form (class weight power {power}, {steps} SVM steps, rank {rank or len(classes)})",
                        lambda: fit_head(e1, ds1.y, classes, power, svm_steps=steps, rank=rank)),
                       (f"SGD on frozen embeddings ({SGD_EPOCHS} epochs, power {power})",
                        lambda: sgd_head(e1, ds1.y, len(classes), power))):
        times = []
        for _ in range(RUNS if label.startswith("closed") else 1):
            started = time.perf_counter()
            weight, bias = fit()
            times.append(time.perf_counter() - started)
        heads[label] = (weight, bias, statistics.median(times))
    sample = torch.from_numpy(explanation_sample(ds2).x)
    rows = {}
    for label, (weight, bias, seconds) in heads.items():
        report = scores(weight, bias, e2, ds2.y)
        rows[label] = {"macro_f1": round(macro_f1(report, classes), 4), "accuracy": report["accuracy"],
                       "per_class": report["per_class"], "fit_seconds": None if seconds is None else round(seconds, 3),
                       **fidelity(zoo.model, with_head(zoo.model, weight, bias), sample)}
    result = {"machine": describe(),
              "validation_choice": {f"{p}/{s}/{r or len(classes)}": round(v, 4) for (p, s, r), v in choice.items()},
              "chosen": {"class_weight_power": power, "svm_steps": steps, "rank": rank or len(classes)}, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "closed_form_head.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "closed_form_head.md").write_text(markdown(result, classes))
    print(markdown(result, classes))


def markdown(result: dict, classes) -> str:
    lines = ["# ecg_beat's head: closed form against SGD (train DS1, test DS2, backbone frozen)", "",
             f"Machine: {result['machine']}. Closed-form settings chosen on DS1's held-out patients (mean F1 of N, S, "
             f"V per class-weight power / SVM steps / rank: {result['validation_choice']}).", "",
             "| head | macro-F1 | " + " | ".join(f"{c} Se / +P" for c in classes)
             + " | fit (s) | CAM cosine to shipped | top-10% IoU |",
             "|---|---|" + "---|" * len(classes) + "---|---|---|"]
    for label, row in result["rows"].items():
        per = " | ".join(f"{row['per_class'][c]['se']:.3f} / {row['per_class'][c]['ppv']:.3f}" for c in classes)
        fit = "—" if row["fit_seconds"] is None else f"{row['fit_seconds']:.3f}"
        lines.append(f"| {label} | {row['macro_f1']:.3f} | {per} | {fit} | {row['fidelity_cosine']:.3f} | "
                     f"{row['fidelity_iou']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
