/* The ECG models' input channels; see hs_channels.h. sdk/data/preprocess.py is the specification, float for float.
 *
 * Precision follows numpy's dtypes so that the host build makes Python's numbers exactly:
 * - double in one place: a beat's rr_relative, RR / mean of the recent RRs - 1, which Python computes on Python ints
 *   and floats (float64) before rounding it to float32. That is two double divisions and a subtraction per beat,
 *   emulated in software on a Cortex-M4F (no double FPU): a few hundred cycles per beat, nothing per sample.
 * - float everywhere else (the filtered ECG, amplitudes, medians, bumps and windows are float32 in Python).
 * Products are added in separate steps: build without floating-point contraction into fused multiply-adds (gcc's
 * default under -std=c99; -ffp-contract=off for other compilers) and with FLT_EVAL_METHOD 0 (SSE on x86-64, the
 * Cortex-M4F's single-precision FPU), or sums round differently from numpy's. */
#include <float.h>
#include <math.h>
#include <string.h>
#include "hs_channels.h"

#define HS_CHANNELS_MAGIC 0x48534348u  /* "HSCH" */

#define ECG_CLIP 8.0f                  /* the scaled ECG is clipped to +- this */
#define AMPLITUDE_FLOOR 0.05f          /* mV: a lead-off must not blow the scale up */
#define TEMPLATE_BEFORE 32             /* round(0.25 s * 128): a template beat from 0.25 s before its R peak */
#define TEMPLATE_AFTER 58              /* round(0.45 s * 128): to 0.45 s after it */
#define TEMPLATE_MIN_RR (-0.15f)       /* TEMPLATE_MIN_RR, compared in float32 as numpy compares it */

/* float32(exp(-0.5 * (k / 3)^2)) for k = -12 .. 12: bump_track's shape, as numpy rounds it (exact, so no exp()). */
static const float bump_shape[2 * HS_CHANNELS_BUMP_REACH + 1] = {
    0x1.5fc210p-12f, 0x1.3b95aep-10f, 0x1.fab6c2p-9f, 0x1.6c0504p-7f, 0x1.d40464p-6f, 0x1.0d395cp-4f,
    0x1.152aaap-3f, 0x1.feac5ep-3f, 0x1.a4fa9ep-2f, 0x1.368b30p-1f, 0x1.99fa40p-1f, 0x1.e454ccp-1f,
    0x1.000000p+0f,
    0x1.e454ccp-1f, 0x1.99fa40p-1f, 0x1.368b30p-1f, 0x1.a4fa9ep-2f, 0x1.feac5ep-3f, 0x1.152aaap-3f,
    0x1.0d395cp-4f, 0x1.d40464p-6f, 0x1.6c0504p-7f, 0x1.fab6c2p-9f, 0x1.3b95aep-10f, 0x1.5fc210p-12f,
};

static int is_finite(float value)
{
    return value == value && value <= FLT_MAX && value >= -FLT_MAX;
}

static int valid_state(const hs_channels_t *state)
{
    return state != 0 && state->magic == HS_CHANNELS_MAGIC;
}

static int valid_signal(const hs_channels_signal_t *s)
{
    return s->data != 0 && s->capacity > 0 && s->head >= 0 && s->head < s->capacity && s->count >= 0
           && s->count <= s->capacity && s->start >= 0 && s->start <= HS_CHANNELS_MAX_SAMPLE;
}

/* The ring slot of kept beat k. */
static int32_t slot(const hs_channels_t *state, int32_t k)
{
    const int32_t at = state->first + k;
    return at >= HS_CHANNELS_MAX_BEATS ? at - HS_CHANNELS_MAX_BEATS : at;
}

/* Filtered samples [from, from + n) into out: zero before sample 0 and past the signal's end, as _Samples.slice
 * pads them. */
static int read_samples(const hs_channels_signal_t *s, int64_t from, int32_t n, float *out)
{
    const int64_t end = s->start + s->count;
    int32_t i;
    for (i = 0; i < n; i++) {
        const int64_t t = from + i;
        if (t < 0 || t >= end) {
            out[i] = 0.0f;
        } else if (t < s->start) {
            return HS_CHANNELS_ERR_DROPPED;
        } else {
            int64_t at = s->head + (t - s->start);  /* < 2 * capacity */
            if (at >= s->capacity) {
                at -= s->capacity;
            }
            out[i] = s->data[at];
            if (!is_finite(out[i])) {
                return HS_CHANNELS_ERR_NOT_FINITE;
            }
        }
    }
    return HS_CHANNELS_OK;
}

