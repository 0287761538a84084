"""The int8 artifact: the one directory `heartsight export` writes, which every int8 backend then runs as it is.

    quantized_model.json   the integer model (firmware_export.quantize), its calibration recorded in `source`
    heartsight_model.c/.h  the C library generated from it, and the runtime it calls (codegen.RUNTIME_FILES)
    model_int8.onnx        the same integer model as an exact ONNX graph (firmware_export.onnx_export)
    model_float.onnx       the float model it was quantized from
    card.json              the source model's card, with an `int8` section (the artifact's sha256, calibration)
    report.json            flash, RAM and compute, and the ONNX graphs' agreement on held-out windows
    folds/foldK/           the same for each cross-validation fold model (ecg_af, ppg_hr), so their int8 scores
                           are measured on the records each fold never saw

The artifact's identity is the sha256 of quantized_model.json: the C library (HS_INT8_SHA256) and the ONNX graph
(metadata `int8_sha256`) carry it, and alerts from an int8 backend report it. Nothing on the device path
quantizes or generates code again: a model is quantized once, when it is exported.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_export.codegen import C_FILES, write_c_library
from firmware_export.head_update import TASKS as HEAD_UPDATE_TASKS
from firmware_export.onnx_export import compare, export_float, export_int8
from firmware_export.quantize import QUANTIZED_FILE, QuantizedModel, load_quantized, save_quantized
from models.registry import ModelSpec, ZooModel, fold_card, spec_of_card
from sdk.errors import HeartSightError

INT8_ONNX, FLOAT_ONNX, CARD, REPORT = "model_int8.onnx", "model_float.onnx", "card.json", "report.json"
ZOO_SUBDIRECTORY = "int8"  # a model directory's own export: models/zoo/NAME/int8


@dataclass(frozen=True)
class Int8Artifact:
    directory: Path
    card: dict
    quantized: QuantizedModel
    sha256: str

    @property
    def spec(self) -> ModelSpec:
        return spec_of_card(self.card)

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.spec.name))

    @property
    def head_updates(self) -> bool:
        """Whether its C library can replace the head at run time (hs_set_head; firmware_export.head_update)."""
        try:
            return bool(json.loads((self.directory / REPORT).read_text()).get("head_updates", False))
        except (OSError, ValueError):
            return False

    def fold(self, index: int) -> "Int8Artifact":
        """The int8 model of cross-validation fold `index` (card["folds"][index])."""
        directory = self.directory / "folds" / f"fold{index}"
        if not is_artifact(directory):
            raise HeartSightError(f"{self.directory} has no int8 model of fold {index}; export the model again with "
                                  f"`heartsight export --model {self.name} --out {self.directory}`")
        return load_artifact(directory, card=fold_card(self.card, index))


def check_writable(out_dir: str | os.PathLike) -> None:
    """Refuse, before any work, an output directory that cannot be created or written."""
    path = Path(out_dir).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise HeartSightError(f"cannot write the export to {out_dir}: {existing} is a file; choose a writable --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise HeartSightError(f"cannot write the export to {out_dir}: {existing} is not writable; choose a writable --out")


def is_artifact(directory: str | os.PathLike) -> bool:
    return (Path(directory) / QUANTIZED_FILE).is_file()


def write_artifact(zoo: ZooModel, quantized: QuantizedModel, out_dir: str | os.PathLike,
                   test_x: np.ndarray | None = None, fold: bool = False, head_updates: bool = True) -> dict:
    """Write the artifact of one quantized model; returns its report. With held-out windows test_x, the ONNX graphs
    are run against torch and the integer reference, and an int8 graph that is not bit-exact is refused."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        quantized_path = save_quantized(quantized, out)
    except OSError as error:
        raise HeartSightError(f"cannot write the export to {out}: {error.strerror or error}; choose a writable --out") from None
    sha256 = hashlib.sha256(quantized_path.read_bytes()).hexdigest()
    report = write_c_library(quantized, out, head_updates and zoo.spec.task in HEAD_UPDATE_TASKS, int8_sha256=sha256)
    export_int8(quantized, out / INT8_ONNX, int8_sha256=sha256, explained_class=zoo.spec.explained_class)
    if not fold:
        export_float(zoo, out / FLOAT_ONNX)
    if test_x is not None and len(test_x):
        agreement = compare(zoo, quantized, test_x, out / FLOAT_ONNX if not fold else None, out / INT8_ONNX)
        int8 = agreement["int8"]
        if int8["logits_identical_to_reference"] != int8["n"] or int8["traces_identical_to_reference"] != int8["n"]:
            raise AssertionError(f"the int8 ONNX graph differs from the integer reference: {int8}")
        report["onnx"] = agreement
    report["int8_sha256"] = sha256
    if not fold:
        card = {**zoo.card, "int8": {"sha256": sha256, "quantization": quantized.source.get("quantization"),
                                     "calibration": quantized.source.get("calibration"),
                                     "files": {"c": list(C_FILES), "onnx": INT8_ONNX, "float_onnx": FLOAT_ONNX}}}
        (out / CARD).write_text(json.dumps(card, indent=2) + "\n")
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    return report


def load_artifact(directory: str | os.PathLike, card: dict | None = None) -> Int8Artifact:
    """Read an exported directory; its integer model must be the one the export recorded (same sha256)."""
    directory = Path(directory)
    if not is_artifact(directory):
        raise HeartSightError(f"{directory} is not an int8 export (no {QUANTIZED_FILE}); write one with "
                              "`heartsight export --model NAME --out DIR`")
    sha256 = hashlib.sha256((directory / QUANTIZED_FILE).read_bytes()).hexdigest()
    if card is None:
        try:
            card = json.loads((directory / CARD).read_text())
        except (OSError, ValueError) as error:
            raise HeartSightError(f"{directory / CARD} is missing or not JSON ({error}); export the model again") from None
        recorded = card.get("int8", {}).get("sha256")
        if recorded != sha256:
            raise HeartSightError(f"{directory / QUANTIZED_FILE} is not the file that was exported (sha256 {sha256[:12]}…, "
                                  f"recorded {str(recorded)[:12]}…); export the model again")
    return Int8Artifact(directory, card, load_quantized(directory), sha256)


def record_scores(directory: str | os.PathLike, scores: dict) -> None:
    """Keep the export's own scores (its int8 model by the model's protocol) in its card; the sha256 is unchanged."""
    path = Path(directory) / CARD
    card = json.loads(path.read_text())
    card["int8"]["metrics"] = scores
    path.write_text(json.dumps(card, indent=2) + "\n")


def artifact_of(zoo: ZooModel) -> Int8Artifact:
    """A model directory's own int8 export (DIR/int8), as the zoo ships it."""
    name = zoo.card.get("name", zoo.spec.name)
    if zoo.directory is None:
        raise HeartSightError(f"{name} was never saved, so it has no int8 export; save it (model.pt, card.json) and "
                              "run `heartsight export --model DIR --out DIR/int8`")
    directory = zoo.directory / ZOO_SUBDIRECTORY
    if not is_artifact(directory):
        raise HeartSightError(f"{name} has no int8 export in {directory}; write one with "
                              f"`heartsight export --model {zoo.directory} --out {directory}` (or pass an exported "
                              "directory as --model)")
    return load_artifact(directory)
