"""The generated C library built for this computer and called through ctypes: host verification and `--backend c`."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from firmware_export.codegen import C_FILES, C_SOURCES
from sdk.errors import HeartSightError

STRICT_FLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
# The library is compiled on the computer that runs it, so it may use all of that computer's vector units.
HOST_OPTIMISATION = ["-O3", "-march=native"]


def build_shared_library(model_dir: str | Path, out: str | Path | None = None) -> Path:
    """Compile the exported library with gcc (strict flags, tuned for this computer); returns the .so path.

    Without `out` the library goes to a per-user cache keyed by the sources, the flags and the compiler, so each
    export is compiled once per computer, not every time a backend starts (and never inside the export itself).
    """
    model_dir = Path(model_dir)
    sources = [model_dir / name for name in C_SOURCES]
    missing = [name for name in C_FILES if not (model_dir / name).exists()]
    if missing:
        raise HeartSightError(f"{model_dir} is not an exported C model (missing {', '.join(missing)}); "
                              "run `heartsight export --model NAME --out DIR` first")
    compiler = shutil.which("gcc")
    if compiler is None:
        raise HeartSightError("gcc is not installed; install it with `apt-get install -y gcc`")
    flags = [*STRICT_FLAGS, *HOST_OPTIMISATION, "-shared", "-fPIC"]
    if out is None:
        key = hashlib.sha256()
        for part in [*((model_dir / name).read_bytes() for name in C_FILES),
                     " ".join(flags).encode(), compiler.encode(), platform.node().encode(),  # -march=native: per host
                     subprocess.run([compiler, "--version"], capture_output=True).stdout]:
            key.update(part)
        library = cache_directory("c") / key.hexdigest()[:24] / "libheartsight_model.so"
        if library.exists():
            return library
    else:
        library = Path(out)
    library.parent.mkdir(parents=True, exist_ok=True)
    partial = library.with_name(f".{library.name}.{os.getpid()}")  # renamed into place: no half-written library
    command = [compiler, *flags, "-o", str(partial), *map(str, sources)]
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-20:])
        raise HeartSightError(f"the C library in {model_dir} did not compile with `{' '.join(command)}`:\n{tail}")
    os.replace(partial, library)
    return library


RUNTIME_DIR = Path(__file__).resolve().parent / "runtime"


def build_runtime_library(sources: list[str], extra_flags: list[str] = (), extra_sources: list[Path] = ()
                          ) -> ctypes.CDLL:
    """Sources of firmware_export/runtime (e.g. ["hs_rpeak.c"]) compiled with the strict flags into a shared library
    for this computer, loaded with ctypes: how the device path's C parts are checked against the Python Monitor's.
    extra_sources: other C files to link in (an exported model's, a test's shim); their directories are searched for
    headers after the runtime's. Cached like model builds, keyed by the sources and flags; each call loads a private
    copy (its own statics)."""
    compiler = shutil.which("gcc")
    if compiler is None:
        raise HeartSightError("gcc is not installed; install it with `apt-get install -y gcc`")
    paths = [RUNTIME_DIR / name for name in sources] + [Path(p) for p in extra_sources]
    headers = sorted(RUNTIME_DIR.glob("*.h")) + sorted({h for p in extra_sources for h in Path(p).parent.glob("*.h")})
    includes = [flag for d in dict.fromkeys(Path(p).parent for p in extra_sources) for flag in ("-I", str(d))]
    flags = [*STRICT_FLAGS, "-O2", "-shared", "-fPIC", *extra_flags]
    key = hashlib.sha256(" ".join([compiler, *flags, *map(str, paths)]).encode())
    for path in [*paths, *headers]:
        key.update(path.read_bytes())
    library = cache_directory("c") / key.hexdigest()[:24] / "libheartsight_runtime.so"
    if not library.exists():
        library.parent.mkdir(parents=True, exist_ok=True)
        partial = library.with_name(f".{library.name}.{os.getpid()}")
        command = [compiler, *flags, "-I", str(RUNTIME_DIR), *includes, "-o", str(partial), *map(str, paths), "-lm"]
        run = subprocess.run(command, capture_output=True, text=True)
        if run.returncode != 0:
            tail = "\n".join((run.stdout + run.stderr).strip().splitlines()[-20:])
            raise HeartSightError(f"the runtime sources did not compile with `{' '.join(command)}`:\n{tail}")
        os.replace(partial, library)
    with tempfile.TemporaryDirectory() as private:  # dlopen of one path twice would share the state
        copy = Path(private) / library.name
        shutil.copyfile(library, copy)
        return ctypes.CDLL(str(copy))


def cache_directory(kind: str) -> Path:
    """HeartSight's per-user cache of one kind (c: host builds; embeddings: sdk.device.recalibration.population)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "heartsight" / kind


