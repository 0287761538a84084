/* The device path for ECG beat models; see hs_monitor.h. sdk/device/monitor.py (Monitor with _BeatTask) is the
 * specification; each function names what it ports. The parts (hs_dsp, hs_rpeak, hs_channels, hs_quality, hs_policy)
 * are each equal to their Python; this file calls them in the Monitor's order, on the same samples.
 *
 * Where double is used, and why: where the Python Monitor computes in float64 (Python floats, numpy's default).
 * - Sample arithmetic between the rates: window starts, R peaks and readiness limits at the sensor rate
 *   (sample * fs / model_fs, rounded half to even as np.round / round do, floored or ceiled), excerpt_s * fs.
 * - The model's outputs: the dequantized logits ((q - zero point) * scale) and their softmax (torch on float64), the
 *   probability the policy compares with 0.6; the embedding (sum * scale / length).
 * - The policy and the gate compute in double too (their files say where).
 * On a Cortex-M4F (single-precision FPU only) each double operation is a libgcc routine: some tens of cycles, a
 * division or exp() one to a few hundred. Per classified beat: the softmax (4 exp and a division) and the embedding
 * (32 products and divisions); per chunk, a few conversions for the readiness checks. Float there would change no
 * label, but it would move probabilities in their last bits and could flip the policy's 0.6 threshold.
 * Float where the FPU makes it natural, equal because Python computes the same operations in float32: the signal,
 * the filtered ECG, the windows, and the trace's interpolation to the sensor rate (analyze.trace_at_input_rate),
 * 2,160 samples a beat at 360 Hz, whose positions are exact integer fractions. It was double until it took 2.3
 * million instructions a beat, a fifth of the model's.
 *
 * Build with -std=c99 (or -ffp-contract=off): the interpolation rounds its product and sum separately, as numpy. */
#include <math.h>
#include <string.h>
#include "hs_monitor.h"

#define HS_MONITOR_MAGIC 0x48534d4eu  /* "HSMN" */

/* sdk/device/monitor.py's constants */
#define REACH HS_CHANNELS_BUMP_REACH  /* a beat's rhythm bump reaches this far (model-rate samples) */
#define RAW_MARGIN_S 5.0              /* raw signal kept beyond excerpt_s for quality alerts, which come late */
#define BEAT_MARKS_S 120.0            /* classified beats remembered for alerts' beat marks */

/* --- small helpers ------------------------------------------------------------------------------------------------ */

static void count_overflow(hs_monitor_t *m)
{
    if (m->overflows < UINT32_MAX) {
        m->overflows++;
    }
}

/* Python's int(round(x)) and np.round(x).astype(int64): half to even (rint in the default rounding mode). */
static int64_t round_half_even(double x)
{
    return (int64_t)rint(x);
}

/* resampled_index(model_sample, model_fs, fs): where a model-rate sample lies at the sensor rate. */
static int64_t at_sensor_rate(const hs_monitor_t *m, int64_t model_sample)
{
    return round_half_even((double)model_sample * m->fs / m->model_fs);
}

/* Monitor._to_sensor with math.floor or math.ceil. */
static int64_t to_sensor_floor(const hs_monitor_t *m, int64_t model_sample)
{
    const double at = floor((double)model_sample * m->fs / m->model_fs);
    return at > 0.0 ? (int64_t)at : 0;
}

static int64_t to_sensor_ceil(const hs_monitor_t *m, int64_t model_sample)
{
    const double at = ceil((double)model_sample * m->fs / m->model_fs);
    return at > 0.0 ? (int64_t)at : 0;
}

static int class_named(const hs_model_api_t *api, const char *name)
{
    int c;
    for (c = 0; c < api->classes; c++) {
        if (api->class_names[c] != NULL && strcmp(api->class_names[c], name) == 0) {
            return c;
        }
    }
    return -1;
}

/* --- the kept signal (_Samples): a stretch of a stream in a plain array, moved to its front when the end is reached,
 * so that any part of it can be handed out as one pointer -------------------------------------------------------- */

/* Room for n more samples at the end (the oldest dropped if the build holds no more); returns where they go. */
static float *kept_extend(hs_monitor_kept_t *kept, float *data, int32_t capacity, int32_t n)
{
    float *end;
    if (kept->offset + kept->count + n > capacity) {
        if (kept->count + n > capacity) {  /* more than the build holds: the oldest go (a read of them counts) */
            const int32_t drop = kept->count + n - capacity;
            kept->offset += drop;
            kept->start += drop;
            kept->count -= drop;
        }
        memmove(data, data + kept->offset, (size_t)kept->count * sizeof(float));
        kept->offset = 0;
    }
    end = data + kept->offset + kept->count;
    kept->count += n;
    return end;
}

/* _Samples.drop_before */
static void kept_drop_before(hs_monitor_kept_t *kept, int64_t index)
{
    int64_t cut = index - kept->start;
    if (cut <= 0) {
        return;
    }
    if (cut > kept->count) {
        cut = kept->count;
    }
    kept->start += cut;
    kept->offset += (int32_t)cut;
    kept->count -= (int32_t)cut;
    if (kept->count == 0) {
        kept->offset = 0;
    }
}