size_t hs_channels_state_size(void)
{
    return sizeof(hs_channels_t);
}

int hs_channels_init(hs_channels_t *state, const hs_channels_config_t *config)
{
    if (state == 0 || config == 0) {
        return HS_CHANNELS_ERR_NULL;
    }
    if (config->model_fs != HS_CHANNELS_MODEL_FS || config->beat_window < 0
        || config->beat_window > HS_CHANNELS_MAX_WINDOW || config->rhythm_window < 0
        || config->rhythm_window > HS_CHANNELS_MAX_WINDOW) {
        return HS_CHANNELS_ERR_CONFIG;
    }
    memset(state, 0, sizeof(*state));
    state->beat_window = config->beat_window;
    state->rhythm_window = config->rhythm_window;
    state->magic = HS_CHANNELS_MAGIC;
    return HS_CHANNELS_OK;
}

int hs_channels_r_amplitude(const hs_channels_signal_t *filtered, int64_t r, float *amplitude)
{
    float near[2 * HS_CHANNELS_R_REACH + 1];
    float largest;
    int status;
    int i;
    if (filtered == 0 || amplitude == 0) {
        return HS_CHANNELS_ERR_NULL;
    }
    if (!valid_signal(filtered) || r < 0 || r > HS_CHANNELS_MAX_SAMPLE) {
        return HS_CHANNELS_ERR_ARGUMENT;
    }
    status = read_samples(filtered, r - HS_CHANNELS_R_REACH, 2 * HS_CHANNELS_R_REACH + 1, near);
    if (status != HS_CHANNELS_OK) {
        return status;
    }
    largest = fabsf(near[0]);
    for (i = 1; i < 2 * HS_CHANNELS_R_REACH + 1; i++) {
        if (fabsf(near[i]) > largest) {
            largest = fabsf(near[i]);
        }
    }
    *amplitude = largest;
    return HS_CHANNELS_OK;
}

/* The recent amplitudes, ascending: value in, and (once 256 are kept) the oldest one out. */
static void update_sorted_amplitudes(hs_channels_t *state, float value, int evict, float evicted)
{
    float *sorted = state->sorted_amplitude;
    int32_t n = state->amplitude_count;
    int32_t at;
    if (evict) {
        at = 0;
        while (at < n - 1 && sorted[at] < evicted) {
            at++;
        }
        memmove(sorted + at, sorted + at + 1, (size_t)(n - 1 - at) * sizeof(float));
        n--;
    }
    for (at = n; at > 0 && sorted[at - 1] > value; at--) {
        sorted[at] = sorted[at - 1];
    }
    sorted[at] = value;
}

