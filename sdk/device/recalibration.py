"""Per-patient recalibration of a beat model's head, on every backend, and the AAMI patient-adaptive protocol.

The backbone stays as trained (torch) or as exported (int8: its integer weights untouched); only the decision
layer is refitted in closed form (models.closed_form_head.patient_head) on the embeddings the backend itself
computes (Runner.embed). For the int8 backends the refitted head is re-quantized (firmware_export.head_update) and the C library
applies it as the device does, through hs_set_head.

Patient-adaptive protocol (ANSI/AAMI EC57, as de Chazal & Reilly 2006 use it): the reference labels of the first
LABELLED_S = 5 minutes of each test record may be used; the head is refitted for that patient on the population's
beats (DS1) and those, and scored on the rest of the record only.
"""

from __future__ import annotations

import os
import secrets

import numpy as np
import torch
from tqdm import tqdm

from firmware_export.head_update import encode, requantized_head
from firmware_export.host import cache_directory
from models.closed_form_head import PATIENT_CLASS_WEIGHT_POWER, PATIENT_WEIGHT, patient_head, with_head
from models.registry import ZooModel
from sdk.data import mitdb
from sdk.data.datasets import beat_dataset
from sdk.device.backends import (
    ModelRef,
    Runner,
    float_model,
    int8_model,
    checked_backend,
    int8_runner,
    make_runner,
    torch_runner,
)
from sdk.errors import HeartSightError
from sdk.explain import metrics as explain_metrics
from sdk.training import metrics

LABELLED_S = 300.0


def with_refitted_head(model: ModelRef, backend: str | None, weight: np.ndarray, bias: np.ndarray,
                       fitted_on: np.ndarray, version: int) -> Runner:
    """The model on a backend with a head fitted on its embeddings `fitted_on`: for the int8 backends re-quantized
    (logit range calibrated on fitted_on) and applied to the exported backbone; `version` names the head."""
    backend = checked_backend(model, backend)
    if backend == "torch":
        zoo = float_model(model)
        return torch_runner(ZooModel(zoo.spec, with_head(zoo.model, weight, bias), {**zoo.card, "head_version": version},
                                     zoo.directory))
    artifact = int8_model(model)
    runner = int8_runner(artifact, backend)
    key = secrets.token_bytes(32)  # this host plays the device: it signs the update for itself
    runner.set_head(encode(requantized_head(artifact.quantized, weight, bias, fitted_on, version), key), key)
    return runner


def patient_adaptive(model: ModelRef, backend: str | None = None, data_root=None, records=mitdb.DS2) -> dict:
    """Score a beat model by the patient-adaptive protocol: per record, the head refitted on DS1 and the record's
    first LABELLED_S seconds of reference labels, scored on the rest. Per record and pooled N/S/V/F Se and +P,
    and the explanation fidelity of the backend's recalibrated traces to the float model's under the same float
    head: CAM cosine on the beats where both predict the same class, apart from those whose traces are both empty
    (the class's map is nowhere positive; counted as both_traces_empty)."""
    backend = checked_backend(model, backend)
    model = float_model(model) if backend == "torch" else int8_model(model)  # loaded once
    spec = model.spec
    if spec.task != "beat":
        raise HeartSightError(f"the patient-adaptive protocol scores beat models; {spec.name} is a {spec.task} model")
    base = make_runner(model, backend)
    population_embeddings, population_labels = population(base, data_root)
    settings = adaptation_settings(model.card)
    float_network = model.model if backend == "torch" else _float_of_artifact(model)
    truth, predicted, per_record, cosines, agreement, both_empty = [], [], {}, [], [], []
    for name in tqdm(records, desc="patients", unit="record"):
        beats = beat_dataset(spec, (name,), data_root)
        labelled = labelled_beats(name, data_root)
        if not labelled.any() or labelled.all():
            raise HeartSightError(f"record {name} has no beats {'before' if not labelled.any() else 'after'} "
                                  f"{LABELLED_S:g} s; the protocol needs both")
        patient_embeddings = base.embed(beats.x)
        weight, bias = patient_head((population_embeddings, population_labels),
                                    (patient_embeddings[labelled], beats.y[labelled]), spec.outputs, **settings)
        runner = with_refitted_head(model, backend, weight, bias,
                                    np.r_[population_embeddings, patient_embeddings[labelled]], version=1)
        scored = beats.x[~labelled]
        outputs, traces = runner.explain(scored)
        truth.append(beats.y[~labelled])
        predicted.append(outputs.argmax(1))
        per_record[name] = _class_rates(truth[-1], predicted[-1], spec.outputs)
        float_outputs, float_traces = _float_explain(float_network, weight, bias, scored, spec)
        same = float_outputs.argmax(1) == predicted[-1]
        empty = ~np.any(traces > 0, axis=1) & ~np.any(float_traces > 0, axis=1)  # nothing to compare, and equal
        agreement.append(same)
        both_empty.append(empty[same])
        compared = same & ~empty
        cosines.append(explain_metrics.cosine_similarity(traces[compared], float_traces[compared]))
    pooled = metrics.classification_report(np.concatenate(truth), np.concatenate(predicted), spec.outputs)
    cosine = np.concatenate(cosines)
    return {"model": model.card.get("name", spec.name), "backend": backend, "protocol": "patient-adaptive",
            "labelled_s": LABELLED_S, "settings": settings, "records": list(records),
            "accuracy": pooled["accuracy"], "n": pooled["n"], "per_class": pooled["per_class"],
            "confusion": pooled["confusion"], "per_record": per_record,
            "explanation": {"cosine_to_float_mean": round(float(cosine.mean()), 4) if len(cosine) else None,
                            "cosine_to_float_p05": round(float(np.percentile(cosine, 5)), 4) if len(cosine) else None,
                            "beats_compared": int(len(cosine)),
                            "both_traces_empty": round(float(np.concatenate(both_empty).mean()), 4),
                            "class_agreement_with_float": round(float(np.concatenate(agreement).mean()), 4)}}


