/* Built only with `make PROFILE=1`: splits the device path into its stages without touching the runtime's sources.
 * The link sends each call into a part made from hs_monitor.c (and from the model table in the generated tables file)
 * to __wrap_NAME (ld --wrap=NAME, see the Makefile), which switches the stage counter around __real_NAME.
 *
 * A stage is charged from the monitor's call to its return. Only calls made from the monitor's own code (the glue)
 * switch: a part calling another would keep its stage (none does today). hs_explain_with does not switch back: the
 * explainer stage runs on through the monitor's softmax and its interpolation of the trace to the sensor rate, up to
 * the beat's event (the callback switches to the harness, then back to the glue). The softmax, 4 exp() and a
 * division, is a small part of that stage.
 * Not wrapped, so counted as glue: hs_channels_beat and hs_channels_count (accessors the monitor calls in loops, each
 * cheaper than a switch), hs_policy_round, the model's scale getters and the parts' init. */
#include <stdint.h>
#include "heartsight_model.h"
#include "hs_monitor.h"
#include "stage_count.h"

/* Switches only when called from the glue; returns the stage to go back to, or -1 to stay. */
static int enter(int stage)
{
    return stage_current() == HS_STAGE_GLUE ? stage_switch(stage) : -1;
}

static void leave(int outer)
{
    if (outer >= 0) {
        (void)stage_switch(outer);
    }
}

/* One wrapper: RET NAME(PARAMS) calling __real_NAME(ARGS) in STAGE. */
#define WRAP(stage, ret, name, params, args) \
    ret __real_##name params;                \
    ret __wrap_##name params;                \
    ret __wrap_##name params                 \
    {                                        \
        const int outer = enter(stage);      \
        ret result = __real_##name args;     \
        leave(outer);                        \
        return result;                       \
    }
#define WRAP_VOID(stage, name, params, args) \
    void __real_##name params;               \
    void __wrap_##name params;               \
    void __wrap_##name params                \
    {                                        \
        const int outer = enter(stage);      \
        __real_##name args;                  \
        leave(outer);                        \
    }

/* preprocessing: the quality gate, the resampler, the ECG band-pass */
WRAP(HS_STAGE_PREPROCESS, int, hs_quality_process,
     (hs_quality_t *s, const float *x, int n, hs_quality_event_t *e, int capacity, int *n_events, int *consumed),
     (s, x, n, e, capacity, n_events, consumed))
WRAP(HS_STAGE_PREPROCESS, int, hs_quality_flush, (hs_quality_t *s, hs_quality_event_t *e, int capacity, int *n_events),
     (s, e, capacity, n_events))
WRAP(HS_STAGE_PREPROCESS, int, hs_quality_known_until, (const hs_quality_t *s, int64_t *known), (s, known))
WRAP(HS_STAGE_PREPROCESS, int, hs_quality_window_problem,
     (const hs_quality_t *s, int64_t start, int64_t length, double model_fs, int *kind),
     (s, start, length, model_fs, kind))
WRAP(HS_STAGE_PREPROCESS, int, hs_quality_forget, (hs_quality_t *s, int64_t before), (s, before))
WRAP(HS_STAGE_PREPROCESS, int, hs_resampler_process, (hs_resampler_t *s, const float *x, int n, float *y, int capacity,
     int *n_out), (s, x, n, y, capacity, n_out))
WRAP(HS_STAGE_PREPROCESS, int, hs_resampler_flush, (hs_resampler_t *s, float *y, int capacity, int *n_out),
     (s, y, capacity, n_out))
WRAP(HS_STAGE_PREPROCESS, int, hs_filter_process, (hs_filter_t *s, const float *x, int n, float *y), (s, x, n, y))

/* R-peak detection */
WRAP(HS_STAGE_RPEAK, int, hs_rpeak_process, (hs_rpeak_t *s, const float *x, int n, int64_t *peaks, int capacity,
     int *n_peaks), (s, x, n, peaks, capacity, n_peaks))
WRAP(HS_STAGE_RPEAK, int, hs_rpeak_flush, (hs_rpeak_t *s, int64_t *peaks, int capacity, int *n_peaks),
     (s, peaks, capacity, n_peaks))
WRAP(HS_STAGE_RPEAK, int, hs_rpeak_settled_until, (const hs_rpeak_t *s, int64_t *settled), (s, settled))

/* window building */
WRAP(HS_STAGE_WINDOWS, int, hs_channels_add_peak, (hs_channels_t *s, const hs_channels_signal_t *f, int64_t r),
     (s, f, r))
WRAP(HS_STAGE_WINDOWS, int, hs_channels_add, (hs_channels_t *s, int64_t r, float amplitude), (s, r, amplitude))
WRAP(HS_STAGE_WINDOWS, int, hs_channels_forget, (hs_channels_t *s, int n), (s, n))
WRAP(HS_STAGE_WINDOWS, int, hs_channels_forget_before, (hs_channels_t *s, int64_t keep_from, int *forgotten),
     (s, keep_from, forgotten))
WRAP(HS_STAGE_WINDOWS, int, hs_channels_beat_window, (const hs_channels_t *s, int k, const hs_channels_signal_t *f,
     float *window), (s, k, f, window))

/* the model */
WRAP_VOID(HS_STAGE_MODEL, hs_quantize_input, (const float *x, int8_t *q), (x, q))
WRAP(HS_STAGE_MODEL, int, hs_infer_with, (hs_context_t *context, const int8_t *input, int8_t *logits),
     (context, input, logits))
WRAP_VOID(HS_STAGE_MODEL, hs_last_sums_with, (const hs_context_t *context, int32_t *sums), (context, sums))

/* the policy */
WRAP(HS_STAGE_POLICY, int, hs_policy_beat, (hs_policy_t *p, const hs_policy_finding_t *f, hs_policy_alert_t *a,
     int capacity, int *raised), (p, f, a, capacity, raised))
WRAP(HS_STAGE_POLICY, int, hs_policy_quality, (hs_policy_t *p, int problem, int64_t start, hs_policy_alert_t *a,
     int capacity, int *raised), (p, problem, start, a, capacity, raised))
WRAP(HS_STAGE_POLICY, int, hs_policy_finish, (hs_policy_t *p, hs_policy_alert_t *a, int capacity, int *raised),
     (p, a, capacity, raised))

/* the explainer: switched to, not back (see the top) */
void __real_hs_explain_with(hs_context_t *context, int class_index, int16_t *trace);
void __wrap_hs_explain_with(hs_context_t *context, int class_index, int16_t *trace);
void __wrap_hs_explain_with(hs_context_t *context, int class_index, int16_t *trace)
{
    (void)enter(HS_STAGE_EXPLAINER);
    __real_hs_explain_with(context, class_index, trace);
}
