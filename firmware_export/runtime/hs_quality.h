/* The signal-quality gate, equal to the Python Monitor's (sdk.device.quality.QualityGate): finds the stretches of raw
 * signal no model should read (NaN dropouts, flat lines, clipping, noise) before anything is classified.
 *
 * Feed raw samples at the sensor rate (mV for ECG) with hs_quality_process; it reports problems as events, twice each:
 * when first known (end HS_QUALITY_ONGOING, for a prompt alert) and when over. Before classifying a model window ask
 * hs_quality_window_problem, once hs_quality_known_until has passed the window's last sensor sample. Call
 * hs_quality_flush at the end of the signal, hs_quality_forget to drop stretches nobody will ask about again.
 *
 * Samples are float, as the Monitor hands them to its gate (float32); the gate computes in double, as Python does.
 * Sample indices count from the first sample of the stream, in int64_t (no wrap in any device's life).
 * All state lives in the caller's hs_quality_t (9,464 bytes; 5,624 with HS_QUALITY_MAX_FS 360); nothing is
 * allocated. A call that returns an error has changed nothing. Link with -lm (rint, ceil, floor at init and in
 * hs_quality_window_problem). */
#ifndef HS_QUALITY_H
#define HS_QUALITY_H

#include <stddef.h>
#include <stdint.h>

#define HS_QUALITY_OK 0
#define HS_QUALITY_ERR_NULL (-1)         /* a pointer the call needs is NULL */
#define HS_QUALITY_ERR_UNSUPPORTED (-2)  /* a sensor rate that is not finite or outside [MIN_FS, MAX_FS] */
#define HS_QUALITY_ERR_SIGNAL (-3)       /* neither HS_QUALITY_ECG nor HS_QUALITY_PPG */
#define HS_QUALITY_ERR_ARGUMENT (-4)     /* a negative count, a capacity under 1, a model rate or a sample index
                                          * out of range */
#define HS_QUALITY_ERR_FINISHED (-5)     /* samples after hs_quality_flush: the signal has ended */
#define HS_QUALITY_ERR_STATE (-6)        /* a state no init has accepted */
#define HS_QUALITY_OUTPUT_FULL (-7)      /* not an error: the events array is full; nothing is lost. Handle the events,
                                          * then call again with the samples not consumed (possibly none) */

/* Signals (hs_quality_config_t.signal): ECG is also judged for noise, and its clipping needs steep edges. */
#define HS_QUALITY_ECG 0
#define HS_QUALITY_PPG 1

/* Kinds of problem; hs_quality_kind_name gives the names Python uses ("nan", "flat_line", "clipping", "noise"). */
#define HS_QUALITY_NONE 0
#define HS_QUALITY_NAN 1
#define HS_QUALITY_FLAT_LINE 2
#define HS_QUALITY_CLIPPING 3
#define HS_QUALITY_NOISE 4
#define HS_QUALITY_KINDS 4

#define HS_QUALITY_ONGOING (-1)          /* hs_quality_event_t.end of a problem that is still going on */

/* Sensor rates supported. The fastest sets the buffer (three half-second blocks of floats: 6,000 bytes at 1000 Hz);
 * a firmware for a slower sensor may define it lower (360: 2,160 bytes). Below 2 Hz a problem could end and start
 * again within one block, and the event bound below would not hold. */
#ifndef HS_QUALITY_MAX_FS
#define HS_QUALITY_MAX_FS 1000
#endif
#define HS_QUALITY_MIN_FS 2
#define HS_QUALITY_MAX_BLOCK (HS_QUALITY_MAX_FS >= 8 ? (HS_QUALITY_MAX_FS + 1) / 2 : 4)
#define HS_QUALITY_BUFFER (3 * HS_QUALITY_MAX_BLOCK)  /* a block and one block of context either side */

/* Bad stretches kept for hs_quality_problem, between two hs_quality_forget calls. The Monitor forgets all but the
 * last ~30 s (a 10 s rhythm window, the one after it, excerpts and margins); 128 stretches hold a dropout every
 * quarter second over that. When full, a new stretch is merged into the newest one kept: the answers may then say a
 * problem where Python says another or none, never none where Python says one; hs_quality_overflows counts it. */
#ifndef HS_QUALITY_MAX_STRETCHES
#define HS_QUALITY_MAX_STRETCHES 128
#endif

/* Events one block can give: per kind at most the close of an old problem and the start of a new one. Events wait
 * here until the caller's array has room. */
#define HS_QUALITY_MAX_PENDING (2 * HS_QUALITY_KINDS)

