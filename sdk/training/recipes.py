"""How each zoo model is trained and scored: the data, the split and the protocol, one function per model.

- ecg_beat: trained on DS1 (checkpoint chosen on DS1 records held out by patient), scored on DS2 only at the
  reference beat annotations (de Chazal inter-patient protocol).
- ecg_af: leave-records-out cross-validation over the non-paced MIT-BIH records (each fold holds out one
  AF record and a share of the others); R peaks from HeartSight's own detector, as on the device. The zoo
  keeps every fold's model so `evaluate` re-scores each on its own held-out records. Each fold first fits its
  RR evidence (models.rr_af) on its training records and the MIT-BIH AF Database's beat lists, then trains the
  network on top of it, its own margin penalised (AF_OWN_MARGIN_PENALTY): with six AF patients to learn from, a
  network's morphology does not transfer to a seventh, and unpenalised it overturned the RR evidence on held-out
  AF records (pooled AF F1 0.69 against the RR evidence's 0.76; penalised with 0.5, 0.76; with 0.1, 0.78).
- ppg_hr: leave-one-subject-out cross-validation over the wrist PPG subjects, fold models kept likewise. The
  model scores heart rates over spectra through its class activation map (models.heart_rate); it is scored on the
  rate HeartRateTracker follows through each held-out recording, as the device reports it, and on each window's
  own rate.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from models.architectures import parameter_count, predict
from models.heart_rate import tracked_heart_rates, window_heart_rate
from models.registry import ZOO_DIR, ModelSpec, ZooModel, fold_card, get_spec, load_fold, load_model
from models.rr_af import RhythmEvidence, ectopic_beats, evidence_of_card, fit_rr_logistic, offsets, with_evidence
from sdk.data import mitdb, wrist
from sdk.data.datasets import (SYNTHETIC_PPG_RECORDINGS, Dataset, af_dataset, afdb_rr_windows, beat_dataset, ppg_dataset,
                               synthetic_ppg_dataset)
from sdk.data.preprocess import ECG_FS
from sdk.data.records import resample, resampled_index
from sdk.data.rpeak import detect_r_peaks
from sdk.errors import HeartSightError
from sdk.explain import ClassActivationMap
from sdk.training import metrics
from sdk.training.train import TrainConfig, fit

# DS1 patients held out to choose the checkpoint. 201 stays in training: with 203 it is DS1's only source of
# normal beats in atrial fibrillation, without which irregular normal beats are taken for S beats.
BEAT_VALIDATION_RECORDS = ("118", "124", "220", "223")
# What a beat model may learn from. DS1 alone is the protocol the literature compares; DS1+SVDB adds the patients
# of another database (its own protocol row, still inter-patient: DS2's patients are in neither), with every
# eighth svdb record held out with the DS1 patients above to choose the checkpoint.
BEAT_TRAINING_SETS = {"DS1": mitdb.DS1, "DS1+SVDB": mitdb.DS1 + mitdb.SVDB}
SVDB_VALIDATION_RECORDS = mitdb.SVDB[::8]
BEAT_MAX_PER_CLASS = 12_000  # normal beats drawn afresh each epoch: faster epochs, less N dominance
BEAT_CLASS_WEIGHT_POWER = 0.25
DOMINANT_S_RECORD = "232"  # about three in four of DS2's S beats: S is also reported without it
AF_RECORDS = ("201", "202", "203", "210", "219", "221", "222")
EPOCHS = {"ecg_beat": 12, "ecg_af": 5, "ppg_hr": 20}
HR_BATCH_SIZE, HR_MAX_LR = 64, 1e-3  # a few thousand heart-rate windows: small batches, a gentler rate
AF_OWN_MARGIN_PENALTY = 0.1
# the beat model whose V and F beats ecg_af's RR evidence leaves out: the one the device runs on every beat. It was
# trained on DS1, so on DS1 records its labels are better than on a new patient (on DS2 alone, where they are out of
# sample, leaving them out still lifts the RR-only F1 from 0.75 to 0.78)
AF_BEAT_MODEL = "ecg_beat"


def detected_r_peaks(record: mitdb.MitdbRecord) -> np.ndarray:
    """R peaks as the device finds them (detector at the model rate), mapped back to the record's rate."""
    at_model_rate = detect_r_peaks(resample(record.ecg, record.fs, ECG_FS), ECG_FS)
    return resampled_index(at_model_rate, ECG_FS, record.fs)


