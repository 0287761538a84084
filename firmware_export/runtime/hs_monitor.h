/* The whole device path for ECG beat models in C, equal to the Python Monitor (sdk/device/monitor.py, _BeatTask):
 * raw samples at the sensor rate in, beats, signal-quality problems and explained alerts out.
 *
 *   sensor samples -> hs_quality (the gate) and, dropouts held at the last finite value, hs_resampler (model rate);
 *   model-rate samples -> hs_rpeak (R peaks) and hs_filter (ecg_bandpass) -> hs_channels (each beat's window);
 *   a window the gate passes -> the model (hs_model_api_t): label, probability, trace, embedding;
 *   beats and quality problems -> hs_policy -> alerts, with their excerpts and beat marks.
 *
 * Use: fill an hs_monitor_config_t (the sensor rate, the tables the exporter writes for it, the model's functions and
 * the stream's own model context), hs_monitor_init, then hs_monitor_feed (or hs_monitor_feed_int16) every chunk as it arrives and hs_monitor_finish at
 * the end of the signal. Events come through the caller's callback, in the order the Python Monitor returns them:
 * a chunk's quality events (each followed by its alert, if any), then its beats (each followed by its alerts).
 * Everything an event points to (trace, excerpt, embedding, beat marks) lives in the monitor's state and is valid only
 * during the callback: copy what must outlive it. The callback must not call the monitor.
 *
 * Equality with Python: every beat at the same sample, with the same label, every quality event and alert the same,
 * as long as hs_monitor_overflows is 0 (it counts whatever this build's fixed sizes could not hold, see below) and the
 * chunks are the Python Monitor's chunks. Probabilities, traces and embeddings agree to about 1e-7 (relative): the
 * generated library gives its scales as float, where Python multiplies by the same scales in float64.
 *
 * Memory: all state lives in the caller's hs_monitor_t and model context (no allocation, no static state); the state's
 * size is fixed by the
 * maxima below: 147,944 bytes with the defaults (sensor rates up to 500 Hz), 124,424 bytes built with
 * -DHS_MONITOR_MAX_FS=360 (hs_monitor_state_size() says it). At 360 Hz: the ventricular-run excerpt 34.6 KB (signal
 * and trace), the raw signal kept 24.5 KB, the model's window 12.3 KB (its trace at the sensor rate shares it) and
 * its int8 copy 3 KB, the filtered signal 8.7 KB, the parts' own states 30.8 KB (the R-peak detector 12.5, the gate
 * 9.5, the beat channels 6.7), beat marks 4 KB. Stack: about 1.6 KB on a Cortex-M4 (mostly hs_channels' template
 * scratch), plus the model's and the callback's.
 * Build every runtime file with the same -D flags: hs_monitor_init refuses parts compiled with other sizes. */
#ifndef HS_MONITOR_H
#define HS_MONITOR_H

#include <stddef.h>
#include <stdint.h>
#include "hs_channels.h"
#include "hs_dsp.h"
#include "hs_policy.h"
#include "hs_quality.h"
#include "hs_rpeak.h"

#define HS_MONITOR_OK 0
#define HS_MONITOR_HELD 1                 /* not an error: the chunk held NaN, infinite or out-of-range samples (beyond
                                           * +-HS_MONITOR_MAX_ABS_MV), which were held at the last finite value; the
                                           * gate reports them as a "nan" problem */
#define HS_MONITOR_ERR_NULL (-1)          /* a pointer the call needs is NULL */
#define HS_MONITOR_ERR_CONFIG (-2)        /* a table, a model or excerpt_s that is not what the Python Monitor has */
#define HS_MONITOR_ERR_UNSUPPORTED (-3)   /* a sensor rate below 80 Hz (the ECG band) or above HS_MONITOR_MAX_FS, or
                                           * a model larger than this build holds */
#define HS_MONITOR_ERR_LENGTH (-4)        /* a negative chunk, or one longer than hs_monitor_max_chunk */
#define HS_MONITOR_ERR_RANGE (-5)         /* a gain that is not finite, positive and at most
                                           * HS_MONITOR_MAX_ABS_MV / 32768 */
