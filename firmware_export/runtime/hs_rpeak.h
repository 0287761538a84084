/* The streaming R-peak detector of the device path, equal to sdk.data.rpeak.RPeakDetector (Pan-Tompkins with
 * adaptive levels, the T-wave rule, search-back, the R extremum located against the local median baseline).
 * Feed it the ECG lead at the model rate (what sdk.device.monitor._EcgTask.take gives the Python detector); it
 * returns R-peak sample indices, counted from the first sample ever fed, in the same calls and at the same samples
 * as the Python detector fed the same chunks, and the same settled_until after every call.
 *
 * All state lives in the caller's hs_rpeak_t; nothing is allocated. A call that returns an error has changed
 * nothing (except HS_RPEAK_ERR_INTERNAL, which no input can cause). The numbers Python derives with scipy (the
 * band-pass section, its steady state, its group delay) come in through hs_rpeak_config_t; the exporter writes them
 * as constants (tests/test_c_rpeak.py's rpeak_config shows how). */
#ifndef HS_RPEAK_H
#define HS_RPEAK_H

#include <stddef.h>
#include <stdint.h>

#define HS_RPEAK_OK 0
#define HS_RPEAK_ERR_NULL (-1)         /* a pointer the call needs is NULL */
#define HS_RPEAK_ERR_CONFIG (-2)       /* coefficients or a delay that are not a stable 5-15 Hz band-pass's */
#define HS_RPEAK_ERR_UNSUPPORTED (-3)  /* fs below HS_RPEAK_MIN_FS, above HS_RPEAK_MAX_FS, or not finite */
#define HS_RPEAK_ERR_LENGTH (-4)       /* a negative chunk, or one longer than HS_RPEAK_MAX_CHUNK */
#define HS_RPEAK_ERR_CAPACITY (-5)     /* a peak buffer shorter than HS_RPEAK_MAX_PEAKS */
#define HS_RPEAK_ERR_FINISHED (-6)     /* samples after hs_rpeak_flush: the signal has ended */
#define HS_RPEAK_ERR_STATE (-7)        /* a state no init has accepted */
#define HS_RPEAK_ERR_INTERNAL (-8)     /* a queue bound the code relies on was broken: a bug, reported, not written */

/* Below 40 Hz the 15 Hz band edge is too close to Nyquist (sdk.data.rpeak.MIN_FS). */
#define HS_RPEAK_MIN_FS 40
/* The highest rate this build runs at; the buffers below grow with it. 128 Hz is the ECG models' rate; define it
 * larger (e.g. -DHS_RPEAK_MAX_FS=360 for MIT-BIH's native rate) to run the detector offline at a sensor's rate. */
#ifndef HS_RPEAK_MAX_FS
#define HS_RPEAK_MAX_FS 128
#endif
/* Most samples one hs_rpeak_process call takes: 1 s at the highest rate unless defined otherwise. The Python
 * detector rounds its integration filter chunk by chunk, so a caller that splits a longer chunk gets results equal
 * to Python's fed the split chunks. */
#ifndef HS_RPEAK_MAX_CHUNK
#define HS_RPEAK_MAX_CHUNK HS_RPEAK_MAX_FS
#endif
/* Candidates judged noise since the last beat, kept for search-back. MIT-BIH (all 48 records, 128 and 360 Hz)
 * never holds more than 5; more than 48 needs over 10 s without a beat or a search-back (a mean RR over 6 s).
 * When it is full the oldest is forgotten (counted by hs_rpeak_forgotten): from then on results may differ from
 * Python's, which keeps them all. */
#ifndef HS_RPEAK_MAX_NOISE
#define HS_RPEAK_MAX_NOISE 48
#endif

/* ceil(ms / 1000 * HS_RPEAK_MAX_FS): at least the samples sdk.data.rpeak rounds ms to at any supported rate. */
#define HS_RPEAK_SAMPLES_AT_MAX(ms) ((HS_RPEAK_MAX_FS * (ms) + 999) / 1000)
#define HS_RPEAK_MAX_MWI HS_RPEAK_SAMPLES_AT_MAX(150)         /* MWI_SECONDS */
#define HS_RPEAK_MAX_NEIGHBOURHOOD HS_RPEAK_SAMPLES_AT_MAX(200)
#define HS_RPEAK_MAX_LOCATE HS_RPEAK_SAMPLES_AT_MAX(50)
#define HS_RPEAK_MAX_BASELINE HS_RPEAK_SAMPLES_AT_MAX(150)
#define HS_RPEAK_MAX_BAND_DELAY HS_RPEAK_SAMPLES_AT_MAX(50)   /* the band-pass delays 26-36 ms at 40-1000 Hz */
#define HS_RPEAK_MAX_LEARNING HS_RPEAK_SAMPLES_AT_MAX(2000)
/* Samples a decision reaches back (sdk.data.rpeak's _history) and forward (_lookahead), and one chunk. */
#define HS_RPEAK_MAX_SPAN (HS_RPEAK_MAX_NEIGHBOURHOOD + 1 + HS_RPEAK_MAX_MWI + HS_RPEAK_MAX_BAND_DELAY \
                           + HS_RPEAK_MAX_LOCATE + HS_RPEAK_MAX_BASELINE + HS_RPEAK_MAX_NEIGHBOURHOOD \
                           + HS_RPEAK_MAX_CHUNK)
