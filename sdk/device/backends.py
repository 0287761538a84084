"""Where a model runs: torch (float), onnxruntime (the int8 QDQ ONNX model) or c (the generated int8 C library).

Each backend is a `Runner`: calling it maps preprocessed float windows (N, C, L) to outputs in real units
(logits, or heart rate in bpm), so evaluation and the device runtime can swap them freely. `explain` also
returns each window's explanation trace: the class activation map of its top class (of the single output
for heart rate), in the float CAM's units. torch and onnxruntime explain with the float/QAT model's map
(ClassActivationMap); c returns the C library's own hs_explain trace times its scale, as the firmware does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from models.registry import ZooModel
from sdk.errors import HeartSightError
from sdk.explain import ClassActivationMap
from sdk.training.train import predict

BACKENDS = ("torch", "onnxruntime", "c")


class Runner:
    """A model on one backend: `runner(x)` -> outputs; `runner.explain(x)` -> (outputs, traces (N, L)).

    batch_invariant: each window's result is the same bits whatever else is in its batch (the C library runs
    windows one by one; torch computes a batch of one by another path).
    """

    def __init__(self, zoo: ZooModel, backend: str, outputs: Callable[[np.ndarray], np.ndarray],
                 explain: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
                 batch_invariant: bool = False):
        self.zoo, self.backend, self.batch_invariant = zoo, backend, batch_invariant
        self._outputs = outputs
        self._explain = explain or self._float_map

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._outputs(x)

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._explain(np.asarray(x, np.float32))

    def _float_map(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This backend's outputs, and the float/QAT model's class activation map of each window's top output."""
        outputs = self._outputs(x)
        targets = outputs.argmax(1) if self.zoo.spec.is_classifier else np.zeros(len(x), np.int64)
        traces = ClassActivationMap(self.zoo.model).attribute(torch.from_numpy(x), torch.from_numpy(targets))
        return outputs, traces.numpy()


def make_runner(zoo: ZooModel, backend: str, calibration_x: Callable[[], np.ndarray] | None = None,
                work_dir: str | Path | None = None) -> Runner:
    """A runner for the model on a backend; the int8 backends quantize it with calibration_x() first."""
    if backend not in BACKENDS:
        raise HeartSightError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return Runner(zoo, backend, lambda x: predict(zoo.model, x))
    if calibration_x is None:
        raise HeartSightError(f"the {backend} backend runs the int8 model and needs calibration windows")
    from firmware_export import reference
    from firmware_export.quantize import quantize_model

    quantized = quantize_model(zoo, calibration_x())
    directory = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix=f"heartsight-{backend}-"))
    if backend == "c":
        from firmware_export.codegen import write_c_library
        from firmware_export.host import CModel, build_shared_library

        write_c_library(quantized, directory)
        library = CModel(build_shared_library(directory), len(quantized.input_channels), quantized.window,
                         len(quantized.classes))
        trace_scales = np.array([quantized.trace_scale(c) for c in range(len(quantized.classes))])

        def c_explain(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            logits, traces = library.infer(library.quantize_input(x), explain=True)
            outputs = reference.dequantize_logits(quantized, logits)
            return outputs, traces * trace_scales[outputs.argmax(1)][:, None]

        def c_outputs(x: np.ndarray) -> np.ndarray:
            return reference.dequantize_logits(quantized, library.infer(library.quantize_input(x))[0])

        return Runner(zoo, backend, c_outputs, c_explain, batch_invariant=True)
    from firmware_export.onnx_export import int8_session

    session = int8_session(zoo, quantized, directory)
    return Runner(zoo, backend, lambda x: session(np.asarray(x, np.float32)))
