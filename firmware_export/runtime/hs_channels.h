/* The ECG models' input channels, equal to sdk.data.preprocess as the Python Monitor (sdk/device/monitor.py) uses it:
 *   the beat context (BeatContextBuilder: rr_relative, rr_change, amplitude_scale, from past beats only),
 *   each beat's R amplitude (r_amplitudes), the rhythm tracks (bump_track over EcgTracks),
 *   the beat model's window (beat_windows: scaled ECG, centre marker, rhythm, template difference),
 *   the rhythm model's window (rhythm_windows: scaled ECG, rhythm, RR change) and its too-few-beats check.
 *
 * Streaming use, as _EcgTask does: band-pass the model-rate ECG into a buffer the caller keeps (a ring, or a plain
 * array) and describe it with an hs_channels_signal_t; add each R peak the detector confirms with hs_channels_add_peak
 * (oldest first); build beat k's window once the filtered signal reaches its end and the detector has settled
 * HS_CHANNELS_BUMP_REACH samples past it; call hs_channels_forget_before with the Monitor's keep_from.
 *
 * Sample indices are absolute model-rate samples counted from the stream's first one, in int64_t. Beats are indexed
 * 0 .. hs_channels_count() - 1, oldest kept first, as the Python builder's lists (forgetting renumbers them).
 * All state lives in the caller's hs_channels_t (6,720 bytes with the default maxima: 2,560 for the kept beats, 4,096
 * for the 256-beat history); nothing is allocated. hs_channels_beat_window takes about 1.2 KB of stack on a Cortex-M4
 * (its template's scratch, 8 bytes per HS_CHANNELS_MAX_BEATS). A call that returns an error has changed no state; a
 * window function that fails leaves its output window undefined. */
#ifndef HS_CHANNELS_H
#define HS_CHANNELS_H

#include <stddef.h>
#include <stdint.h>

#define HS_CHANNELS_OK 0
#define HS_CHANNELS_ERR_NULL (-1)        /* a pointer the call needs is NULL */
#define HS_CHANNELS_ERR_CONFIG (-2)      /* a model rate other than HS_CHANNELS_MODEL_FS, a window length outside
                                          * [0, HS_CHANNELS_MAX_WINDOW], or a window this state was set up without */
#define HS_CHANNELS_ERR_STATE (-3)       /* a state no init has accepted */
#define HS_CHANNELS_ERR_NOT_FINITE (-4)  /* a NaN or infinite amplitude, or filtered sample under a window */
#define HS_CHANNELS_ERR_ORDER (-5)       /* an R peak outside [0, HS_CHANNELS_MAX_SAMPLE] or not after the last one */
#define HS_CHANNELS_ERR_FULL (-6)        /* HS_CHANNELS_MAX_BEATS beats kept: forget the old ones first */
#define HS_CHANNELS_ERR_ARGUMENT (-7)    /* a beat index, count or sample out of range, or a malformed signal view */
#define HS_CHANNELS_ERR_DROPPED (-8)     /* the call reads filtered samples the signal view no longer holds */

/* hs_channels_rhythm_problem's answers (preprocess.rhythm_problem: None or TOO_FEW_BEATS). */
#define HS_CHANNELS_NO_PROBLEM 0
#define HS_CHANNELS_TOO_FEW_BEATS 1

#define HS_CHANNELS_MODEL_FS 128         /* preprocess.ECG_FS: every constant below is in its samples */
#define HS_CHANNELS_BEAT_INPUTS 4        /* beat window rows: ecg, centre_marker, rhythm, template_delta */
#define HS_CHANNELS_RHYTHM_INPUTS 3      /* rhythm window rows: ecg, rhythm, rr_change */
#define HS_CHANNELS_HISTORY_BEATS 256    /* preprocess.HISTORY_BEATS: the "recent" RR and amplitude */
#define HS_CHANNELS_BUMP_REACH 12        /* int(4 * BUMP_SIGMA): a beat's bump spans r +- this (monitor.REACH) */
#define HS_CHANNELS_R_REACH 6            /* round(R_SEARCH_S * 128): the R amplitude is sought r +- this */
#define HS_CHANNELS_MIN_RHYTHM_BEATS 4   /* preprocess.MIN_RHYTHM_BEATS */
/* Largest R peak index: 2^45 samples (8,700 years at 128 Hz) keeps a sum of 256 RR intervals exact in a double. */
#define HS_CHANNELS_MAX_SAMPLE ((int64_t)1 << 45)

/* Longest window: ecg_af's 10 s (ecg_beat reads 6 s, 768). */
#ifndef HS_CHANNELS_MAX_WINDOW
#define HS_CHANNELS_MAX_WINDOW 1280
#endif
/* Beats kept between forgets. The Monitor keeps those whose bumps reach its kept signal: for ecg_af about 17 s
 * (a rhythm window, the beat windows past it, margins) plus the detector's latency, at most ~100 beats at the
 * detector's fastest (one per 200 ms refractory period); MIT-BIH records 100, 208 and 233 peak at 31. */
#ifndef HS_CHANNELS_MAX_BEATS
#define HS_CHANNELS_MAX_BEATS 128
#endif

typedef struct {
    int model_fs;       /* the model rate, Hz: HS_CHANNELS_MODEL_FS */
    int beat_window;    /* beat model window (spec.window, 768 for ecg_beat); 0: no beat windows */
    int rhythm_window;  /* rhythm model window (1280 for ecg_af); 0: no rhythm windows */
} hs_channels_config_t;

