/* The alert policy; see hs_policy.h, and sdk.device.alerts for the definitions it ports.
 *
 * Where double is used, and why: everything the Python policy computes is float64 (Python floats), so the same
 * decisions need the same arithmetic: the sensor rate, confidences and their sums and averages (runs, AF streaks),
 * the time limits (interval * fs) and the comparisons of sample differences with them, durations, rates, heart rates
 * and their rounding to 0.1 or 0.01. Sample indices are int64_t, converted to double exactly (below 2^40).
 * On a Cortex-M4F (single-precision FPU only) each double operation is a libgcc software call of some tens of cycles
 * (a division ~100): a beat costs a few dozen such operations, well under 10 k cycles, at 1-3 beats a second; the
 * soft-double routines take a few kB of flash. Build with IEEE semantics (no -ffast-math, no FMA contraction; -std=c99
 * turns contraction off in gcc): hs_policy_round relies on exact products and sums. */
#include <math.h>
#include <string.h>
#include "hs_policy.h"

#define POLICY_MAGIC 0x50434c59u  /* "PCLY": set by hs_policy_init */
#define VENTRICULAR 0             /* index of the rate limits: isolated V beats and S beats */
#define SUPRAVENTRICULAR 1

static const char *const type_names[HS_POLICY_ALERT_TYPES] = {
    "ventricular_ectopic_beat", "ventricular_run", "supraventricular_ectopy", "high_ectopy_burden",
    "af_start", "af_end", "hr_out_of_range", "signal_quality"};
static const char *const problem_names[HS_POLICY_PROBLEM_NOISE + 1] = {NULL, "nan", "flat_line", "clipping", "noise"};
static const char *const hr_labels[2] = {"low_hr", "high_hr"};

size_t hs_policy_state_size(void)
{
    return sizeof(hs_policy_t);
}

static int32_t saturating_increment(int32_t count)
{
    return count < INT32_MAX ? count + 1 : count;
}

static int is_class(int label, int class_index)
{
    return class_index >= 0 && label == class_index;
}

static double clamped(double confidence)
{
    return confidence < 0.0 ? 0.0 : (confidence > 1.0 ? 1.0 : confidence);
}

static double seconds(const hs_policy_t *policy, int64_t samples)
{
    return (double)samples / policy->fs;
}

/* Whether a sample difference reaches limit_s seconds, as Python compares an int with limit_s * fs. */
static int at_least(const hs_policy_t *policy, int64_t samples, double limit_s)
{
    return (double)samples >= limit_s * policy->fs;
}

/* --- rounding as Python's round(x, n) ---------------------------------------------------------------------------- */

/* a * b == *product + *error exactly (Dekker's product with Veltkamp's split; no FMA needed, no overflow here). */
static void exact_product(double a, double b, double *product, double *error)
{
    const double split = 134217729.0;  /* 2^27 + 1 */
    const double a_big = split * a, b_big = split * b;
    const double a_high = a_big - (a_big - a), a_low = a - a_high;
    const double b_high = b_big - (b_big - b), b_low = b - b_high;
    *product = a * b;
    *error = ((a_high * b_high - *product) + a_high * b_low + a_low * b_high) + a_low * b_low;
}

double hs_policy_round(double value, int decimals)
{
    static const double scales[5] = {1.0, 10.0, 100.0, 1000.0, 10000.0};
    double magnitude, scale, high, low, whole, fraction, rounded;
    if (decimals < 0 || decimals > 4) {
        return value;
    }
    scale = scales[decimals];
    magnitude = fabs(value);
    if (!(magnitude * scale < 1125899906842624.0)) {  /* 2^50; also NaN and inf */
        return value;
    }
    /* magnitude * scale == high + low exactly, |low| <= ulp(high) / 2 <= 1/8: decide the nearest integer on the
     * exact value, so that a product that rounded across .5 does not move it (as multiplying and rounding would) */
    exact_product(magnitude, scale, &high, &low);
    whole = (double)(int64_t)high;  /* floor: high >= 0 */
    fraction = high - whole;        /* exact (Sterbenz) */
    if (fraction < 0.25) {  /* also an integer high with a negative low: just below it */
        rounded = whole;
    } else if (fraction > 0.75) {
        rounded = whole + 1.0;
    } else {
        const double above_half = (fraction - 0.5) + low;  /* fraction - 0.5 is exact; the sum's sign is exact */
        if (above_half > 0.0) {
            rounded = whole + 1.0;
        } else if (above_half < 0.0) {
            rounded = whole;
        } else {  /* an exact tie: to even */
            rounded = ((int64_t)whole % 2 == 0) ? whole : whole + 1.0;
        }
    }
    rounded /= scale;  /* correctly rounded: the double nearest the decimal */
    return signbit(value) ? -rounded : rounded;  /* -0.0 stays -0.0, as in Python */
}

