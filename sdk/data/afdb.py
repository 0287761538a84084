"""The MIT-BIH Atrial Fibrillation Database as beat times and rhythm labels (the text export in `afdb_rr/`).

Its 25 patients are not MIT-BIH Arrhythmia's, and it holds 93 h of AF against MIT-BIH's few hours: rhythm models
learn from it and are scored on patients of the other database. There are no signals, only beats, so it trains
models that read RR intervals alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sdk.data.mitdb import AF_RHYTHMS
from sdk.data.records import data_dir
from sdk.errors import HeartSightError

FOLDER = "afdb_rr"
FS = 250.0
RECORDS = ("00735", "03665", "04015", "04043", "04048", "04126", "04746", "04908", "04936", "05091", "05121",
           "05261", "06426", "06453", "06995", "07162", "07859", "07879", "07910", "08215", "08219", "08378",
           "08405", "08434", "08455")


@dataclass(frozen=True)
class BeatRecord:
    name: str
    beat_times_s: np.ndarray
    af_at: Callable[[np.ndarray], np.ndarray]  # seconds -> bool: inside an AFIB or AFL episode


def load_record(record: str, data_root: str | os.PathLike | None = None) -> BeatRecord:
    """Beat times from qrsNNNNN.txt (third column: the beat's sample at 250 Hz) and AF episodes from atrNNNNN.txt
    (each rhythm label holds until the next)."""
    folder = data_dir(data_root) / FOLDER
    beats_path, rhythm_path = folder / f"qrs{record}.txt", folder / f"atr{record}.txt"
    if not beats_path.exists() or not rhythm_path.exists():
        raise HeartSightError(
            f"afdb record {record} not found: {beats_path.name} and {rhythm_path.name} are needed in {folder}; it is "
            "a text export of PhysioNet's afdb beat (.qrs) and rhythm (.atr) annotations (see ../shared/data or "
            "the 025georgialynny/afib repository's extracted/ folder)"
        )
    try:
        beat_samples = np.loadtxt(beats_path, usecols=2, ndmin=1)
        changes = []
        for line in rhythm_path.read_text().splitlines()[1:]:
            fields, _, aux = line.partition("\t")
            changes.append((int(fields.split()[1]) / FS, aux.strip().lstrip("(")))
    except (ValueError, IndexError) as error:
        raise HeartSightError(f"cannot read afdb record {record} in {folder} ({error}); restore the files") from None
    starts = np.array([t for t, _ in changes])
    is_af = np.array([rhythm in AF_RHYTHMS for _, rhythm in changes])

    def af_at(times_s: np.ndarray) -> np.ndarray:
        episode = np.searchsorted(starts, np.asarray(times_s), side="right") - 1
        return (episode >= 0) & is_af[np.clip(episode, 0, None)] if len(starts) else np.zeros(np.shape(times_s), bool)
    return BeatRecord(record, beat_samples / FS, af_at)
