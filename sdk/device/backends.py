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
from typing import Callable

import numpy as np
import torch

from firmware_export.artifact import INT8_ONNX, Int8Artifact, artifact_of, is_artifact, load_artifact
from models.architectures import predict
from models.registry import ModelSpec, ZooModel, load_model
from models.rr_af import RhythmEvidence, evidence_of_card
from sdk.errors import HeartSightError
from sdk.explain import ClassActivationMap

BACKENDS = ("torch", "onnxruntime", "c")
ModelRef = str | os.PathLike | ZooModel | Int8Artifact


class Runner:
    """A model on one backend: `runner(x)` -> outputs; `runner.explain(x)` -> (outputs, traces (N, L)).

    rhythm_evidence: for a rhythm model that has it, the RR evidence the caller adds to the AF logit
    (models.rr_af.with_evidence) from the beats up to each window's end: the network sees one window, the evidence
    the last rr_features.CONTEXT_BEATS intervals. beat_runner: the beat model, on the same backend, whose V and F
    beats that evidence leaves out (models.rr_af.ectopic_beats), when the evidence names one.

    identity: the model's name, version and the sha256 of what runs (model.pt for torch, the int8 artifact's
    integer model otherwise), and the backend; alerts carry it. batch_invariant: each window's result is the same
    bits whatever else is in its batch (integer backends; torch computes a batch of one by another path).
    """

    def __init__(self, spec: ModelSpec, identity: dict, outputs: Callable[[np.ndarray], np.ndarray],
                 explain: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], batch_invariant: bool,
                 rhythm_evidence: RhythmEvidence | None = None):
        self.spec, self.identity, self.batch_invariant = spec, identity, batch_invariant
        self.rhythm_evidence = rhythm_evidence
        self.beat_runner: Runner | None = None  # the beat model whose V and F beats the RR evidence leaves out
        self._outputs, self._explain = outputs, explain

    @property
    def backend(self) -> str:
        return self.identity["backend"]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._outputs(np.asarray(x, np.float32))

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._explain(np.asarray(x, np.float32))


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
    runner = torch_runner(_float_model(model)) if backend == "torch" else int8_runner(_int8_model(model), backend)
    if runner.rhythm_evidence is not None and runner.rhythm_evidence.beat_model:
        runner.beat_runner = make_runner(runner.rhythm_evidence.beat_model, backend)
        if runner.beat_runner.spec.fs != runner.spec.fs or runner.beat_runner.spec.task != "beat":
            raise HeartSightError(f"{runner.identity['name']}'s RR evidence leaves out the V and F beats of "
                                  f"{runner.rhythm_evidence.beat_model}, which must be a beat model at its rate "
                                  f"({runner.spec.fs:g} Hz); train the rhythm model again")
    return runner


def _float_model(model: ModelRef) -> ZooModel:
    if isinstance(model, ZooModel):
        return model
    if isinstance(model, Int8Artifact) or is_artifact(model):
        where = model.directory if isinstance(model, Int8Artifact) else model
        raise HeartSightError(f"{where} is an int8 export, which runs on the c or onnxruntime backend; "
                              "choose one of them, or pass the float model for torch")
    return load_model(model)


def _int8_model(model: ModelRef) -> Int8Artifact:
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
                "backend": "torch"}
    return Runner(spec, identity, lambda x: predict(zoo.model, x), explain, batch_invariant=False,
                  rhythm_evidence=evidence_of_card(card))


def int8_runner(artifact: Int8Artifact, backend: str) -> Runner:
    """The exported integer model: its C library (built once per computer) or its ONNX graph; the two give the
    same integers (both are the integer reference)."""
    from firmware_export.reference import dequantize_logits

    quantized, spec = artifact.quantized, artifact.spec
    if backend == "c":
        from firmware_export.host import CModel, build_shared_library

        library = CModel(build_shared_library(artifact.directory), len(quantized.input_channels), quantized.window,
                         len(quantized.classes))

        def integers(x: np.ndarray, with_traces: bool) -> tuple[np.ndarray, np.ndarray | None]:
            return library.infer(library.quantize_input(x), explain=with_traces, explained_class=spec.explained_class)
    else:
        from firmware_export.onnx_export import Int8Session

        session = Int8Session(artifact.directory / INT8_ONNX, threads=1)

        def integers(x: np.ndarray, with_traces: bool) -> tuple[np.ndarray, np.ndarray | None]:
            return session(x)  # the graph gives both
    trace_scales = np.array([quantized.trace_scale(c) for c in range(len(quantized.classes))])

    def outputs(x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros((0, len(quantized.classes)))
        return dequantize_logits(quantized, integers(x, with_traces=False)[0])

    def explain(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(x):
            return np.zeros((0, len(quantized.classes))), np.zeros((0, quantized.window))
        logits, traces = integers(x, with_traces=True)
        return dequantize_logits(quantized, logits), traces * trace_scales[spec.explained(logits)][:, None]

    identity = {"name": artifact.name, "version": str(artifact.card.get("version") or "0"), "sha256": artifact.sha256,
                "backend": backend}
    return Runner(spec, identity, outputs, explain, batch_invariant=True, rhythm_evidence=evidence_of_card(artifact.card))


def evaluate(model: ModelRef, backend: str | None = None, split: str | None = None, data_root=None) -> dict:
    """Score a model on a backend by its protocol (sdk.training.recipes.score): the float model, or its int8 export
    (a cross-validated model's fold exports on the records each fold never saw)."""
    from sdk.training.recipes import evaluate as evaluate_float
    from sdk.training.recipes import score

    backend = checked_backend(model, backend)
    if backend == "torch":
        return evaluate_float(_float_model(model), split, data_root)
    artifact = _int8_model(model)

    def outputs_of(fold: int | None):
        runner = int8_runner(artifact if fold is None else artifact.fold(fold), backend)
        return (lambda x: runner.explain(x)[1]) if artifact.spec.task == "hr" else runner
    return score(artifact.spec, artifact.card, outputs_of, split, data_root, backend)
