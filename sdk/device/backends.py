"""Where a model runs: torch (the float model), or its int8 export on onnxruntime or in the generated C library.

Each backend is a `Runner`: calling it maps preprocessed float windows (N, C, L) to outputs in real units
(logits, or heart rate in bpm), so evaluation and the device runtime can swap them freely. `explain` also
returns each window's explanation trace: the class activation map of its top class (of the single output for
heart rate; of AF for rhythm models, ModelSpec.explained_class), in the float CAM's units. torch explains with
the float/QAT model's map (ClassActivationMap); the int8 backends return the integer map of the exported model
(hs_explain in C; the same integers from the ONNX graph), times its scale, as the firmware does.

The int8 backends run an exported artifact as it is (firmware_export.artifact): an exported directory, or a
model directory's own export (the zoo ships models/zoo/NAME/int8). Nothing is quantized or generated here.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from firmware_export.artifact import INT8_ONNX, Int8Artifact, artifact_of, is_artifact, load_artifact
from firmware_export.head_update import EXPORTED_VERSION, HeadRefused, HeadUpdate, decode
from firmware_export.onnx_export import export_int8
from firmware_export.quantize import QuantizedModel
from firmware_export.reference import dequantize_logits, embeddings_of_sums, pooled_embeddings, quantize_input
from models.architectures import predict
from models.closed_form_head import pooled_embeddings as float_pooled_embeddings
from models.registry import ModelSpec, ZooModel, load_model
from models.rr_af import RhythmEvidence, evidence_of_card
from sdk.errors import HeartSightError
from sdk.explain import ClassActivationMap

BACKENDS = ("torch", "onnxruntime", "c")
ModelRef = str | os.PathLike | ZooModel | Int8Artifact


class Runner:
    """A model on one backend: `runner(x)` -> outputs; `runner.explain(x)` -> (outputs, traces (N, L));
    `runner.embed(x)` -> (N, K) the pooled embeddings its head reads (what a refitted head is fitted on).

    rhythm_evidence: for a rhythm model that has it, the RR evidence the caller adds to the AF logit
    (models.rr_af.with_evidence) from the beats up to each window's end: the network sees one window, the evidence
    the last rr_features.CONTEXT_BEATS intervals. beat_runner: the beat model, on the same backend, whose V and F
    beats that evidence leaves out (models.rr_af.ectopic_beats), when the evidence names one.

    identity: the model's name, version and the sha256 of what runs (model.pt for torch, the int8 artifact's
    integer model otherwise), the backend, and the version of the head it runs (0: as exported or trained;
    firmware_export.head_update); alerts carry it. batch_invariant: each window's result is the same
    bits whatever else is in its batch (integer backends; torch computes a batch of one by another path).
    """

    def __init__(self, spec: ModelSpec, identity: dict, outputs: Callable[[np.ndarray], np.ndarray],
                 explain: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                 embed: Callable[[np.ndarray], np.ndarray], batch_invariant: bool,
                 rhythm_evidence: RhythmEvidence | None = None,
                 set_head: Callable[[bytes, bytes], HeadUpdate] | None = None):
        self.spec, self.identity, self.batch_invariant = spec, identity, batch_invariant
        self.rhythm_evidence = rhythm_evidence
        self.beat_runner: Runner | None = None  # the beat model whose V and F beats the RR evidence leaves out
        self._outputs, self._explain, self._embed, self._set_head = outputs, explain, embed, set_head

    @property
    def backend(self) -> str:
        return self.identity["backend"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._outputs(np.asarray(x, np.float32))

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._explain(np.asarray(x, np.float32))

    def embed(self, x: np.ndarray) -> np.ndarray:
        return self._embed(np.asarray(x, np.float32))

    def set_head(self, blob: bytes, key: bytes) -> HeadUpdate:
        """Replace the head by a signed update (firmware_export.head_update) for the device holding key; a refused
        update raises HeadRefused and the head in use stays. identity's head_version follows."""
        if self._set_head is None:
            raise HeartSightError(f"head updates are signed for the int8 device model; run {self.identity['name']} "
                                  "on the c or onnxruntime backend to apply one")
        update = self._set_head(bytes(blob), bytes(key))
        self.identity = {**self.identity, "head_version": update.version}
        return update


