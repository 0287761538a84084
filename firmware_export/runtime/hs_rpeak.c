/* The streaming R-peak detector; see hs_rpeak.h. Each function names the part of sdk/data/rpeak.py it ports.
 *
 * Doubles: the Python detector computes in float64 throughout, and its decisions compare integrated energies that
 * a float would round differently, so everything after the input is double: the band-pass, the slope, the
 * moving-window integral (MWI), the signal and noise levels and thresholds, the baseline median and the R-wave
 * distances, and the mean RR that times search-back. Only the raw input is kept as float (the device's samples are
 * float32, so that loses nothing). A Cortex-M4F has no double FPU: each double operation is a libgcc routine of
 * roughly 50-150 cycles. The MWI, rounded as numpy rounds it (each chunk's full convolution), costs about mwi_len
 * squares and multiply-adds per sample (19 at 128 Hz, more for chunks shorter than a few windows): an estimated
 * 10^6 cycles per second of signal at 128 Hz, 1-2% of a 64 MHz core (not measured on a device). A running sum
 * would cost a tenth of that, at the price of last-bit differences from Python.
 *
 * Rounding: to give Python's decisions, the arithmetic follows numpy's and scipy's order operation by operation
 * (sosfilt's transposed direct form; lfilter's FIR, which is np.convolve of each chunk plus the carried partial
 * sums; numpy's pairwise mean). Products that must be rounded before a sum are their own statements, so that no
 * compiler fuses them into a multiply-add (gcc does not in -std=c99 mode anyway). The MWI's dot products follow
 * OpenBLAS's ddot on x86-64 (fused multiply-adds in lanes of 4, blocks of 16, 32 while they last, as numpy calls it
 * on the hosts this is checked on); a host whose OpenBLAS sums in another order makes Python's MWI differ in the last
 * bit. newlib's fma() is not fused (a multiply, then an add), so on the microcontroller this code's MWI may differ
 * from the host's in the last bit too; a host build with -DHS_RPEAK_UNFUSED_FMA rounds as the microcontroller does,
 * to check that no decision changes (benchmarks/rpeak_c_equality.py). */
#include <math.h>
#include <string.h>
#include "hs_rpeak.h"

#define HS_RPEAK_MAGIC 0x4b504852u  /* "RHPK" */
#define SLOT(index) ((size_t)((uint64_t)(index) & (HS_RPEAK_RING - 1u)))

/* sdk.data.rpeak's constants, in seconds unless named otherwise */
#define MWI_SECONDS 0.15
#define NEIGHBOURHOOD_SECONDS 0.2
#define T_WAVE_SECONDS 0.36
#define LEARNING_SECONDS 2.0
#define THRESHOLD_FRACTION 0.12
#define SEARCH_BACK_RR 1.66
#define FAILED_SEARCH_DECAY 0.5
#define DEFAULT_RR_SECONDS 1.0
#define RR_HISTORY 8
#define LOCATE_SECONDS 0.05
#define BASELINE_SECONDS 0.15
#define MAX_DELAY_SECONDS 0.05  /* the band-pass's group delay is 26-36 ms at every supported rate */
/* numpy's correlate sums kernels up to this long itself (small_correlate), longer ones with BLAS */
#define NUMPY_SMALL_KERNEL 11

/* x * y + z rounded once, as OpenBLAS's multiply-adds, or as newlib's fma() computes it (see the top). */
static double multiply_add(double x, double y, double z)
{
#ifdef HS_RPEAK_UNFUSED_FMA
    const double product = x * y;
    return product + z;
#else
    return fma(x, y, z);
#endif
}

typedef struct {
    int64_t *peaks;
    int capacity;
    int count;
} peak_output_t;

/* Python's round(): halves to even. */
static double round_half_even(double x)
{
    const double down = floor(x);
    const double rest = x - down;
    if (rest > 0.5) {
        return down + 1.0;
    }
    if (rest < 0.5) {
        return down;
    }
    return fmod(down, 2.0) == 0.0 ? down : down + 1.0;
}

