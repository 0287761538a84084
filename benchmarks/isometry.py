"""Dynamical isometry around structured pruning of ecg_beat: repairs x fine-tuning LRs x ratios, plain and WCAM.

Each row prunes the zoo teacher once (L1 filters, one shot), applies a repair (none, a growing L2 penalty on the
filters to be removed, or QR re-orthogonalisation of the batch-norm-folded slimmed layers), fine-tunes at one of
two peak LRs, and logs the input-logit Jacobian singular values right after removal and after fine-tuning
(sdk.compress.isometry). Accuracies before fine-tuning are on DS1's held-out patients (as the checkpoint is);
the final model is also scored once on DS2.

Writes benchmarks/results/isometry.json (rows saved as they finish; a rerun skips rows already there) and
isometry.md. Usage: python -m benchmarks.isometry [DATA_DIR] [--seeds 0 1 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from models.architectures import predict
from models.registry import load_model
from sdk.compress.methods import EPOCHS, L2_EPOCHS, Plan, run
from sdk.data import mitdb
from sdk.data.datasets import beat_dataset
from sdk.training import metrics
from sdk.training.recipes import beat_training_sets

RATIOS = (0.5, 0.75, 0.9)
REPAIRS = ("none", "growing-l2", "qr-orthogonal")
LRS = (1e-3, 1e-2)
WCAM_BETA = 1.0  # as in the compression benchmark
WCAM_RATIO = 0.75
RESULTS = Path(__file__).resolve().parent / "results"
KEY = ("ratio", "repair", "lr", "wcam", "seed")


def measure(zoo, train, validation, ds2, ratio: float, repair: str, lr: float, wcam: bool, seed: int) -> dict:
    plan = Plan("structured", ratio, WCAM_BETA if wcam else 0.0, seed=seed, repair=repair, lr=lr,
                fold_bn=repair == "qr-orthogonal")
    started = time.perf_counter()
    model, _, _, diagnostics = run(plan, zoo.spec, zoo.model, train, validation, progress=False)
    report = metrics.classification_report(ds2.y, predict(model, ds2.x).argmax(1), zoo.spec.outputs)
    after, final = diagnostics["after_removal"], diagnostics["final"]
    return {"method": "structured", "ratio": ratio, "repair": repair, "lr": lr, "wcam": wcam, "seed": seed,
            "acc_before": diagnostics["before"]["accuracy"], "acc_after_removal": after["accuracy"],
            "acc_final": final["accuracy"],
            "jsv_mean": final["jsv_mean"], "jsv_std": final["jsv_std"], "jsv_cond": final["jsv_cond"],
            "after_removal": {k: after[k] for k in ("jsv_mean", "jsv_std", "jsv_cond")},
            "before": {k: diagnostics["before"][k] for k in ("jsv_mean", "jsv_std", "jsv_cond")},
            "ds2_accuracy": report["accuracy"],
            "ds2_macro_f1_nsv": round(float(np.mean([report["per_class"][c]["f1"] for c in "NSV"])), 4),
            "seconds": round(time.perf_counter() - started, 1)}


def markdown(rows: list[dict], machine: str) -> str:
    lines = [
        "# Dynamical isometry around structured pruning (ecg_beat, inter-patient)",
        "",
        "L1 filter pruning of the zoo teacher in one shot at three ratios, each with a repair, fine-tuned "
        f"{EPOCHS['structured']} epochs at peak LR 1e-3 or 1e-2 (one-cycle), plain, and with WCAM (beta {WCAM_BETA:g}) "
        f"at ratio {WCAM_RATIO:g}. "
        f"growing-l2: {L2_EPOCHS} epochs of an L2 penalty on the filters to be removed (weights, batch-norm scale "
        "and shift), its coefficient growing linearly to 1, before removal. qr-orthogonal: batch norm folded, then "
        "each slimmed layer replaced by the orthogonal factor of its own QR. Accuracies before fine-tuning are on "
        "DS1's held-out patients (118, 124, 220, 223); DS2 columns score the final model once. JSV: singular values "
        "of d logits / d input over 64 held-out beats (16 per class): mean, sd and the median per-beat condition "
        "number, right after removal and after fine-tuning.",
        "",
        f"Machine: {machine}",
        "",
        "| ratio | repair | LR | WCAM | seed | acc before | acc after removal | acc final | JSV mean after removal "
        "| JSV cond after removal | JSV mean final | JSV sd final | JSV cond final | DS2 acc | DS2 macro-F1 N/S/V |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: tuple(str(r[k]) for k in KEY)):
        lines.append(
            f"| {r['ratio']:g} | {r['repair']} | {r['lr']:g} | {'yes' if r['wcam'] else 'no'} | {r['seed']} | "
            f"{r['acc_before']:.3f} | {r['acc_after_removal']:.3f} | {r['acc_final']:.3f} | "
            f"{r['after_removal']['jsv_mean']:.3g} | {r['after_removal']['jsv_cond']:.3g} | {r['jsv_mean']:.3g} | "
            f"{r['jsv_std']:.3g} | {r['jsv_cond']:.3g} | {r['ds2_accuracy']:.3f} | {r['ds2_macro_f1_nsv']:.3f} |")
    lines += ["", "## What it shows", ""] + findings(rows)
    return "\n".join(lines) + "\n"


def findings(rows: list[dict]) -> list[str]:
    """Comparisons computed from the rows: the LR effect per repair, and each repair against none."""
    def mean(selected, key):
        values = [r[key] for r in selected]
        return float(np.mean(values)) if values else float("nan")

    lines = []
    for repair in REPAIRS:
        low = [r for r in rows if r["repair"] == repair and r["lr"] == LRS[0]]
        high = [r for r in rows if r["repair"] == repair and r["lr"] == LRS[1]]
        if low and high:
            lines.append(f"- {repair}: DS2 macro-F1 {mean(low, 'ds2_macro_f1_nsv'):.3f} at LR {LRS[0]:g} vs "
                         f"{mean(high, 'ds2_macro_f1_nsv'):.3f} at {LRS[1]:g}; held-out accuracy right after removal "
                         f"{mean(low + high, 'acc_after_removal'):.3f} (mean over ratios, LRs and WCAM).")
    for ratio in RATIOS:
        at = [r for r in rows if r["ratio"] == ratio]
        if at:
            best = max(at, key=lambda r: r["ds2_macro_f1_nsv"])
            conditions = {rep: np.mean([r["after_removal"]["jsv_cond"] for r in at if r["repair"] == rep] or [np.nan])
                          for rep in REPAIRS}
            lines.append(f"- ratio {ratio:g}: best DS2 macro-F1 {best['ds2_macro_f1_nsv']:.3f} with {best['repair']}, "
                         f"LR {best['lr']:g}, {'WCAM' if best['wcam'] else 'plain'}; mean JSV condition right after "
                         "removal " + ", ".join(f"{rep} {c:.3g}" for rep, c in conditions.items()) + ".")
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", nargs="?")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args(argv)
    zoo = load_model("ecg_beat")
    train, validation, _ = beat_training_sets(zoo.spec, args.data_dir)
    ds2 = beat_dataset(zoo.spec, mitdb.DS2, args.data_dir)
    path = RESULTS / "isometry.json"
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in rows if r.get("teacher_sha256") == zoo.card["sha256"]]
    done = {tuple(r[k] for k in KEY) for r in rows}
    machine = describe()
    for seed in args.seeds:
        for ratio, repair, lr, wcam in plans():
            if (ratio, repair, lr, wcam, seed) in done:
                continue
            row = measure(zoo, train, validation, ds2, ratio, repair, lr, wcam, seed)
            rows.append({**row, "teacher_sha256": zoo.card["sha256"]})
            print(json.dumps(row), flush=True)
            path.write_text(json.dumps(rows, indent=1) + "\n")
            (RESULTS / "isometry.md").write_text(markdown(rows, machine))


def plans() -> list[tuple[float, str, float, bool]]:
    """Every ratio x repair x LR plain; with WCAM at WCAM_RATIO only (a WCAM epoch costs about twice a plain one)."""
    plain = [(ratio, repair, lr, False) for ratio in RATIOS for repair in REPAIRS for lr in LRS]
    return plain + [(WCAM_RATIO, repair, lr, True) for repair in REPAIRS for lr in LRS]


if __name__ == "__main__":
    main(sys.argv[1:])
