"""The MIT-BIH Arrhythmia Database: AAMI beat classes, the de Chazal inter-patient split and AF episodes."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from sdk.data.records import read_annotations, read_database_record
from sdk.errors import HeartSightError

AAMI_CLASSES = ("N", "S", "V", "F")

# ANSI/AAMI EC57 grouping of MIT-BIH beat symbols. Q beats (/ f Q) are not scored.
SYMBOL_TO_AAMI = {
    "N": "N", "L": "N", "R": "N", "e": "N", "j": "N",
    "A": "S", "a": "S", "J": "S", "S": "S",
    "V": "V", "E": "V",
    "F": "F",
}
# Every annotation symbol that marks a beat (for R-peak matching and rhythm context).
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")

# de Chazal, O'Dwyer & Reilly, IEEE TBME 51(7), 2004. Paced records 102 104 107 217 are in neither set.
DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201", "203", "205",
       "207", "208", "209", "215", "220", "223", "230")
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212", "213", "214", "219",
       "221", "222", "228", "231", "232", "233", "234")
PACED = ("102", "104", "107", "217")
SPLITS = {"DS1": DS1, "DS2": DS2, "ALL": tuple(sorted(DS1 + DS2))}

AF_RHYTHMS = ("AFIB", "AFL")


@dataclass(frozen=True)
class MitdbRecord:
    """One record's MLII lead and reference annotations."""

    name: str
    fs: float
    ecg: np.ndarray  # MLII, mV
    beat_samples: np.ndarray  # every annotated beat (all symbols in BEAT_SYMBOLS)
    beat_symbols: tuple[str, ...]
    af: np.ndarray  # bool per sample: inside an AFIB or AFL episode

    @property
    def aami_labels(self) -> np.ndarray:
        """AAMI class index per annotated beat, -1 for beats that are not scored (Q)."""
        return np.array(
            [AAMI_CLASSES.index(SYMBOL_TO_AAMI[s]) if s in SYMBOL_TO_AAMI else -1 for s in self.beat_symbols],
            dtype=np.int64,
        )


def split_records(split: str) -> tuple[str, ...]:
    if split not in SPLITS:
        raise HeartSightError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return SPLITS[split]


def load_record(record: str, data_root: str | os.PathLike | None = None) -> MitdbRecord:
    """Load the MLII lead (selected by name: record 114 stores it second) and the reference annotations."""
    recording = read_database_record("mitdb", record, data_root)
    if "MLII" not in recording.channels:
        raise HeartSightError(f"mitdb/{record} has no MLII lead ({', '.join(recording.channels)}); it cannot be used")
    annotation = read_annotations("mitdb", record, data_root)
    symbols = np.asarray(annotation.symbol)
    samples = np.asarray(annotation.sample, dtype=np.int64)
    is_beat = np.array([s in BEAT_SYMBOLS for s in symbols], dtype=bool)
    af = _af_mask(samples, symbols, annotation.aux_note, recording.n_samples)
    return MitdbRecord(
        name=record,
        fs=recording.fs,
        ecg=recording.channel("MLII"),
        beat_samples=samples[is_beat],
        beat_symbols=tuple(symbols[is_beat]),
        af=af,
    )


def _af_mask(samples: np.ndarray, symbols: np.ndarray, aux_notes: list[str], n_samples: int) -> np.ndarray:
    """Rhythm annotations ('+' with aux_note such as '(AFIB') each start an episode lasting to the next one."""
    mask = np.zeros(n_samples, dtype=bool)
    changes = [(int(s), note.strip("\x00 ").lstrip("(")) for s, sym, note in zip(samples, symbols, aux_notes)
               if sym == "+" and note.strip("\x00 ").startswith("(")]
    for (start, rhythm), (end, _) in zip(changes, changes[1:] + [(n_samples, "")]):
        if rhythm in AF_RHYTHMS:
            mask[start:end] = True
    return mask
