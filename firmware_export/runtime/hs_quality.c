/* Signal-quality gate; see hs_quality.h. A line-by-line port of sdk/device/quality.py: the same half-second blocks
 * aligned to absolute sample indices, each judged with one block of context either side, so the events, known_until
 * and the answers do not depend on how the stream is cut into chunks (here: sample by sample).
 *
 * Number types: samples are kept as float (what the Monitor feeds its gate), and every sum, difference, product and
 * comparison on them is done in double, as the Python gate casts each chunk to float64: peak-to-peak ranges, the
 * clipping step and edges, the second differences and their median. Minimum and maximum are found on the floats
 * (float to double is exact and keeps the order) and run boundaries compare floats (equal as floats iff equal as
 * doubles). The set-up (block sizes from fs) and hs_quality_window_problem use double as Python's float does. The
 * Cortex-M4F's FPU is single precision only, so these doubles are emulated in software (roughly 20-60 cycles per
 * operation): about 10 double operations per sample (three float-to-double conversions, three subtractions, a product
 * and two or three comparisons for the noise estimate; the ranges and the clipping edges add a few per block), some
 * 300-600 cycles a sample: 0.1-0.2 million cycles a second at 360 Hz, at most 0.6 million at 1000 Hz.
 * Float would differ from Python near the thresholds: 0.02 mV of range, 0.1 mV of noise, the 3 % clipping step
 * (tests/test_c_quality.py has a case of each where it does).
 *
 * The median of the |second differences| is never stored or sorted: the gate only asks whether median * k > 0.1,
 * and x -> x * k rounded is monotone, so counting the values on either side of the threshold and keeping the largest
 * below it and the smallest above it decides it exactly as numpy's median (the mean of the middle two when even). */
#include <math.h>
#include <string.h>
#include "hs_quality.h"

#define HS_QUALITY_MAGIC 0x48535147u  /* "HSQG" */

/* sdk/device/quality.py's constants */
#define BLOCK_S 0.5
#define FLAT_MV 0.02
#define FLAT_MIN_S 1.0
#define CLIP_MIN_S 0.02
#define CLIP_MIN_S_PPG 0.1
#define CLIP_STEP_FRACTION 0.03
#define NOISE_MV 0.1
#define RANGE_MV 10.0
#define MERGE_S 2.0
#define MAD_TO_SIGMA (1.0 / (0.6745 * sqrt(6.0)))  /* median |second difference| of white noise -> its std */

#define STAGE_STREAMING 0
#define STAGE_FLUSHING 1  /* judging what is left; the open problems still to close */
#define STAGE_FLUSHED 2

#define MAX_INDEX 9007199254740992.0  /* 2^53: sample indices beyond it are not exact in Python's float either */

static int valid(const hs_quality_t *q)
{
    return q != 0 && q->magic == HS_QUALITY_MAGIC && q->block >= 4 && q->block <= HS_QUALITY_MAX_BLOCK
           && q->n_seen - q->buffer_start >= 0 && q->n_seen - q->buffer_start <= HS_QUALITY_BUFFER
           && q->n_bad >= 0 && q->n_bad <= HS_QUALITY_MAX_STRETCHES && q->n_open >= 0 && q->n_open <= HS_QUALITY_KINDS
           && q->pending_first >= 0 && q->pending_first <= q->n_pending && q->n_pending <= HS_QUALITY_MAX_PENDING;
}

