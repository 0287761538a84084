"""The MIT-BIH databases: AAMI beat classes, the de Chazal inter-patient split and AF episodes of the Arrhythmia
Database, and the Supraventricular Arrhythmia Database (svdb), whose other patients add the S beats DS1 lacks.

A record is named by its number for the Arrhythmia Database ("101") and with its database for svdb ("svdb/801").
"""

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

# The 65 svdb records HeartSight trains on. PhysioNet has 78: the other 13 are kept for evaluation outside the
# repository, so a full download must not bring them into training.
SVDB = tuple(f"svdb/{n}" for n in (
    801, 802, 803, 804, 805, 807, 808, 809, 810, 811, 820, 821, 822, 823, 824, 826, 827, 828, 829, 840, 842, 843,
    844, 845, 846, 848, 849, 850, 851, 852, 854, 855, 856, 857, 858, 860, 861, 862, 863, 864, 866, 867, 868, 869,
    870, 872, 873, 874, 875, 876, 878, 879, 880, 881, 882, 884, 885, 886, 887, 888, 890, 891, 892, 893, 894))
# The lead each database's beat models read: svdb's leads are not named, and ECG1 is its documented first lead.
LEADS = {"mitdb": "MLII", "svdb": "ECG1"}

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
    """Load the database's lead (selected by name: mitdb record 114 stores MLII second) and the reference
    annotations."""
    database, number = record.split("/", 1) if "/" in record else ("mitdb", record)
    if database not in LEADS:
        raise HeartSightError(f"record {record!r}: unknown database {database!r}; name mitdb records by number "
                              f"and svdb records as svdb/NNN")
    recording = read_database_record(database, number, data_root)
    lead = LEADS[database]
    if lead not in recording.channels:
        raise HeartSightError(f"{database}/{number} has no {lead} lead ({', '.join(recording.channels)}); "
                              "it cannot be used")
    annotation = read_annotations(database, number, data_root)
    symbols = np.asarray(annotation.symbol)
    samples = np.asarray(annotation.sample, dtype=np.int64)
    is_beat = np.array([s in BEAT_SYMBOLS for s in symbols], dtype=bool)
    af = _af_mask(samples, symbols, annotation.aux_note, recording.n_samples)
    return MitdbRecord(
        name=record,
        fs=recording.fs,
        ecg=recording.channel(lead),
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