static int64_t kept_end(const hs_monitor_kept_t *kept)
{
    return kept->start + kept->count;
}

/* The raw samples from *lo on (up to n_in, which the callers never pass): a pointer into the kept signal. Samples the
 * build could not keep are left out (the excerpt starts later) and counted. */
static const float *raw_from(hs_monitor_t *m, int64_t *lo)
{
    if (*lo < m->raw_kept.start) {
        count_overflow(m);
        *lo = m->raw_kept.start;
    }
    return m->raw + m->raw_kept.offset + (*lo - m->raw_kept.start);
}

static hs_channels_signal_t filtered_view(const hs_monitor_t *m)
{
    hs_channels_signal_t view;
    view.data = m->filtered;
    view.start = m->filtered_kept.start;
    view.capacity = HS_MONITOR_FILTERED_CAPACITY;
    view.head = m->filtered_kept.offset;
    view.count = m->filtered_kept.count;
    return view;
}

/* --- set-up ------------------------------------------------------------------------------------------------------- */

size_t hs_monitor_state_size(void)
{
    return sizeof(hs_monitor_t);
}

/* Each part reports the size it was compiled with: the same as here, or the -D flags differ between files. */
static int same_build(void)
{
    return hs_resampler_state_size() == sizeof(hs_resampler_t) && hs_filter_state_size() == sizeof(hs_filter_t)
           && hs_rpeak_state_size() == sizeof(hs_rpeak_t) && hs_channels_state_size() == sizeof(hs_channels_t)
           && hs_quality_state_size() == sizeof(hs_quality_t) && hs_policy_state_size() == sizeof(hs_policy_t);
}

static int check_model(const hs_model_api_t *api)
{
    float scale;
    if (api->class_names == NULL || api->quantize_input == NULL || api->infer == NULL || api->explain == NULL
        || api->logit_scale == NULL || api->logit_zero_point == NULL || api->trace_scale == NULL
        || (api->embedding_length > 0 && api->last_sums == NULL)) {
        return HS_MONITOR_ERR_NULL;
    }
    if (api->input_length > HS_MONITOR_MAX_WINDOW || api->classes > HS_MONITOR_MAX_CLASSES
        || api->embedding_length > HS_MONITOR_MAX_EMBEDDING) {
        return HS_MONITOR_ERR_UNSUPPORTED;
    }
    scale = api->logit_scale();
    if (api->fs != (double)HS_CHANNELS_MODEL_FS || api->input_channels != HS_MONITOR_INPUTS
        || api->input_length < 2 || api->input_length % 2 != 0 || api->classes < 1 || api->embedding_length < 0
        || (api->embedding_length > 0 && !(api->last_length > 0 && isfinite(api->last_scale)))
        || !(isfinite(scale) && scale > 0.0f)) {
        return HS_MONITOR_ERR_CONFIG;
    }
    return HS_MONITOR_OK;
}

/* The largest ceil(n * up / down) of a feed stays within HS_RPEAK_MAX_CHUNK, as does the resampler's flush. */
static int chunk_limits(hs_monitor_t *m, const hs_resampler_config_t *resampler)
{
    const int64_t up = resampler->up, down = resampler->down;
    const int64_t longest = up > down ? up : down;
    const int64_t most = (int64_t)HS_RPEAK_MAX_CHUNK * down / up;
    const int64_t flushed = up == down ? 0 : (11 * longest - 1 + down - 1) / down;
    if (most < 1 || flushed > HS_RPEAK_MAX_CHUNK) {
        return HS_MONITOR_ERR_UNSUPPORTED;
    }
    m->max_chunk = (int32_t)(most < HS_MONITOR_MAX_CHUNK ? most : HS_MONITOR_MAX_CHUNK);
    return HS_MONITOR_OK;
}