#define HS_MONITOR_ERR_FINISHED (-6)      /* samples after hs_monitor_finish: the signal has ended */
#define HS_MONITOR_ERR_STATE (-7)         /* a state no init has accepted */
#define HS_MONITOR_ERR_BUILD (-8)         /* a part compiled with other sizes than this file (a -D flag not given to
                                           * every runtime file) */
#define HS_MONITOR_ERR_INTERNAL (-9)      /* a part refused what the monitor handed it: a bug, never an input. The
                                           * state is then unusable until the next init */
/* On an error nothing has changed (but HS_MONITOR_ERR_INTERNAL): the caller may fix the call and make it again. */

/* Sensor rates this build holds: its buffers grow with the fastest. */
#ifndef HS_MONITOR_MAX_FS
#define HS_MONITOR_MAX_FS 500
#endif
#define HS_MONITOR_MIN_FS 80.0            /* twice the ECG band's upper edge (preprocess.check_input_rate) */
/* The longest model window (ecg_beat reads 6 s at 128 Hz) and its input rows (ecg, centre marker, rhythm, template
 * difference); classes and embedding channels. */
#ifndef HS_MONITOR_MAX_WINDOW
#define HS_MONITOR_MAX_WINDOW 768
#endif
#define HS_MONITOR_INPUTS HS_CHANNELS_BEAT_INPUTS
#define HS_MONITOR_MAX_CLASSES HS_POLICY_MAX_CLASSES
#ifndef HS_MONITOR_MAX_EMBEDDING
#define HS_MONITOR_MAX_EMBEDDING 64
#endif
/* A chunk is at most one second of signal: hs_monitor_max_chunk gives floor(HS_RPEAK_MAX_CHUNK * down / up) samples
 * (fs samples for a whole-Hz rate). Longer chunks are refused, not split: the R-peak detector rounds its integrator
 * chunk by chunk (tests/test_c_rpeak.py), so only the Python Monitor's own chunks give its exact beats; a caller with
 * a longer buffer feeds it in pieces of at most that, and the Python Monitor fed the same pieces agrees. */
#define HS_MONITOR_MAX_CHUNK HS_MONITOR_MAX_FS
#define HS_MONITOR_MAX_ABS_MV 1.0e6f      /* far past any ECG (the gate calls 10 mV noise): a wrong unit or garbage,
                                           * taken as a dropout (monitor.MAX_ABS_MV) */
/* Signal held back: the beats wait for the settled signal 3 s past them and for the R-peak detector, which after
 * long pauses may take several seconds to settle. The Python Monitor keeps ~7 s of filtered signal and 8 s of raw
 * signal on MIT-BIH; past HS_MONITOR_KEPT_S the oldest is dropped, counted in hs_monitor_overflows, and a beat whose
 * window needs it is reported unclassified (HS_MONITOR_PROBLEM_BACKLOG). */
#ifndef HS_MONITOR_KEPT_S
#define HS_MONITOR_KEPT_S 16
#endif
/* The longest alert excerpt, in seconds at HS_MONITOR_MAX_FS (16.7 s at 360 Hz with the defaults): a ventricular
 * run's spans its beats plus excerpt_s either side. A longer one (a sustained run's 36 s needs
 * -DHS_MONITOR_EXCERPT_S=40 at 500 Hz) is cut to its first HS_MONITOR_RUN_CAPACITY samples, flagged
 * (hs_monitor_alert_t.truncated) and counted in hs_monitor_overflows. */
#ifndef HS_MONITOR_EXCERPT_S
#define HS_MONITOR_EXCERPT_S 12
#endif
/* Beat marks: the classified beats remembered for alerts' details["beats"], at most 5 a second (the detector's
 * 200 ms refractory period) over an excerpt and the latency before it. */
#define HS_MONITOR_MAX_MARKS (5 * HS_MONITOR_EXCERPT_S + 64)

/* Derived sizes, in samples. */
#define HS_MONITOR_RAW_CAPACITY (HS_MONITOR_KEPT_S * HS_MONITOR_MAX_FS + HS_MONITOR_MAX_CHUNK)
#define HS_MONITOR_FILTERED_CAPACITY (HS_MONITOR_KEPT_S * HS_CHANNELS_MODEL_FS + HS_RPEAK_MAX_CHUNK)
#define HS_MONITOR_MAX_TRACE ((HS_MONITOR_MAX_WINDOW * HS_MONITOR_MAX_FS + HS_CHANNELS_MODEL_FS - 1) \
                              / HS_CHANNELS_MODEL_FS + 1)