/* --- set-up and checks -------------------------------------------------------------------------------------------- */

/* Whether name is a non-empty string that fits HS_POLICY_MAX_NAME bytes (read no further than that). */
static int fits_name(const char *name)
{
    int length = 0;
    while (length < HS_POLICY_MAX_NAME && name[length] != '\0') {
        length++;
    }
    return length > 0 && length < HS_POLICY_MAX_NAME;
}

static int class_index(const hs_policy_t *policy, const char *name)
{
    int c;
    for (c = 0; c < policy->classes; c++) {
        if (strcmp(policy->class_names[c], name) == 0) {
            return c;
        }
    }
    return -1;
}

int hs_policy_init(hs_policy_t *policy, const hs_policy_config_t *config)
{
    hs_policy_t ready;
    int c, other;
    if (policy == NULL || config == NULL) {
        return HS_POLICY_ERR_NULL;
    }
    if (!(config->fs >= HS_POLICY_MIN_FS && config->fs <= HS_POLICY_MAX_FS)  /* NaN fails too */
        || config->classes < 0 || config->classes > HS_POLICY_MAX_CLASSES
        || (config->classes > 0 && config->class_names == NULL)) {
        return HS_POLICY_ERR_CONFIG;
    }
    memset(&ready, 0, sizeof(ready));
    ready.fs = config->fs;
    ready.classes = config->classes;
    for (c = 0; c < config->classes; c++) {
        const char *name = config->class_names[c];
        if (name == NULL || !fits_name(name)) {
            return HS_POLICY_ERR_CONFIG;
        }
        for (other = 0; other < c; other++) {
            if (strcmp(ready.class_names[other], name) == 0) {
                return HS_POLICY_ERR_CONFIG;
            }
        }
        strcpy(ready.class_names[c], name);
    }
    ready.v_class = class_index(&ready, "V");
    ready.s_class = class_index(&ready, "S");
    ready.af_class = class_index(&ready, "AF");
    ready.previous_known = -1;
    ready.magic = POLICY_MAGIC;
    *policy = ready;  /* only a valid configuration replaces what was there */
    return HS_POLICY_OK;
}

/* The checks every call makes first: the policy is set up and the alert array has room for what the call may raise. */
static int check_call(const hs_policy_t *policy, const hs_policy_alert_t *alerts, int capacity, int needed,
                      int *raised)
{
    if (raised != NULL) {
        *raised = 0;
    }
    if (policy == NULL || alerts == NULL || raised == NULL) {
        return HS_POLICY_ERR_NULL;
    }
    if (policy->magic != POLICY_MAGIC) {
        return HS_POLICY_ERR_NOT_INIT;
    }
    return capacity < needed ? HS_POLICY_ERR_CAPACITY : HS_POLICY_OK;
}

static int valid_sample(int64_t sample)
{
    return sample >= 0 && sample <= HS_POLICY_MAX_SAMPLE;
}

/* A beat or rhythm window: a class index or unclassified, a probability, samples in order after the previous. */
static int check_finding(const hs_policy_t *policy, const hs_policy_finding_t *finding, int has_previous,
                         int64_t previous)
{
    if (finding == NULL) {
        return HS_POLICY_ERR_NULL;
    }
    if (finding->label != HS_POLICY_UNCLASSIFIED && (finding->label < 0 || finding->label >= policy->classes)) {
        return HS_POLICY_ERR_LABEL;
    }
    if (finding->label != HS_POLICY_UNCLASSIFIED && !(finding->confidence >= 0.0 && finding->confidence <= 1.0)) {
        return HS_POLICY_ERR_VALUE;
    }
    if (!valid_sample(finding->sample) || !valid_sample(finding->end) || finding->end < finding->sample) {
        return HS_POLICY_ERR_SAMPLE;
    }
    return has_previous && finding->sample < previous ? HS_POLICY_ERR_ORDER : HS_POLICY_OK;
}