/* The band-passed model-rate ECG the caller keeps: absolute samples [start, start + count), sample i at
 * data[(head + (i - start)) % capacity]. A plain array is head 0, capacity >= count. Its end, start + count, is the end
 * of the filtered signal so far: samples past it, and before sample 0, read as zero (as the Monitor pads them);
 * samples in [0, start) were dropped and reading them is HS_CHANNELS_ERR_DROPPED. */
typedef struct {
    const float *data;
    int64_t start;
    int32_t capacity;
    int32_t head;
    int32_t count;
} hs_channels_signal_t;

/* One kept beat's context (preprocess.BeatContext's row). */
typedef struct {
    int64_t r;              /* R peak, model-rate sample */
    float rr_relative;      /* RR before the beat / mean of the last 256 RRs - 1, clipped to [-1, 2]; 0 for the first */
    float rr_change;        /* |rr_relative - the previous beat's| */
    float amplitude_scale;  /* median R amplitude of the last 256 beats (this one included), at least 0.05 */
} hs_channels_beat_t;

typedef struct {
    uint32_t magic;                   /* set by a successful init */
    int32_t beat_window;
    int32_t rhythm_window;
    /* the kept beats: a ring of `count` from slot `first`, oldest first */
    int32_t first;
    int32_t count;
    int64_t r[HS_CHANNELS_MAX_BEATS];
    float rr_relative[HS_CHANNELS_MAX_BEATS];
    float rr_change[HS_CHANNELS_MAX_BEATS];
    float amplitude_scale[HS_CHANNELS_MAX_BEATS];
    /* the history of every beat added (forgetting keeps it): the last beat, the last 256 RRs and amplitudes */
    int32_t has_last;
    float last_rr_relative;
    int64_t last_r;
    int64_t rr_sum;
    int32_t rr_count;
    int32_t rr_next;                  /* ring slot the next RR goes to (the oldest once full) */
    int32_t amplitude_count;
    int32_t amplitude_next;
    int64_t recent_rr[HS_CHANNELS_HISTORY_BEATS];
    float recent_amplitude[HS_CHANNELS_HISTORY_BEATS];   /* in arrival order, a ring like recent_rr */
    float sorted_amplitude[HS_CHANNELS_HISTORY_BEATS];   /* the same values, ascending: the median is in the middle */
} hs_channels_t;

size_t hs_channels_state_size(void);
int hs_channels_init(hs_channels_t *state, const hs_channels_config_t *config);

/* preprocess.r_amplitudes of one R peak as _EcgTask.take computes it: the largest |filtered sample| within
 * HS_CHANNELS_R_REACH of r (zero outside the signal so far). */
int hs_channels_r_amplitude(const hs_channels_signal_t *filtered, int64_t r, float *amplitude);

/* BeatContextBuilder.add: the next beat, its R peak (after the last one added) and its R amplitude. */
int hs_channels_add(hs_channels_t *state, int64_t r, float amplitude);

/* _EcgTask.take for one confirmed R peak: hs_channels_r_amplitude, then hs_channels_add. */
int hs_channels_add_peak(hs_channels_t *state, const hs_channels_signal_t *filtered, int64_t r);

/* BeatContextBuilder.forget: drops the n oldest kept beats (all if n exceeds them); what comes next is computed as if
 * they were still here. */
int hs_channels_forget(hs_channels_t *state, int n);

/* _EcgTask.forget: drops the beats whose bumps cannot reach keep_from (those before keep_from - BUMP_REACH) but the
 * last of them (a rhythm window's scale). *forgotten (may be NULL): how many, for the caller's beat indices. */
int hs_channels_forget_before(hs_channels_t *state, int64_t keep_from, int *forgotten);

/* Kept beats, or a negative status. */
int hs_channels_count(const hs_channels_t *state);

/* Kept beat k's context. */
int hs_channels_beat(const hs_channels_t *state, int k, hs_channels_beat_t *beat);

/* preprocess.beat_windows of kept beat k: window[HS_CHANNELS_BEAT_INPUTS][beat_window], row-major, starting at
 * r - beat_window / 2. Reads every kept beat (the rhythm track and template difference see beats past beat k). */
int hs_channels_beat_window(const hs_channels_t *state, int k, const hs_channels_signal_t *filtered, float *window);

/* preprocess.rhythm_windows of the window from absolute sample start (|start| <= HS_CHANNELS_MAX_SAMPLE):
 * window[HS_CHANNELS_RHYTHM_INPUTS][rhythm_window]. The ECG is scaled by the last kept beat before the window's end
 * (the first kept beat if none is; by 1 if none is kept). A window past the signal's end is zero there. */
int hs_channels_rhythm_window(const hs_channels_t *state, int64_t start, const hs_channels_signal_t *filtered,
                              float *window);

/* preprocess.rhythm_problem of the rhythm window from start over the kept beats: HS_CHANNELS_TOO_FEW_BEATS when
 * fewer than HS_CHANNELS_MIN_RHYTHM_BEATS R peaks lie in it, else HS_CHANNELS_NO_PROBLEM; or a negative status. */
int hs_channels_rhythm_problem(const hs_channels_t *state, int64_t start);

#endif