def population(runner: Runner, data_root=None) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, labels) of every DS1 beat (mitdb.DS1's order) through this runner's model: the population a
    patient's head is fitted with. Cached per model sha256 and backend (the DS1 pass takes minutes)."""
    identity = runner.identity
    cache = cache_directory("embeddings") / f"{identity['sha256']}-{identity['backend']}-DS1.npz"
    if cache.exists():
        with np.load(cache) as saved:
            return saved["embeddings"], saved["labels"]
    beats = beat_dataset(runner.spec, mitdb.DS1, data_root)
    embeddings = runner.embed(beats.x)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(f".{cache.stem}.{os.getpid()}.npz")
    np.savez(partial, embeddings=embeddings, labels=beats.y)
    os.replace(partial, cache)
    return embeddings, beats.y


def adaptation_settings(card: dict) -> dict:
    """How this model's per-patient heads are fitted (patient_head's keywords): the card's patient_adaptation, which
    benchmarks/patient_adaptive.py chooses on DS1, else models.closed_form_head's defaults."""
    chosen = card.get("patient_adaptation", {})
    return {"patient_weight": float(chosen.get("patient_weight", PATIENT_WEIGHT)),
            "class_weight_power": float(chosen.get("class_weight_power", PATIENT_CLASS_WEIGHT_POWER))}


def labelled_beats(record: str, data_root=None) -> np.ndarray:
    """Which of a record's AAMI-scored beats (in beat_dataset's order) fall in its first LABELLED_S seconds."""
    loaded = mitdb.load_record(record, data_root)
    return loaded.beat_samples[loaded.aami_labels >= 0] / loaded.fs < LABELLED_S


def _class_rates(y: np.ndarray, predicted: np.ndarray, classes) -> dict:
    report = metrics.classification_report(y, predicted, classes)
    return {c: {k: report["per_class"][c][k] for k in ("se", "ppv", "n")} for c in classes}


def _float_of_artifact(artifact) -> torch.nn.Module:
    """The float model an int8 export was quantized from: its model directory (the zoo's DIR/int8), else by name."""
    from models.registry import load_model

    return load_model(artifact.directory.parent if (artifact.directory.parent / "model.pt").exists()
                      else artifact.name).model


def _float_explain(float_network: torch.nn.Module, weight: np.ndarray, bias: np.ndarray, x: np.ndarray, spec
                   ) -> tuple[np.ndarray, np.ndarray]:
    zoo = ZooModel(spec, with_head(float_network, weight, bias), {"name": spec.name}, None)
    return torch_runner(zoo).explain(x)