/* RPeakDetector._samples */
static int samples(double seconds, double fs)
{
    const double product = seconds * fs;
    const double rounded = round_half_even(product);
    return rounded < 1.0 ? 1 : (int)rounded;
}

size_t hs_rpeak_state_size(void)
{
    return sizeof(hs_rpeak_t);
}

int hs_rpeak_init(hs_rpeak_t *state, const hs_rpeak_config_t *config)
{
    const double fs = config != 0 ? config->fs : 0.0;
    int mwi_len, neighbourhood, locate, baseline, learning_len, lookahead, history, queue_bound, i;
    if (state == 0 || config == 0) {
        return HS_RPEAK_ERR_NULL;
    }
    if (!isfinite(fs) || fs < HS_RPEAK_MIN_FS || fs > HS_RPEAK_MAX_FS) {
        return HS_RPEAK_ERR_UNSUPPORTED;
    }
    for (i = 0; i < 3; i++) {
        if (!isfinite(config->b[i])) {
            return HS_RPEAK_ERR_CONFIG;
        }
    }
    if (!isfinite(config->a[0]) || !isfinite(config->a[1]) || !isfinite(config->zi[0]) || !isfinite(config->zi[1])) {
        return HS_RPEAK_ERR_CONFIG;
    }
    /* poles inside the unit circle: a ringing filter would make every later sample meaningless */
    if (!(fabs(config->a[1]) < 1.0 && fabs(config->a[0]) < 1.0 + config->a[1])) {
        return HS_RPEAK_ERR_CONFIG;
    }
    if (config->band_delay < 0 || config->band_delay > samples(MAX_DELAY_SECONDS, fs)) {
        return HS_RPEAK_ERR_CONFIG;
    }
    mwi_len = samples(MWI_SECONDS, fs);
    neighbourhood = samples(NEIGHBOURHOOD_SECONDS, fs);
    locate = samples(LOCATE_SECONDS, fs);
    baseline = samples(BASELINE_SECONDS, fs);
    learning_len = samples(LEARNING_SECONDS, fs);
    lookahead = neighbourhood > locate + baseline ? neighbourhood : locate + baseline;
    history = neighbourhood + 1 + mwi_len + config->band_delay + locate + baseline;
    /* candidates are more than a neighbourhood apart; all found before the first decision wait in the queue */
    queue_bound = (learning_len + HS_RPEAK_MAX_CHUNK + neighbourhood) / (neighbourhood + 1) + 1;
    if (mwi_len > HS_RPEAK_MAX_MWI || locate > HS_RPEAK_MAX_LOCATE || baseline > HS_RPEAK_MAX_BASELINE
        || learning_len > HS_RPEAK_MAX_LEARNING || config->band_delay > HS_RPEAK_MAX_BAND_DELAY
        || history + lookahead + HS_RPEAK_MAX_CHUNK > HS_RPEAK_RING || queue_bound > HS_RPEAK_MAX_QUEUE) {
        return HS_RPEAK_ERR_UNSUPPORTED;
    }
    memset(state, 0, sizeof(*state));
    state->fs = fs;
    memcpy(state->b, config->b, sizeof(state->b));
    memcpy(state->a, config->a, sizeof(state->a));
    memcpy(state->zi, config->zi, sizeof(state->zi));
    state->mwi_tap = 1.0 / mwi_len;
    state->band_delay = config->band_delay;
    state->mwi_len = mwi_len;
    state->neighbourhood = neighbourhood;
    state->t_wave = samples(T_WAVE_SECONDS, fs);
    state->learning_len = learning_len;
    state->locate = locate;
    state->baseline = baseline;
    state->lookahead = lookahead;
    state->magic = HS_RPEAK_MAGIC;
    return HS_RPEAK_OK;
}

/* numpy's sum of a float64 array (pairwise_sum): runs under 8 one by one, up to 128 in 8 interleaved partial sums,
 * longer ones split in halves rounded down to a multiple of 8. */
