/* The alert policy: which classified beats and windows become alerts, with hysteresis so alerts do not chatter.
 * A port of sdk.device.alerts.AlertPolicy (its docstring defines every alert type); for the same findings in the
 * same order it raises the same alerts: same type, sample, label, confidence and details.
 *
 * The caller (the monitor) classifies beats and windows and hands each one over as a finding, in time order, with
 * the signal-quality problems as the gate reports them; it keeps each finding's excerpt (signal and saliency trace)
 * and embedding, cuts an alert's excerpt from the findings the alert names (excerpt_first, excerpt_last), and
 * computes the alert id from the type's name and the sample. All state lives in hs_policy_t: no allocation, no
 * static state. Sample indices are at the sensor rate. */
#ifndef HS_POLICY_H
#define HS_POLICY_H

#include <stddef.h>
#include <stdint.h>

/* Status codes: every function that can fail returns one. On an error nothing in the policy changes. */
#define HS_POLICY_OK 0
#define HS_POLICY_ERR_NULL (-1)      /* a required pointer is NULL */
#define HS_POLICY_ERR_CONFIG (-2)    /* fs outside [HS_POLICY_MIN_FS, HS_POLICY_MAX_FS], or bad class names */
#define HS_POLICY_ERR_NOT_INIT (-3)  /* the policy was not set up by hs_policy_init */
#define HS_POLICY_ERR_LABEL (-4)     /* not a class index nor HS_POLICY_UNCLASSIFIED; not a quality problem */
#define HS_POLICY_ERR_VALUE (-5)     /* confidence NaN or outside [0, 1]; heart rate NaN or outside [0, max] */
#define HS_POLICY_ERR_SAMPLE (-6)    /* a sample negative or past HS_POLICY_MAX_SAMPLE, or end before sample */
#define HS_POLICY_ERR_ORDER (-7)     /* a finding earlier than the previous one of its kind */
#define HS_POLICY_ERR_CAPACITY (-8)  /* the alert array has less room than the call may need */

/* Fixed limits. */
#define HS_POLICY_MIN_FS 1.0
#define HS_POLICY_MAX_FS 1000.0
#define HS_POLICY_MAX_CLASSES 8
#define HS_POLICY_MAX_NAME 16           /* bytes of a class name, with its terminating zero */
#define HS_POLICY_MAX_SAMPLE ((int64_t)1 << 40)  /* 35 years at 1000 Hz; keeps every sample exact as a double */
#define HS_POLICY_MAX_HR_BPM 1000.0
#define HS_POLICY_MAX_BEAT_ALERTS 3     /* a beat can raise a run or isolated-beat alert, a burden and an S alert */
#define HS_POLICY_MAX_ALERTS 1          /* what every other call can raise */

/* The policy's constants (sdk.device.alerts). */
#define HS_POLICY_MIN_BEAT_CONFIDENCE 0.6
#define HS_POLICY_VENTRICULAR_RUN_BEATS 3
#define HS_POLICY_SUSTAINED_RUN_S 30.0
#define HS_POLICY_ECTOPIC_ALERT_INTERVAL_S 30.0
#define HS_POLICY_BURDEN_WINDOW_S 60.0
#define HS_POLICY_BURDEN_RAISE_PER_MIN 10
#define HS_POLICY_BURDEN_CLEAR_PER_MIN 5
#define HS_POLICY_AF_MIN_S 30.0
#define HS_POLICY_HR_LOW_BPM 40.0
#define HS_POLICY_HR_HIGH_BPM 150.0
#define HS_POLICY_HR_CLEAR_MARGIN_BPM 5.0
#define HS_POLICY_HR_WINDOWS 3
#define HS_POLICY_QUALITY_ALERT_INTERVAL_S 60.0

/* Alert types; hs_policy_alert_type_name gives the name Python's Alert.type (and the alert id) uses. */
#define HS_POLICY_VENTRICULAR_ECTOPIC_BEAT 0
#define HS_POLICY_VENTRICULAR_RUN 1
#define HS_POLICY_SUPRAVENTRICULAR_ECTOPY 2
#define HS_POLICY_HIGH_ECTOPY_BURDEN 3
#define HS_POLICY_AF_START 4
#define HS_POLICY_AF_END 5
#define HS_POLICY_HR_OUT_OF_RANGE 6
#define HS_POLICY_SIGNAL_QUALITY 7
#define HS_POLICY_ALERT_TYPES 8