/* --- alerts -------------------------------------------------------------------------------------------------------- */

static hs_policy_alert_t *new_alert(hs_policy_alert_t *alert, int type, int64_t sample, double confidence, int label,
                                    int64_t excerpt_first, int64_t excerpt_last)
{
    memset(alert, 0, sizeof(*alert));
    alert->type = type;
    alert->sample = sample;
    alert->confidence = clamped(confidence);
    alert->label = label;
    alert->excerpt_first = excerpt_first;
    alert->excerpt_last = excerpt_last;
    return alert;
}

/* At most one alert of this kind per HS_POLICY_ECTOPIC_ALERT_INTERVAL_S; the next one counts those suppressed. */
static int rate_limited(hs_policy_t *policy, int kind, int type, int64_t sample, double confidence, int label,
                        hs_policy_alert_t *alert)
{
    if (policy->has_ectopic_alert[kind]
        && !at_least(policy, sample - policy->last_ectopic_alert[kind], HS_POLICY_ECTOPIC_ALERT_INTERVAL_S)) {
        policy->ectopic_suppressed[kind] = saturating_increment(policy->ectopic_suppressed[kind]);
        return 0;
    }
    policy->has_ectopic_alert[kind] = 1;
    policy->last_ectopic_alert[kind] = sample;
    new_alert(alert, type, sample, confidence, label, sample, sample)->suppressed_since_last =
        policy->ectopic_suppressed[kind];
    policy->ectopic_suppressed[kind] = 0;
    return 1;
}

static int run_alert(const hs_policy_t *policy, hs_policy_run_t *run, int sustained, hs_policy_alert_t *alert)
{
    const double duration = seconds(policy, run->last_sample - run->first_sample);
    run->reported = 1;
    new_alert(alert, HS_POLICY_VENTRICULAR_RUN, run->first_sample, run->confidence_sum / run->count, policy->v_class,
              run->first_sample, run->last_sample);
    alert->run_length = run->count;
    alert->duration_s = hs_policy_round(duration, 2);
    alert->has_rate_bpm = duration > 0.0;
    alert->rate_bpm = duration > 0.0 ? hs_policy_round(60.0 * (double)(run->count - 1) / duration, 1) : 0.0;
    alert->sustained = sustained;
    return 1;
}

/* Isolated ventricular ectopic beats and runs of them. known: the beat's label if it counts, else -1. */
static int ventricular(hs_policy_t *policy, const hs_policy_finding_t *finding, int known, hs_policy_alert_t *alerts)
{
    hs_policy_run_t *run = &policy->run;
    int raised = 0;
    if (is_class(known, policy->v_class)) {
        if (!run->active) {
            run->active = 1;
            run->reported = 0;
            run->count = 1;
            run->first_sample = run->last_sample = finding->sample;
            run->first_confidence = run->confidence_sum = finding->confidence;
            return 0;
        }
        if (run->reported) {  /* a sustained run already alerted: nothing more to collect */
            return 0;
        }
        run->count = saturating_increment(run->count);
        run->last_sample = finding->sample;
        run->confidence_sum += finding->confidence;
        if (run->count >= HS_POLICY_VENTRICULAR_RUN_BEATS
            && at_least(policy, finding->sample - run->first_sample, HS_POLICY_SUSTAINED_RUN_S)) {
            return run_alert(policy, run, 1, alerts);
        }
        return 0;
    }
    /* a lone V between known beats that are not V (a couplet raises nothing) */
    if (run->active && run->count == 1 && known >= 0 && policy->has_previous && policy->previous_known >= 0
        && policy->previous_known != policy->v_class) {
        raised = rate_limited(policy, VENTRICULAR, HS_POLICY_VENTRICULAR_ECTOPIC_BEAT, run->first_sample,
                              run->first_confidence, policy->v_class, alerts);
    } else if (run->active && run->count >= HS_POLICY_VENTRICULAR_RUN_BEATS && !run->reported) {
        raised = run_alert(policy, run, 0, alerts);
    }
    run->active = 0;
    policy->has_previous = 1;
    policy->previous_known = known;
    return raised;
}