def checked_backend(model: ModelRef, backend: str | None) -> str:
    """The backend asked for, or by default c for an exported directory and torch for a trained model."""
    exported = isinstance(model, Int8Artifact) or (isinstance(model, (str, os.PathLike)) and is_artifact(model))
    backend = backend or ("c" if exported else "torch")
    if backend not in BACKENDS:
        raise HeartSightError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def make_runner(model: ModelRef, backend: str | None = None) -> Runner:
    """A runner for a zoo name, model directory, exported directory, ZooModel or Int8Artifact on a backend
    (default: c for an export, torch otherwise)."""
    backend = checked_backend(model, backend)
    runner = torch_runner(float_model(model)) if backend == "torch" else int8_runner(int8_model(model), backend)
    if runner.rhythm_evidence is not None and runner.rhythm_evidence.beat_model:
        runner.beat_runner = make_runner(runner.rhythm_evidence.beat_model, backend)
        if runner.beat_runner.spec.fs != runner.spec.fs or runner.beat_runner.spec.task != "beat":
            raise HeartSightError(f"{runner.identity['name']}'s RR evidence leaves out the V and F beats of "
                                  f"{runner.rhythm_evidence.beat_model}, which must be a beat model at its rate "
                                  f"({runner.spec.fs:g} Hz); train the rhythm model again")
    return runner


def float_model(model: ModelRef) -> ZooModel:
    if isinstance(model, ZooModel):
        return model
    if isinstance(model, Int8Artifact) or is_artifact(model):
        where = model.directory if isinstance(model, Int8Artifact) else model
        raise HeartSightError(f"{where} is an int8 export, which runs on the c or onnxruntime backend; "
                              "choose one of them, or pass the float model for torch")
    return load_model(model)


def int8_model(model: ModelRef) -> Int8Artifact:
    if isinstance(model, Int8Artifact):
        return model
    if isinstance(model, (str, os.PathLike)) and is_artifact(model):
        return load_artifact(model)
    return artifact_of(model if isinstance(model, ZooModel) else load_model(model))