static double pairwise_sum(const double *a, int n)
{
    double r[8];
    double total;
    int i, j, half;
    if (n < 8) {
        total = 0.0;
        for (i = 0; i < n; i++) {
            total += a[i];
        }
        return total;
    }
    if (n <= 128) {
        for (j = 0; j < 8; j++) {
            r[j] = a[j];
        }
        for (i = 8; i < n - n % 8; i += 8) {
            for (j = 0; j < 8; j++) {
                r[j] += a[i + j];
            }
        }
        total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) {
            total += a[i];
        }
        return total;
    }
    half = n / 2;
    half -= half % 8;
    return pairwise_sum(a, half) + pairwise_sum(a + half, n - half);
}

/* numpy's correlate for kernels up to NUMPY_SMALL_KERNEL long: each product rounded, then added in order. */
static double sequential_sum(double tap, const double *terms, int count)
{
    double total = 0.0;
    int i;
    for (i = 0; i < count; i++) {
        const double product = tap * terms[i];
        total += product;
    }
    return total;
}

/* OpenBLAS's ddot as numpy calls it on x86-64: the first multiple of 16 terms in fused lanes (blocks of 32 in
 * 4 x 8 lanes folded to 4 x 4 first, then blocks of 16 in 4 x 4), the lanes summed, then the rest one by one. */
static double blas_sum(double tap, const double *terms, int count)
{
    const int blocked = count & ~15;
    double total = 0.0;
    int i = 0, k, l;
    if (blocked > 0) {
        double wide[4][8];
        double lanes[4][4];
        double sums[4];
        memset(wide, 0, sizeof(wide));
        for (; i < (blocked & ~31); i += 32) {
            for (k = 0; k < 4; k++) {
                for (l = 0; l < 8; l++) {
                    wide[k][l] = multiply_add(tap, terms[i + 8 * k + l], wide[k][l]);
                }
            }
        }
        for (k = 0; k < 4; k++) {
            for (l = 0; l < 4; l++) {
                lanes[k][l] = wide[k][l] + wide[k][l + 4];
            }
        }
        for (; i < blocked; i += 16) {
            for (k = 0; k < 4; k++) {
                for (l = 0; l < 4; l++) {
                    lanes[k][l] = multiply_add(tap, terms[i + 4 * k + l], lanes[k][l]);
                }
            }
        }
        for (l = 0; l < 4; l++) {
            sums[l] = ((lanes[0][l] + lanes[1][l]) + lanes[2][l]) + lanes[3][l];
        }
        total = (sums[0] + sums[2]) + (sums[1] + sums[3]);
    }
    for (; i < count; i++) {
        total = multiply_add(tap, terms[i], total);
    }
    return total;
}

/* Output k (0 .. n + mwi_len - 2) of np.convolve(taps, slope^2 of the chunk), the chunk starting at sample start
 * and n long. np.convolve puts the longer array first and sums each output in its order: time order when the chunk
 * is longer than the taps, reverse time order otherwise. */
static double convolution_output(hs_rpeak_t *state, int64_t start, int n, int k)
{
    const int m = state->mwi_len;
    const int first = k - m + 1 > 0 ? k - m + 1 : 0;  /* the chunk samples under output k's window */
    const int last = k < n - 1 ? k : n - 1;
    const int count = last - first + 1;
    const int chunk_longer = n > m;
    const int shorter = chunk_longer ? m : n;
    const int longer = chunk_longer ? n : m;
    int i;
    for (i = 0; i < count; i++) {
        const double slope = state->slope[SLOT(start + (chunk_longer ? first + i : last - i))];
        state->terms[i] = slope * slope;
    }
    /* outputs under the whole shorter array are numpy's own loop for short kernels; the edges are BLAS dots */
    if (shorter <= NUMPY_SMALL_KERNEL && k >= shorter - 1 && k <= longer - 1) {
        return sequential_sum(state->mwi_tap, state->terms, count);
    }
    return blas_sum(state->mwi_tap, state->terms, count);
}