int hs_monitor_init(hs_monitor_t *m, const hs_monitor_config_t *config)
{
    const hs_model_api_t *api;
    hs_channels_config_t channels;
    hs_quality_config_t quality;
    hs_policy_config_t policy;
    int block;
    int status;
    if (m == NULL || config == NULL || config->model == NULL || config->model_context == NULL) {
        return HS_MONITOR_ERR_NULL;
    }
    m->magic = 0;  /* a failed init leaves a state no call accepts */
    if (!same_build()) {
        return HS_MONITOR_ERR_BUILD;
    }
    api = config->model;
    status = check_model(api);
    if (status != HS_MONITOR_OK) {
        return status;
    }
    if (!(config->fs >= HS_MONITOR_MIN_FS && config->fs <= (double)HS_MONITOR_MAX_FS)) {  /* NaN fails too */
        return HS_MONITOR_ERR_UNSUPPORTED;
    }
    /* resample_factors(fs, model_fs): model_fs / fs = up / down exactly; the detector runs at the model rate */
    if (config->resampler.up < 1 || config->resampler.down < 1
        || (double)config->resampler.up * config->fs != (double)config->resampler.down * api->fs
        || config->rpeak.fs != api->fs
        || !(config->excerpt_s > 0.0 && config->excerpt_s <= (double)api->input_length / api->fs / 2.0)) {
        return HS_MONITOR_ERR_CONFIG;
    }
    memset(m, 0, sizeof(*m));
    status = chunk_limits(m, &config->resampler);
    if (status != HS_MONITOR_OK) {
        return status;
    }
    if (hs_resampler_init(&m->resampler, &config->resampler) != HS_DSP_OK
        || hs_filter_init(&m->bandpass, &config->bandpass) != HS_DSP_OK
        || hs_rpeak_init(&m->rpeak, &config->rpeak) != HS_RPEAK_OK) {
        return HS_MONITOR_ERR_CONFIG;
    }
    channels.model_fs = HS_CHANNELS_MODEL_FS;
    channels.beat_window = api->input_length;
    channels.rhythm_window = 0;
    quality.fs = config->fs;
    quality.signal = HS_QUALITY_ECG;
    policy.fs = config->fs;
    policy.classes = api->classes;
    policy.class_names = api->class_names;
    if (hs_channels_init(&m->channels, &channels) != HS_CHANNELS_OK
        || hs_quality_init(&m->quality, &quality) != HS_QUALITY_OK
        || hs_quality_block_samples(&m->quality, &block) != HS_QUALITY_OK
        || hs_policy_init(&m->policy, &policy) != HS_POLICY_OK) {
        return HS_MONITOR_ERR_CONFIG;
    }
    m->model = api;
    m->model_context = config->model_context;
    m->fs = config->fs;
    m->model_fs = api->fs;
    m->window = api->input_length;
    m->trace_length = (int32_t)round_half_even((double)api->input_length * config->fs / api->fs);
    m->excerpt = (int32_t)round_half_even(config->excerpt_s * config->fs);
    m->raw_margin = (int32_t)(RAW_MARGIN_S * config->fs);
    m->classes = api->classes;
    m->normal_class = class_named(api, "N");
    m->v_class = m->policy.v_class;
    m->block = block;
    m->magic = HS_MONITOR_MAGIC;
    return HS_MONITOR_OK;
}

static int usable(const hs_monitor_t *m)
{
    if (m == NULL) {
        return HS_MONITOR_ERR_NULL;
    }
    if (m->magic != HS_MONITOR_MAGIC) {
        return HS_MONITOR_ERR_STATE;
    }
    return m->broken ? HS_MONITOR_ERR_INTERNAL : HS_MONITOR_OK;
}

int hs_monitor_max_chunk(const hs_monitor_t *m, int *max_chunk)
{
    const int status = max_chunk == NULL ? HS_MONITOR_ERR_NULL : usable(m);
    if (status == HS_MONITOR_OK) {
        *max_chunk = m->max_chunk;
    }
    return status;
}

int hs_monitor_overflows(const hs_monitor_t *m, uint32_t *overflows)
{
    uint32_t forgotten = 0, merged = 0, total;
    int status = overflows == NULL ? HS_MONITOR_ERR_NULL : usable(m);
    if (status != HS_MONITOR_OK) {
        return status;
    }
    if (hs_rpeak_forgotten(&m->rpeak, &forgotten) != HS_RPEAK_OK
        || hs_quality_overflows(&m->quality, &merged) != HS_QUALITY_OK) {
        return HS_MONITOR_ERR_INTERNAL;
    }
    total = m->overflows + forgotten;
    total = total < forgotten ? UINT32_MAX : total;
    *overflows = total + merged < total ? UINT32_MAX : total + merged;
    return HS_MONITOR_OK;
}

/* --- events ------------------------------------------------------------------------------------------------------- */

static void deliver(hs_monitor_t *m, int kind, hs_monitor_on_event_t on_event, void *user)
{
    m->event.kind = kind;
    if (on_event != NULL) {
        on_event(&m->event, user);
    }
}

/* Monitor._with_beats: the R peaks in the excerpt [lo, hi), by sample, with their class when classified: the
 * classified beats remembered and the beats the channels keep (at the sensor rate, unclipped, as
 * r_peaks_at_sensor_rate gives them). Both lists are in time order; a sample in both is one mark. */
static int32_t beat_marks(hs_monitor_t *m, int64_t lo, int64_t hi)
{
    const int kept = hs_channels_count(&m->channels);
    int32_t n = 0, i = 0;
    int k = 0;
    int64_t last = 0;
    for (;;) {
        hs_channels_beat_t beat;
        int64_t labelled = INT64_MAX, peak = INT64_MAX, sample;
        int32_t label = HS_MONITOR_UNCLASSIFIED;
        while (i < m->labels_count
               && m->labels[(m->labels_first + i) % HS_MONITOR_MAX_MARKS].sample < lo) {
            i++;
        }
        if (i < m->labels_count) {
            labelled = m->labels[(m->labels_first + i) % HS_MONITOR_MAX_MARKS].sample;
        }
        while (k < kept && hs_channels_beat(&m->channels, k, &beat) == HS_CHANNELS_OK
               && at_sensor_rate(m, beat.r) < lo) {
            k++;
        }
        if (k < kept && hs_channels_beat(&m->channels, k, &beat) == HS_CHANNELS_OK) {
            peak = at_sensor_rate(m, beat.r);
        }
        sample = labelled < peak ? labelled : peak;
        if (sample >= hi) {
            return n;
        }
        if (sample == labelled) {
            label = m->labels[(m->labels_first + i) % HS_MONITOR_MAX_MARKS].label;
            i++;
        }
        if (sample == peak) {
            k++;
        }
        if (n > 0 && sample == last) {  /* two model-rate peaks on one sensor sample (rates under 128 Hz) */
            continue;
        }
        if (n == HS_MONITOR_MAX_MARKS) {
            count_overflow(m);
            return n;
        }
        m->marks[n].sample = sample;
        m->marks[n].label = label;
        last = sample;
        n++;
    }
}