/* np.median of the recent amplitudes (float32: the two middle values' float32 sum, halved). */
static float median_amplitude(const hs_channels_t *state)
{
    const int32_t n = state->amplitude_count;
    const float *sorted = state->sorted_amplitude;
    if (n % 2 == 1) {
        return sorted[n / 2];
    }
    return (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0f;
}

int hs_channels_add(hs_channels_t *state, int64_t r, float amplitude)
{
    double relative = 0.0;  /* first beat: RR unknown */
    float rr_relative;
    float previous;
    float median;
    int32_t at;
    if (state == 0) {
        return HS_CHANNELS_ERR_NULL;
    }
    if (!valid_state(state)) {
        return HS_CHANNELS_ERR_STATE;
    }
    if (!is_finite(amplitude)) {
        return HS_CHANNELS_ERR_NOT_FINITE;
    }
    if (r < 0 || r > HS_CHANNELS_MAX_SAMPLE || (state->has_last && r <= state->last_r)) {
        return HS_CHANNELS_ERR_ORDER;
    }
    if (state->count == HS_CHANNELS_MAX_BEATS) {
        return HS_CHANNELS_ERR_FULL;
    }
    if (state->has_last) {
        const int64_t rr = r - state->last_r;
        if (state->rr_count == HS_CHANNELS_HISTORY_BEATS) {
            state->rr_sum -= state->recent_rr[state->rr_next];
        } else {
            state->rr_count++;
        }
        state->recent_rr[state->rr_next] = rr;
        state->rr_sum += rr;
        state->rr_next = (state->rr_next + 1) % HS_CHANNELS_HISTORY_BEATS;
        /* Python: rr / (sum / len) - 1.0 on ints, each step rounded once to float64, as these are (all < 2^53) */
        relative = (double)rr / ((double)state->rr_sum / (double)state->rr_count) - 1.0;
        relative = relative < -1.0 ? -1.0 : (relative > 2.0 ? 2.0 : relative);
    }
    rr_relative = (float)relative;
    previous = state->has_last ? state->last_rr_relative : rr_relative;

    {
        const int evict = state->amplitude_count == HS_CHANNELS_HISTORY_BEATS;
        const float evicted = state->recent_amplitude[state->amplitude_next];
        update_sorted_amplitudes(state, amplitude, evict, evicted);
        if (!evict) {
            state->amplitude_count++;
        }
        state->recent_amplitude[state->amplitude_next] = amplitude;
        state->amplitude_next = (state->amplitude_next + 1) % HS_CHANNELS_HISTORY_BEATS;
    }
    median = median_amplitude(state);

    at = slot(state, state->count);
    state->r[at] = r;
    state->rr_relative[at] = rr_relative;
    state->rr_change[at] = fabsf(rr_relative - previous);
    state->amplitude_scale[at] = median > AMPLITUDE_FLOOR ? median : AMPLITUDE_FLOOR;
    state->count++;
    state->has_last = 1;
    state->last_r = r;
    state->last_rr_relative = rr_relative;
    return HS_CHANNELS_OK;
}

int hs_channels_add_peak(hs_channels_t *state, const hs_channels_signal_t *filtered, int64_t r)
{
    float amplitude;
    int status;
    if (state == 0 || filtered == 0) {
        return HS_CHANNELS_ERR_NULL;
    }
    if (!valid_state(state)) {
        return HS_CHANNELS_ERR_STATE;
    }
    if (r < 0 || r > HS_CHANNELS_MAX_SAMPLE || (state->has_last && r <= state->last_r)) {
        return HS_CHANNELS_ERR_ORDER;
    }
    status = hs_channels_r_amplitude(filtered, r, &amplitude);
    return status != HS_CHANNELS_OK ? status : hs_channels_add(state, r, amplitude);
}

int hs_channels_forget(hs_channels_t *state, int n)
{
    if (state == 0) {
        return HS_CHANNELS_ERR_NULL;
    }
    if (!valid_state(state)) {
        return HS_CHANNELS_ERR_STATE;
    }
    if (n < 0) {
        return HS_CHANNELS_ERR_ARGUMENT;
    }
    if (n > state->count) {
        n = state->count;  /* del list[:n] past its end empties it */
    }
    state->first = slot(state, n);
    state->count -= n;
    return HS_CHANNELS_OK;
}

int hs_channels_forget_before(hs_channels_t *state, int64_t keep_from, int *forgotten)
{
    int old = 0;
    int status;
    if (state == 0) {
        return HS_CHANNELS_ERR_NULL;
    }
    if (!valid_state(state)) {
        return HS_CHANNELS_ERR_STATE;
    }
    if (keep_from < -HS_CHANNELS_MAX_SAMPLE || keep_from > 2 * HS_CHANNELS_MAX_SAMPLE) {
        return HS_CHANNELS_ERR_ARGUMENT;
    }
    while (old < state->count && state->r[slot(state, old)] < keep_from - HS_CHANNELS_BUMP_REACH) {
        old++;
    }
    old = old > 0 ? old - 1 : 0;  /* the last beat before the kept signal stays */
    status = hs_channels_forget(state, old);
    if (status == HS_CHANNELS_OK && forgotten != 0) {
        *forgotten = old;
    }
    return status;
}

int hs_channels_count(const hs_channels_t *state)
{
    if (state == 0) {
        return HS_CHANNELS_ERR_NULL;
    }
    return valid_state(state) ? state->count : HS_CHANNELS_ERR_STATE;
}

int hs_channels_beat(const hs_channels_t *state, int k, hs_channels_beat_t *beat)
{
    int32_t at;
    if (state == 0 || beat == 0) {
        return HS_CHANNELS_ERR_NULL;
    }
    if (!valid_state(state)) {
        return HS_CHANNELS_ERR_STATE;
    }
    if (k < 0 || k >= state->count) {
        return HS_CHANNELS_ERR_ARGUMENT;
    }
    at = slot(state, k);
    beat->r = state->r[at];
    beat->rr_relative = state->rr_relative[at];
    beat->rr_change = state->rr_change[at];
    beat->amplitude_scale = state->amplitude_scale[at];
    return HS_CHANNELS_OK;
}

/* The filtered ECG over [start, start + length) divided by scale and clipped, as float32. */
static int scaled_ecg(const hs_channels_signal_t *filtered, int64_t start, int32_t length, float scale, float *out)
{
    int32_t i;
    const int status = read_samples(filtered, start, length, out);
    if (status != HS_CHANNELS_OK) {
        return status;
    }
    for (i = 0; i < length; i++) {
        const float x = out[i] / scale;
        out[i] = x < -ECG_CLIP ? -ECG_CLIP : (x > ECG_CLIP ? ECG_CLIP : x);
    }
    return HS_CHANNELS_OK;
}

/* bump_track over [start, start + length) of every kept beat, each bump as high as heights[its slot]: each sample
 * sums its beats' products oldest first, as numpy's += does. Zero before sample 0 and from signal_end on, as
 * _EcgTask.tracks zeroes what lies outside the signal. */
static void bump_track(const hs_channels_t *state, const float *heights, int64_t start, int32_t length,
                       int64_t signal_end, float *out)
{
    int32_t k;
    int32_t i;
    for (i = 0; i < length; i++) {
        out[i] = 0.0f;
    }
    for (k = 0; k < state->count; k++) {
        const int32_t at = slot(state, k);
        const int64_t r = state->r[at];
        const int64_t lo = r - HS_CHANNELS_BUMP_REACH > start ? r - HS_CHANNELS_BUMP_REACH : start;
        const int64_t hi = r + HS_CHANNELS_BUMP_REACH + 1 < start + length ? r + HS_CHANNELS_BUMP_REACH + 1
                                                                            : start + length;
        int64_t t;
        for (t = lo; t < hi; t++) {
            const float product = heights[at] * bump_shape[t - r + HS_CHANNELS_BUMP_REACH];
            out[t - start] += product;
        }
    }
    for (i = 0; i < length; i++) {
        if (start + i < 0 || start + i >= signal_end) {
            out[i] = 0.0f;
        }
    }
}

/* np.median of n floats (sorted in place): the middle one, or the float32 mean of the middle two. */
static float median_of(float *values, int32_t n)
{
    int32_t i;
    for (i = 1; i < n; i++) {
        const float value = values[i];
        int32_t j = i;
        for (; j > 0 && values[j - 1] > value; j--) {
            values[j] = values[j - 1];
        }
        values[j] = value;
    }
    return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2.0f;
}

/* preprocess.template_difference of the beat window from start (length samples, its scaled ECG in ecg): the centre
 * beat minus the sample-wise median of the window's other whole beats of normal timing (of all its other whole beats
 * if none has normal timing); zero where the template does not reach, and everywhere if no other whole beat fits. */
static void template_difference(const hs_channels_t *state, int64_t start, int32_t length, const float *ecg,
                                float *out)
{
    int32_t others[HS_CHANNELS_MAX_BEATS];  /* positions within the window */
    float column[HS_CHANNELS_MAX_BEATS];
    const int32_t centre = length / 2;
    int32_t n_normal = 0;
    int32_t n_others = 0;
    int pass;
    int32_t k;
    int32_t i;
    for (i = 0; i < length; i++) {
        out[i] = 0.0f;
    }
    if (centre - TEMPLATE_BEFORE < 0 || centre + TEMPLATE_AFTER > length) {
        return;
    }
    /* pass 0 counts the whole beats of normal timing; pass 1 takes those, or every whole beat if there is none */
    for (pass = 0; pass < 2; pass++) {
        for (k = 0; k < state->count; k++) {
            const int32_t at = slot(state, k);
            const int64_t r = state->r[at];
            const int normal = state->rr_relative[at] >= TEMPLATE_MIN_RR;
            int32_t position;
            if (r < start || r >= start + length) {
                continue;
            }
            position = (int32_t)(r - start);
            if (position - TEMPLATE_BEFORE < 0 || position + TEMPLATE_AFTER > length || position == centre) {
                continue;
            }
            if (pass == 0) {
                n_normal += normal;
            } else if (normal || n_normal == 0) {
                others[n_others++] = position;
            }
        }
    }
    if (n_others == 0) {
        return;
    }
    for (i = -TEMPLATE_BEFORE; i < TEMPLATE_AFTER; i++) {
        int32_t m;
        for (m = 0; m < n_others; m++) {
            column[m] = ecg[others[m] + i];
        }
        out[centre + i] = ecg[centre + i] - median_of(column, n_others);
    }
}

int hs_channels_beat_window(const hs_channels_t *state, int k, const hs_channels_signal_t *filtered, float *window)
{
    int32_t length;
    int64_t start;
    int32_t at;
    int32_t i;
    int status;
    float *ecg;
    float *marker;
    if (state == 0 || filtered == 0 || window == 0) {
        return HS_CHANNELS_ERR_NULL;
    }
    if (!valid_state(state)) {
        return HS_CHANNELS_ERR_STATE;
    }
    if (state->beat_window == 0) {
        return HS_CHANNELS_ERR_CONFIG;
    }
    if (k < 0 || k >= state->count || !valid_signal(filtered)) {
        return HS_CHANNELS_ERR_ARGUMENT;
    }
    length = state->beat_window;
    at = slot(state, k);
    start = state->r[at] - length / 2;
    ecg = window;
    marker = window + length;
    status = scaled_ecg(filtered, start, length, state->amplitude_scale[at], ecg);
    if (status != HS_CHANNELS_OK) {
        return status;
    }
    /* the centre marker: bump_track(window, [window // 2], [1.0]) */
    for (i = 0; i < length; i++) {
        const int32_t offset = i - length / 2;
        marker[i] = offset >= -HS_CHANNELS_BUMP_REACH && offset <= HS_CHANNELS_BUMP_REACH
                    ? bump_shape[offset + HS_CHANNELS_BUMP_REACH] : 0.0f;
    }
    bump_track(state, state->rr_relative, start, length, filtered->start + filtered->count, window + 2 * length);
    template_difference(state, start, length, ecg, window + 3 * length);
    return HS_CHANNELS_OK;
}

int hs_channels_rhythm_window(const hs_channels_t *state, int64_t start, const hs_channels_signal_t *filtered,
                              float *window)
{
    int32_t length;
    float scale = 1.0f;  /* no beat kept */
    int64_t end;
    int status;
    if (state == 0 || filtered == 0 || window == 0) {
        return HS_CHANNELS_ERR_NULL;
    }
    if (!valid_state(state)) {
        return HS_CHANNELS_ERR_STATE;
    }
    if (state->rhythm_window == 0) {
        return HS_CHANNELS_ERR_CONFIG;
    }
    if (start < -HS_CHANNELS_MAX_SAMPLE || start > HS_CHANNELS_MAX_SAMPLE || !valid_signal(filtered)) {
        return HS_CHANNELS_ERR_ARGUMENT;
    }
    length = state->rhythm_window;
    end = start + length;
    if (state->count > 0) {
        int32_t last = 0;  /* searchsorted(r_peaks, end) - 1, clipped to the kept beats */
        while (last + 1 < state->count && state->r[slot(state, last + 1)] < end) {
            last++;
        }
        scale = state->amplitude_scale[slot(state, last)];
    }
    status = scaled_ecg(filtered, start, length, scale, window);
    if (status != HS_CHANNELS_OK) {
        return status;
    }
    bump_track(state, state->rr_relative, start, length, filtered->start + filtered->count, window + length);
    bump_track(state, state->rr_change, start, length, filtered->start + filtered->count, window + 2 * length);
    return HS_CHANNELS_OK;
}

int hs_channels_rhythm_problem(const hs_channels_t *state, int64_t start)
{
    int32_t inside = 0;
    int32_t k;
    if (state == 0) {
        return HS_CHANNELS_ERR_NULL;
    }
    if (!valid_state(state)) {
        return HS_CHANNELS_ERR_STATE;
    }
    if (state->rhythm_window == 0) {
        return HS_CHANNELS_ERR_CONFIG;
    }
    if (start < -HS_CHANNELS_MAX_SAMPLE || start > HS_CHANNELS_MAX_SAMPLE) {
        return HS_CHANNELS_ERR_ARGUMENT;
    }
    for (k = 0; k < state->count; k++) {
        const int64_t r = state->r[slot(state, k)];
        inside += r >= start && r < start + state->rhythm_window;
    }
    return inside < HS_CHANNELS_MIN_RHYTHM_BEATS ? HS_CHANNELS_TOO_FEW_BEATS : HS_CHANNELS_NO_PROBLEM;
}
