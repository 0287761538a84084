"""Every compression method at two levels, plain vs WCAM, on ecg_beat scored on DS2.

Writes benchmarks/results/compression.json (one row per model), compression.md (the table) and compression.png
(DS2 beats of each class with the teacher's, the plain and the WCAM model's traces). Rows are saved as they
finish, so an interrupted run keeps what it measured. Usage: python -m benchmarks.compression [DATA_DIR]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.registry import load_model  # noqa: E402
from sdk.compress import score_compressed  # noqa: E402
from sdk.compress.methods import EPOCHS, Plan, run  # noqa: E402
from sdk.compress.report import explanation_sample, size_report  # noqa: E402
from sdk.data import mitdb  # noqa: E402
from sdk.data.datasets import beat_dataset  # noqa: E402
from sdk.explain import ClassActivationMap  # noqa: E402
from sdk.training.recipes import beat_training_sets  # noqa: E402

LEVELS = {"structured": (0.5, 0.75), "unstructured": (0.5, 0.8), "distill": (0.5, 0.75), "qat": (0.0, 0.5)}
# Chosen on DS1's held-out patients (structured pruning 0.75): beta 1 kept the teacher's map as well as 100
# (cosine 0.75 vs 0.59 plain) and cost the least F1; see benchmarks/results/wcam_beta.md.
BENCHMARK_BETA = 1.0
FIGURE_PLAN = ("structured", 0.75)
RESULTS = Path(__file__).resolve().parent / "results"
FIGURE_BEATS_PER_CLASS = 2


def _row(method: str, level: float, wcam: bool, size: dict, scores: dict, epoch_s: float | None) -> dict:
    ds2, explanation = scores["DS2"], scores["explanation"]
    return {"method": method, "level": level, "wcam": wcam, "params": size["params_nonzero"],
            "int8_bytes": size["int8_bytes"], "macs": size["macs"], "accuracy": ds2["accuracy"],
            "f1": {k: v["f1"] for k, v in ds2["per_class"].items()},
            "se": {k: v["se"] for k, v in ds2["per_class"].items()},
            "ppv": {k: v["ppv"] for k, v in ds2["per_class"].items()},
            "fidelity_cosine": explanation["fidelity_cosine"], "fidelity_iou": explanation["fidelity_iou"],
            "pointing_game": explanation["pointing_game"], "loc_auc": explanation["loc_auc"],
            "epoch_s": epoch_s}


def _markdown(rows: list[dict], teacher_card: dict) -> str:
    lines = [
        "# Compression benchmark: ecg_beat, plain vs WCAM (DS2, inter-patient)",
        "",
        f"Teacher: `ecg_beat` (sha256 {teacher_card.get('sha256', '')[:12]}), trained on DS1. Every compressed model "
        "is fine-tuned (or, for distillation, trained) on the teacher's DS1 training patients, its checkpoint "
        "chosen on DS1's held-out patients, and scored once on all DS2 beats at the reference annotations.",
        f"WCAM beta = {BENCHMARK_BETA:g} (chosen on DS1 held-out patients). Epochs: "
        + ", ".join(f"{m} {e}" + (" per 20% round" if m == "unstructured" else "") for m, e in EPOCHS.items()) + ".",
        "Level: share of channels removed (structured, distill width, and pruning before qat), or of weights "
        "zeroed (unstructured). Params: non-zero parameters. int8 bytes: int8 weights + int32 biases after "
        "batch-norm folding, stored dense (unstructured sparsity is not exploited by the firmware). "
        "Explanation columns use 250 DS2 beats per class (all F beats): fidelity to the teacher's trace "
        "(cosine, top-10% IoU, for the teacher's class) and localization of the model's own trace on the "
        "classified beat's QRS (pointing game, ROC-AUC).",
        "",
        "| method | level | WCAM | params | int8 bytes | MACs | acc | F1 N | F1 S | F1 V | F1 F | cosine | IoU | pointing | loc AUC | s/epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['level']:g} | {'yes' if r['wcam'] else 'no'} | {r['params']:,} | {r['int8_bytes']:,} | "
            f"{r['macs']:,} | {r['accuracy']:.3f} | " + " | ".join(f"{r['f1'][c]:.3f}" for c in "NSVF")
            + f" | {r['fidelity_cosine']:.3f} | {r['fidelity_iou']:.3f} | {r['pointing_game']:.3f} | {r['loc_auc']:.3f} | "
            + (f"{r['epoch_s']:.1f}" if r["epoch_s"] is not None else "-") + " |"
        )
    return "\n".join(lines) + "\n"


def _figure(path: Path, teacher, plain, wcam, beats, classes: tuple[str, ...]) -> None:
    """A few DS2 beats per class: the ECG with the three models' traces (each scaled to its maximum)."""
    x = torch.from_numpy(beats.x)
    with torch.no_grad():
        predicted = teacher(x).argmax(1).numpy()
    rng = np.random.default_rng(0)
    chosen = [i for k in range(len(classes))
              for i in rng.permutation(np.flatnonzero((beats.y == k) & (predicted == k)))[:FIGURE_BEATS_PER_CLASS]]
    target = torch.from_numpy(predicted[chosen])
    traces = {name: ClassActivationMap(model).attribute(x[chosen], target).numpy()
              for name, model in (("teacher", teacher), ("plain", plain), ("WCAM", wcam))}
    fig, axes = plt.subplots(len(chosen), 1, figsize=(10, 1.8 * len(chosen)), sharex=True)
    seconds = np.arange(x.shape[-1]) / 128.0
    for row, (ax, i) in enumerate(zip(np.atleast_1d(axes), chosen)):
        ax.plot(seconds, beats.x[i, 0], color="0.3", lw=0.8, label="ECG (scaled)")
        twin = ax.twinx()
        for (name, trace), style in zip(traces.items(), ("k-", "C1--", "C0-")):
            twin.plot(seconds, trace[row] / max(trace[row].max(), 1e-9), style, lw=1.2, label=name)
        twin.set_ylim(0, 1.1)
        twin.set_yticks([])
        ax.set_ylabel(classes[beats.y[i]])
        if row == 0:
            twin.legend(loc="upper right", fontsize=7, ncol=3)
    np.atleast_1d(axes)[-1].set_xlabel("seconds (classified beat at the centre)")
    fig.suptitle(f"DS2 beats: saliency of the teacher's class, {FIGURE_PLAN[0]} {FIGURE_PLAN[1]:g}, plain vs WCAM")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> None:
    data_root = argv[0] if argv else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    zoo = load_model("ecg_beat")
    spec = zoo.spec
    train, validation, _ = beat_training_sets(spec, data_root)
    ds2 = beat_dataset(spec, mitdb.DS2, data_root)
    rows = [_row("none (teacher)", 0.0, False, size_report(zoo.model, spec), score_compressed(zoo.model, zoo.model, spec, ds2), None)]
    json_path, md_path, png_path = (RESULTS / f"compression.{kind}" for kind in ("json", "md", "png"))
    figure_models = {}
    for method, levels in LEVELS.items():
        for level in levels:
            for wcam in (False, True):
                started = time.perf_counter()
                model, model_spec, history = run(Plan(method, level, BENCHMARK_BETA if wcam else 0.0), spec, zoo.model,
                                                 train, validation)
                scores = score_compressed(zoo.model, model, model_spec, ds2)
                epoch_s = float(np.mean([h["seconds"] for h in history]))
                rows.append(_row(method, level, wcam, size_report(model, model_spec), scores, round(epoch_s, 1)))
                rows[-1]["total_s"] = round(time.perf_counter() - started)
                json_path.write_text(json.dumps(rows, indent=1) + "\n")
                md_path.write_text(_markdown(rows, zoo.card))
                if (method, level) == FIGURE_PLAN:
                    figure_models[wcam] = model
    if len(figure_models) == 2:
        _figure(png_path, zoo.model, figure_models[False], figure_models[True], explanation_sample(ds2), spec.outputs)
    print(f"wrote {json_path}, {md_path} and {png_path}")


if __name__ == "__main__":
    main(sys.argv[1:])