#define HS_MONITOR_RUN_CAPACITY (HS_MONITOR_EXCERPT_S * HS_MONITOR_MAX_FS)

/* Events. */
#define HS_MONITOR_EVENT_BEAT 1
#define HS_MONITOR_EVENT_QUALITY 2
#define HS_MONITOR_EVENT_ALERT 3

#define HS_MONITOR_UNCLASSIFIED (-1)      /* a beat's label when it was not classified (Python: None) */
/* Why a beat was not classified: a signal-quality problem (HS_QUALITY_NAN ... HS_QUALITY_NOISE), or this: */
#define HS_MONITOR_PROBLEM_BACKLOG 5      /* its window reads signal this build could not keep (an overflow) */

/* The model, reached through its functions so that several models can live in one image. For a library generated by
 * `heartsight export` fill it with its macros and functions (HS_FS_HZ, HS_INPUT_CHANNELS, ..., hs_infer, ...). */
typedef struct {
    double fs;                        /* the model rate, Hz: HS_FS_HZ (128) */
    int input_channels;               /* HS_INPUT_CHANNELS: HS_MONITOR_INPUTS for a beat model */
    int input_length;                 /* HS_INPUT_LENGTH: the window, even, at most HS_MONITOR_MAX_WINDOW */
    int classes;                      /* HS_NUM_CLASSES, at most HS_MONITOR_MAX_CLASSES */
    const char *const *class_names;   /* hs_class_names: N, S, V, F (the policy reads S and V, the embedding N) */
    int embedding_length;             /* HS_LAST_CHANNELS (at most HS_MONITOR_MAX_EMBEDDING); 0: no embeddings */
    int last_length;                  /* HS_LAST_LENGTH: embedding = sum * last_scale / last_length */
    float last_scale;                 /* HS_LAST_SCALE */
    size_t context_bytes;             /* sizeof(hs_context_t): one stream's working memory for the model */
    void (*quantize_input)(const float *x, int8_t *q);     /* hs_quantize_input */
    /* hs_infer_with, hs_explain_with and hs_last_sums_with on the stream's context (hs_monitor_config_t.model_context) */
    int (*infer)(void *context, const int8_t *input, int8_t *logits);
    void (*explain)(void *context, int class_index, int16_t *trace);
    void (*last_sums)(const void *context, int32_t *sums);  /* NULL when embedding_length is 0 */
    float (*logit_scale)(void);                            /* hs_logit_scale */
    int32_t (*logit_zero_point)(void);                     /* hs_logit_zero_point */
    float (*trace_scale)(int class_index);                 /* hs_trace_scale */
    uint32_t (*head_version)(void);                        /* hs_head_version; NULL: 0 */
} hs_model_api_t;

/* What the monitor needs for one sensor rate; the exporter writes the tables as consts (tests/test_c_monitor.py shows
 * how Python makes them). Tables and the model are read, not copied: they must outlive the state. */
typedef struct {
    double fs;                            /* the sensor rate, Hz: HS_MONITOR_MIN_FS .. HS_MONITOR_MAX_FS */
    hs_resampler_config_t resampler;      /* fs -> the model rate (StreamResampler: factors and taps) */
    hs_filter_config_t bandpass;          /* preprocess.ecg_bandpass at the model rate */
    hs_rpeak_config_t rpeak;              /* RPeakDetector at the model rate */
    const hs_model_api_t *model;
    void *model_context;                  /* the model's working memory for this stream, model->context_bytes bytes
                                           * owned by the caller (a static hs_context_t of the export): activations
                                           * and explainer scratch. Two monitors running at the same time need two;
                                           * hs_monitor_config_for leaves it NULL for the caller to set. */
    double excerpt_s;                     /* signal each side of a beat in beat alerts, and before a quality problem
                                           * in its alert: (0, half the model window]; the Monitor's default is 3 */
} hs_monitor_config_t;

