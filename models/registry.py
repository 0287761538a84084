"""Model names -> architecture, sampling rate, window, preprocessing and outputs; and the trained zoo."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from models.architectures import GapCnn, fold_batch_norm
from models.quantization import prepare_qat
from models.structured import restore_structure
from sdk.data.preprocess import ECG_FS, HR_GRID_BPM, PPG_FS, PPG_SPECTRUM_CHANNELS
from sdk.errors import HeartSightError

ZOO_DIR = Path(__file__).resolve().parent / "zoo"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # "beat": classify each R peak; "rhythm": classify windows; "hr": heart rate per window (models.heart_rate)
    fs: float
    window: int  # samples at fs
    hop: int  # samples between window starts (window models)
    input_channels: tuple[str, ...]
    outputs: tuple[str, ...]  # class names, or ("hr_bpm",)
    preprocessing: str  # the function of sdk.data.preprocess that builds the inputs
    widths: tuple[int, ...]
    kernel_size: int

    def build(self) -> GapCnn:
        return GapCnn(len(self.input_channels), self.widths, self.kernel_size, len(self.outputs))

    @property
    def input_length(self) -> int:
        """Samples along a model input: the window for signal models, the heart-rate grid for spectral ones."""
        return len(HR_GRID_BPM) if self.task == "hr" else self.window

    @property
    def is_classifier(self) -> bool:
        return self.task != "hr"

    @property
    def explained_class(self) -> int | None:
        """The class every trace explains, or None for each window's top class (the single output for heart rate).

        A rhythm model's trace always maps AF: where the window looks like AF, whatever its label. Its label also
        weighs the RR evidence (models.rr_af.RhythmEvidence), which no map over the window can show, so the top
        class of the network alone is not the label to explain.
        """
        return self.outputs.index("AF") if self.task == "rhythm" else None

    def explained(self, outputs: np.ndarray) -> np.ndarray:
        """The class each window's trace explains, for the network's outputs (N, classes)."""
        if self.explained_class is not None:
            return np.full(len(outputs), self.explained_class, np.int64)
        return np.asarray(outputs).argmax(1) if self.is_classifier else np.zeros(len(outputs), np.int64)


REGISTRY = {
    "ecg_beat": ModelSpec(
        name="ecg_beat", task="beat", fs=ECG_FS, window=768, hop=0,
        input_channels=("ecg", "centre_marker", "rhythm", "template_delta"), outputs=("N", "S", "V", "F"),
        preprocessing="beat_windows", widths=(16, 32, 32, 48, 64), kernel_size=7,
    ),
    "ecg_af": ModelSpec(
        name="ecg_af", task="rhythm", fs=ECG_FS, window=1280, hop=1280,
        input_channels=("ecg", "rhythm", "rr_change"), outputs=("non-AF", "AF"),
        preprocessing="rhythm_windows", widths=(8, 16, 16, 24, 32), kernel_size=7,
    ),
    "ppg_hr": ModelSpec(
        name="ppg_hr", task="hr", fs=PPG_FS, window=256, hop=64,
        input_channels=PPG_SPECTRUM_CHANNELS, outputs=("hr_bpm",),
        preprocessing="ppg_windows", widths=(32, 32, 32), kernel_size=7,
    ),
}


def get_spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise HeartSightError(f"unknown model {name!r}; choose one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def spec_of_card(card: dict) -> ModelSpec:
    """The architecture a model card describes (a compressed model keeps its architecture with narrower widths)."""
    spec = get_spec(card["architecture"])
    return replace(spec, widths=tuple(card.get("widths", spec.widths)))


@dataclass
class ZooModel:
    spec: ModelSpec
    model: GapCnn
    card: dict
    directory: Path


def load_model(name_or_dir: str | os.PathLike, weights: str = "model.pt") -> ZooModel:
    """Load a trained model from the zoo by name, or from a directory holding model.pt and card.json."""
    directory = Path(name_or_dir)
    if not (directory / "card.json").exists():
        directory = ZOO_DIR / str(name_or_dir)
        if not (directory / "card.json").exists() and str(name_or_dir) not in REGISTRY:
            known = sorted({p.parent.name for p in ZOO_DIR.glob("*/card.json")} | set(REGISTRY))
            raise HeartSightError(f"unknown model {str(name_or_dir)!r}: no model directory (card.json) there and no zoo "
                                  f"model of that name; choose one of {', '.join(known)}, or pass a model directory")
    card_path, weights_path = directory / "card.json", directory / weights
    if not card_path.exists() or not weights_path.exists():
        raise HeartSightError(
            f"no trained model in {directory} (needs card.json and {weights}); train it with "
            f"`heartsight train {directory.name}`"
        )
    try:
        card = json.loads(card_path.read_text())
        spec = spec_of_card(card)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise HeartSightError(f"{card_path} is not a readable model card ({type(error).__name__}: {error}); restore it "
                              "from the repository or train/compress the model again") from None
    model = spec.build()
    if card.get("batch_norm") == "folded":
        model = fold_batch_norm(model)
    if card.get("quantization", {}).get("method") == "qat":
        model = prepare_qat(fold_batch_norm(model))
    if card.get("structure"):
        model = restore_structure(model, card["structure"])
    try:
        model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    except Exception as error:  # torch raises RuntimeError, pickle and zip errors for damaged or mismatched weights
        raise HeartSightError(f"{weights_path} does not hold the weights its card describes ({str(error).splitlines()[0]}); "
                              "restore it from the repository or train/compress the model again") from None
    model.eval()
    return ZooModel(spec, model, card, directory)


def fold_card(card: dict, fold: int) -> dict:
    """The card of cross-validation fold `fold` as a model of its own: a rhythm model's fold brings its own RR
    evidence, which also never saw the fold's held-out records."""
    entry = card["folds"][fold]
    return {**card, **({"rhythm_evidence": entry["rhythm_evidence"]} if "rhythm_evidence" in entry else {})}


def load_fold(zoo: ZooModel, fold: int) -> ZooModel:
    """Cross-validation fold `fold` of a zoo model, with its weights and card (fold_card)."""
    model = load_model(zoo.directory, weights=zoo.card["folds"][fold]["weights"])
    return replace(model, card=fold_card(zoo.card, fold))
