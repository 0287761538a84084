"""Compression that keeps the explanation, plain or with WCAM: structured/unstructured pruning, distillation, int8
QAT, and the seed methods' structured int8 forms (weight unification, MPD group masks, kernel codebooks).

`compress(...)` takes a zoo model, compresses it by one method and writes a reloadable model with a card
like the zoo's (sizes, DS2 scores, and how well its explanation matches the teacher's).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from models.architectures import predict
from models.quantization import is_quantized
from models.registry import load_model
from models.structured import structure_of
from sdk.compress.methods import KD_ALPHA, KD_TEMPERATURE, METHODS, REPAIRS, SCHEDULES, STRUCTURED, Plan, config_lr, run
from sdk.compress.report import explanation_report, explanation_sample, localization, size_report
from sdk.compress.wcam import Wcam
from sdk.data import mitdb
from sdk.data.datasets import Dataset, beat_dataset
from sdk.errors import HeartSightError
from sdk.training import metrics
from sdk.training.recipes import beat_training_sets, model_card, write_model

__all__ = ["METHODS", "REPAIRS", "SCHEDULES", "Plan", "Wcam", "compress", "score_compressed"]


def score_compressed(teacher, model, spec, ds2: Dataset) -> dict:
    """DS2 scores at the reference beats, plus the explanation's fidelity to the teacher and its localization."""
    report = metrics.classification_report(ds2.y, predict(model, ds2.x).argmax(1), spec.outputs)
    beats = explanation_sample(ds2)
    return {"DS2": {"model": spec.name, "split": "DS2", **report},
            "explanation": {**explanation_report(teacher, model, beats, spec.fs),
                            "teacher": localization(teacher, torch.from_numpy(beats.x), spec.fs)}}


def _structure_options(plan: Plan) -> str:
    """The reproduce command's options of a structured method."""
    return {"unify": f" --block {plan.block} --block-ratio {plan.block_ratio:g}", "mpd": f" --groups {plan.groups}",
            "kernel-codebook": f" --bits {plan.bits}"}.get(plan.method, "")


def _structure_settings(plan: Plan) -> dict:
    return {"unify": {"block": plan.block, "block_ratio": plan.block_ratio}, "mpd": {"groups": plan.groups},
            "kernel-codebook": {"bits": plan.bits}}.get(plan.method, {})


def compress(model: str | os.PathLike, plan: Plan, out_dir: str | os.PathLike,
             data_root: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Compress a trained beat model by `plan`; writes out_dir/model.pt and card.json and returns the card."""
    plan.check()
    zoo = load_model(model)
    spec = zoo.spec
    plan.check_fits(spec)
    if spec.task != "beat":
        raise HeartSightError(
            f"compression is scored on held-out MIT-BIH patients (DS2) and supports beat models such as ecg_beat; "
            f"{spec.name} is a {spec.task} model"
        )
    teacher_set = zoo.card.get("training_data", {}).get("training_set", "DS1")
    train, validation, _ = beat_training_sets(spec, data_root, teacher_set)  # what the teacher learned and chose on
    compressed, compressed_spec, history, diagnostics = run(plan, spec, zoo.model, train, validation, progress)
    out = Path(out_dir)
    card = model_card(compressed_spec, compressed, plan.seed, len(history))
    card["name"] = out.name
    card["reproduce"] = (f"heartsight compress --model {zoo.card['name']} --method {plan.method} --ratio {plan.ratio}"
                         + (f" --wcam {plan.wcam_beta:g}" if plan.wcam_beta else "")
                         + (f" --schedule {plan.schedule}" if plan.schedule != "one-shot" else "")
                         + (" --stochastic" if plan.stochastic else "") + (" --exact" if plan.exact_wcam else "")
                         + (f" --epochs {plan.epochs}" if plan.epochs else "") + (f" --seed {plan.seed}" if plan.seed else "")
                         + (f" --repair {plan.repair}" if plan.repair != "none" else "")
                         + (f" --lr {plan.lr:g}" if plan.lr else "") + (" --fold-bn" if plan.fold_bn else "")
                         + (" --kd" if plan.kd else "") + _structure_options(plan)
                         + f" --out {out}")
    card["compression"] = {"method": plan.method, "ratio": plan.ratio, "schedule": plan.schedule,
                           "wcam_beta": plan.wcam_beta, "wcam_stochastic": plan.stochastic, "repair": plan.repair,
                           "fine_tuning_lr": config_lr(plan),
                           "distillation": (f"class-balanced (each beat weighted 1/frequency of its class), "
                                            f"T={KD_TEMPERATURE:g}, alpha={KD_ALPHA:g}")
                           if plan.kd or plan.method == "distill" else None,
                           "teacher": zoo.card["name"], "teacher_sha256": zoo.card.get("sha256"),
                           **_structure_settings(plan)}
    if diagnostics:
        card["isometry"] = {"probe": "16 held-out DS1 beats per class; singular values of d logits / d input",
                            **diagnostics}
    if plan.fold_bn:
        card["batch_norm"] = "folded"
    if is_quantized(compressed):
        card["quantization"] = {"method": "qat", "scheme": "int8: weights symmetric per output channel [-127, 127], "
                                "activations asymmetric per tensor; batch norm folded"}
    if plan.method in STRUCTURED:
        card["structure"] = structure_of(compressed)
    card["data_split"] = zoo.card.get("data_split")
    card["history"] = history
    write_model(out, compressed, card)
    reloaded = load_model(out).model  # score what was written, proving it reloads
    ds2 = beat_dataset(spec, mitdb.DS2, data_root)
    card["size"] = {**size_report(reloaded, compressed_spec), "teacher": size_report(zoo.model, spec)}
    card["metrics"] = score_compressed(zoo.model, reloaded, compressed_spec, ds2)
    write_model(out, compressed, card)
    return card