/* RPeakDetector._filter: band-pass, differentiate, square and integrate one chunk, continuing from the last. */
static void filter_chunk(hs_rpeak_t *state, const float *x, int n)
{
    const int64_t start = state->n_seen;
    const int m = state->mwi_len;
    int j, k;
    for (j = 0; j < n; j++) {
        const int usable = isfinite(x[j]);
        const double sample = usable ? (double)x[j] : 0.0;
        const size_t slot = SLOT(start + j);
        double band, fed_back, slope;
        if (!state->started) {  /* the first sample sets the steady state, so that its offset does not ring */
            state->band_state[0] = state->zi[0] * sample;
            state->band_state[1] = state->zi[1] * sample;
            state->started = 1;
        }
        /* scipy's sosfilt, one section: transposed direct form II */
        band = state->b[0] * sample;
        band += state->band_state[0];
        fed_back = state->a[0] * band;
        state->band_state[0] = state->b[1] * sample;
        state->band_state[0] -= fed_back;
        state->band_state[0] += state->band_state[1];
        fed_back = state->a[1] * band;
        state->band_state[1] = state->b[2] * sample;
        state->band_state[1] -= fed_back;
        slope = band - state->last_band;
        slope *= state->fs;
        state->last_band = band;
        state->raw[slot] = usable ? x[j] : 0.0f;
        state->band[slot] = band;
        state->slope[slot] = fabs(slope);
    }
    /* lfilter(taps, 1.0, slope^2, zi): the chunk's full convolution, the first mwi_len - 1 outputs plus the partial
     * sums carried from the last chunk; the outputs past the chunk are carried to the next (in increasing order,
     * each reads a carried sum further on than the one it replaces). */
    for (k = 0; k < n; k++) {
        double value = convolution_output(state, start, n, k);
        if (k < m - 1) {
            value += state->mwi_state[k];
        }
        state->mwi[SLOT(start + k)] = value;
        if (start + k < state->learning_len) {
            state->learning[start + k] = value;
        }
    }
    for (k = 0; k < m - 1; k++) {
        double value = convolution_output(state, start, n, n + k);
        if (n + k < m - 1) {
            value += state->mwi_state[n + k];
        }
        state->mwi_state[k] = value;
    }
    state->n_seen += n;
}

/* The median of raw[lo .. hi], as np.median: the middle value, or the mean of the two middle values. */
static double raw_median(hs_rpeak_t *state, int64_t lo, int64_t hi)
{
    const int count = (int)(hi - lo + 1);
    float *window = state->window;
    int i, j;
    for (i = 0; i < count; i++) {  /* insertion sort: the window is short and a candidate comes every 0.2 s at most */
        const float value = state->raw[SLOT(lo + i)];
        for (j = i; j > 0 && window[j - 1] > value; j--) {
            window[j] = window[j - 1];
        }
        window[j] = value;
    }
    if (count % 2 == 1) {
        return window[count / 2];
    }
    return ((double)window[count / 2 - 1] + (double)window[count / 2]) / 2.0;
}

/* RPeakDetector._describe: measure the candidate at sample i, and place its R wave at the largest raw deflection
 * from the local baseline near the delay-corrected band-pass peak. */