class CModel:
    """hs_quantize_input, hs_infer, hs_explain and hs_set_head of a host build, on numpy arrays.

    Each CModel loads its own copy of the library, so each has its own static state (arena and head), as each
    device does: a head set on one leaves every other untouched."""

    def __init__(self, library: str | Path, channels: int, length: int, classes: int):
        with tempfile.TemporaryDirectory() as private:  # dlopen of one path twice would share the state
            copy = Path(private) / Path(library).name
            shutil.copyfile(library, copy)
            self.library = ctypes.CDLL(str(copy))
        self.channels, self.length, self.classes = channels, length, classes
        self.library.hs_infer.restype = ctypes.c_int
        self.library.hs_infer.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.library.hs_explain.argtypes = [ctypes.c_int, ctypes.c_void_p]
        self.library.hs_quantize_input.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.library.hs_head_version.restype = ctypes.c_uint32
        self.library.hs_last_sums.argtypes = [ctypes.c_void_p]

    @property
    def head_version(self) -> int:
        return int(self.library.hs_head_version())

    def set_head(self, blob: bytes, key: bytes) -> int:
        """hs_set_head's status (firmware_export.head_update.STATUS); 0 when the head was replaced."""
        if not hasattr(self.library, "hs_set_head"):
            raise HeartSightError("this model's library has no hs_set_head: its head is not replaceable (heart-rate "
                                  "models keep the head they were exported with)")
        function = self.library.hs_set_head
        function.restype, function.argtypes = ctypes.c_int, [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_char_p,
                                                             ctypes.c_uint32]
        return int(function(bytes(blob), len(blob), bytes(key), len(key)))

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32).reshape(-1, self.channels, self.length)
        q = np.zeros(x.shape, np.int8)
        for i in range(len(x)):
            self.library.hs_quantize_input(x[i].ctypes.data, q[i].ctypes.data)
        return q

    def last_sums(self, x_q: np.ndarray, last_channels: int) -> np.ndarray:
        """(N, last_channels) int32: hs_last_sums after each window's hs_infer (the head's input)."""
        x_q = np.ascontiguousarray(x_q, np.int8).reshape(-1, self.channels, self.length)
        logits = np.zeros(self.classes, np.int8)
        sums = np.zeros((len(x_q), last_channels), np.int32)
        for i in range(len(x_q)):
            self.library.hs_infer(x_q[i].ctypes.data, logits.ctypes.data)
            self.library.hs_last_sums(sums[i].ctypes.data)
        return sums

    def infer(self, x_q: np.ndarray, explain: bool = False, explained_class: int | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """(int8 logits (N, classes), int16 traces (N, length) when explain): of explained_class, or by default of
        each window's predicted class."""
        x_q = np.ascontiguousarray(x_q, np.int8).reshape(-1, self.channels, self.length)
        logits = np.zeros((len(x_q), self.classes), np.int8)
        traces = np.zeros((len(x_q), self.length), np.int16) if explain else None
        for i in range(len(x_q)):
            predicted = self.library.hs_infer(x_q[i].ctypes.data, logits[i].ctypes.data)
            if explain:
                self.library.hs_explain(predicted if explained_class is None else explained_class,
                                        traces[i].ctypes.data)
        return logits, traces