def torch_runner(zoo: ZooModel) -> Runner:
    card, spec = zoo.card, zoo.spec
    explainer = ClassActivationMap(zoo.model)

    def explain(x: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
        outputs = predict(zoo.model, x)
        targets = spec.explained(outputs)
        traces = [explainer.attribute(torch.from_numpy(x[i: i + batch]), torch.from_numpy(targets[i: i + batch])).numpy()
                  for i in range(0, len(x), batch)]
        return outputs, np.concatenate(traces) if traces else np.zeros((0, spec.input_length), np.float32)

    sha256 = card.get("sha256") or (hashlib.sha256((zoo.directory / "model.pt").read_bytes()).hexdigest()
                                    if zoo.directory else hashlib.sha256(b"untrained").hexdigest())
    identity = {"name": card.get("name", spec.name), "version": str(card.get("version") or "0"), "sha256": sha256,
                "backend": "torch", "head_version": int(card.get("head_version", EXPORTED_VERSION))}
    return Runner(spec, identity, lambda x: predict(zoo.model, x), explain,
                  lambda x: float_pooled_embeddings(zoo.model, x), batch_invariant=False, rhythm_evidence=evidence_of_card(card))


def int8_runner(artifact: Int8Artifact, backend: str) -> Runner:
    """The exported integer model: its C library (built once per computer) or its ONNX graph; the two give the
    same integers (both are the integer reference). Its head can be replaced by a signed update (Runner.set_head)."""
    model = _Int8Model(artifact, backend)
    spec = artifact.spec

    def outputs(x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros((0, len(spec.outputs)))
        return dequantize_logits(model.quantized, model.integers(x, with_traces=False)[0])

    def explain(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(x):
            return np.zeros((0, len(spec.outputs))), np.zeros((0, spec.input_length))
        logits, traces = model.integers(x, with_traces=True)
        return dequantize_logits(model.quantized, logits), traces * model.trace_scales[spec.explained(logits)][:, None]

    identity = {"name": artifact.name, "version": str(artifact.card.get("version") or "0"), "sha256": artifact.sha256,
                "backend": backend, "head_version": EXPORTED_VERSION}
    return Runner(spec, identity, outputs, explain, model.embed, batch_invariant=True,
                  rhythm_evidence=evidence_of_card(artifact.card), set_head=model.set_head)


class _Int8Model:
    """The integers of an exported model on c or onnxruntime, and the head it runs. A head update is checked as the
    device checks it: by the C library's own hs_set_head on c, by firmware_export.head_update.decode (the same
    checks, in the same order) on onnxruntime, whose graph is then generated again with the new head."""

    def __init__(self, artifact: Int8Artifact, backend: str):
        self.artifact, self.backend = artifact, backend
        self._use_head(artifact.quantized, EXPORTED_VERSION)
        if backend == "c":
            from firmware_export.host import CModel, build_shared_library

            self.library = CModel(build_shared_library(artifact.directory), len(self.quantized.input_channels),
                                  self.quantized.window, len(self.quantized.classes))
        else:
            self.session = _int8_session(artifact.directory / INT8_ONNX)

    def integers(self, x: np.ndarray, with_traces: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if self.backend == "c":
            return self.library.infer(self.library.quantize_input(x), explain=with_traces,
                                      explained_class=self.artifact.spec.explained_class)
        return self.session(x)  # the graph gives both

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Pooled embeddings in real units: the C library's own sums (hs_last_sums) on c; on onnxruntime, whose graph
        does not output them, the integer reference's, which the graph computes exactly."""
        if self.backend == "c":
            x_q = self.library.quantize_input(x)
            return embeddings_of_sums(self.quantized, self.library.last_sums(x_q, self.quantized.last.weight.shape[0]))
        return pooled_embeddings(self.quantized, quantize_input(self.quantized, x))

    def set_head(self, blob: bytes, key: bytes) -> HeadUpdate:
        """Apply a signed head update, or raise HeadRefused and keep the head in use."""
        if not self.artifact.head_updates:
            raise HeartSightError(f"{self.artifact.name}'s export in {self.artifact.directory} cannot replace its head "
                                  "(heart-rate models never can; a beat or rhythm model exported with "
                                  "--no-head-updates): export it again without that option")
        if self.backend == "c":
            status = self.library.set_head(blob, key)
            if status:
                raise HeadRefused(status, f"by {self.artifact.name}'s C library")
        update = decode(blob, key, self.artifact.quantized, self.head_version)
        quantized = update.applied_to(self.artifact.quantized)
        if self.backend == "onnxruntime":
            with tempfile.TemporaryDirectory() as work:
                self.session = _int8_session(export_int8(quantized, Path(work) / INT8_ONNX, int8_sha256=self.artifact.sha256,
                                                         explained_class=self.artifact.spec.explained_class))
        self._use_head(quantized, update.version)
        return update

    def _use_head(self, quantized: QuantizedModel, version: int) -> None:
        """The integer model whose head now runs, and the real units of its traces per class."""
        self.quantized, self.head_version = quantized, version
        self.trace_scales = np.array([quantized.trace_scale(c) for c in range(len(quantized.classes))])


def _int8_session(path: Path):
    from firmware_export.onnx_export import Int8Session

    return Int8Session(path, threads=1)


def evaluate(model: ModelRef, backend: str | None = None, split: str | None = None, data_root=None) -> dict:
    """Score a model on a backend by its protocol (sdk.training.recipes.score): the float model, or its int8 export
    (a cross-validated model's fold exports on the records each fold never saw)."""
    from sdk.training.recipes import evaluate as evaluate_float
    from sdk.training.recipes import score

    backend = checked_backend(model, backend)
    if backend == "torch":
        return evaluate_float(float_model(model), split, data_root)
    artifact = int8_model(model)

    def outputs_of(fold: int | None):
        runner = int8_runner(artifact if fold is None else artifact.fold(fold), backend)
        return (lambda x: runner.explain(x)[1]) if artifact.spec.task == "hr" else runner
    return score(artifact.spec, artifact.card, outputs_of, split, data_root, backend)