/* HS_QUALITY_OK for a state init has accepted, else the status to return */
static int checked(const hs_quality_t *q)
{
    return q == 0 ? HS_QUALITY_ERR_NULL : (valid(q) ? HS_QUALITY_OK : HS_QUALITY_ERR_STATE);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

size_t hs_quality_state_size(void)
{
    return sizeof(hs_quality_t);
}

int hs_quality_init(hs_quality_t *q, const hs_quality_config_t *config)
{
    double fs;
    int32_t block;
    int32_t clip_min;
    int32_t merge;
    if (q == 0 || config == 0) {
        return HS_QUALITY_ERR_NULL;
    }
    fs = config->fs;
    if (!(fs >= HS_QUALITY_MIN_FS && fs <= HS_QUALITY_MAX_FS)) {  /* NaN fails both */
        return HS_QUALITY_ERR_UNSUPPORTED;
    }
    if (config->signal != HS_QUALITY_ECG && config->signal != HS_QUALITY_PPG) {
        return HS_QUALITY_ERR_SIGNAL;
    }
    /* Python's round() rounds half to even, as rint does in the default rounding mode (0.5 * 125 Hz -> 62) */
    block = (int32_t)rint(BLOCK_S * fs);
    block = block > 4 ? block : 4;
    clip_min = (int32_t)rint((config->signal == HS_QUALITY_ECG ? CLIP_MIN_S : CLIP_MIN_S_PPG) * fs);
    merge = (int32_t)rint(MERGE_S * fs);
    if (block > HS_QUALITY_MAX_BLOCK || merge < block) {
        return HS_QUALITY_ERR_UNSUPPORTED;  /* cannot happen in [MIN_FS, MAX_FS]; the event bound needs merge >= block */
    }
    memset(q, 0, sizeof(*q));
    q->fs = fs;
    q->signal = config->signal;
    q->block = block;
    q->clip_min = clip_min > 3 ? clip_min : 3;
    q->flat_blocks = (int32_t)ceil(FLAT_MIN_S * fs / block);
    q->merge = merge;
    q->flat_start = -1;
    q->magic = HS_QUALITY_MAGIC;
    return HS_QUALITY_OK;
}

/* --- reporting ------------------------------------------------------------------------------------------------- */

static void push_event(hs_quality_t *q, int32_t kind, int64_t start, int64_t end)
{
    /* at most HS_QUALITY_MAX_PENDING per block (see the header), and the queue is empty before each block */
    if (q->n_pending < HS_QUALITY_MAX_PENDING) {
        hs_quality_event_t *event = &q->pending[q->n_pending++];
        event->kind = kind;
        event->start = start;
        event->end = end;
    }
}

static void close_problem(hs_quality_t *q, int index)
{
    const hs_quality_stretch_t problem = q->open[index];
    int i;
    for (i = index + 1; i < q->n_open; i++) {
        q->open[i - 1] = q->open[i];
    }
    q->n_open--;
    push_event(q, problem.kind, problem.start, problem.end);
}

/* Bad samples [start, end) of a kind: kept for problem(), and reported when they open a new problem. */
static void mark(hs_quality_t *q, int32_t kind, int64_t start, int64_t end)
{
    int last = q->n_bad - 1;
    int open = q->n_open - 1;
    while (last >= 0 && q->bad[last].kind != kind) {
        last--;
    }
    if (last >= 0 && q->bad[last].end >= start) {
        q->bad[last].end = max64(q->bad[last].end, end);
    } else if (q->n_bad < HS_QUALITY_MAX_STRETCHES) {
        q->bad[q->n_bad].start = start;
        q->bad[q->n_bad].end = end;
        q->bad[q->n_bad].kind = kind;
        q->n_bad++;
    } else {  /* full: widen the newest stretch over it, so that no bad sample is ever called clean */
        hs_quality_stretch_t *newest = &q->bad[q->n_bad - 1];
        newest->start = min64(newest->start, start);
        newest->end = max64(newest->end, end);
        q->overflows++;
    }
    while (open >= 0 && q->open[open].kind != kind) {
        open--;
    }
    if (open >= 0 && start - q->open[open].end <= q->merge) {
        q->open[open].end = max64(q->open[open].end, end);
        return;
    }
    if (open >= 0) {
        close_problem(q, open);
    }
    q->open[q->n_open].start = start;
    q->open[q->n_open].end = end;
    q->open[q->n_open].kind = kind;
    q->n_open++;
    push_event(q, kind, start, HS_QUALITY_ONGOING);
}

/* --- judging a block ------------------------------------------------------------------------------------------- */

/* Python's _noisy: the median |second difference| (finite ones, at least 8) scaled to a noise std above NOISE_MV,
 * or a range above RANGE_MV. `range` is the block's peak-to-peak over its finite samples. */
static int noisy(const float *block, int n, double range)
{
    int count = 0;          /* finite |second differences| */
    int quiet = 0;          /* of them, those whose scaled value is not above NOISE_MV */
    double loudest_quiet = 0.0;
    double quietest_loud = 0.0;
    int half;
    int i;
    for (i = 0; i + 2 < n; i++) {
        const double first = (double)block[i + 1] - (double)block[i];
        const double second = fabs(((double)block[i + 2] - (double)block[i + 1]) - first);
        if (!isfinite(second)) {
            continue;
        }
        count++;
        if (second * MAD_TO_SIGMA > NOISE_MV) {
            if (count - quiet == 1 || second < quietest_loud) {
                quietest_loud = second;
            }
        } else {
            if (quiet == 0 || second > loudest_quiet) {
                loudest_quiet = second;
            }
            quiet++;
        }
    }
    if (count < 8) {
        return 0;
    }
    half = count / 2;
    if (count % 2 == 1) {
        if (quiet <= half) {  /* the middle value is loud */
            return 1;
        }
    } else if (quiet < half) {  /* both middle values are loud */
        return 1;
    } else if (quiet == half && ((loudest_quiet + quietest_loud) / 2.0) * MAD_TO_SIGMA > NOISE_MV) {
        return 1;  /* the middle values straddle the threshold: their mean decides */
    }
    return range > RANGE_MV;
}

/* Python's _clipped_runs: runs of identical samples at the context's extreme that overlap context[lo, hi), marked
 * cut to it. */
static void mark_clipped_runs(hs_quality_t *q, const float *context, int size, int lo, int hi, int64_t context_start)
{
    float top = 0.0f;
    float bottom = 0.0f;
    int finite = 0;
    double step;
    int s;
    int e;
    for (s = 0; s < size; s++) {
        if (isfinite(context[s])) {
            if (finite == 0 || context[s] > top) {
                top = context[s];
            }
            if (finite == 0 || context[s] < bottom) {
                bottom = context[s];
            }
            finite++;
        }
    }
    if (finite < 2 || top == bottom) {
        return;
    }
    step = q->signal == HS_QUALITY_ECG ? CLIP_STEP_FRACTION * ((double)top - (double)bottom) : 0.0;
    for (s = 0; s < size; s = e) {
        for (e = s + 1; e < size && context[e] == context[e - 1]; e++) {
            /* NaN equals nothing: a run of one */
        }
        if (e - s >= q->clip_min && e - s <= q->block && s > 1 && e < size - 1 && s < hi && e > lo) {
            /* two samples either side: the last step into a clipped run can be anything from 0 to the slope */
            const double value = context[s];
            const double before = context[s - 2];
            const double after = context[e + 1];
            const int at_top = value == top && value - before > step && value - after > step;
            const int at_bottom = value == bottom && before - value > step && after - value > step;
            if (at_top || at_bottom) {
                mark(q, HS_QUALITY_CLIPPING, context_start + (s > lo ? s : lo), context_start + (e < hi ? e : hi));
            }
        }
    }
}

/* Python's _judge: decides block k from the blocks either side of it; its events go to pending. */
static void judge(hs_quality_t *q, int64_t k)
{
    const int32_t b = q->block;
    const int64_t start = k * b;
    const int64_t end = min64(start + b, q->n_seen);
    const int64_t context_start = max64(0, start - b);
    const float *context = q->buffer + (context_start - q->buffer_start);
    const int size = (int)(min64(end + b, q->n_seen) - context_start);
    const int lo = (int)(start - context_start);
    const int n = (int)(end - start);
    const float *block = context + lo;
    float top = 0.0f;
    float bottom = 0.0f;
    int finite = 0;
    int flat;
    int i;
    int j;
    int64_t drop;
    for (i = 0; i < n; i = j) {  /* runs of NaN or infinite samples */
        for (j = i; j < n && !isfinite(block[j]); j++) {
        }
        if (j > i) {
            mark(q, HS_QUALITY_NAN, start + i, start + j);
        } else {
            if (finite == 0 || block[i] > top) {
                top = block[i];
            }
            if (finite == 0 || block[i] < bottom) {
                bottom = block[i];
            }
            finite++;
            j = i + 1;
        }
    }
    flat = finite > 0 && (q->signal == HS_QUALITY_ECG ? (double)top - (double)bottom < FLAT_MV : top == bottom);
    if (flat) {
        if (q->flat_start < 0) {
            q->flat_start = start;
        }
        q->flat_count++;
        if (q->flat_count >= q->flat_blocks) {
            mark(q, HS_QUALITY_FLAT_LINE, q->flat_start, end);
        }
    } else {
        q->flat_start = -1;
        q->flat_count = 0;
        if (q->signal == HS_QUALITY_ECG && noisy(block, n, (double)top - (double)bottom)) {
            mark(q, HS_QUALITY_NOISE, start, end);
        }
        mark_clipped_runs(q, context, size, lo, lo + n, context_start);
    }
    for (i = 0; i < q->n_open;) {  /* close the problems that have been over for longer than the merge gap */
        if (end - q->open[i].end > q->merge) {
            close_problem(q, i);
        } else {
            i++;
        }
    }
    q->next = k + 1;
    q->known_until = q->flat_start >= 0 && q->flat_count < q->flat_blocks ? q->flat_start : end;
    drop = max64(0, end - b) - q->buffer_start;  /* keep one block of left-hand context */
    if (drop > 0) {
        memmove(q->buffer, q->buffer + drop, (size_t)(q->n_seen - q->buffer_start - drop) * sizeof(float));
        q->buffer_start += drop;
    }
}

/* Moves pending events to the caller's array while it has room; 1 if some are left. */
static int deliver(hs_quality_t *q, hs_quality_event_t *events, int capacity, int *n_events)
{
    while (q->pending_first < q->n_pending && *n_events < capacity) {
        events[(*n_events)++] = q->pending[q->pending_first++];
    }
    if (q->pending_first < q->n_pending) {
        return 1;
    }
    q->pending_first = 0;
    q->n_pending = 0;
    return 0;
}

/* --- the API --------------------------------------------------------------------------------------------------- */

int hs_quality_process(hs_quality_t *q, const float *samples, int count, hs_quality_event_t *events, int capacity,
                       int *n_events, int *consumed)
{
    int i;
    if (n_events != 0) {
        *n_events = 0;
    }
    if (consumed != 0) {
        *consumed = 0;
    }
    if (q == 0 || events == 0 || n_events == 0 || consumed == 0 || (samples == 0 && count > 0)) {
        return HS_QUALITY_ERR_NULL;
    }
    if (!valid(q)) {
        return HS_QUALITY_ERR_STATE;
    }
    if (count < 0 || capacity < 1) {
        return HS_QUALITY_ERR_ARGUMENT;
    }
    if (q->stage != STAGE_STREAMING) {
        return HS_QUALITY_ERR_FINISHED;
    }
    for (i = 0; i < count; i++) {
        if (deliver(q, events, capacity, n_events)) {
            return HS_QUALITY_OUTPUT_FULL;  /* the events of a block are waiting: take no sample more */
        }
        q->buffer[q->n_seen - q->buffer_start] = samples[i];
        q->n_seen++;
        *consumed = i + 1;
        if (q->n_seen >= (q->next + 2) * q->block) {  /* the block and its right-hand context */
            judge(q, q->next);
        }
    }
    return deliver(q, events, capacity, n_events) ? HS_QUALITY_OUTPUT_FULL : HS_QUALITY_OK;
}

int hs_quality_flush(hs_quality_t *q, hs_quality_event_t *events, int capacity, int *n_events)
{
    if (n_events != 0) {
        *n_events = 0;
    }
    if (q == 0 || events == 0 || n_events == 0) {
        return HS_QUALITY_ERR_NULL;
    }
    if (!valid(q)) {
        return HS_QUALITY_ERR_STATE;
    }
    if (capacity < 1) {
        return HS_QUALITY_ERR_ARGUMENT;
    }
    if (q->stage == STAGE_STREAMING) {
        q->stage = STAGE_FLUSHING;
    }
    while (q->stage == STAGE_FLUSHING) {
        if (deliver(q, events, capacity, n_events)) {
            return HS_QUALITY_OUTPUT_FULL;
        }
        if (q->next * q->block < q->n_seen) {
            judge(q, q->next);
        } else {
            while (q->n_open > 0) {
                close_problem(q, 0);
            }
            q->known_until = q->n_seen;
            q->stage = STAGE_FLUSHED;
        }
    }
    return deliver(q, events, capacity, n_events) ? HS_QUALITY_OUTPUT_FULL : HS_QUALITY_OK;
}

int hs_quality_known_until(const hs_quality_t *q, int64_t *known_until)
{
    const int status = known_until == 0 ? HS_QUALITY_ERR_NULL : checked(q);
    if (status == HS_QUALITY_OK) {
        *known_until = q->known_until;
    }
    return status;
}

int hs_quality_problem(const hs_quality_t *q, int64_t start, int64_t end, int *kind)
{
    const int status = kind == 0 ? HS_QUALITY_ERR_NULL : checked(q);
    int i;
    if (status != HS_QUALITY_OK) {
        return status;
    }
    *kind = HS_QUALITY_NONE;
    for (i = 0; i < q->n_bad; i++) {
        if (q->bad[i].start < end && q->bad[i].end > start) {
            *kind = q->bad[i].kind;
            break;
        }
    }
    return HS_QUALITY_OK;
}

int hs_quality_window_problem(const hs_quality_t *q, int64_t start, int64_t length, double model_fs, int *kind)
{
    const int status = kind == 0 ? HS_QUALITY_ERR_NULL : checked(q);
    double lo;
    double hi;
    if (status != HS_QUALITY_OK) {
        return status;
    }
    if (!(model_fs > 0.0 && model_fs <= 1e300) || start < -(int64_t)MAX_INDEX || start > (int64_t)MAX_INDEX
        || length < -(int64_t)MAX_INDEX || length > (int64_t)MAX_INDEX) {
        return HS_QUALITY_ERR_ARGUMENT;
    }
    lo = floor((double)start * q->fs / model_fs);
    hi = ceil((double)(start + length) * q->fs / model_fs);
    if (!(lo < MAX_INDEX * 1024.0 && hi < MAX_INDEX * 1024.0)) {  /* beyond int64_t (2^63) */
        return HS_QUALITY_ERR_ARGUMENT;
    }
    return hs_quality_problem(q, lo > 0.0 ? (int64_t)lo : 0, hi > 0.0 ? (int64_t)hi : 0, kind);
}

int hs_quality_forget(hs_quality_t *q, int64_t before)
{
    const int status = checked(q);
    int kept = 0;
    int i;
    if (status != HS_QUALITY_OK) {
        return status;
    }
    for (i = 0; i < q->n_bad; i++) {
        if (q->bad[i].end > before) {
            q->bad[kept++] = q->bad[i];
        }
    }
    q->n_bad = kept;
    return HS_QUALITY_OK;
}

int hs_quality_block_samples(const hs_quality_t *q, int *block)
{
    const int status = block == 0 ? HS_QUALITY_ERR_NULL : checked(q);
    if (status == HS_QUALITY_OK) {
        *block = q->block;
    }
    return status;
}

int hs_quality_overflows(const hs_quality_t *q, uint32_t *overflows)
{
    const int status = overflows == 0 ? HS_QUALITY_ERR_NULL : checked(q);
    if (status == HS_QUALITY_OK) {
        *overflows = q->overflows;
    }
    return status;
}

const char *hs_quality_kind_name(int kind)
{
    switch (kind) {
    case HS_QUALITY_NAN:
        return "nan";
    case HS_QUALITY_FLAT_LINE:
        return "flat_line";
    case HS_QUALITY_CLIPPING:
        return "clipping";
    case HS_QUALITY_NOISE:
        return "noise";
    default:
        return "";
    }
}