/* Confident S and V beats in the sliding last minute, with hysteresis. Only the newest
 * HS_POLICY_BURDEN_RAISE_PER_MIN are kept: the count is then min(true count, that), which decides both thresholds
 * alike, and it is exactly HS_POLICY_BURDEN_RAISE_PER_MIN when raised (it grows by one beat at a time, and below the
 * clear threshold it must climb back through the raise threshold, where it raises). */
static int burden(hs_policy_t *policy, const hs_policy_finding_t *finding, int known, hs_policy_alert_t *alert)
{
    const double expired = (double)finding->sample - HS_POLICY_BURDEN_WINDOW_S * policy->fs;
    const int ectopic = is_class(known, policy->s_class) || is_class(known, policy->v_class);
    while (policy->ectopic_count > 0 && (double)policy->ectopic[policy->ectopic_oldest] <= expired) {
        policy->ectopic_oldest = (policy->ectopic_oldest + 1) % HS_POLICY_BURDEN_RAISE_PER_MIN;
        policy->ectopic_count--;
    }
    if (ectopic) {
        if (policy->ectopic_count == HS_POLICY_BURDEN_RAISE_PER_MIN) {  /* the oldest makes way */
            policy->ectopic_oldest = (policy->ectopic_oldest + 1) % HS_POLICY_BURDEN_RAISE_PER_MIN;
            policy->ectopic_count--;
        }
        policy->ectopic[(policy->ectopic_oldest + policy->ectopic_count) % HS_POLICY_BURDEN_RAISE_PER_MIN] =
            finding->sample;
        policy->ectopic_count++;
    }
    if (policy->burden_raised && policy->ectopic_count <= HS_POLICY_BURDEN_CLEAR_PER_MIN) {
        policy->burden_raised = 0;
    }
    if (policy->burden_raised || policy->ectopic_count < HS_POLICY_BURDEN_RAISE_PER_MIN || !ectopic) {
        return 0;
    }
    policy->burden_raised = 1;
    new_alert(alert, HS_POLICY_HIGH_ECTOPY_BURDEN, finding->sample, finding->confidence, finding->label,
              finding->sample, finding->sample);
    alert->ectopic_per_min = policy->ectopic_count;
    alert->raise_at = HS_POLICY_BURDEN_RAISE_PER_MIN;
    alert->clear_at = HS_POLICY_BURDEN_CLEAR_PER_MIN;
    return 1;
}

int hs_policy_beat(hs_policy_t *policy, const hs_policy_finding_t *finding, hs_policy_alert_t *alerts, int capacity,
                   int *raised)
{
    int status = check_call(policy, alerts, capacity, HS_POLICY_MAX_BEAT_ALERTS, raised);
    int known, count;
    if (status == HS_POLICY_OK) {
        status = check_finding(policy, finding, policy->has_beat, policy->last_beat);
    }
    if (status != HS_POLICY_OK) {
        return status;
    }
    policy->has_beat = 1;
    policy->last_beat = finding->sample;
    known = finding->label != HS_POLICY_UNCLASSIFIED && finding->confidence >= HS_POLICY_MIN_BEAT_CONFIDENCE
            ? finding->label : -1;
    count = ventricular(policy, finding, known, alerts);
    count += burden(policy, finding, known, alerts + count);
    if (is_class(known, policy->s_class)) {
        count += rate_limited(policy, SUPRAVENTRICULAR, HS_POLICY_SUPRAVENTRICULAR_ECTOPY, finding->sample,
                              finding->confidence, policy->s_class, alerts + count);
    }
    *raised = count;
    return HS_POLICY_OK;
}