/* One R peak and its class (BeatEvent). */
typedef struct {
    int64_t sample;        /* the R peak, sensor sample */
    int64_t window_start;  /* sensor sample where the model window and the trace begin (negative at the start) */
    int label;             /* class index, or HS_MONITOR_UNCLASSIFIED */
    int problem;           /* unclassified: why (HS_QUALITY_* or HS_MONITOR_PROBLEM_BACKLOG); 0 when classified */
    double p;              /* the label's probability, as the policy reads it (BeatEvent.p is it rounded to 4 places:
                            * hs_policy_round(p, 4)); 0 when unclassified */
    const float *trace;    /* [trace_length] the label's saliency over the model window at the sensor rate; NULL when
                            * unclassified */
    int32_t trace_length;
} hs_monitor_beat_t;

/* A beat mark of an alert's excerpt (details["beats"]: [sample, class or None]). */
typedef struct {
    int64_t sample;        /* sensor sample of the R peak */
    int32_t label;         /* class index, or HS_MONITOR_UNCLASSIFIED (not classified, or not yet) */
} hs_monitor_mark_t;

/* One alert (AlertEvent): the policy's decision with what the Python Alert carries besides the device's names. */
typedef struct {
    hs_policy_alert_t decision;   /* type, label, sample, confidence and details (hs_policy.h) */
    uint32_t head_version;        /* the model head's version when it was raised (Alert.model["head_version"]) */
    int64_t excerpt_start;        /* sensor sample of the excerpt's first sample */
    int32_t excerpt_length;
    int32_t truncated;            /* 1: the excerpt was longer than HS_MONITOR_RUN_CAPACITY; this is its beginning */
    const float *signal;          /* [excerpt_length] the raw signal (mV), dropouts held at the last finite value */
    const float *trace;           /* [excerpt_length] the saliency aligned to it (all zero for signal_quality) */
    const double *embedding;      /* [embedding_length] details["embedding"] of beat alerts; NULL when none */
    int32_t embedding_length;
    const hs_monitor_mark_t *marks;  /* [n_marks] details["beats"], by sample; none for signal_quality (Python adds
                                      * no "beats" then, nor when the excerpt holds no R peak) */
    int32_t n_marks;
} hs_monitor_alert_t;

/* One event; kind says which member is meant. */
typedef struct {
    int kind;                     /* HS_MONITOR_EVENT_BEAT, _QUALITY or _ALERT */
    hs_monitor_beat_t beat;
    hs_quality_event_t quality;   /* a problem starts (end HS_QUALITY_ONGOING) or is over */
    hs_monitor_alert_t alert;
} hs_monitor_event_t;

typedef void (*hs_monitor_on_event_t)(const hs_monitor_event_t *event, void *user);

/* Where the monitor holds a stretch of a stream in one of its buffers: absolute samples [start, start + count) at
 * data[offset ...]. */
typedef struct {
    int64_t start;
    int32_t offset;
    int32_t count;
} hs_monitor_kept_t;