/* Signal-quality problems (sdk.device.quality's kinds): the same numbers as hs_quality.h's HS_QUALITY_NAN ...
 * HS_QUALITY_NOISE, so the monitor passes a problem's kind straight through. Then the labels of hr_out_of_range. */
#define HS_POLICY_PROBLEM_NAN 1
#define HS_POLICY_PROBLEM_FLAT_LINE 2
#define HS_POLICY_PROBLEM_CLIPPING 3
#define HS_POLICY_PROBLEM_NOISE 4
#define HS_POLICY_LOW_HR 0
#define HS_POLICY_HIGH_HR 1

#define HS_POLICY_UNCLASSIFIED (-1)  /* a finding's label when the quality gate kept it from the model */

typedef struct {
    double fs;                        /* the sensor rate, Hz */
    int classes;                      /* how many class names; 0 for a heart-rate model */
    const char *const *class_names;   /* the model's outputs by index, e.g. N S V F or non-AF AF; copied by init */
} hs_policy_config_t;

/* One beat or window as the runtime classified it (Python's Finding, without the excerpt). */
typedef struct {
    int64_t sample;     /* the beat's R peak, or the window's first sample */
    int64_t end;        /* just past the window (beats: past the beat model's window); >= sample */
    int label;          /* class index, or HS_POLICY_UNCLASSIFIED; heart-rate windows: 0 when the rate was read */
    double confidence;  /* the label's probability in [0, 1]; not read when unclassified */
    double hr_bpm;      /* heart-rate windows: the rate; not read when unclassified */
} hs_policy_finding_t;

/* One alert decision. Which detail fields apply depends on the type (Python's alert.details); the rest are 0. */
typedef struct {
    int type;              /* HS_POLICY_VENTRICULAR_ECTOPIC_BEAT ... HS_POLICY_SIGNAL_QUALITY */
    int label;             /* class index; hr_out_of_range: HS_POLICY_LOW_HR or HIGH_HR; signal_quality: the problem
                            * (hs_policy_label_name gives the name) */
    int64_t sample;        /* the event's sample: the alert's sample_index */
    double confidence;     /* in [0, 1] */
    /* The excerpt: that of the finding at sample excerpt_first (whose embedding, if any, the alert carries too);
     * for a ventricular run the excerpts of its beats from excerpt_first to excerpt_last, unioned (traces by their
     * maximum); for signal_quality both are the problem's start, before which the caller cuts excerpt_s. */
    int64_t excerpt_first;
    int64_t excerpt_last;
    int32_t suppressed_since_last;  /* ventricular_ectopic_beat, supraventricular_ectopy */
    int32_t run_length;             /* ventricular_run: beats */
    int32_t sustained;              /* ventricular_run: 1 when raised because it lasted HS_POLICY_SUSTAINED_RUN_S */
    int32_t has_rate_bpm;           /* ventricular_run: 0 when its beats share one sample (Python: rate_bpm None) */
    double rate_bpm;                /* ventricular_run, to 0.1 bpm */
    double duration_s;              /* ventricular_run (to 0.01 s), af_start and af_end (to 0.1 s) */
    int32_t ectopic_per_min;        /* high_ectopy_burden, with raise_at and clear_at */
    int32_t raise_at;
    int32_t clear_at;
    int32_t windows;                /* af_start, af_end */
    double episode_duration_s;      /* af_end, to 0.1 s */
    double hr_bpm[HS_POLICY_HR_WINDOWS];  /* hr_out_of_range, to 0.1 bpm, with low_bpm and high_bpm */
    double low_bpm;
    double high_bpm;
    int32_t problem;                /* signal_quality, with start_sample */
    int64_t start_sample;
} hs_policy_alert_t;

/* A run of consecutive confident V beats (Python's _Run). */
typedef struct {
    int active;
    int reported;
    int32_t count;
    int64_t first_sample;
    double first_confidence;
    int64_t last_sample;
    double confidence_sum;
} hs_policy_run_t;

/* Consecutive classified rhythm windows with one label (Python's _Streak). */
typedef struct {
    int active;
    int label;
    int32_t count;
    int64_t first_sample;
    int64_t end;
    double confidence_sum;
} hs_policy_streak_t;