int hs_policy_rhythm_window(hs_policy_t *policy, const hs_policy_finding_t *finding, hs_policy_alert_t *alerts,
                            int capacity, int *raised)
{
    hs_policy_streak_t *streak = &policy->streak;
    int status = check_call(policy, alerts, capacity, HS_POLICY_MAX_ALERTS, raised);
    int af;
    if (status == HS_POLICY_OK) {
        status = check_finding(policy, finding, policy->has_rhythm, policy->last_rhythm);
    }
    if (status != HS_POLICY_OK) {
        return status;
    }
    policy->has_rhythm = 1;
    policy->last_rhythm = finding->sample;
    if (finding->label == HS_POLICY_UNCLASSIFIED) {  /* a skipped window breaks the streak; the AF state stays */
        streak->active = 0;
        return HS_POLICY_OK;
    }
    if (streak->active && streak->label == finding->label) {
        streak->confidence_sum += finding->confidence;
        streak->count = saturating_increment(streak->count);
        streak->end = finding->end;
    } else {
        streak->active = 1;
        streak->label = finding->label;
        streak->count = 1;
        streak->first_sample = finding->sample;
        streak->end = finding->end;
        streak->confidence_sum = finding->confidence;
    }
    af = is_class(streak->label, policy->af_class);
    if (!at_least(policy, streak->end - streak->first_sample, HS_POLICY_AF_MIN_S) || policy->in_af == af) {
        return HS_POLICY_OK;
    }
    policy->in_af = af;
    new_alert(alerts, af ? HS_POLICY_AF_START : HS_POLICY_AF_END, streak->first_sample,
              streak->confidence_sum / streak->count, streak->label, streak->first_sample, streak->first_sample);
    alerts->windows = streak->count;
    alerts->duration_s = hs_policy_round(seconds(policy, streak->end - streak->first_sample), 1);
    if (af) {
        policy->af_episode_start = streak->first_sample;
    } else {
        alerts->episode_duration_s = hs_policy_round(seconds(policy, streak->first_sample - policy->af_episode_start),
                                                     1);
    }
    *raised = 1;
    return HS_POLICY_OK;
}

static double median_of_three(const double v[3])
{
    const double low = v[0] < v[1] ? v[0] : v[1], high = v[0] < v[1] ? v[1] : v[0];
    return v[2] < low ? low : (v[2] > high ? high : v[2]);
}

int hs_policy_heart_rate_window(hs_policy_t *policy, const hs_policy_finding_t *finding, hs_policy_alert_t *alerts,
                                int capacity, int *raised)
{
    int status = check_call(policy, alerts, capacity, HS_POLICY_MAX_ALERTS, raised);
    double rates[HS_POLICY_HR_WINDOWS], hr;
    int i;
    if (status != HS_POLICY_OK) {
        return status;
    }
    if (finding == NULL) {
        return HS_POLICY_ERR_NULL;
    }
    if (finding->label != HS_POLICY_UNCLASSIFIED && finding->label != 0) {
        return HS_POLICY_ERR_LABEL;
    }
    if (finding->label == 0 && !(finding->hr_bpm >= 0.0 && finding->hr_bpm <= HS_POLICY_MAX_HR_BPM)) {
        return HS_POLICY_ERR_VALUE;
    }
    if (!valid_sample(finding->sample) || !valid_sample(finding->end) || finding->end < finding->sample) {
        return HS_POLICY_ERR_SAMPLE;
    }
    if (policy->has_hr && finding->sample < policy->last_hr) {
        return HS_POLICY_ERR_ORDER;
    }
    policy->has_hr = 1;
    policy->last_hr = finding->sample;
    if (finding->label == HS_POLICY_UNCLASSIFIED) {
        policy->hr_out_count = 0;
        policy->hr_in = 0;
        return HS_POLICY_OK;
    }
    hr = finding->hr_bpm;
    if (!(HS_POLICY_HR_LOW_BPM <= hr && hr <= HS_POLICY_HR_HIGH_BPM)) {
        if (policy->hr_out_count < HS_POLICY_HR_WINDOWS) {  /* more are never read: a longer streak has alerted */
            policy->hr_out_sample[policy->hr_out_count] = finding->sample;
            policy->hr_out_bpm[policy->hr_out_count] = hr;
            policy->hr_out_count++;
        }
        policy->hr_in = 0;
    } else {
        const int inside = HS_POLICY_HR_LOW_BPM + HS_POLICY_HR_CLEAR_MARGIN_BPM <= hr
                           && hr <= HS_POLICY_HR_HIGH_BPM - HS_POLICY_HR_CLEAR_MARGIN_BPM;
        policy->hr_out_count = 0;
        policy->hr_in = inside ? (policy->hr_in < HS_POLICY_HR_WINDOWS ? policy->hr_in + 1 : policy->hr_in) : 0;
        if (policy->hr_in >= HS_POLICY_HR_WINDOWS) {
            policy->hr_raised = 0;
        }
    }
    if (policy->hr_raised || policy->hr_out_count < HS_POLICY_HR_WINDOWS) {
        return HS_POLICY_OK;
    }
    policy->hr_raised = 1;
    policy->hr_out_count = 0;
    for (i = 0; i < HS_POLICY_HR_WINDOWS; i++) {
        rates[i] = hs_policy_round(policy->hr_out_bpm[i], 1);
    }
    new_alert(alerts, HS_POLICY_HR_OUT_OF_RANGE, policy->hr_out_sample[0], 1.0,
              median_of_three(rates) < HS_POLICY_HR_LOW_BPM ? HS_POLICY_LOW_HR : HS_POLICY_HIGH_HR,
              policy->hr_out_sample[0], policy->hr_out_sample[0]);
    memcpy(alerts->hr_bpm, rates, sizeof(rates));
    alerts->low_bpm = HS_POLICY_HR_LOW_BPM;
    alerts->high_bpm = HS_POLICY_HR_HIGH_BPM;
    *raised = 1;
    return HS_POLICY_OK;
}