static hs_rpeak_candidate_t describe(hs_rpeak_t *state, int64_t i)
{
    const int64_t end = state->n_seen - 1;
    const int64_t window_start = i - state->mwi_len > 0 ? i - state->mwi_len : 0;
    hs_rpeak_candidate_t candidate;
    int64_t j, band_peak = window_start, centre, lo, hi, r_index;
    double largest = fabs(state->band[SLOT(window_start)]), steepest = state->slope[SLOT(window_start)];
    double baseline, deflection;
    for (j = window_start + 1; j <= i; j++) {
        const double value = fabs(state->band[SLOT(j)]);
        if (value > largest) {  /* np.argmax: the first of equal values */
            largest = value;
            band_peak = j;
        }
        if (state->slope[SLOT(j)] > steepest) {
            steepest = state->slope[SLOT(j)];
        }
    }
    centre = band_peak - state->band_delay > 0 ? band_peak - state->band_delay : 0;
    lo = centre - state->baseline > 0 ? centre - state->baseline : 0;
    hi = centre + state->baseline < end ? centre + state->baseline : end;
    baseline = raw_median(state, lo, hi);
    lo = centre - state->locate > 0 ? centre - state->locate : 0;
    hi = centre + state->locate < end ? centre + state->locate : end;
    r_index = lo;
    deflection = fabs((double)state->raw[SLOT(lo)] - baseline);
    for (j = lo + 1; j <= hi; j++) {
        const double value = fabs((double)state->raw[SLOT(j)] - baseline);
        if (value > deflection) {
            deflection = value;
            r_index = j;
        }
    }
    candidate.time = i;
    candidate.r_index = r_index;
    candidate.height = state->mwi[SLOT(i)];
    candidate.slope = steepest;
    return candidate;
}

/* RPeakDetector._find_candidates: queue each MWI sample before `until` that is positive, beats the previous
 * neighbourhood and is not beaten in the next (cut short only at the ends of the signal). */
static int find_candidates(hs_rpeak_t *state, int64_t until)
{
    const int64_t end = state->n_seen - 1;
    int64_t i, j;
    for (i = state->scanned_until; i < until; i++) {
        const double height = state->mwi[SLOT(i)];
        const int64_t before = i - 1 - state->neighbourhood > 0 ? i - 1 - state->neighbourhood : 0;
        const int64_t after = i + state->neighbourhood < end ? i + state->neighbourhood : end;
        int is_peak = height > 0.0;
        for (j = i - 1; is_peak && j >= before; j--) {
            is_peak = height > state->mwi[SLOT(j)];
        }
        for (j = i + 1; is_peak && j <= after; j++) {
            is_peak = height >= state->mwi[SLOT(j)];
        }
        if (is_peak) {
            if (state->queue_count == HS_RPEAK_MAX_QUEUE) {
                return HS_RPEAK_ERR_INTERNAL;
            }
            state->queue[state->queue_count++] = describe(state, i);
        }
    }
    if (until > state->scanned_until) {
        state->scanned_until = until;
    }
    return HS_RPEAK_OK;
}

/* RPeakDetector._threshold */
static double threshold(const hs_rpeak_t *state)
{
    const double above_noise = THRESHOLD_FRACTION * (state->signal_level - state->noise_level);
    return state->noise_level + above_noise;
}

/* RPeakDetector._mean_rr: exact, the intervals being whole samples. */
static double mean_rr(const hs_rpeak_t *state)
{
    int64_t total = 0;
    int i;
    if (state->rr_count == 0) {
        return DEFAULT_RR_SECONDS * state->fs;
    }
    for (i = 0; i < state->rr_count; i++) {
        total += state->rr[i];
    }
    return (double)total / state->rr_count;
}

/* RPeakDetector._may_be_beat: false inside the refractory period of the last beat and for its T wave. */
static int may_be_beat(const hs_rpeak_t *state, const hs_rpeak_candidate_t *candidate)
{
    int64_t after;
    int is_t_wave;
    if (!state->has_last_beat) {
        return 1;
    }
    after = candidate->r_index - state->last_beat.r_index;
    is_t_wave = after < state->t_wave && candidate->slope < 0.5 * state->last_beat.slope;
    return after >= state->neighbourhood && !is_t_wave;
}

