"""Every compression method, plain vs WCAM, over three seeds, on ecg_beat scored on DS2 (mean ± sd per row).

Writes benchmarks/results/compression.json (one entry per trained model), compression.md (the table, and where
WCAM differs from plain by more than one sd) and compression.png (DS2 beats of each class with the teacher's,
the plain and the WCAM model's traces; drawn when both seed-0 figure models were trained in the run). Runs
are saved as they finish and a rerun skips those already there for the same teacher, so an interrupted run
keeps what it measured. Usage: python -m benchmarks.compression [DATA_DIR]
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

from benchmarks.machine import describe  # noqa: E402
from models.registry import load_model  # noqa: E402
from sdk.compress import score_compressed  # noqa: E402
from sdk.compress.methods import EPOCHS, Plan, run  # noqa: E402
from sdk.compress.report import explanation_sample, size_report  # noqa: E402
from sdk.data import mitdb  # noqa: E402
from sdk.data.datasets import beat_dataset  # noqa: E402
from sdk.explain import ClassActivationMap  # noqa: E402
from sdk.training.recipes import beat_training_sets  # noqa: E402

# (method, level, class-balanced distillation); each row runs plain and with WCAM, once per seed.
CONFIGURATIONS = (("structured", 0.5, False), ("qat", 0.5, True))
SEEDS = (0, 1, 2)
# Chosen on DS1's held-out patients (structured pruning 0.75): beta 1 kept the teacher's map as well as 100
# (cosine 0.75 vs 0.59 plain) and cost the least F1; see benchmarks/results/wcam_beta.md.
BENCHMARK_BETA = 1.0
FIGURE_PLAN = ("structured", 0.5)
RESULTS = Path(__file__).resolve().parent / "results"
FIGURE_BEATS_PER_CLASS = 2
KEY = ("method", "level", "kd", "wcam")


def _run_row(method: str, level: float, kd: bool, wcam: bool, seed: int, size: dict, scores: dict,
             epoch_s: float | None) -> dict:
    ds2, explanation = scores["DS2"], scores["explanation"]
    return {"method": method, "level": level, "kd": kd, "wcam": wcam, "seed": seed, "params": size["params_nonzero"],
            "int8_bytes": size["int8_bytes"], "macs": size["macs"], "accuracy": ds2["accuracy"],
            "f1": {k: v["f1"] for k, v in ds2["per_class"].items()},
            "se": {k: v["se"] for k, v in ds2["per_class"].items()},
            "ppv": {k: v["ppv"] for k, v in ds2["per_class"].items()},
            "fidelity_cosine": explanation["fidelity_cosine"], "fidelity_iou": explanation["fidelity_iou"],
            "pointing_game": explanation["pointing_game"], "loc_auc": explanation["loc_auc"],
            "epoch_s": epoch_s}


COLUMNS = (("acc", lambda r: r["accuracy"]), ("F1 N", lambda r: r["f1"]["N"]), ("F1 S", lambda r: r["f1"]["S"]),
           ("F1 V", lambda r: r["f1"]["V"]), ("S Se", lambda r: r["se"]["S"]), ("S +P", lambda r: r["ppv"]["S"]),
           ("V Se", lambda r: r["se"]["V"]), ("V +P", lambda r: r["ppv"]["V"]),
           ("cosine", lambda r: r["fidelity_cosine"]), ("IoU", lambda r: r["fidelity_iou"]),
           ("loc AUC", lambda r: r["loc_auc"]))


def _stats(runs: list[dict], value) -> tuple[float, float]:
    values = np.array([value(r) for r in runs], dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _markdown(rows: list[dict], teacher_card: dict, machine: str) -> str:
    lines = [
        "# Compression benchmark: ecg_beat, plain vs WCAM (DS2, inter-patient), mean ± sd over seeds",
        "",
        f"Teacher: `ecg_beat` (sha256 {teacher_card.get('sha256', '')[:12]}), trained on DS1. Every compressed model "
        "is fine-tuned (or, for distillation, trained) on the teacher's DS1 training patients, its checkpoint "
        "chosen by macro-F1 of N/S/V on DS1's held-out patients, and scored once on all DS2 beats at the reference "
        "annotations. Each row is the mean ± sd (n-1) over its seeds (seed = fine-tuning order, augmentation and, "
        "for distillation, initialisation).",
        f"WCAM beta = {BENCHMARK_BETA:g} (chosen on DS1 held-out patients). Epochs: "
        + ", ".join(f"{m} {e}" + (" per 20% round" if m == "unstructured" else "") for m, e in EPOCHS.items()) + ". "
        "KD: class-balanced distillation from the teacher added to the task loss (each beat weighted by 1/frequency of its "
        "class). Every run uses its method's default schedule and LR.",
        "Level: share of channels removed (structured, distill width, and pruning before qat), or of weights "
        "zeroed (unstructured). int8 bytes: int8 weights + int32 biases after batch-norm folding, stored dense. "
        "Explanation columns use 250 DS2 beats per class (all F beats): fidelity to the teacher's trace (cosine, "
        "top-10% IoU, for the teacher's class) and localization of the model's own trace on the classified beat's "
        "QRS (ROC-AUC).",
        f"Machine: {machine}.",
        "",
        "| method | level | KD | WCAM | seeds | params | int8 bytes | " + " | ".join(name for name, _ in COLUMNS) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(COLUMNS),
    ]
    for key, runs in _groups(rows).items():
        first = runs[0]
        cells = []
        for _, value in COLUMNS:
            mean, sd = _stats(runs, value)
            cells.append(f"{mean:.3f} ± {sd:.3f}" if len(runs) > 1 else f"{mean:.3f}")
        lines.append(f"| {first['method']} | {first['level']:g} | {'yes' if first['kd'] else 'no'} | "
                     f"{'yes' if first['wcam'] else 'no'} | {len(runs)} | {first['params']:,} | {first['int8_bytes']:,} | "
                     + " | ".join(cells) + " |")
    lines += ["", "## WCAM against plain, counted only beyond one sd", ""] + _wcam_wins(rows)
    return "\n".join(lines) + "\n"


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in KEY), []).append(row)
    return groups


def _wcam_wins(rows: list[dict]) -> list[str]:
    """Per configuration and column: WCAM wins (or loses) where the means differ by more than the larger sd."""
    groups, lines = _groups(rows), []
    for (method, level, kd, wcam), runs in groups.items():
        plain = groups.get((method, level, kd, False))
        if not wcam or not plain or len(runs) < 2 or len(plain) < 2:
            continue
        verdicts = []
        for name, value in COLUMNS:
            (m_w, s_w), (m_p, s_p) = _stats(runs, value), _stats(plain, value)
            if abs(m_w - m_p) > max(s_w, s_p):
                verdicts.append(f"{name} {'+' if m_w > m_p else '-'}{abs(m_w - m_p):.3f}")
        lines.append(f"- {method} {level:g}{' + KD' if kd else ''}: "
                     + (", ".join(verdicts) if verdicts else "no difference beyond one sd"))
    return lines


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
    """python -m benchmarks.compression [DATA_DIR]; rows already in compression.json for this teacher are kept."""
    data_root = argv[0] if argv else None
    RESULTS.mkdir(parents=True, exist_ok=True)
    zoo = load_model("ecg_beat")
    spec = zoo.spec
    train, validation, _ = beat_training_sets(spec, data_root)
    ds2 = beat_dataset(spec, mitdb.DS2, data_root)
    json_path, md_path, png_path = (RESULTS / f"compression.{kind}" for kind in ("json", "md", "png"))
    saved = json.loads(json_path.read_text()) if json_path.exists() else {}
    rows = saved.get("runs", []) if isinstance(saved, dict) and saved.get("teacher_sha256") == zoo.card["sha256"] else []
    done = {tuple(r[k] for k in (*KEY, "seed")) for r in rows}
    teacher_row = _run_row("none (teacher)", 0.0, False, False, 0, size_report(zoo.model, spec),
                           score_compressed(zoo.model, zoo.model, spec, ds2), None)
    machine = describe()
    figure_models = {}
    for seed in SEEDS:
        for method, level, kd in CONFIGURATIONS:
            for wcam in (False, True):
                if (method, level, kd, wcam, seed) in done:
                    continue
                started = time.perf_counter()
                plan = Plan(method, level, BENCHMARK_BETA if wcam else 0.0, seed=seed, kd=kd)
                model, model_spec, history, _ = run(plan, spec, zoo.model, train, validation)
                if seed == 0 and (method, level) == FIGURE_PLAN:
                    figure_models[wcam] = model
                scores = score_compressed(zoo.model, model, model_spec, ds2)
                epoch_s = float(np.mean([h["seconds"] for h in history]))
                rows.append(_run_row(method, level, kd, wcam, seed, size_report(model, model_spec), scores, round(epoch_s, 1)))
                rows[-1]["total_s"] = round(time.perf_counter() - started)
                json_path.write_text(json.dumps({"teacher_sha256": zoo.card["sha256"], "teacher": teacher_row,
                                                 "runs": rows}, indent=1) + "\n")
                md_path.write_text(_markdown([teacher_row] + rows, zoo.card, machine))
    if len(figure_models) == 2:
        _figure(png_path, zoo.model, figure_models[False], figure_models[True], explanation_sample(ds2), spec.outputs)
    print(f"wrote {json_path}, {md_path} and {png_path}")


if __name__ == "__main__":
    main(sys.argv[1:])