int hs_policy_quality(hs_policy_t *policy, int problem, int64_t start, hs_policy_alert_t *alerts, int capacity,
                      int *raised)
{
    int status = check_call(policy, alerts, capacity, HS_POLICY_MAX_ALERTS, raised);
    if (status != HS_POLICY_OK) {
        return status;
    }
    if (problem < HS_POLICY_PROBLEM_NAN || problem > HS_POLICY_PROBLEM_NOISE) {
        return HS_POLICY_ERR_LABEL;
    }
    if (!valid_sample(start)) {
        return HS_POLICY_ERR_SAMPLE;
    }
    if (policy->has_quality_alert
        && !at_least(policy, start - policy->last_quality_alert, HS_POLICY_QUALITY_ALERT_INTERVAL_S)) {
        return HS_POLICY_OK;
    }
    policy->has_quality_alert = 1;
    policy->last_quality_alert = start;
    new_alert(alerts, HS_POLICY_SIGNAL_QUALITY, start, 1.0, problem, start, start);
    alerts->problem = problem;
    alerts->start_sample = start;
    *raised = 1;
    return HS_POLICY_OK;
}

int hs_policy_finish(hs_policy_t *policy, hs_policy_alert_t *alerts, int capacity, int *raised)
{
    hs_policy_run_t run;
    int status = check_call(policy, alerts, capacity, HS_POLICY_MAX_ALERTS, raised);
    if (status != HS_POLICY_OK) {
        return status;
    }
    run = policy->run;
    policy->run.active = 0;
    if (run.active && !run.reported && run.count >= HS_POLICY_VENTRICULAR_RUN_BEATS) {
        *raised = run_alert(policy, &run, 0, alerts);
    }
    return HS_POLICY_OK;
}

const char *hs_policy_alert_type_name(int type)
{
    return type >= 0 && type < HS_POLICY_ALERT_TYPES ? type_names[type] : NULL;
}

const char *hs_policy_label_name(const hs_policy_t *policy, const hs_policy_alert_t *alert)
{
    if (policy == NULL || alert == NULL || policy->magic != POLICY_MAGIC) {
        return NULL;
    }
    switch (alert->type) {
    case HS_POLICY_HR_OUT_OF_RANGE:
        return alert->label == HS_POLICY_LOW_HR || alert->label == HS_POLICY_HIGH_HR ? hr_labels[alert->label] : NULL;
    case HS_POLICY_SIGNAL_QUALITY:
        return alert->label >= HS_POLICY_PROBLEM_NAN && alert->label <= HS_POLICY_PROBLEM_NOISE
               ? problem_names[alert->label] : NULL;
    default:
        return alert->type >= 0 && alert->type < HS_POLICY_ALERT_TYPES && alert->label >= 0
               && alert->label < policy->classes ? policy->class_names[alert->label] : NULL;
    }
}