/* An AlertEvent: the policy's decision, its excerpt, its beat's embedding and (but for quality alerts) its marks. */
static void alert(hs_monitor_t *m, const hs_policy_alert_t *decision, int64_t start, int32_t length,
                  const float *signal, const float *trace, int32_t truncated, const double *embedding, int marked,
                  hs_monitor_on_event_t on_event, void *user)
{
    hs_monitor_alert_t *a = &m->event.alert;
    a->decision = *decision;
    a->head_version = m->model->head_version != NULL ? m->model->head_version() : 0u;
    a->excerpt_start = start;
    a->excerpt_length = length;
    a->truncated = truncated;
    a->signal = signal;
    a->trace = trace;
    a->embedding = embedding;
    a->embedding_length = embedding != NULL ? m->model->embedding_length : 0;
    a->marks = m->marks;
    a->n_marks = marked ? beat_marks(m, start, start + length) : 0;
    deliver(m, HS_MONITOR_EVENT_ALERT, on_event, user);
}

static int internal_error(hs_monitor_t *m)
{
    m->broken = 1;
    return HS_MONITOR_ERR_INTERNAL;
}

/* Monitor._quality: each event, and for a problem that starts, the policy's alert with excerpt_s of raw signal before
 * it and up to half a second (the gate's block) of it. */
static int quality_events(hs_monitor_t *m, int n_events, hs_monitor_on_event_t on_event, void *user)
{
    int e;
    for (e = 0; e < n_events; e++) {
        const hs_quality_event_t *problem = &m->quality_events[e];
        int raised = 0, r;
        m->event.quality = *problem;
        deliver(m, HS_MONITOR_EVENT_QUALITY, on_event, user);
        if (problem->end != HS_QUALITY_ONGOING) {
            continue;
        }
        if (hs_policy_quality(&m->policy, problem->kind, problem->start, m->decisions, HS_POLICY_MAX_ALERTS,
                              &raised) != HS_POLICY_OK) {
            return internal_error(m);
        }
        for (r = 0; r < raised; r++) {
            const int64_t reach = m->excerpt < m->block ? m->excerpt : m->block;
            int64_t lo = problem->start - m->excerpt > 0 ? problem->start - m->excerpt : 0;
            const int64_t hi = problem->start + reach < m->n_in ? problem->start + reach : m->n_in;
            const float *signal = raw_from(m, &lo);
            const int32_t length = hi > lo ? (int32_t)(hi - lo) : 0;
            memset(m->scratch.trace, 0, (size_t)length * sizeof(float));  /* no model looked at it */
            alert(m, &m->decisions[r], lo, length, signal, m->scratch.trace, 0, NULL, 0, on_event, user);
        }
    }
    return HS_MONITOR_OK;
}

/* --- one beat ----------------------------------------------------------------------------------------------------- */

/* The int8 backend on the window in scratch.input: label (the arg-max, first of equals), its probability (softmax of
 * the dequantized logits), the embedding of beats not called N (Runner.embed, from the same inference), and the
 * label's trace (hs_explain times its scale) at the sensor rate (trace_at_input_rate) in scratch.trace. */
