"""RR-interval irregularity: the evidence of atrial fibrillation that transfers between databases and devices.

AF makes the ventricular rhythm irregular without a pattern. Each feature below measures that from beat times
alone, so it needs no lead, gain or sampling rate of its own: a Holter, a handheld recorder and the MIT-BIH
Atrial Fibrillation Database's beat list give the same numbers for the same rhythm. A window's features are
computed over the last CONTEXT_BEATS intervals that end inside it (a device keeps CONTEXT_SPAN of them; a
recording's first window uses what it has).
"""

from __future__ import annotations

import numpy as np

CONTEXT_BEATS = 32  # about 30 s of rhythm: enough intervals for entropy estimates, short enough for onset
MIN_INTERVALS = 8  # fewer intervals than this carry no usable irregularity estimate
CONTEXT_SPAN = 3 * CONTEXT_BEATS  # how far back a context may reach for intervals when ectopic ones are left out
RR_RANGE_S = (0.2, 3.0)  # physiological RR; detector misses and double detections are clipped to it
COSEN_TOLERANCE_S = 0.03  # Lake & Moorman 2011: sample entropy with a fixed 30-ms tolerance
# RR / median RR in 17 bins 0.075 wide, the middle one centred on 1: a steady rhythm's sampling jitter stays in
# one bin (an edge at the median would split it in two)
HISTOGRAM_BINS, HISTOGRAM_RANGE = 17, (1 - 8.5 * 0.075, 1 + 8.5 * 0.075)
FEATURES = (
    "nrmssd",  # root mean square of successive differences / mean RR
    "turning_point_ratio",  # share of intervals that are a local extremum: 2/3 for a random series
    "shannon_entropy",  # of the RR histogram (HISTOGRAM_BINS bins around the median), normalised to [0, 1]
    "cosen",  # coefficient of sample entropy (Lake & Moorman 2011)
    "successive_difference",  # median |RR[n] - RR[n-1]| / median RR
    "best_lag_difference",  # min over lags 1-3 of median |RR[n] - RR[n-k]| / median RR: low for bigeminy, trigeminy
    # what tells ectopic beats in a steady rhythm from fibrillation:
    "near_median_share",  # share of intervals within NEAR_MEDIAN of the median: most of them in sinus rhythm with ectopy
    "premature_pause_share",  # share of interval pairs that are a premature beat and its pause (PREMATURE_PAIR)
    "core_rmssd",  # RMSSD / median of the intervals within CORE of the median: irregularity with the ectopy set aside
    "poincare_ratio",  # SD1 / SD2 of the Poincare plot: near 1 for AF's cloud, small for a drifting steady rhythm
)
NEAR_MEDIAN = 0.1
PREMATURE_PAIR = (0.85, 1.1, 0.15)  # short below this x median, long above this, their sum within this of 2 medians
CORE = 0.15


def irregularity(rr_s: np.ndarray) -> np.ndarray:
    """The FEATURES of a series of RR intervals (seconds), as float32."""
    rr = np.clip(np.asarray(rr_s, dtype=np.float64), *RR_RANGE_S)
    if len(rr) < MIN_INTERVALS:
        raise ValueError(f"{len(rr)} RR intervals: at least {MIN_INTERVALS} are needed for irregularity features")
    mean, median = rr.mean(), np.median(rr)
    successive = np.diff(rr)
    nrmssd = np.sqrt(np.mean(successive ** 2)) / mean
    turning = np.mean((rr[1:-1] - rr[:-2]) * (rr[1:-1] - rr[2:]) > 0)
    counts, _ = np.histogram(rr / median, bins=HISTOGRAM_BINS, range=HISTOGRAM_RANGE)
    p = counts[counts > 0] / max(counts.sum(), 1)
    entropy = float(-(p * np.log(p)).sum() / np.log(HISTOGRAM_BINS)) if len(p) else 0.0
    lag_differences = [np.median(np.abs(rr[k:] - rr[:-k])) / median for k in (1, 2, 3)]
    relative = rr / median
    short, long, tolerance = PREMATURE_PAIR
    pairs = (relative[:-1] < short) & (relative[1:] > long) & (np.abs(relative[:-1] + relative[1:] - 2) < tolerance)
    core = rr[np.abs(relative - 1) < CORE]
    core_rmssd = np.sqrt(np.mean(np.diff(core) ** 2)) / median if len(core) > 2 else 0.0
    sd1, sd2 = np.std(successive) / np.sqrt(2), np.std(rr[1:] + rr[:-1]) / np.sqrt(2)
    return np.array([nrmssd, turning, entropy, _cosen(rr, mean), lag_differences[0], min(lag_differences),
                     np.mean(np.abs(relative - 1) < NEAR_MEDIAN), np.mean(pairs), core_rmssd, sd1 / max(sd2, 1e-6)],
                    dtype=np.float32)


def _cosen(rr: np.ndarray, mean: float) -> float:
    """Sample entropy (m = 1, r = 30 ms), +1-smoothed so short series stay finite, minus ln(2r) and ln(mean RR)."""
    close = np.abs(rr[:, None] - rr[None, :]) <= COSEN_TOLERANCE_S
    pairs = np.triu(np.ones_like(close), 1)[:-1, :-1]
    matches_1 = np.sum(close[:-1, :-1] & pairs)
    matches_2 = np.sum(close[:-1, :-1] & close[1:, 1:] & pairs)
    return float(-np.log((matches_2 + 1) / (matches_1 + 1)) - np.log(2 * COSEN_TOLERANCE_S) - np.log(mean))


def window_features(beat_times_s: np.ndarray, window_ends_s: np.ndarray,
                    ectopic: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(features (n, len(FEATURES)), usable (n,) bool) for windows ending at window_ends_s.

    A window uses the last CONTEXT_BEATS intervals that end before its end; `ectopic` (a bool per beat, e.g. the
    beat model's V and F beats) leaves out the intervals that begin or end at such a beat (a premature ventricular
    beat makes the rhythm irregular without any fibrillation), and the context reaches back for others, at most
    CONTEXT_SPAN intervals (a device keeps that many beats). A window left with fewer than MIN_INTERVALS is not
    usable (its features are zero): too few beats to judge the rhythm.
    """
    order = np.argsort(np.asarray(beat_times_s, dtype=np.float64), kind="stable")
    times = np.asarray(beat_times_s, dtype=np.float64)[order]
    rr, interval_end = np.diff(times), times[1:]
    kept = np.ones(len(rr), bool)
    if ectopic is not None:
        flagged = np.asarray(ectopic, bool)[order]
        kept = ~(flagged[1:] | flagged[:-1])
    features = np.zeros((len(window_ends_s), len(FEATURES)), np.float32)
    usable = np.zeros(len(window_ends_s), bool)
    for i, end in enumerate(np.asarray(window_ends_s, dtype=np.float64)):
        last = int(np.searchsorted(interval_end, end, side="right"))  # intervals [0, last) end by the window's end
        span = slice(max(last - CONTEXT_SPAN, 0), last)
        context = rr[span][kept[span]][-CONTEXT_BEATS:]
        if len(context) >= MIN_INTERVALS:
            features[i], usable[i] = irregularity(context), True
    return features, usable