def af_folds() -> list[tuple[str, ...]]:
    """Each fold holds out one AF record and every seventh of the other non-paced records."""
    others = sorted(set(mitdb.SPLITS["ALL"]) - set(AF_RECORDS))
    return [(af,) + tuple(others[k:: len(AF_RECORDS)]) for k, af in enumerate(AF_RECORDS)]


def beat_score(spec: ModelSpec):
    """Checkpoint selection: mean F1 of N, S and V on the held-out DS1 patients."""
    def score(y: np.ndarray, logits: np.ndarray) -> float:
        report = metrics.classification_report(y, logits.argmax(1), spec.outputs)
        return float(np.mean([report["per_class"][c]["f1"] for c in ("N", "S", "V")]))
    return score


def write_model(directory: Path, model, card: dict) -> None:
    """model.pt and card.json; the card carries the weights' sha256 so a device can prove which model it runs."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "model.pt")
    card["sha256"] = hashlib.sha256((directory / "model.pt").read_bytes()).hexdigest()
    (directory / "card.json").write_text(json.dumps(card, indent=2) + "\n")


def model_card(spec: ModelSpec, model, seed: int, epochs: int) -> dict:
    return {
        "name": spec.name,
        "architecture": spec.name,
        "version": "1.0.0",
        "created": datetime.date.today().isoformat(),
        "task": spec.task,
        "outputs": list(spec.outputs),
        "fs": spec.fs,
        "window_samples": spec.window,
        "window_s": spec.window / spec.fs,
        "hop_samples": spec.hop,
        "input_channels": list(spec.input_channels),
        "widths": list(spec.widths),
        "preprocessing": f"sdk.data.preprocess.{spec.preprocessing}",
        "parameters": parameter_count(model),
        "seed": seed,
        "epochs": epochs,
        "reproduce": f"heartsight train {spec.name} --seed {seed}",
    }


def train_model(name: str, data_root: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                seed: int = 0, epochs: int | None = None, progress: bool = True, training_set: str = "DS1") -> dict:
    """Train a zoo model end to end and write model.pt and card.json; returns the card."""
    spec = get_spec(name)
    out = Path(out_dir) if out_dir else ZOO_DIR / name
    epochs = epochs or EPOCHS[name]
    if name == "ecg_beat":
        return _train_beat(spec, data_root, out, seed, epochs, progress, training_set)
    if training_set != "DS1":
        raise HeartSightError(f"--training-set applies to beat models; {name} has its own cross-validation")
    return _train_cross_validated(spec, data_root, out, seed, epochs, progress)


def beat_training_sets(spec: ModelSpec, data_root=None, training_set: str = "DS1") -> tuple[Dataset, Dataset, Dataset]:
    """(training beats, checkpoint-selection beats, all beats of the set), split by patient."""
    if training_set not in BEAT_TRAINING_SETS:
        raise HeartSightError(f"unknown training set {training_set!r}; choose one of {', '.join(BEAT_TRAINING_SETS)}")
    everything = beat_dataset(spec, BEAT_TRAINING_SETS[training_set], data_root)
    held_out = everything.in_groups(BEAT_VALIDATION_RECORDS + SVDB_VALIDATION_RECORDS)
    return everything.subset(~held_out), everything.subset(held_out), everything


def beat_config(epochs: int, seed: int = 0, max_lr: float = 3e-3) -> TrainConfig:
    return TrainConfig(epochs=epochs, seed=seed, max_lr=max_lr, max_per_class=BEAT_MAX_PER_CLASS,
                       class_weight_power=BEAT_CLASS_WEIGHT_POWER)


def _train_beat(spec, data_root, out, seed, epochs, progress, training_set) -> dict:
    train, validation, everything = beat_training_sets(spec, data_root, training_set)
    model, history = fit(spec, train, beat_config(epochs, seed), validation, beat_score(spec), progress)
    card = model_card(spec, model, seed, epochs)
    if training_set != "DS1":
        card["reproduce"] += f" --training-set {training_set}"
    card["training_data"] = {
        "training_set": training_set,
        "database": "MIT-BIH Arrhythmia Database 1.0.0, lead MLII"
        + (" + MIT-BIH Supraventricular Arrhythmia Database 1.0.0, lead ECG1" if "SVDB" in training_set else ""),
        "train_records": sorted(set(train.group.tolist())),
        "checkpoint_selection_records": sorted(set(validation.group.tolist())),
        "beats_per_class": dict(zip(spec.outputs, np.bincount(everything.y, minlength=4).tolist())),
    }
    card["data_split"] = (f"de Chazal inter-patient: train {training_set}, test DS2 (scored at reference beat "
                          "annotations)")
    card["history"] = history
    write_model(out, model, card)
    card["metrics"] = {"DS2": evaluate(str(out), data_root=data_root)}
    write_model(out, model, card)
    return card


def cross_validation_folds(spec: ModelSpec, data_root) -> tuple[Dataset, list[tuple[str, ...]], str]:
    """A cross-validated model's dataset, its folds (the groups each holds out) and the protocol's name."""
    if spec.name == "ecg_af":
        beat_model = load_model(AF_BEAT_MODEL)
        dataset = af_dataset(spec, mitdb.SPLITS["ALL"], data_root, r_peaks_of=detected_r_peaks,
                             ectopic_of=lambda tracks: ectopic_beats(lambda x: predict(beat_model.model, x), tracks,
                                                                     beat_model.spec))
        return dataset, af_folds(), "leave-records-out (MIT-BIH, non-paced records; one AF record per fold)"
    dataset = ppg_dataset(spec, wrist.session_names(data_root), data_root)
    subjects = sorted(set(dataset.group.tolist()))
    return (dataset.extended(synthetic_ppg_dataset(spec)), [(s,) for s in subjects],
            "leave-one-subject-out (Wrist PPG During Exercise; synthetic resting and moving wrists in every training set)")


def rhythm_evidence(train: Dataset, afdb_windows: dict[str, dict]) -> RhythmEvidence:
    """A rhythm model's RR evidence: the RR-only logistic (models.rr_af) fitted on its training records' windows
    (without the intervals at AF_BEAT_MODEL's V and F beats) and the AF Database's, every record weighing the same."""
    usable = np.isfinite(train.rr).all(axis=1)
    parts = [(train.rr[usable], train.y[usable].astype(bool), train.group[usable])]
    parts += [(w["x"], w["y"], np.full(len(w["y"]), name)) for name, w in afdb_windows.items()]
    return RhythmEvidence.of(fit_rr_logistic(*(np.concatenate(column) for column in zip(*parts))), AF_BEAT_MODEL)


def _fit_with_evidence(spec, train: Dataset, config: TrainConfig, afdb_windows, progress):
    """(model, history, RR evidence or None): a rhythm model learns what its RR evidence leaves to morphology."""
    if afdb_windows is None:
        return (*fit(spec, train, config, progress=progress), None)
    evidence = rhythm_evidence(train, afdb_windows)
    return (*fit(spec, train, config, progress=progress, offsets=offsets(evidence, train.rr)), evidence)


def cross_validated_config(spec: ModelSpec, epochs: int, seed: int) -> TrainConfig:
    if spec.task == "hr":
        return TrainConfig(epochs=epochs, seed=seed, batch_size=HR_BATCH_SIZE, max_lr=HR_MAX_LR)
    return TrainConfig(epochs=epochs, seed=seed, own_margin_penalty=AF_OWN_MARGIN_PENALTY)


def _train_cross_validated(spec, data_root, out, seed, epochs, progress) -> dict:
    dataset, folds, protocol = cross_validation_folds(spec, data_root)
    afdb_windows = afdb_rr_windows(spec.window / spec.fs, data_root) if spec.task == "rhythm" else None
    labelled = np.isfinite(dataset.y)  # heart-rate windows the chest ECG gives no rate for are only tracked through
    fold_cards = []
    for k, held_out in enumerate(folds):
        fold_model, _, evidence = _fit_with_evidence(spec, dataset.subset(labelled & ~dataset.in_groups(held_out)),
                                                     cross_validated_config(spec, epochs, seed), afdb_windows, progress)
        (out / "folds").mkdir(parents=True, exist_ok=True)
        torch.save(fold_model.state_dict(), out / "folds" / f"fold{k}.pt")
        fold_cards.append({"weights": f"folds/fold{k}.pt", "held_out": list(held_out),
                           **({"rhythm_evidence": evidence.to_card()} if evidence else {})})
    model, history, evidence = _fit_with_evidence(spec, dataset.subset(labelled), cross_validated_config(spec, epochs, seed),
                                                  afdb_windows, progress)
    card = model_card(spec, model, seed, epochs)
    card["training_data"] = {
        "database": "MIT-BIH Arrhythmia Database 1.0.0, lead MLII" if spec.name == "ecg_af"
        else ("Wrist PPG During Exercise 1.0.0 (wrist PPG + low-noise accelerometer, chest-ECG reference) and "
              f"{SYNTHETIC_PPG_RECORDINGS} synthetic resting and moving wrists (sdk.data.synthetic_ppg, 40-200 bpm)"),
        "groups": sorted(set(dataset.group.tolist())),
        "windows": int(labelled.sum()),
    }
    if evidence:
        card["rhythm_evidence"] = {**evidence.to_card(), "training_data": (
            "RR-only logistic regression (models.rr_af) on the same MIT-BIH windows, without the intervals at the "
            f"beats {AF_BEAT_MODEL} calls V or F, and the 25 MIT-BIH Atrial Fibrillation Database 1.0.0 patients' "
            "beat lists (10-s windows, every interval: they carry no beat classes), every record weighing the same; "
            "it is added to the AF logit, and the network was trained on top of it")}
    card["data_split"] = protocol
    card["folds"] = fold_cards
    card["history"] = history
    write_model(out, model, card)
    card["metrics"] = {"cross_validation": evaluate(str(out), data_root=data_root)}
    write_model(out, model, card)
    return card


def evaluate(name_or_dir: str | ZooModel, split: str | None = None, data_root: str | os.PathLike | None = None) -> dict:
    """Score a trained float model by its protocol (ecg_beat on a split, default DS2; the others on their
    held-out folds). sdk.device.backends.evaluate scores the int8 export the same way."""
    zoo = name_or_dir if isinstance(name_or_dir, ZooModel) else load_model(name_or_dir)

    def outputs_of(fold: int | None):
        model = zoo.model if fold is None else load_fold(zoo, fold).model
        if zoo.spec.task == "hr":
            explainer = ClassActivationMap(model)
            return lambda x: explainer.attribute(torch.from_numpy(x), 0).numpy()
        return lambda x: predict(model, x)
    return score(zoo.spec, zoo.card, outputs_of, split, data_root, backend="torch")


def score(spec: ModelSpec, card: dict, outputs_of, split: str | None = None, data_root=None,
          backend: str = "torch") -> dict:
    """The protocol's scores. outputs_of(None) runs the model itself, outputs_of(k) the model of card["folds"][k];
    each maps windows (N, C, L) to what the protocol reads: outputs, or for a heart-rate model its traces."""
    name = card.get("name", spec.name)
    if spec.task == "beat":
        split = split or "DS2"
        dataset = beat_dataset(spec, mitdb.split_records(split), data_root)
        report = beat_report(dataset, outputs_of(None)(dataset.x).argmax(1), spec.outputs)
        return {"model": name, "split": split, "backend": backend, **report}
    if split is not None:
        raise HeartSightError(f"{spec.name} is scored by held-out folds, not by --split; drop --split")
    dataset, _, protocol = cross_validation_folds(spec, data_root)
    if spec.task == "hr":
        return heart_rate_score(dataset, card, outputs_of, protocol, backend)
    folds, truth, predicted = [], [], []
    for k, fold in enumerate(card["folds"]):
        part = dataset.subset(dataset.in_groups(fold["held_out"]))
        output = outputs_of(k)(part.x)
        evidence = evidence_of_card(fold_card(card, k))
        if evidence is not None:
            output = with_evidence(output, evidence(part.rr))
        output = output.argmax(1)
        folds.append({"held_out": fold["held_out"], **_score(spec, part.y, output)})
        if spec.task == "rhythm":  # the fold's AF record alone (the fold's scores count the others' false AF too)
            first = part.group == fold["held_out"][0]
            folds[-1]["af_record"] = _score(spec, part.y[first], output[first])
        truth.append(part.y)
        predicted.append(output)
    pooled = _score(spec, np.concatenate(truth), np.concatenate(predicted))
    return {"model": spec.name, "protocol": protocol, "backend": backend, "pooled": pooled, "folds": folds}


def heart_rate_score(dataset: Dataset, card: dict, traces_of, protocol: str, backend: str) -> dict:
    """MAE of the tracked rate (what the device reports) pooled, per held-out subject, per recording and per activity
    (walk, run, bike); and of each window's own rate, untracked. Only held-out windows with a reference rate count
    (the synthetic wrists are only trained on)."""
    tracked, own = np.full(len(dataset.y), np.nan), np.full(len(dataset.y), np.nan)
    for k, fold in enumerate(card["folds"]):
        held_out = np.flatnonzero(dataset.in_groups(fold["held_out"]))
        traces = traces_of(k)(dataset.x[held_out])
        own[held_out] = [window_heart_rate(trace) for trace in traces]
        for name in np.unique(dataset.recording[held_out]):
            windows = dataset.recording[held_out] == name
            tracked[held_out[windows]] = tracked_heart_rates(traces[windows])
    labelled = np.isfinite(dataset.y) & dataset.in_groups([s for fold in card["folds"] for s in fold["held_out"]])

    def report(keep: np.ndarray, rates: np.ndarray = tracked) -> dict:
        return metrics.regression_report(dataset.y[keep & labelled], rates[keep & labelled])
    return {"model": card.get("name", "ppg_hr"), "protocol": protocol, "backend": backend, "pooled": report(labelled),
            "untracked": report(labelled, own),
            "folds": [{"held_out": fold["held_out"], **report(dataset.in_groups(fold["held_out"]))}
                      for fold in card["folds"]],
            "recordings": {name: report(dataset.recording == name) for name in np.unique(dataset.recording[labelled])},
            "activities": {activity: report(np.char.find(dataset.recording.astype(str), activity) >= 0)
                           for activity in ("walk", "run", "bike")}}


def beat_report(dataset: Dataset, predicted: np.ndarray, classes) -> dict:
    """The classification report, and S again without the record that dominates it when the split holds it."""
    report = metrics.classification_report(dataset.y, predicted, classes)
    if DOMINANT_S_RECORD in set(dataset.group.tolist()):
        others = dataset.group != DOMINANT_S_RECORD
        report[f"S_without_{DOMINANT_S_RECORD}"] = metrics.classification_report(
            dataset.y[others], predicted[others], classes)["per_class"]["S"]
    return report


def _score(spec: ModelSpec, y: np.ndarray, output: np.ndarray) -> dict:
    report = metrics.classification_report(y, output, spec.outputs)
    return {"accuracy": report["accuracy"], **report["per_class"][spec.outputs[-1]]}