static void run_model(hs_monitor_t *m, int *label, double *p, int *has_embedding)
{
    const hs_model_api_t *api = m->model;
    double zero_point, scale, top, sum;
    float trace_scale;
    int best = 0, c, i;
    int32_t j, r;
    api->quantize_input(m->scratch.input, m->quantized);
    (void)api->infer(m->model_context, m->quantized, m->logits);
    for (c = 1; c < m->classes; c++) {
        if (m->logits[c] > m->logits[best]) {
            best = c;
        }
    }
    *has_embedding = best != m->normal_class && api->embedding_length > 0;
    if (*has_embedding) {
        api->last_sums(m->model_context, m->sums);
        for (i = 0; i < api->embedding_length; i++) {
            m->embedding[i] = (double)m->sums[i] * (double)api->last_scale / (double)api->last_length;
        }
    }
    api->explain(m->model_context, best, m->model_trace);
    zero_point = (double)api->logit_zero_point();
    scale = (double)api->logit_scale();
    top = ((double)m->logits[best] - zero_point) * scale;
    sum = 0.0;
    for (c = 0; c < m->classes; c++) {
        sum += exp(((double)m->logits[c] - zero_point) * scale - top);
    }
    *label = best;
    *p = 1.0 / sum;  /* torch: exp(x - max) * (1 / sum), and exp(0) is 1 */
    /* analyze.trace_at_input_rate: sensor sample i lies at i * up / down on the model's axis (the resampler's
     * factors, model_fs / fs = up / down), step j and remainder r; (trace[j + 1] - trace[j]) * (r / down) + trace[j]
     * in float, each model-rate value the int16 step times the scale, as numpy computes it in float32 */
    trace_scale = api->trace_scale(best);
    for (i = 0, j = 0, r = 0; i < m->trace_length; i++) {
        if (j >= m->window - 1) {
            m->scratch.trace[i] = (float)m->model_trace[m->window - 1] * trace_scale;
        } else {
            const float left = (float)m->model_trace[j] * trace_scale;
            const float right = (float)m->model_trace[j + 1] * trace_scale;
            m->scratch.trace[i] = (right - left) * ((float)r / (float)m->resampler.down) + left;
        }
        for (r += m->resampler.up; r >= m->resampler.down; r -= m->resampler.down) {
            j++;
        }
    }
}

/* The run's excerpt starts as its first beat's (Python: _Run(finding, 1, ...)). */
static void run_begin(hs_monitor_t *m, int64_t first, int64_t start, int32_t length, const float *signal,
                      const float *trace, const double *embedding)
{
    m->run_first = first;
    m->run_start = start;
    m->run_truncated = length > HS_MONITOR_RUN_CAPACITY;
    m->run_length = m->run_truncated ? HS_MONITOR_RUN_CAPACITY : length;
    if (m->run_truncated) {
        count_overflow(m);
    }
    memcpy(m->run_signal, signal, (size_t)m->run_length * sizeof(float));
    memcpy(m->run_trace, trace, (size_t)m->run_length * sizeof(float));
    m->run_has_embedding = embedding != NULL;
    if (embedding != NULL) {
        memcpy(m->run_embedding, embedding, (size_t)m->model->embedding_length * sizeof(double));
    }
}

/* alerts._union of the run's excerpt and a beat's: one excerpt covering both, zeros between them, the signal of the
 * later one where they overlap (the same samples) and the larger trace. Cut to HS_MONITOR_RUN_CAPACITY. The beats come
 * in time order, so a beat's excerpt never starts before the run's. */
static void run_extend(hs_monitor_t *m, int64_t start, int32_t length, const float *signal, const float *trace)
{
    const int64_t old_end = m->run_start + m->run_length;
    int64_t end = old_end > start + length ? old_end : start + length;
    int64_t i;
    if (end - m->run_start > HS_MONITOR_RUN_CAPACITY) {
        if (!m->run_truncated) {
            count_overflow(m);
        }
        m->run_truncated = 1;
        end = m->run_start + HS_MONITOR_RUN_CAPACITY;
    }
    for (i = m->run_length; i < end - m->run_start; i++) {  /* the new part, zero until the beat's excerpt begins */
        m->run_signal[i] = 0.0f;
        m->run_trace[i] = 0.0f;
    }
    for (i = 0; i < length && start + i < end; i++) {
        const int64_t at = start + i - m->run_start;
        if (at >= 0) {
            m->run_signal[at] = signal[i];
            m->run_trace[at] = trace[i] > m->run_trace[at] ? trace[i] : m->run_trace[at];
        }
    }
    m->run_length = (int32_t)(end - m->run_start);
}

/* Remembers a classified beat's label for the beat marks (Monitor._beat_labels[sample] = label). */
static void remember_label(hs_monitor_t *m, int64_t sample, int label)
{
    if (m->labels_count > 0) {
        hs_monitor_mark_t *newest = &m->labels[(m->labels_first + m->labels_count - 1) % HS_MONITOR_MAX_MARKS];
        if (newest->sample == sample) {  /* one sensor sample for two beats: the dict keeps the later */
            newest->label = label;
            return;
        }
    }
    if (m->labels_count == HS_MONITOR_MAX_MARKS) {  /* older than any excerpt reaches */
        m->labels_first = (m->labels_first + 1) % HS_MONITOR_MAX_MARKS;
        m->labels_count--;
    }
    m->labels[(m->labels_first + m->labels_count) % HS_MONITOR_MAX_MARKS].sample = sample;
    m->labels[(m->labels_first + m->labels_count) % HS_MONITOR_MAX_MARKS].label = label;
    m->labels_count++;
}

