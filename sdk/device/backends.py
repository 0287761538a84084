"""Where a model runs: torch (float), onnxruntime (the int8 QDQ ONNX model) or c (the generated int8 C library).

Each backend is a function from preprocessed float windows (N, C, L) to outputs in real units (logits, or
heart rate in bpm), so evaluation and the device runtime can swap them freely.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from models.registry import ZooModel
from sdk.errors import HeartSightError
from sdk.training.train import predict

BACKENDS = ("torch", "onnxruntime", "c")
Runner = Callable[[np.ndarray], np.ndarray]


def make_runner(zoo: ZooModel, backend: str, calibration_x: Callable[[], np.ndarray] | None = None,
                work_dir: str | Path | None = None) -> Runner:
    """A runner for the model on a backend; the int8 backends quantize it with calibration_x() first."""
    if backend not in BACKENDS:
        raise HeartSightError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return lambda x: predict(zoo.model, x)
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
        return lambda x: reference.dequantize_logits(quantized, library.infer(library.quantize_input(x))[0])
    from firmware_export.onnx_export import int8_session

    session = int8_session(zoo, quantized, directory)
    return lambda x: session(np.asarray(x, np.float32))
