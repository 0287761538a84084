/* Streaming resampler and causal IIR filter; see hs_dsp.h.
 *
 * Number types follow the Python's numpy dtypes, so that the host build makes the same numbers bit for bit:
 * - hs_resampler works in float, as resample_poly does on the Monitor's float32 signal with float32 taps.
 * - hs_filter works in double, as sosfilt does (CausalFilter casts the chunk to float64), and rounds its output to
 *   float as CausalFilter does. The Cortex-M4F's FPU is single precision only, so these doubles are emulated in
 *   software by libgcc (__aeabi_dmul, __aeabi_dadd: some tens of cycles each instead of 1-3): 9 double operations
 *   per section and sample, on the order of 1,000 cycles per sample for ecg_bandpass's 2 sections, about 0.1-0.2
 *   million cycles a second at 128 Hz, and about 2 KB of flash for the emulation routines (measured with
 *   arm-none-eabi-gcc 12: multiply, add, compare, float conversions). The state takes 10 doubles per section
 *   (320 bytes for the maximum of 4). Float would not give Python's numbers: the 0.5 Hz high-pass poles lie at
 *   radius 0.983, where the state's rounding errors decay slowly and add up.
 * Both sum in the order scipy does, rounding a * b + c twice as scipy's build does: gcc does so under -std=c99
 * (-ffp-contract=off); a firmware built with -std=gnu99 needs -ffp-contract=off, or the M4F's vfma fuses them. */
#include <math.h>
#include <string.h>
#include "hs_dsp.h"

#define HS_RESAMPLER_MAGIC 0x48535253u  /* "HSRS" */
#define HS_FILTER_MAGIC 0x48534946u     /* "HSIF" */

static int greatest_common_divisor(int a, int b)
{
    while (b != 0) {
        const int r = a % b;
        a = b;
        b = r;
    }
    return a;
}

static int all_finite_float(const float *x, int n)
{
    int i;
    for (i = 0; i < n; i++) {
        if (!isfinite(x[i])) {
            return 0;
        }
    }
    return 1;
}

size_t hs_resampler_state_size(void)
{
    return sizeof(hs_resampler_t);
}

int hs_resampler_init(hs_resampler_t *state, const hs_resampler_config_t *config)
{
    int longest;
    if (state == 0 || config == 0) {
        return HS_DSP_ERR_NULL;
    }
    memset(state, 0, sizeof(*state));  /* also the ring (IEEE 0.0f): the signal is zero before its first sample */
    if (config->up < 1 || config->down < 1 || config->up > HS_RESAMPLER_MAX_FACTOR
        || config->down > HS_RESAMPLER_MAX_FACTOR || greatest_common_divisor(config->up, config->down) != 1) {
        return HS_DSP_ERR_CONFIG;
    }
    state->up = config->up;
    state->down = config->down;
    if (config->up != config->down) {
        longest = config->up > config->down ? config->up : config->down;
        if (config->taps == 0) {
            return HS_DSP_ERR_NULL;
        }
        if (config->n_taps != 20 * longest + 1 || !all_finite_float(config->taps, config->n_taps)) {
            return HS_DSP_ERR_CONFIG;
        }
        state->half = 10 * longest;
        /* an output is made once the inputs reach up to 2 * up - 1 phases past its last tap (see emit) */
        state->history = 2 * state->half / state->up + 2;
        if (state->history > HS_RESAMPLER_MAX_HISTORY) {
            return HS_DSP_ERR_UNSUPPORTED;
        }
        state->taps = config->taps;
    }
    state->magic = HS_RESAMPLER_MAGIC;
    return HS_DSP_OK;
}

/* Outputs the inputs up to `surplus` complete: StreamResampler.process emits output n once input
 * ceil((n * down + half) / up) has arrived, that is once inputs * up - n * down >= half + up. */
static int64_t ready_outputs(const hs_resampler_t *state, int64_t surplus)
{
    const int64_t needed = (int64_t)state->half + state->up;
    return surplus >= needed ? (surplus - needed) / state->down + 1 : 0;
}

static int resampler_usable(const hs_resampler_t *state)
{
    return state->magic == HS_RESAMPLER_MAGIC;
}

int hs_resampler_output_count(const hs_resampler_t *state, int n, int *count)
{
    int64_t outputs;
    if (state == 0 || count == 0) {
        return HS_DSP_ERR_NULL;
    }
    if (!resampler_usable(state)) {
        return HS_DSP_ERR_STATE;
    }
    if (n < 0) {
        return HS_DSP_ERR_LENGTH;
    }
    if (state->finished) {
        return HS_DSP_ERR_FINISHED;
    }
    outputs = state->up == state->down ? n : ready_outputs(state, state->surplus + (int64_t)n * state->up);
    if (outputs > 0x7fffffff) {  /* only ratios far above a sensor's could get here */
        return HS_DSP_ERR_LENGTH;
    }
    *count = (int)outputs;
    return HS_DSP_OK;
}

/* The next output n, resample_poly's y[n] = sum over inputs k of x[k] * up * h[n * down + half - k * up], summed from
 * the oldest input to the newest in float, as upfirdn does. excess = surplus - half = inputs * up - (n * down + half):
 * how far, in phases of 1 / up input sample, the inputs reach past the output's last tap; the input m samples older
 * than the newest meets tap (m + 1) * up - excess. Inputs past the newest (at flush) are zero and left out; those
 * before the first are the zeroed ring's, zero terms. */
static float emit(const hs_resampler_t *state, int32_t excess)
{
    const float *newest = &state->ring[state->head + state->history - 1];
    const float up = (float)state->up;
    const int first = excess > 0 ? (excess - 1) / state->up : 0;             /* youngest age with a tap */
    const int last = (2 * state->half + excess) / state->up - 1;           /* oldest age with a tap */
    float sum = 0.0f;
    int age;
    for (age = last; age >= first; age--) {
        const float tap = state->taps[(age + 1) * state->up - excess] * up;  /* resample_poly's h *= up, in float */
        sum += newest[-age] * tap;
    }
    return sum;
}