/* _BeatTask.classified / gated and the policy's alerts for one kept beat (Monitor._classify for one window). */
static int classify(hs_monitor_t *m, int k, hs_monitor_on_event_t on_event, void *user)
{
    hs_monitor_beat_t *event = &m->event.beat;
    hs_channels_beat_t beat;
    hs_channels_signal_t view = filtered_view(m);
    hs_policy_finding_t finding;
    int64_t start, window_start, sample, lo = 0, hi = 0;
    const float *signal = NULL;
    const float *trace = NULL;
    int problem, label = HS_MONITOR_UNCLASSIFIED, has_embedding = 0, pre_active, pre_reported, known_v, raised, r;
    int status;
    double p = 0.0;
    if (hs_channels_beat(&m->channels, k, &beat) != HS_CHANNELS_OK) {
        return internal_error(m);
    }
    start = beat.r - m->window / 2;
    window_start = at_sensor_rate(m, start);
    sample = at_sensor_rate(m, beat.r);  /* _sample: clipped to the signal */
    sample = sample < 0 ? 0 : (sample > m->n_in - 1 ? m->n_in - 1 : sample);
    if (hs_quality_window_problem(&m->quality, start, m->window, m->model_fs, &problem) != HS_QUALITY_OK) {
        return internal_error(m);
    }
    if (problem == HS_QUALITY_NONE) {
        status = hs_channels_beat_window(&m->channels, k, &view, m->scratch.input);
        if (status == HS_CHANNELS_ERR_DROPPED) {
            count_overflow(m);
            problem = HS_MONITOR_PROBLEM_BACKLOG;
        } else if (status != HS_CHANNELS_OK) {
            return internal_error(m);
        }
    }
    if (problem == HS_QUALITY_NONE) {
        run_model(m, &label, &p, &has_embedding);
        /* _excerpt_of: excerpt_s each side of the beat, within the window and the signal */
        lo = window_start > sample - m->excerpt ? window_start : sample - m->excerpt;
        hi = window_start + m->trace_length < sample + m->excerpt + 1 ? window_start + m->trace_length
                                                                       : sample + m->excerpt + 1;
        lo = lo > 0 ? lo : 0;
        hi = hi < m->n_in ? hi : m->n_in;
        signal = raw_from(m, &lo);
        hi = hi > lo ? hi : lo;
        trace = m->scratch.trace + (lo - window_start);
    }
    event->sample = sample;
    event->window_start = window_start;
    event->label = label;
    event->problem = problem;
    event->p = p;
    event->trace = problem == HS_QUALITY_NONE ? m->scratch.trace : NULL;
    event->trace_length = problem == HS_QUALITY_NONE ? m->trace_length : 0;
    deliver(m, HS_MONITOR_EVENT_BEAT, on_event, user);
    remember_label(m, sample, label);

    finding.sample = sample;
    finding.end = window_start + m->trace_length;
    finding.label = label == HS_MONITOR_UNCLASSIFIED ? HS_POLICY_UNCLASSIFIED : label;
    finding.confidence = p;
    finding.hr_bpm = 0.0;
    pre_active = m->policy.run.active;
    pre_reported = m->policy.run.reported;
    known_v = label != HS_MONITOR_UNCLASSIFIED && label == m->v_class && p >= HS_POLICY_MIN_BEAT_CONFIDENCE;
    if (hs_policy_beat(&m->policy, &finding, m->decisions, HS_POLICY_MAX_BEAT_ALERTS, &raised) != HS_POLICY_OK) {
        return internal_error(m);
    }
    /* the run's excerpt follows the policy's run (_ventricular), before its alerts are cut from it */
    if (known_v && !pre_active) {
        run_begin(m, sample, lo, (int32_t)(hi - lo), signal, trace, has_embedding ? m->embedding : NULL);
    } else if (known_v && !pre_reported) {
        run_extend(m, lo, (int32_t)(hi - lo), signal, trace);
    }
    for (r = 0; r < raised; r++) {
        const hs_policy_alert_t *decision = &m->decisions[r];
        if (decision->type == HS_POLICY_VENTRICULAR_RUN || decision->type == HS_POLICY_VENTRICULAR_ECTOPIC_BEAT) {
            if (decision->excerpt_first != m->run_first) {
                return internal_error(m);
            }
            alert(m, decision, m->run_start, m->run_length, m->run_signal, m->run_trace, m->run_truncated,
                  m->run_has_embedding ? m->run_embedding : NULL, 1, on_event, user);
        } else {
            if (decision->excerpt_first != sample || signal == NULL) {
                return internal_error(m);
            }
            alert(m, decision, lo, (int32_t)(hi - lo), signal, trace, 0, has_embedding ? m->embedding : NULL, 1,
                  on_event, user);
        }
    }
    return HS_MONITOR_OK;
}

/* --- the model-rate stream ---------------------------------------------------------------------------------------- */

/* _EcgTask.take for one confirmed R peak: its amplitude from the filtered signal, then the beat context. */
static int add_peak(hs_monitor_t *m, int64_t r)
{
    const hs_channels_signal_t view = filtered_view(m);
    int status = hs_channels_add_peak(&m->channels, &view, r);
    if (status == HS_CHANNELS_ERR_FULL) {  /* more beats waiting than the build holds: the oldest goes */
        count_overflow(m);
        if (hs_channels_forget(&m->channels, 1) != HS_CHANNELS_OK) {
            return internal_error(m);
        }
        m->next_beat = m->next_beat > 0 ? m->next_beat - 1 : 0;
        status = hs_channels_add_peak(&m->channels, &view, r);
    }
    if (status == HS_CHANNELS_ERR_DROPPED) {  /* its R search reads signal the build could not keep */
        count_overflow(m);
        status = hs_channels_add(&m->channels, r, 0.0f);
    }
    return status == HS_CHANNELS_OK ? HS_MONITOR_OK : internal_error(m);
}