/* RPeakDetector._accept */
static int accept(hs_rpeak_t *state, const hs_rpeak_candidate_t *beat, peak_output_t *out)
{
    if (out->count == out->capacity) {
        return HS_RPEAK_ERR_INTERNAL;
    }
    if (state->has_last_beat) {
        state->rr[state->rr_next] = beat->r_index - state->last_beat.r_index;
        state->rr_next = (state->rr_next + 1) % RR_HISTORY;
        if (state->rr_count < RR_HISTORY) {
            state->rr_count++;
        }
    }
    state->last_beat = *beat;
    state->has_last_beat = 1;
    state->search_from = beat->time;
    state->noise_count = 0;
    out->peaks[out->count++] = beat->r_index;
    return HS_RPEAK_OK;
}

/* RPeakDetector._judge */
static int judge(hs_rpeak_t *state, const hs_rpeak_candidate_t *candidate, peak_output_t *out)
{
    if (candidate->height > threshold(state) && may_be_beat(state, candidate)) {
        const double step = 0.125 * (candidate->height - state->signal_level);
        state->signal_level += step;
        return accept(state, candidate, out);
    } else {
        const double step = 0.125 * (candidate->height - state->noise_level);
        state->noise_level += step;
        if (state->noise_count == HS_RPEAK_MAX_NOISE) {  /* see HS_RPEAK_MAX_NOISE: forget the oldest */
            memmove(state->noise, state->noise + 1, (HS_RPEAK_MAX_NOISE - 1) * sizeof(state->noise[0]));
            state->noise_count--;
            state->forgotten++;
        }
        state->noise[state->noise_count++] = *candidate;
    }
    return HS_RPEAK_OK;
}

/* RPeakDetector._search_back: a beat is overdue, so the noise candidates since the last beat are judged again at
 * half the threshold. Accepting one empties the (already emptied) list, so the loop can read it in place. */
static int search_back(hs_rpeak_t *state, int64_t search_time, peak_output_t *out)
{
    const double half_threshold = 0.5 * threshold(state);
    const int pool = state->noise_count;
    int i, found = 0, status;
    state->noise_count = 0;
    state->search_from = search_time;
    for (i = 0; i < pool; i++) {
        const hs_rpeak_candidate_t candidate = state->noise[i];
        if (candidate.height > half_threshold && may_be_beat(state, &candidate)) {
            const double step = 0.25 * (candidate.height - state->signal_level);
            state->signal_level += step;
            status = accept(state, &candidate, out);
            if (status != HS_RPEAK_OK) {
                return status;
            }
            found = 1;
        }
    }
    if (!found) {  /* a signal that shrank is found again instead of staying under an old threshold */
        state->signal_level *= FAILED_SEARCH_DECAY;
    }
    return HS_RPEAK_OK;
}

/* RPeakDetector._decide: judge candidates and fire search-backs in time order; every candidate before known_until
 * has been found. The levels are set once the learning period is complete (or the signal ended before). */
static int decide(hs_rpeak_t *state, int64_t known_until, peak_output_t *out)
{
    int status;
    if (!state->learned) {
        const int count = state->n_seen < state->learning_len ? (int)state->n_seen : state->learning_len;
        double largest = state->learning[0];
        int i;
        if (state->n_seen < state->learning_len && !state->finished) {
            return HS_RPEAK_OK;
        }
        for (i = 1; i < count; i++) {
            if (state->learning[i] > largest) {
                largest = state->learning[i];
            }
        }
        state->signal_level = largest / 3.0;
        state->noise_level = pairwise_sum(state->learning, count) / count / 2.0;
        state->learned = 1;
    }
    for (;;) {
        const double wait = SEARCH_BACK_RR * mean_rr(state);
        const int64_t search_time = state->search_from + (int64_t)round_half_even(wait);
        if (state->queue_count > 0 && state->queue[0].time <= search_time) {
            const hs_rpeak_candidate_t candidate = state->queue[0];
            state->queue_count--;
            memmove(state->queue, state->queue + 1, (size_t)state->queue_count * sizeof(state->queue[0]));
            status = judge(state, &candidate, out);
        } else if (search_time < known_until) {
            status = search_back(state, search_time, out);
        } else {
            return HS_RPEAK_OK;
        }
        if (status != HS_RPEAK_OK) {
            return status;
        }
    }
}

