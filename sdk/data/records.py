"""Reading recordings: WFDB records from a data directory, or raw `.npy`/`.csv` signals.

Every reader returns a `Recording` in physical units, and every failure is a `HeartSightError` that
names the file, the directory searched and, for the public databases, the command that fetches them.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import wfdb
from scipy.signal import firwin, resample_poly

from sdk.errors import HeartSightError

DATA_ENV = "HEARTSIGHT_DATA"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "heartsight" / "data"


@dataclass(frozen=True)
class Database:
    """A public PhysioNet database as HeartSight stores it under the data directory."""

    key: str  # the name used on the command line
    folder: str  # sub-folder of the data directory
    physionet: str  # PhysioNet project slug
    version: str


DATABASES = {
    "mitdb": Database("mitdb", "mitdb", "mitdb", "1.0.0"),
    "wrist": Database("wrist", "wrist_ppg_exercise", "wrist", "1.0.0"),
    "svdb": Database("svdb", "svdb", "svdb", "1.0.0"),
}


@dataclass(frozen=True)
class Recording:
    """A multi-channel signal in physical units, shaped (samples, channels)."""

    name: str
    fs: float
    signal: np.ndarray
    channels: tuple[str, ...]

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[0])

    def channel(self, which: int | str) -> np.ndarray:
        """One channel by index or by name (names are what WFDB headers call them, e.g. 'MLII')."""
        if isinstance(which, str):
            if which not in self.channels:
                raise HeartSightError(
                    f"{self.name}: no channel named {which!r}; it has {', '.join(self.channels)}"
                )
            which = self.channels.index(which)
        if not 0 <= which < len(self.channels):
            raise HeartSightError(
                f"{self.name}: channel {which} is out of range; it has {len(self.channels)} "
                f"channel(s), numbered 0 to {len(self.channels) - 1} ({', '.join(self.channels)})"
            )
        return self.signal[:, which]


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: the explicit option, else $HEARTSIGHT_DATA, else ~/.cache/heartsight/data."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return DEFAULT_DATA_DIR


def fetch_command(db: str) -> str:
    return f"heartsight data fetch {db}"


def database_path(db: str, data_root: str | os.PathLike | None = None) -> Path:
    if db not in DATABASES:
        raise HeartSightError(f"unknown database {db!r}; choose one of {', '.join(DATABASES)}")
    return data_dir(data_root) / DATABASES[db].folder


def read_database_record(db: str, record: str, data_root: str | os.PathLike | None = None) -> Recording:
    """Read one record of a public database from the data directory."""
    folder = database_path(db, data_root)
    header = folder / f"{record}.hea"
    if not header.exists():
        raise HeartSightError(
            f"record {db}/{record} not found: no {header.name} in {folder} (searched --data-dir or "
            f"${DATA_ENV}); get the database with `{fetch_command(db)}` or point --data-dir at it"
        )
    return read_wfdb(folder / record)


def read_annotations(db: str, record: str, data_root: str | os.PathLike | None = None) -> wfdb.Annotation:
    folder = database_path(db, data_root)
    path = folder / f"{record}.atr"
    if not path.exists():
        raise HeartSightError(
            f"annotations of {db}/{record} not found: no {path.name} in {folder}; "
            f"get the database with `{fetch_command(db)}`"
        )
    try:
        return wfdb.rdann(str(folder / record), "atr")
    except Exception as exc:  # wfdb raises bare ValueError/IndexError on damaged files
        raise HeartSightError(f"cannot read annotations {path}: {exc}; re-fetch the database") from exc


def read_wfdb(path: str | os.PathLike) -> Recording:
    """Read a WFDB record given its path with or without the `.hea` extension."""
    path = Path(path)
    if path.suffix == ".hea":
        path = path.with_suffix("")
    if not path.with_suffix(".hea").exists():
        raise HeartSightError(f"WFDB header {path.with_suffix('.hea')} not found; give the record path without extension")
    _check_header_rate(path.with_suffix(".hea"))
    try:
        record = wfdb.rdrecord(str(path))
    except Exception as exc:  # wfdb raises many types on corrupt headers or missing .dat files
        raise HeartSightError(
            f"cannot read WFDB record {path}: {exc or type(exc).__name__}; check that its .hea header and "
            "signal files are complete"
        ) from exc
    if record.p_signal is None or record.fs is None or record.fs <= 0 or len(record.p_signal) == 0:
        raise HeartSightError(f"WFDB record {path} has no signal or no sampling frequency in its header")
    return Recording(path.name, float(record.fs), record.p_signal.astype(np.float32), tuple(record.sig_name))


def _check_header_rate(header: Path) -> None:
    """The record line's sampling frequency, when present, must be a positive finite number: wfdb reads a field it
    cannot parse (such as -360) as the WFDB default of 250 Hz, which would analyse the signal at the wrong rate."""
    try:
        lines = [line for line in header.read_text(errors="replace").splitlines() if line.strip() and not line.startswith("#")]
    except OSError as exc:
        raise HeartSightError(f"cannot read WFDB header {header}: {exc.strerror or exc}") from None
    fields = lines[0].split() if lines else []
    if len(fields) < 2:
        raise HeartSightError(f"WFDB header {header} has no record line (name, signal count, sampling frequency)")
    if len(fields) >= 3:
        text = fields[2].split("/")[0]
        try:
            fs = float(text)
        except ValueError:
            fs = float("nan")
        if not np.isfinite(fs) or fs <= 0:
            raise HeartSightError(f"WFDB header {header}: sampling frequency {text!r} is not a positive number of Hz; "
                                  "correct the header's record line")


def read_signal_file(path: str | os.PathLike, fs: float | None) -> Recording:
    """Read a raw signal from `.npy` (samples or samples x channels) or `.csv` (one column per channel)."""
    path = Path(path)
    if fs is None:
        raise HeartSightError(f"{path}: a raw {path.suffix} signal has no sampling rate; pass --fs HZ")
    check_fs(fs)
    if not path.exists():
        raise HeartSightError(f"{path}: file not found")
    if path.suffix == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise HeartSightError(f"{path}: not a readable .npy array ({exc})") from exc
    else:
        data = _read_csv(path)
    if data.dtype.kind not in "iuf":
        raise HeartSightError(f"{path}: expected numbers, found dtype {data.dtype}")
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise HeartSightError(f"{path}: expected a 1-D signal or a (samples, channels) array, got shape {data.shape}")
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise HeartSightError(f"{path}: the file holds no samples (shape {data.shape}); give a recording")
    channels = tuple(f"ch{i}" for i in range(data.shape[1]))
    return Recording(path.stem, float(fs), data.astype(np.float32), channels)


def _read_csv(path: Path) -> np.ndarray:
    text = path.read_text(errors="replace").strip().splitlines()
    if not text:
        raise HeartSightError(f"{path}: the file is empty")
    first = text[0].split(",")
    has_header = any(_not_a_number(cell) for cell in first)
    try:
        return np.loadtxt(path, delimiter=",", skiprows=1 if has_header else 0, ndmin=1)
    except ValueError as exc:
        raise HeartSightError(f"{path}: not a numeric CSV with one column per channel ({exc})") from exc


def _not_a_number(cell: str) -> bool:
    try:
        float(cell)
        return False
    except ValueError:
        return True


def read_input(path: str | os.PathLike, fs: float | None = None) -> Recording:
    """Read whatever a user passes on the command line: a WFDB record, `.npy` or `.csv`."""
    if not str(path).strip():
        raise HeartSightError("an empty input path; give a WFDB record path (without extension), a .npy or a .csv file")
    path = Path(path)
    if path.is_dir() or not path.name:
        raise HeartSightError(f"{path} is a directory; give a WFDB record path (without extension), a .npy or a .csv "
                              "file inside it")
    if path.suffix in (".npy", ".csv"):
        return read_signal_file(path, fs)
    if path.suffix in ("", ".hea", ".dat") or path.with_suffix(".hea").exists():
        recording = read_wfdb(path.with_suffix("") if path.suffix in (".hea", ".dat") else path)
        if fs is not None and abs(fs - recording.fs) > 1e-6:
            raise HeartSightError(
                f"{path}: --fs {fs:g} contradicts the WFDB header ({recording.fs:g} Hz); drop --fs for WFDB records"
            )
        return recording
    raise HeartSightError(f"{path}: unsupported input; give a WFDB record path, a .npy or a .csv file")


def check_fs(fs: float) -> None:
    """The one check of a sampling rate given by a user or a file: a real number of Hz, finite and positive."""
    if isinstance(fs, bool) or not isinstance(fs, numbers.Real) or not np.isfinite(fs) or fs <= 0:
        raise HeartSightError(f"sampling rate must be a positive number of Hz, got {fs!r}")


def check_signal(x: np.ndarray, what: str, min_samples: int) -> None:
    """Refuse signals a model cannot read: empty, too short, or holding NaN/inf."""
    if x.size == 0:
        raise HeartSightError(f"{what}: the signal is empty")
    if x.shape[0] < min_samples:
        raise HeartSightError(f"{what}: the signal has {x.shape[0]} samples; at least {min_samples} are needed")
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argwhere(bad)[0][0])
        raise HeartSightError(
            f"{what}: {int(bad.sum())} sample(s) are NaN or infinite (first at sample {first}); "
            "clean or interpolate the signal first"
        )


MAX_RESAMPLING_FACTOR = 10_000  # polyphase filters of 20 * factor taps: beyond this, memory and time run away


def resample_filter(up: int, down: int) -> np.ndarray:
    """resample_poly's anti-aliasing FIR for these factors (Kaiser, beta 5, 10 zero crossings each side), as float32,
    the dtype resample_poly casts it to for float32 signals: the streaming resampler's, in Python and in C."""
    half = 10 * max(up, down)
    return firwin(2 * half + 1, 1.0 / max(up, down), window=("kaiser", 5.0)).astype(np.float32)