static int add_peaks(hs_monitor_t *m, int n)
{
    int i, status = HS_MONITOR_OK;
    for (i = 0; i < n && status == HS_MONITOR_OK; i++) {
        status = add_peak(m, m->peaks[i]);
    }
    return status;
}

/* Monitor._forget with _BeatTask.keep_from / forget: drop what no pending or future beat, alert or mark needs. */
static int forget(hs_monitor_t *m, int64_t settled)
{
    hs_channels_beat_t pending = {0, 0.0f, 0.0f, 0.0f};
    int64_t keep_from, sensor_keep, recent;
    int forgotten = 0;
    const int has_pending = m->next_beat < hs_channels_count(&m->channels);
    if (has_pending && hs_channels_beat(&m->channels, m->next_beat, &pending) != HS_CHANNELS_OK) {
        return internal_error(m);
    }
    if (m->finished && !has_pending) {
        return HS_MONITOR_OK;  /* keep_from None: keep everything */
    }
    keep_from = m->finished || (has_pending && pending.r < settled) ? pending.r : settled;
    keep_from -= m->window / 2 + REACH;
    kept_drop_before(&m->filtered_kept, keep_from);
    if (hs_channels_forget_before(&m->channels, keep_from, &forgotten) != HS_CHANNELS_OK) {
        return internal_error(m);
    }
    m->next_beat -= forgotten;  /* the forgotten beats were all classified */
    recent = m->n_in - m->excerpt - m->raw_margin;
    sensor_keep = to_sensor_floor(m, keep_from);
    sensor_keep = sensor_keep < recent ? sensor_keep : recent;
    kept_drop_before(&m->raw_kept, sensor_keep);
    if (hs_quality_forget(&m->quality, sensor_keep > 0 ? sensor_keep : 0) != HS_QUALITY_OK) {
        return internal_error(m);
    }
    while (m->labels_count > 0
           && (double)m->labels[m->labels_first].sample < (double)m->n_in - BEAT_MARKS_S * m->fs) {
        m->labels_first = (m->labels_first + 1) % HS_MONITOR_MAX_MARKS;
        m->labels_count--;
    }
    return HS_MONITOR_OK;
}

/* Monitor._analyse: n model-rate samples in m->resampled: filter them, find the R peaks, classify every beat whose
 * window is ready, forget what is done. */
static int analyse(hs_monitor_t *m, int n, hs_monitor_on_event_t on_event, void *user)
{
    int64_t settled = 0, known_until = 0;
    int n_peaks = 0, status;
    if (n > 0) {
        /* band-passed for the windows; the detector reads the resampled signal itself, as _EcgTask.take */
        float *filtered = kept_extend(&m->filtered_kept, m->filtered, HS_MONITOR_FILTERED_CAPACITY, n);
        if (hs_filter_process(&m->bandpass, m->resampled, n, filtered) != HS_DSP_OK) {
            return internal_error(m);
        }
        if (hs_rpeak_process(&m->rpeak, m->resampled, n, m->peaks, HS_RPEAK_MAX_PEAKS, &n_peaks) != HS_RPEAK_OK) {
            return internal_error(m);
        }
        status = add_peaks(m, n_peaks);
        if (status != HS_MONITOR_OK) {
            return status;
        }
    }
    if (m->finished) {
        if (hs_rpeak_flush(&m->rpeak, m->peaks, HS_RPEAK_MAX_PEAKS, &n_peaks) != HS_RPEAK_OK) {
            return internal_error(m);
        }
        status = add_peaks(m, n_peaks);
        if (status != HS_MONITOR_OK) {
            return status;
        }
    } else if (hs_rpeak_settled_until(&m->rpeak, &settled) != HS_RPEAK_OK
               || hs_quality_known_until(&m->quality, &known_until) != HS_QUALITY_OK) {
        return internal_error(m);
    }
    /* _BeatTask.ready: beats in order, each once the signal to its window's end (and its bumps) is settled */
    while (m->next_beat < hs_channels_count(&m->channels)) {
        hs_channels_beat_t beat;
        int64_t end;
        if (hs_channels_beat(&m->channels, m->next_beat, &beat) != HS_CHANNELS_OK) {
            return internal_error(m);
        }
        end = beat.r - m->window / 2 + m->window;
        if (!m->finished && !(kept_end(&m->filtered_kept) >= end && known_until >= to_sensor_ceil(m, end)
                              && settled >= end + REACH)) {
            break;
        }
        status = classify(m, m->next_beat, on_event, user);
        if (status != HS_MONITOR_OK) {
            return status;
        }
        m->next_beat++;
    }
    return forget(m, settled);
}

/* --- the calls ---------------------------------------------------------------------------------------------------- */