/* The checks every call makes before it changes anything. */
static int check_call(const hs_rpeak_t *state, const int64_t *peaks, int capacity, const int *n_peaks)
{
    if (state == 0 || peaks == 0 || n_peaks == 0) {
        return HS_RPEAK_ERR_NULL;
    }
    if (state->magic != HS_RPEAK_MAGIC) {
        return HS_RPEAK_ERR_STATE;
    }
    if (capacity < HS_RPEAK_MAX_PEAKS) {
        return HS_RPEAK_ERR_CAPACITY;
    }
    return HS_RPEAK_OK;
}

int hs_rpeak_process(hs_rpeak_t *state, const float *x, int n, int64_t *peaks, int capacity, int *n_peaks)
{
    peak_output_t out;
    int status = check_call(state, peaks, capacity, n_peaks);
    if (status != HS_RPEAK_OK) {
        return status;
    }
    if (x == 0 && n > 0) {
        return HS_RPEAK_ERR_NULL;
    }
    if (n < 0 || n > HS_RPEAK_MAX_CHUNK) {
        return HS_RPEAK_ERR_LENGTH;
    }
    if (state->finished) {
        return HS_RPEAK_ERR_FINISHED;
    }
    *n_peaks = 0;
    if (n == 0) {
        return HS_RPEAK_OK;
    }
    out.peaks = peaks;
    out.capacity = capacity;
    out.count = 0;
    filter_chunk(state, x, n);
    status = find_candidates(state, state->n_seen - state->lookahead);
    if (status == HS_RPEAK_OK) {
        status = decide(state, state->n_seen - state->lookahead, &out);
    }
    *n_peaks = out.count;
    return status;
}

int hs_rpeak_flush(hs_rpeak_t *state, int64_t *peaks, int capacity, int *n_peaks)
{
    peak_output_t out;
    int status = check_call(state, peaks, capacity, n_peaks);
    if (status != HS_RPEAK_OK) {
        return status;
    }
    *n_peaks = 0;
    if (state->finished) {
        return HS_RPEAK_OK;
    }
    state->finished = 1;
    if (state->n_seen == 0) {
        return HS_RPEAK_OK;
    }
    out.peaks = peaks;
    out.capacity = capacity;
    out.count = 0;
    status = find_candidates(state, state->n_seen);
    if (status == HS_RPEAK_OK) {
        status = decide(state, state->n_seen, &out);
    }
    *n_peaks = out.count;
    return status;
}

int hs_rpeak_settled_until(const hs_rpeak_t *state, int64_t *settled)
{
    int64_t until;
    int i;
    if (state == 0 || settled == 0) {
        return HS_RPEAK_ERR_NULL;
    }
    if (state->magic != HS_RPEAK_MAGIC) {
        return HS_RPEAK_ERR_STATE;
    }
    /* a candidate not yet found lies at or after the scanned point, its R wave at most an integration window, the
     * band-pass delay and the R search distance before it; a queued or noise candidate may still become a beat */
    until = state->scanned_until - (state->mwi_len + state->band_delay + state->locate);
    for (i = 0; i < state->queue_count; i++) {
        if (state->queue[i].r_index < until) {
            until = state->queue[i].r_index;
        }
    }
    for (i = 0; i < state->noise_count; i++) {
        if (state->noise[i].r_index < until) {
            until = state->noise[i].r_index;
        }
    }
    *settled = until;
    return HS_RPEAK_OK;
}

int hs_rpeak_forgotten(const hs_rpeak_t *state, uint32_t *forgotten)
{
    if (state == 0 || forgotten == 0) {
        return HS_RPEAK_ERR_NULL;
    }
    if (state->magic != HS_RPEAK_MAGIC) {
        return HS_RPEAK_ERR_STATE;
    }
    *forgotten = state->forgotten;
    return HS_RPEAK_OK;
}