def resample_factors(fs_in: float, fs_out: float) -> tuple[int, int]:
    """(up, down): fs_out / fs_in exactly, as a ratio of integers, the polyphase factors of every resampling here.

    An approximate ratio would stretch time (a rate of 200 kHz read as 1000 * 128 Hz beats), so a ratio that needs
    a factor above MAX_RESAMPLING_FACTOR is refused rather than rounded."""
    check_fs(fs_in)
    check_fs(fs_out)
    ratio = Fraction(float(fs_out)) / Fraction(float(fs_in))
    if max(ratio.numerator, ratio.denominator) > MAX_RESAMPLING_FACTOR:
        raise HeartSightError(f"a sampling rate of {fs_in:g} Hz cannot be resampled to {fs_out:g} Hz by a ratio of "
                              f"integers up to {MAX_RESAMPLING_FACTOR:,} ({ratio.numerator}/{ratio.denominator}); check "
                              "--fs, or resample the recording to a common rate (e.g. 250, 360 or 500 Hz) first")
    return ratio.numerator, ratio.denominator


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along axis 0 from fs_in to fs_out (rates as a ratio of small integers)."""
    up, down = resample_factors(fs_in, fs_out)
    if up == down:
        return np.asarray(x, dtype=np.float32)
    return resample_poly(x, up, down, axis=0).astype(np.float32)


def resampled_index(sample: np.ndarray | int, fs_in: float, fs_out: float) -> np.ndarray:
    """Where a sample index of the input rate lies at the output rate."""
    return np.round(np.asarray(sample, dtype=np.float64) * fs_out / fs_in).astype(np.int64)


def fetch(db: str, data_root: str | os.PathLike | None = None) -> Path:
    """Download a database from PhysioNet into the data directory (needs internet)."""
    target = database_path(db, data_root)
    target.mkdir(parents=True, exist_ok=True)
    info = DATABASES[db]
    try:
        wfdb.dl_database(info.physionet, str(target))
    except Exception as exc:
        raise HeartSightError(
            f"could not download {info.physionet} from PhysioNet into {target}: {exc}; check the internet "
            f"connection or download https://physionet.org/content/{info.physionet}/{info.version}/ by hand"
        ) from exc
    if db == "wrist":
        _convert_wrist_edf(target)
    return target


def _convert_wrist_edf(folder: Path) -> None:
    """PhysioNet ships the wrist database as EDF; convert each file to WFDB with the channels HeartSight reads.

    EDF labels are matched by keywords (ECG; PPG; low-noise accelerometer x/y/z) because their exact
    spelling is not part of the database's documentation.
    """
    for edf in sorted(folder.glob("*.edf")):
        record = wfdb.edf2mit(str(edf), verbose=False)
        wanted, names = [], []
        for target, keywords in WRIST_CHANNEL_KEYWORDS.items():
            matches = [i for i, label in enumerate(record.sig_name) if all(k in label.lower() for k in keywords)]
            if not matches:
                raise HeartSightError(f"{edf}: no channel matching {target} among {record.sig_name}")
            wanted.append(matches[0])
            names.append(target)
        wfdb.wrsamp(
            edf.stem, fs=record.fs, units=[record.units[i] for i in wanted], sig_name=names,
            p_signal=record.p_signal[:, wanted], fmt=["16"] * len(wanted), write_dir=str(folder),
        )
    (folder / "RECORDS").write_text("".join(f"{edf.stem}\n" for edf in sorted(folder.glob("*.edf"))))


WRIST_CHANNEL_KEYWORDS = {
    "chest_ecg": ("ecg",),
    "wrist_ppg": ("ppg",),
    "wrist_accel_lownoise_x": ("low", "x"),
    "wrist_accel_lownoise_y": ("low", "y"),
    "wrist_accel_lownoise_z": ("low", "z"),
}