int hs_resampler_process(hs_resampler_t *state, const float *x, int n, float *y, int capacity, int *n_out)
{
    int needed;
    int status;
    int made = 0;
    int i;
    if (n_out == 0) {
        return HS_DSP_ERR_NULL;
    }
    *n_out = 0;
    status = hs_resampler_output_count(state, n, &needed);
    if (status != HS_DSP_OK) {
        return status;
    }
    if ((n > 0 && x == 0) || (needed > 0 && y == 0)) {
        return HS_DSP_ERR_NULL;
    }
    if (capacity < 0) {
        return HS_DSP_ERR_LENGTH;
    }
    if (needed > capacity) {
        return HS_DSP_ERR_CAPACITY;
    }
    if (!all_finite_float(x, n)) {  /* checked before anything changes: an error consumes nothing */
        return HS_DSP_ERR_NOT_FINITE;
    }
    if (state->up == state->down) {
        if (n > 0) {
            memmove(y, x, (size_t)n * sizeof(*x));
        }
        *n_out = n;
        return HS_DSP_OK;
    }
    for (i = 0; i < n; i++) {
        state->ring[state->head] = x[i];
        state->ring[state->head + state->history] = x[i];
        state->head = state->head + 1 == state->history ? 0 : state->head + 1;
        state->surplus += state->up;
        while (state->surplus >= state->half + state->up) {
            y[made++] = emit(state, state->surplus - state->half);
            state->surplus -= state->down;
        }
    }
    *n_out = made;
    return HS_DSP_OK;
}

int hs_resampler_flush(hs_resampler_t *state, float *y, int capacity, int *n_out)
{
    int needed;
    int made = 0;
    if (state == 0 || n_out == 0) {
        return HS_DSP_ERR_NULL;
    }
    *n_out = 0;
    if (!resampler_usable(state)) {
        return HS_DSP_ERR_STATE;
    }
    if (capacity < 0) {
        return HS_DSP_ERR_LENGTH;
    }
    if (state->finished || state->up == state->down) {
        state->finished = 1;
        return HS_DSP_OK;
    }
    /* resample_poly makes ceil(inputs * up / down) outputs: those with n * down < inputs * up */
    needed = state->surplus > 0 ? (state->surplus + state->down - 1) / state->down : 0;
    if (needed > 0 && y == 0) {
        return HS_DSP_ERR_NULL;
    }
    if (needed > capacity) {
        return HS_DSP_ERR_CAPACITY;
    }
    while (made < needed) {
        y[made++] = emit(state, state->surplus - state->half);
        state->surplus -= state->down;
    }
    state->finished = 1;
    *n_out = made;
    return HS_DSP_OK;
}

size_t hs_filter_state_size(void)
{
    return sizeof(hs_filter_t);
}

int hs_filter_init(hs_filter_t *state, const hs_filter_config_t *config)
{
    int s;
    int k;
    if (state == 0 || config == 0) {
        return HS_DSP_ERR_NULL;
    }
    memset(state, 0, sizeof(*state));
    if (config->sos == 0 || config->zi == 0) {
        return HS_DSP_ERR_NULL;
    }
    if (config->sections < 1 || config->sections > HS_FILTER_MAX_SECTIONS) {
        return HS_DSP_ERR_CONFIG;
    }
    for (s = 0; s < config->sections; s++) {
        for (k = 0; k < 6; k++) {
            if (!isfinite(config->sos[6 * s + k])) {
                return HS_DSP_ERR_CONFIG;
            }
            state->sos[s][k] = config->sos[6 * s + k];
        }
        for (k = 0; k < 2; k++) {
            if (!isfinite(config->zi[2 * s + k])) {
                return HS_DSP_ERR_CONFIG;
            }
            state->steady[s][k] = config->zi[2 * s + k];
        }
        if (state->sos[s][3] != 1.0) {  /* sosfilt refuses sections with a0 != 1 */
            return HS_DSP_ERR_CONFIG;
        }
    }
    state->sections = config->sections;
    state->magic = HS_FILTER_MAGIC;
    return HS_DSP_OK;
}

int hs_filter_process(hs_filter_t *state, const float *x, int n, float *y)
{
    int i;
    int s;
    if (state == 0) {
        return HS_DSP_ERR_NULL;
    }
    if (state->magic != HS_FILTER_MAGIC) {
        return HS_DSP_ERR_STATE;
    }
    if (n < 0) {
        return HS_DSP_ERR_LENGTH;
    }
    if (n > 0 && (x == 0 || y == 0)) {
        return HS_DSP_ERR_NULL;
    }
    if (!all_finite_float(x, n)) {
        return HS_DSP_ERR_NOT_FINITE;
    }
    for (i = 0; i < n; i++) {
        double current = (double)x[i];
        if (!state->started) {  /* CausalFilter: sosfilt_zi(sos) * chunk[0] */
            for (s = 0; s < state->sections; s++) {
                state->z[s][0] = state->steady[s][0] * current;
                state->z[s][1] = state->steady[s][1] * current;
            }
            state->started = 1;
        }
        /* sosfilt's transposed direct form II, term for term */
        for (s = 0; s < state->sections; s++) {
            const double *c = state->sos[s];
            const double next = c[0] * current + state->z[s][0];
            state->z[s][0] = c[1] * current - c[4] * next + state->z[s][1];
            state->z[s][1] = c[2] * current - c[5] * next;
            current = next;
        }
        y[i] = (float)current;
    }
    return HS_DSP_OK;
}