typedef struct {
    uint32_t magic;               /* set by a successful init */
    int32_t broken;               /* a part failed: HS_MONITOR_ERR_INTERNAL until the next init */
    int32_t finished;
    const hs_model_api_t *model;
    void *model_context;
    /* configuration */
    double fs;
    double model_fs;
    int32_t window;               /* model window, model-rate samples */
    int32_t trace_length;         /* the window at the sensor rate: round(window * fs / model_fs) */
    int32_t excerpt;              /* round(excerpt_s * fs) */
    int32_t raw_margin;           /* int(RAW_MARGIN_S * fs) */
    int32_t max_chunk;
    int32_t classes;
    int32_t normal_class;         /* "N": its beats carry no embedding; -1 when the model has none */
    int32_t v_class;
    int32_t block;                /* the gate's block: a quality alert's excerpt reaches this far past the problem */
    /* the stream */
    int64_t n_in;                 /* sensor samples taken */
    int32_t next_beat;            /* kept beat (hs_channels index) to classify next */
    float last_finite;
    uint32_t overflows;
    /* the parts */
    hs_resampler_t resampler;
    hs_filter_t bandpass;
    hs_rpeak_t rpeak;
    hs_channels_t channels;
    hs_quality_t quality;
    hs_policy_t policy;
    /* the signal kept: raw at the sensor rate (for excerpts), band-passed at the model rate (for windows) */
    hs_monitor_kept_t raw_kept;
    hs_monitor_kept_t filtered_kept;
    float raw[HS_MONITOR_RAW_CAPACITY];
    float filtered[HS_MONITOR_FILTERED_CAPACITY];
    /* one call's scratch */
    float chunk[HS_MONITOR_MAX_CHUNK];           /* the chunk with non-finite samples held */
    float resampled[HS_RPEAK_MAX_CHUNK];         /* its model-rate samples */
    int64_t peaks[HS_RPEAK_MAX_PEAKS];
    hs_quality_event_t quality_events[HS_QUALITY_MAX_PENDING];
    hs_policy_alert_t decisions[HS_POLICY_MAX_BEAT_ALERTS];
    union {                                      /* the model's input until it is quantized, then the trace */
        float input[HS_MONITOR_INPUTS * HS_MONITOR_MAX_WINDOW];
        float trace[HS_MONITOR_MAX_TRACE];       /* the beat's trace at the sensor rate; zeros for quality alerts */
    } scratch;
    int8_t quantized[HS_MONITOR_INPUTS * HS_MONITOR_MAX_WINDOW];
    int16_t model_trace[HS_MONITOR_MAX_WINDOW];
    int8_t logits[HS_MONITOR_MAX_CLASSES];
    int32_t sums[HS_MONITOR_MAX_EMBEDDING];
    double embedding[HS_MONITOR_MAX_EMBEDDING];  /* the beat's, when it has one */
    /* the current run of confident V beats: its first beat and the union of its beats' excerpts (Python's _Run) */
    int64_t run_first;
    int64_t run_start;
    int32_t run_length;
    int32_t run_truncated;
    int32_t run_has_embedding;
    double run_embedding[HS_MONITOR_MAX_EMBEDDING];
    float run_signal[HS_MONITOR_RUN_CAPACITY];
    float run_trace[HS_MONITOR_RUN_CAPACITY];
    /* classified beats, oldest first (a ring): Python's _beat_labels */
    hs_monitor_mark_t labels[HS_MONITOR_MAX_MARKS];
    int32_t labels_first;
    int32_t labels_count;
    hs_monitor_mark_t marks[HS_MONITOR_MAX_MARKS];
    hs_monitor_event_t event;
} hs_monitor_t;

size_t hs_monitor_state_size(void);
/* Checks the configuration and sets up every part for a new signal. A failed init leaves a state that every call
 * refuses (HS_MONITOR_ERR_STATE) until an init succeeds. */
int hs_monitor_init(hs_monitor_t *monitor, const hs_monitor_config_t *config);
/* *max_chunk: the most samples one feed takes at this sensor rate. */
int hs_monitor_max_chunk(const hs_monitor_t *monitor, int *max_chunk);
/* The next n samples (mV; NaN and inf are dropouts). on_event may be NULL (events dropped). Returns HS_MONITOR_OK,
 * HS_MONITOR_HELD, or an error. */
int hs_monitor_feed(hs_monitor_t *monitor, const float *samples, int n, hs_monitor_on_event_t on_event, void *user);
/* The same for ADC counts: sample = (float)count * mv_per_count, in float (the Python Monitor fed
 * np.float32(counts) * np.float32(mv_per_count)). */
int hs_monitor_feed_int16(hs_monitor_t *monitor, const int16_t *counts, int n, float mv_per_count,
                          hs_monitor_on_event_t on_event, void *user);
/* End of the signal: the last beats (their windows zero-padded), open problems closed, a run still going reported.
 * A second call gives nothing. */
int hs_monitor_finish(hs_monitor_t *monitor, hs_monitor_on_event_t on_event, void *user);
/* *overflows: what this build's fixed sizes could not hold (signal, beats, excerpts, marks, the detector's noise
 * list, the gate's stretches). 0: every result so far is the Python Monitor's. */
int hs_monitor_overflows(const hs_monitor_t *monitor, uint32_t *overflows);

/* Defined by an export's hs_monitor_tables.c (`heartsight export --sensor-fs`, firmware_export/monitor_tables.py): the
 * exported model's function table, and the configuration for a sensor rate the export was built for
 * (HS_MONITOR_ERR_UNSUPPORTED for any other rate). */
extern const hs_model_api_t hs_model_api;
int hs_monitor_config_for(double fs, hs_monitor_config_t *config);

#endif