/* The state of one device's policy; allocate it (statically or on the stack) and set it up with hs_policy_init. */
typedef struct {
    uint32_t magic;
    double fs;
    int classes;
    char class_names[HS_POLICY_MAX_CLASSES][HS_POLICY_MAX_NAME];
    int v_class, s_class, af_class;  /* class indices of "V", "S" and "AF"; -1 when the model has none */
    /* beats */
    int has_beat;
    int64_t last_beat;
    int has_previous;
    int previous_known;  /* the known label of the last beat that was not a confident V (-1: unknown) */
    hs_policy_run_t run;
    int has_ectopic_alert[2];  /* [0] ventricular_ectopic_beat, [1] supraventricular_ectopy */
    int64_t last_ectopic_alert[2];
    int32_t ectopic_suppressed[2];
    int64_t ectopic[HS_POLICY_BURDEN_RAISE_PER_MIN];  /* the newest confident S and V beats of the last minute */
    int ectopic_oldest;
    int ectopic_count;
    int burden_raised;
    /* rhythm windows */
    int has_rhythm;
    int64_t last_rhythm;
    int in_af;
    int64_t af_episode_start;
    hs_policy_streak_t streak;
    /* heart-rate windows */
    int has_hr;
    int64_t last_hr;
    int hr_out_count;  /* consecutive windows out of range, counted up to HS_POLICY_HR_WINDOWS */
    int64_t hr_out_sample[HS_POLICY_HR_WINDOWS];
    double hr_out_bpm[HS_POLICY_HR_WINDOWS];
    int hr_in;         /* consecutive windows well inside the range, counted up to HS_POLICY_HR_WINDOWS */
    int hr_raised;
    /* signal quality */
    int has_quality_alert;
    int64_t last_quality_alert;
} hs_policy_t;

/* sizeof(hs_policy_t), for bindings that hold the state as bytes. */
size_t hs_policy_state_size(void);

/* Sets up a policy. fs in [HS_POLICY_MIN_FS, HS_POLICY_MAX_FS]; classes in [0, HS_POLICY_MAX_CLASSES] distinct,
 * non-empty names shorter than HS_POLICY_MAX_NAME (copied: the caller's array need not outlive this call). */
int hs_policy_init(hs_policy_t *policy, const hs_policy_config_t *config);

/* Each of these takes findings of its kind in time order and writes the alerts they raise to alerts[0 ..
 * *raised - 1]. capacity must be at least HS_POLICY_MAX_BEAT_ALERTS for a beat, HS_POLICY_MAX_ALERTS for the others.
 * On an error *raised is 0 and the policy is unchanged. */
int hs_policy_beat(hs_policy_t *policy, const hs_policy_finding_t *finding, hs_policy_alert_t *alerts, int capacity,
                   int *raised);
int hs_policy_rhythm_window(hs_policy_t *policy, const hs_policy_finding_t *finding, hs_policy_alert_t *alerts,
                            int capacity, int *raised);
int hs_policy_heart_rate_window(hs_policy_t *policy, const hs_policy_finding_t *finding, hs_policy_alert_t *alerts,
                                int capacity, int *raised);
/* A signal-quality problem (HS_POLICY_PROBLEM_*) starts at sensor sample start. */
int hs_policy_quality(hs_policy_t *policy, int problem, int64_t start, hs_policy_alert_t *alerts, int capacity,
                      int *raised);
/* The end of the signal: a ventricular run still going is reported. */
int hs_policy_finish(hs_policy_t *policy, hs_policy_alert_t *alerts, int capacity, int *raised);

/* The type's name ("ventricular_run", ...), or NULL for no type. */
const char *hs_policy_alert_type_name(int type);
/* The alert's label as Python's Alert.label ("V", "AF", "low_hr", "noise", ...), or NULL if it names none. */
const char *hs_policy_label_name(const hs_policy_t *policy, const hs_policy_alert_t *alert);

/* Python's round(value, decimals) for decimals in [0, 4]: the double nearest the decimal that the exact binary value
 * rounds to, ties to even. Exact while |value| * 10^decimals < 2^50; beyond that, and for NaN, inf or other
 * decimals, value is returned unchanged. */
double hs_policy_round(double value, int decimals);

#endif