typedef struct {
    double fs;      /* sensor rate, Hz */
    int signal;     /* HS_QUALITY_ECG or HS_QUALITY_PPG */
} hs_quality_config_t;

typedef struct {
    int64_t start;  /* first bad sample */
    int64_t end;    /* past the last bad sample; HS_QUALITY_ONGOING in the event that opens a problem */
    int32_t kind;   /* HS_QUALITY_NAN ... HS_QUALITY_NOISE */
} hs_quality_event_t;

typedef struct {
    int64_t start;
    int64_t end;
    int32_t kind;
} hs_quality_stretch_t;

typedef struct {
    uint32_t magic;                  /* set by a successful init */
    int signal;
    double fs;
    int32_t block;                   /* samples per block: round(0.5 s * fs), at least 4 */
    int32_t clip_min;                /* shortest clipped run */
    int32_t flat_blocks;             /* flat blocks in a row that make a flat line */
    int32_t merge;                   /* problems of one kind closer than this are one */
    int64_t buffer_start;            /* the sample buffer[0] holds: the start of the block before the next one */
    int64_t n_seen;                  /* samples taken; buffer holds [buffer_start, n_seen) */
    int64_t next;                    /* the next block to judge */
    int64_t known_until;
    int64_t flat_start;              /* first sample of the current run of flat blocks; -1: none */
    int32_t flat_count;
    int32_t n_bad;
    int32_t n_open;
    int32_t n_pending;
    int32_t pending_first;           /* pending[pending_first .. n_pending) are still to deliver */
    int32_t stage;                   /* streaming, flushing, flushed */
    uint32_t overflows;
    hs_quality_stretch_t bad[HS_QUALITY_MAX_STRETCHES];  /* runs of bad samples, oldest first */
    hs_quality_stretch_t open[HS_QUALITY_KINDS];         /* reported problems still open, in the order opened */
    hs_quality_event_t pending[HS_QUALITY_MAX_PENDING];
    float buffer[HS_QUALITY_BUFFER];
} hs_quality_t;

size_t hs_quality_state_size(void);
int hs_quality_init(hs_quality_t *state, const hs_quality_config_t *config);

/* Takes up to `count` samples; writes the events they complete to events (at most capacity >= 1), their number to
 * *n_events, and the samples taken to *consumed. HS_QUALITY_OK: every sample taken and every event delivered.
 * HS_QUALITY_OUTPUT_FULL: call again with samples + *consumed (count - *consumed of them, possibly 0) for the rest.
 * Non-finite samples are valid: they are the "nan" problem. A chunk of any length:
 *     int done = 0, status;
 *     do {
 *         status = hs_quality_process(&gate, x + done, n - done, events, 8, &n_events, &taken);
 *         ... handle events[0 .. n_events) ...
 *         done += taken;
 *     } while (status == HS_QUALITY_OUTPUT_FULL); */
int hs_quality_process(hs_quality_t *state, const float *samples, int count, hs_quality_event_t *events,
                       int capacity, int *n_events, int *consumed);

/* End of the signal: judges what is left and closes every open problem; HS_QUALITY_OUTPUT_FULL: call it again.
 * Once done, known_until is every sample taken and a further flush gives no events. */
int hs_quality_flush(hs_quality_t *state, hs_quality_event_t *events, int capacity, int *n_events);

/* *known_until: the quality of every sample before it is decided (QualityGate.known_until). */
int hs_quality_known_until(const hs_quality_t *state, int64_t *known_until);

/* *kind: the kind of the first bad stretch (oldest first) overlapping samples [start, end), HS_QUALITY_NONE if they
 * are clean. */
int hs_quality_problem(const hs_quality_t *state, int64_t start, int64_t end, int *kind);

/* hs_quality_problem of a model window of `length` samples from `start`, counted at the model's rate model_fs:
 * every sensor sample it touches, [floor(start * fs / model_fs), ceil((start + length) * fs / model_fs)). */
int hs_quality_window_problem(const hs_quality_t *state, int64_t start, int64_t length, double model_fs, int *kind);

/* Drops the bad stretches that end at or before this sample (nobody will ask about them again). */
int hs_quality_forget(hs_quality_t *state, int64_t before);

/* *block: samples per block (the Monitor's quality alert excerpts reach this far past a problem's start). */
int hs_quality_block_samples(const hs_quality_t *state, int *block);

/* *overflows: stretches merged because HS_QUALITY_MAX_STRETCHES were kept; 0 means every answer is Python's. */
int hs_quality_overflows(const hs_quality_t *state, uint32_t *overflows);

/* "nan", "flat_line", "clipping", "noise"; "" for any other number. */
const char *hs_quality_kind_name(int kind);

#endif