/* The ring holding that span, a power of two so that an absolute sample index maps to a slot with a mask. */
#define HS_RPEAK_RING (HS_RPEAK_MAX_SPAN <= 256 ? 256 : HS_RPEAK_MAX_SPAN <= 512 ? 512 \
                       : HS_RPEAK_MAX_SPAN <= 1024 ? 1024 : HS_RPEAK_MAX_SPAN <= 2048 ? 2048 : 4096)
/* Candidates found before the first decision (2 s of learning plus a chunk, one per 0.2 s at the least). */
#define HS_RPEAK_MAX_QUEUE (13 + HS_RPEAK_MAX_CHUNK / 8)
/* Most peaks one call can confirm, and so the least capacity of the buffer it writes them to. */
#define HS_RPEAK_MAX_PEAKS (HS_RPEAK_MAX_QUEUE + HS_RPEAK_MAX_NOISE)

typedef struct {
    double fs;               /* Hz, HS_RPEAK_MIN_FS .. HS_RPEAK_MAX_FS */
    /* sos = scipy.signal.butter(1, (5, 15), "bandpass", fs=fs, output="sos"), one section: */
    double b[3];             /* sos[0, 0:3] */
    double a[2];             /* sos[0, 4:6] (sos[0, 3] is 1) */
    double zi[2];            /* scipy.signal.sosfilt_zi(sos)[0]: the state of a unit step at rest */
    int band_delay;          /* round(group_delay(sos2tf(sos), w=[10], fs=fs)), samples */
} hs_rpeak_config_t;

typedef struct {
    int64_t time;            /* sample of the integrated signal's maximum: the candidate's place in time */
    int64_t r_index;         /* the R wave in the raw signal: what is reported */
    double height;           /* the integrated signal there: the QRS energy */
    double slope;            /* the steepest band-passed slope under the integration window */
} hs_rpeak_candidate_t;

typedef struct {
    uint32_t magic;          /* set by a successful init */
    /* configuration, lengths in samples as sdk.data.rpeak rounds them at this fs */
    double fs;
    double b[3];
    double a[2];
    double zi[2];
    double mwi_tap;          /* 1 / mwi_len, each tap of the moving-window integrator */
    int band_delay;
    int mwi_len;
    int neighbourhood;
    int t_wave;
    int learning_len;
    int locate;
    int baseline;
    int lookahead;
    /* filters */
    int started;             /* the first sample has set the band-pass state */
    int finished;            /* flushed: the signal has ended */
    double band_state[2];
    double last_band;
    double mwi_state[HS_RPEAK_MAX_MWI];  /* the integrator's partial sums reaching into the next chunk */
    int64_t n_seen;
    int64_t scanned_until;   /* every candidate before this sample has been found */
    /* the recent signal, slot = absolute index & (HS_RPEAK_RING - 1) */
    float raw[HS_RPEAK_RING];            /* the input, NaN and inf as 0 */
    double band[HS_RPEAK_RING];          /* band-passed */
    double slope[HS_RPEAK_RING];         /* |derivative of band| */
    double mwi[HS_RPEAK_RING];           /* moving-window integral of slope^2 */
    double learning[HS_RPEAK_MAX_LEARNING];  /* the integral over the first 2 s, for the initial levels */
    double terms[HS_RPEAK_MAX_MWI];      /* scratch: one integrator output's terms, in numpy's order */
    float window[2 * HS_RPEAK_MAX_BASELINE + 1];  /* scratch: the baseline window, sorted for its median */
    /* decisions */
    hs_rpeak_candidate_t queue[HS_RPEAK_MAX_QUEUE];  /* found, not yet judged, oldest first */
    int queue_count;
    hs_rpeak_candidate_t noise[HS_RPEAK_MAX_NOISE];  /* judged noise since the last beat or search-back */
    int noise_count;
    uint32_t forgotten;      /* noise candidates dropped because the list was full */
    int learned;             /* the signal and noise levels are set */
    double signal_level;
    double noise_level;
    int64_t rr[8];           /* the last RR intervals (sdk.data.rpeak.RR_HISTORY), a ring */
    int rr_count;
    int rr_next;
    int has_last_beat;
    hs_rpeak_candidate_t last_beat;
    int64_t search_from;     /* the next search-back fires 1.66 mean RR after this sample */
} hs_rpeak_t;

size_t hs_rpeak_state_size(void);
int hs_rpeak_init(hs_rpeak_t *state, const hs_rpeak_config_t *config);
/* Takes n (0 .. HS_RPEAK_MAX_CHUNK) samples x; NaN and inf count as 0, as in Python. Writes the R peaks this chunk
 * confirms to peaks (increasing, never repeating earlier ones; capacity >= HS_RPEAK_MAX_PEAKS) and their number to
 * *n_peaks. */
int hs_rpeak_process(hs_rpeak_t *state, const float *x, int n, int64_t *peaks, int capacity, int *n_peaks);
/* End of the signal: the peaks still pending. A second flush gives none; process after flush is an error. */
int hs_rpeak_flush(hs_rpeak_t *state, int64_t *peaks, int capacity, int *n_peaks);
/* Every R peak before *settled has been reported, and no later call can add one (RPeakDetector.settled_until). */
int hs_rpeak_settled_until(const hs_rpeak_t *state, int64_t *settled);
/* Noise candidates forgotten because HS_RPEAK_MAX_NOISE was full: 0 means the results are Python's. */
int hs_rpeak_forgotten(const hs_rpeak_t *state, uint32_t *forgotten);

#endif