static int check_feed(const hs_monitor_t *m, const void *samples, int n)
{
    const int status = usable(m);
    if (status != HS_MONITOR_OK) {
        return status;
    }
    if (m->finished) {
        return HS_MONITOR_ERR_FINISHED;
    }
    if (n < 0 || n > m->max_chunk) {
        return HS_MONITOR_ERR_LENGTH;
    }
    return n > 0 && samples == NULL ? HS_MONITOR_ERR_NULL : HS_MONITOR_OK;
}

/* Monitor.feed after the checks: x holds n samples (it may be m->chunk itself). */
static int feed(hs_monitor_t *m, const float *x, int n, hs_monitor_on_event_t on_event, void *user)
{
    int held = 0, i, done = 0, taken = 0, n_events = 0, n_out = 0, status;
    float *kept;
    if (n == 0) {
        return HS_MONITOR_OK;
    }
    /* a sample out of range is a dropout (m->chunk: the samples as the gate reads them); _hold_last_finite: the kept
     * signal holds dropouts at the last finite value, so that no filter state is poisoned by them (the gate flags
     * them; nothing over them is classified) */
    kept = kept_extend(&m->raw_kept, m->raw, HS_MONITOR_RAW_CAPACITY, n);
    for (i = 0; i < n; i++) {
        const float value = x[i];
        if (isfinite(value) && fabsf(value) <= HS_MONITOR_MAX_ABS_MV) {
            m->last_finite = value;
            m->chunk[i] = value;
        } else {
            held = 1;
            m->chunk[i] = NAN;
        }
        kept[i] = m->last_finite;
    }
    m->n_in += n;
    do {
        status = hs_quality_process(&m->quality, m->chunk + done, n - done,
                                    m->quality_events, HS_QUALITY_MAX_PENDING, &n_events, &taken);
        if (status != HS_QUALITY_OK && status != HS_QUALITY_OUTPUT_FULL) {
            return internal_error(m);
        }
        done += taken;
        if (quality_events(m, n_events, on_event, user) != HS_MONITOR_OK) {
            return HS_MONITOR_ERR_INTERNAL;
        }
    } while (status == HS_QUALITY_OUTPUT_FULL);
    if (hs_resampler_process(&m->resampler, kept, n, m->resampled, HS_RPEAK_MAX_CHUNK, &n_out) != HS_DSP_OK) {
        return internal_error(m);
    }
    status = analyse(m, n_out, on_event, user);
    if (status != HS_MONITOR_OK) {
        return status;
    }
    return held ? HS_MONITOR_HELD : HS_MONITOR_OK;
}

int hs_monitor_feed(hs_monitor_t *m, const float *samples, int n, hs_monitor_on_event_t on_event, void *user)
{
    int status = check_feed(m, samples, n);
    if (status != HS_MONITOR_OK) {
        return status;
    }
    return feed(m, samples, n, on_event, user);
}

int hs_monitor_feed_int16(hs_monitor_t *m, const int16_t *counts, int n, float mv_per_count,
                          hs_monitor_on_event_t on_event, void *user)
{
    int status = check_feed(m, counts, n), i;
    if (status != HS_MONITOR_OK) {
        return status;
    }
    if (!(mv_per_count > 0.0f && mv_per_count <= HS_MONITOR_MAX_ABS_MV / 32768.0f)) {  /* NaN fails too */
        return HS_MONITOR_ERR_RANGE;
    }
    for (i = 0; i < n; i++) {
        m->chunk[i] = (float)counts[i] * mv_per_count;
    }
    return feed(m, m->chunk, n, on_event, user);
}

int hs_monitor_finish(hs_monitor_t *m, hs_monitor_on_event_t on_event, void *user)
{
    int n_events = 0, n_out = 0, raised = 0, r, status = usable(m);
    if (status != HS_MONITOR_OK || m->finished) {
        return status;
    }
    m->finished = 1;
    do {
        status = hs_quality_flush(&m->quality, m->quality_events, HS_QUALITY_MAX_PENDING, &n_events);
        if (status != HS_QUALITY_OK && status != HS_QUALITY_OUTPUT_FULL) {
            return internal_error(m);
        }
        if (quality_events(m, n_events, on_event, user) != HS_MONITOR_OK) {
            return HS_MONITOR_ERR_INTERNAL;
        }
    } while (status == HS_QUALITY_OUTPUT_FULL);
    if (hs_resampler_flush(&m->resampler, m->resampled, HS_RPEAK_MAX_CHUNK, &n_out) != HS_DSP_OK) {
        return internal_error(m);
    }
    status = analyse(m, n_out, on_event, user);
    if (status != HS_MONITOR_OK) {
        return status;
    }
    /* AlertPolicy.finish: a run still going */
    if (hs_policy_finish(&m->policy, m->decisions, HS_POLICY_MAX_ALERTS, &raised) != HS_POLICY_OK) {
        return internal_error(m);
    }
    for (r = 0; r < raised; r++) {
        alert(m, &m->decisions[r], m->run_start, m->run_length, m->run_signal, m->run_trace, m->run_truncated,
              m->run_has_embedding ? m->run_embedding : NULL, 1, on_event, user);
    }
    return HS_MONITOR_OK;
}
