/* The device path's first two stages, equal to the Python Monitor's (sdk/device/monitor.py):
 *   hs_resampler: StreamResampler, scipy's resample_poly applied chunk by chunk (sensor rate -> model rate);
 *   hs_filter:    sdk.data.preprocess.CausalFilter, an SOS cascade that starts in steady state (ecg_bandpass).
 * One state per channel. All state lives in the caller's struct; nothing is allocated. A call that returns an error
 * has changed nothing, so the caller may fix the input and call again.
 * The numbers Python derives with scipy (the FIR taps, the SOS coefficients and their steady state) come in through
 * the configs; the exporter writes them as const tables. */
#ifndef HS_DSP_H
#define HS_DSP_H

#include <stddef.h>
#include <stdint.h>

#define HS_DSP_OK 0
#define HS_DSP_ERR_NULL (-1)          /* a pointer the call needs is NULL */
#define HS_DSP_ERR_CONFIG (-2)        /* factors, taps or coefficients that are not what Python would have made */
#define HS_DSP_ERR_UNSUPPORTED (-3)   /* a valid ratio whose filter needs more history than this build keeps */
#define HS_DSP_ERR_NOT_FINITE (-4)    /* a NaN or infinite input sample */
#define HS_DSP_ERR_LENGTH (-5)        /* a negative number of samples or capacity */
#define HS_DSP_ERR_CAPACITY (-6)      /* the output buffer is smaller than the outputs this call produces */
#define HS_DSP_ERR_FINISHED (-7)      /* samples after hs_resampler_flush: the stream has ended */
#define HS_DSP_ERR_STATE (-8)         /* a state no init has accepted */

/* Largest up or down factor: sdk.data.records.MAX_RESAMPLING_FACTOR. */
#define HS_RESAMPLER_MAX_FACTOR 10000
/* Input samples kept: floor(20 * max(up, down) / up) + 2 for the configured ratio, about 20 * fs_in / fs_out + 2:
 * 158 covers every input rate up to 1004 Hz into the 128 Hz ECG models, and up to 251 Hz into the 32 Hz PPG model
 * (one state per channel). A firmware that needs more may define it larger (8 bytes per sample). */
#ifndef HS_RESAMPLER_MAX_HISTORY
#define HS_RESAMPLER_MAX_HISTORY 158
#endif
#define HS_FILTER_MAX_SECTIONS 4

typedef struct {
    int up;                /* sdk.data.records.resample_factors(fs_in, fs_out): fs_out / fs_in = up / down, coprime */
    int down;
    int n_taps;            /* 20 * max(up, down) + 1; unused when up == down (pass-through) */
    const float *taps;     /* StreamResampler._filter: firwin(n_taps, 1 / max(up, down), window=("kaiser", 5.0)) as
                            * float32. Read, not copied: it must outlive the state (a const table in flash). */
} hs_resampler_config_t;

typedef struct {
    uint32_t magic;        /* set by a successful init */
    int up;
    int down;
    int half;              /* 10 * max(up, down): taps each side of the centre */
    int history;           /* input samples the ring keeps */
    int head;              /* next ring slot to write; also the oldest sample kept */
    int32_t surplus;       /* inputs * up - outputs * down: how far the inputs reach past the next output */
    int finished;          /* flushed: the stream has ended */
    const float *taps;
    float ring[2 * HS_RESAMPLER_MAX_HISTORY];  /* each sample twice, so the last `history` are contiguous */
} hs_resampler_t;

size_t hs_resampler_state_size(void);
int hs_resampler_init(hs_resampler_t *state, const hs_resampler_config_t *config);
/* *count = how many outputs hs_resampler_process of n more samples gives (exactly). */
int hs_resampler_output_count(const hs_resampler_t *state, int n, int *count);
/* Takes n samples x, writes the outputs they complete to y (at most capacity), their number to *n_out. The count
 * after each call equals StreamResampler.process's; at most ceil(n * up / down). */
int hs_resampler_process(hs_resampler_t *state, const float *x, int n, float *y, int capacity, int *n_out);
/* End of the stream: the last outputs, the input taken as zero past its end, as resample_poly pads it (at most
 * ceil((11 * max(up, down) - 1) / down), 18 for 80 Hz into 128 Hz). A second flush gives none. */
int hs_resampler_flush(hs_resampler_t *state, float *y, int capacity, int *n_out);

typedef struct {
    int sections;
    const double *sos;     /* sections x 6, b0 b1 b2 a0 a1 a2 with a0 == 1: scipy.signal.butter(..., output="sos") */
    const double *zi;      /* sections x 2: scipy.signal.sosfilt_zi(sos), the state of a unit step at rest */
} hs_filter_config_t;

typedef struct {
    uint32_t magic;
    int sections;
    int started;           /* the first sample has set the state */
    double sos[HS_FILTER_MAX_SECTIONS][6];
    double steady[HS_FILTER_MAX_SECTIONS][2];
    double z[HS_FILTER_MAX_SECTIONS][2];
} hs_filter_t;

size_t hs_filter_state_size(void);
/* Copies the coefficients: config may go afterwards. */
int hs_filter_init(hs_filter_t *state, const hs_filter_config_t *config);
/* Filters n samples x into y (n outputs; y may be x). The first sample of the stream starts the state in steady
 * state for itself, so a DC offset does not ring. */
int hs_filter_process(hs_filter_t *state, const float *x, int n, float *y);

#endif
