/* Reference firmware: the whole device path of an ECG beat model (hs_monitor with the ecg_beat_wcam export), and a
 * second model (ecg_af, its library renamed under the prefix af_) linked into the same image.
 *
 * Under QEMU it reads monitor.cfg, one line "<samples file> <sensor rate in Hz>", and the samples (float32
 * little-endian, mV) through semihosting, feeds them to hs_monitor in one-second chunks (hs_monitor_max_chunk), then
 * finishes the signal, and prints one JSON line per event: beats, signal-quality events and alerts (the field names
 * of schemas/alert.v1.json without the id, time, device names and the base64 arrays). Then the af_ model on one
 * window and a summary line with the counts, the memory and the instructions of each stage (stage_count.h).
 * Exit status: 0 when the run finished and nothing was lost, 1 otherwise, 2 on a CPU fault (startup.c). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "af_model.h"
#include "heartsight_model.h"
#include "hs_monitor.h"
#include "instruction_count.h"
#include "semihosting_files.h"
#include "stage_count.h"

/* hs_model_api and hs_monitor_config_for (declared in hs_monitor.h) are in the tables file that
 * firmware_export.monitor_tables.monitor_tables_c writes for the sensor rates of this build. */

#define CONFIG_FILE "monitor.cfg"
#define MAX_PATH 200
#define CALIBRATION_LOOPS 1000000u   /* 2,000,000 instructions: the ticks they take give instructions per tick */
#define STACK_PAINT_BYTES 16384      /* stack below main painted before each call into the monitor */
#define STACK_PAINT 0x5AC3A5C3u

/* The events of one call, kept by the callback and printed after the call returns: printing from the callback would
 * put printf's stack and instructions inside the monitor's. */
#define MAX_QUEUED 128
#define MAX_QUEUED_ALERTS 16

typedef struct {
    int kind;
    hs_monitor_beat_t beat;          /* its trace pointer is not kept */
    hs_quality_event_t quality;
    int alert;                       /* index into queued_alerts */
} queued_event_t;

typedef struct {
    hs_monitor_alert_t alert;        /* its pointers are not kept: the arrays below are */
    double embedding[HS_MONITOR_MAX_EMBEDDING];
    hs_monitor_mark_t marks[HS_MONITOR_MAX_MARKS];
} queued_alert_t;

static hs_monitor_t monitor;         /* the whole state of the path (hs_monitor.h: ~124 KB at 360 Hz) */
static hs_context_t model_context;   /* the model's activations for this stream */
static float chunk[HS_MONITOR_MAX_CHUNK];
static queued_event_t queued[MAX_QUEUED];
static queued_alert_t queued_alerts[MAX_QUEUED_ALERTS];
static int n_queued, n_queued_alerts;
static uint32_t lost_events;
static uint32_t beats, classified, quality_events, alerts;
static double sensor_fs;

static const char *const problem_names[] = {"none", "nan", "flat_line", "clipping", "noise", "backlog"};

/* --- text helpers (newlib-nano's printf has no %lld) ------------------------------------------------------------ */

/* int64 as decimal text, in one of a few rotating buffers so that a printf may take several. */
static const char *i64(int64_t value)
{
    static char buffers[8][24];
    static int next;
    char digits[24];
    char *out = buffers[next];
    uint64_t u = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    int n = 0, i = 0;
    next = (next + 1) % 8;
    do {
        digits[n++] = (char)('0' + (int)(u % 10u));
        u /= 10u;
    } while (u != 0u);
    if (value < 0) {
        out[i++] = '-';
    }
    while (n > 0) {
        out[i++] = digits[--n];
    }
    out[i] = '\0';
    return out;
}

static const char *u64(uint64_t value)
{
    return i64((int64_t)value);  /* counts stay far below 2^63 */
}

/* A class name as a JSON string, or null. */
static void print_label(int label)
{
    if (label < 0 || label >= hs_model_api.classes) {
        printf("null");
    } else {
        printf("\"%s\"", hs_model_api.class_names[label]);
    }
}

/* --- the stack: painted before a call into the monitor, the deepest word it changed found after ----------------- */

static uintptr_t stack_pointer(void)
{
    uintptr_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    return sp;
}

__attribute__((noinline)) static void stack_paint(uintptr_t top)
{
    uint32_t *word = (uint32_t *)(top - STACK_PAINT_BYTES);
    uint32_t *end = (uint32_t *)(stack_pointer() - 64);  /* stop short of this function's own frame */
    while (word < end) {
        *word++ = STACK_PAINT;
    }
}

/* Bytes below top the stack reached since stack_paint(top); STACK_PAINT_BYTES means at least that. */
static uint32_t stack_used(uintptr_t top)
{
    const uint32_t *word = (const uint32_t *)(top - STACK_PAINT_BYTES);
    while ((uintptr_t)word < top && *word == STACK_PAINT) {
        word++;
    }
    return (uint32_t)(top - (uintptr_t)word);
}

/* --- events ------------------------------------------------------------------------------------------------------ */

static void keep(const hs_monitor_event_t *event)
{
    queued_event_t *q;
    if (n_queued == MAX_QUEUED) {
        lost_events++;
        return;
    }
    q = &queued[n_queued];
    q->kind = event->kind;
    if (event->kind == HS_MONITOR_EVENT_BEAT) {
        q->beat = event->beat;
        q->beat.trace = NULL;
    } else if (event->kind == HS_MONITOR_EVENT_QUALITY) {
        q->quality = event->quality;
    } else {
        const hs_monitor_alert_t *a = &event->alert;
        queued_alert_t *kept;
        if (n_queued_alerts == MAX_QUEUED_ALERTS || a->embedding_length > HS_MONITOR_MAX_EMBEDDING
            || a->n_marks > HS_MONITOR_MAX_MARKS) {
            lost_events++;
            return;
        }
        kept = &queued_alerts[n_queued_alerts];
        kept->alert = *a;
        kept->alert.signal = kept->alert.trace = NULL;
        kept->alert.embedding = NULL;
        kept->alert.marks = NULL;
        if (a->embedding != NULL) {
            memcpy(kept->embedding, a->embedding, (size_t)a->embedding_length * sizeof(double));
        } else {
            kept->alert.embedding_length = 0;
        }
        memcpy(kept->marks, a->marks, (size_t)a->n_marks * sizeof(hs_monitor_mark_t));
        q->alert = n_queued_alerts++;
    }
    n_queued++;
}

/* The monitor's callback: its time is the harness's, not the path's. */
static void on_event(const hs_monitor_event_t *event, void *user)
{
    (void)user;
    (void)stage_switch(HS_STAGE_HARNESS);
    keep(event);
    (void)stage_switch(HS_STAGE_GLUE);
}

static void print_beat(const hs_monitor_beat_t *b)
{
    beats++;
    printf("{\"event\":\"beat\",\"sample\":%s,\"window_start\":%s,\"label\":", i64(b->sample), i64(b->window_start));
    print_label(b->label);
    if (b->label == HS_MONITOR_UNCLASSIFIED) {
        printf(",\"p\":null,\"quality\":\"%s\"}\n",
               b->problem >= 0 && b->problem <= 5 ? problem_names[b->problem] : "?");
        return;
    }
    classified++;
    /* BeatEvent.p is the probability rounded to 4 places; the policy reads it unrounded (p_raw) */
    printf(",\"p\":%.17g,\"p_raw\":%.17g,\"quality\":null}\n", hs_policy_round(b->p, 4), b->p);
}

static void print_quality(const hs_quality_event_t *q)
{
    quality_events++;
    printf("{\"event\":\"quality\",\"problem\":\"%s\",\"start\":%s,\"end\":%s}\n",
           q->kind >= 0 && q->kind <= 5 ? problem_names[q->kind] : "?", i64(q->start),
           q->end == HS_QUALITY_ONGOING ? "null" : i64(q->end));
}

/* details: the policy's fields for the alert's type (sdk.device.alerts), then the monitor's embedding and beats. */
static void print_details(const queued_alert_t *kept)
{
    const hs_monitor_alert_t *a = &kept->alert;
    const hs_policy_alert_t *d = &a->decision;
    int i, n = 0;
    printf("\"details\":{");
    switch (d->type) {
    case HS_POLICY_VENTRICULAR_ECTOPIC_BEAT:
    case HS_POLICY_SUPRAVENTRICULAR_ECTOPY:
        n = printf("\"suppressed_since_last\":%ld", (long)d->suppressed_since_last);
        break;
    case HS_POLICY_VENTRICULAR_RUN:
        n = printf("\"run_length\":%ld,\"duration_s\":%.17g,", (long)d->run_length, d->duration_s);
        if (d->has_rate_bpm) {
            printf("\"rate_bpm\":%.17g,", d->rate_bpm);
        } else {
            printf("\"rate_bpm\":null,");
        }
        printf("\"sustained\":%s", d->sustained ? "true" : "false");
        break;
    case HS_POLICY_HIGH_ECTOPY_BURDEN:
        n = printf("\"ectopic_per_min\":%ld,\"raise_at\":%ld,\"clear_at\":%ld", (long)d->ectopic_per_min,
                   (long)d->raise_at, (long)d->clear_at);
        break;
    case HS_POLICY_AF_START:
    case HS_POLICY_AF_END:
        n = printf("\"windows\":%ld,\"duration_s\":%.17g", (long)d->windows, d->duration_s);
        if (d->type == HS_POLICY_AF_END) {
            printf(",\"episode_duration_s\":%.17g", d->episode_duration_s);
        }
        break;
    case HS_POLICY_HR_OUT_OF_RANGE:
        n = printf("\"hr_bpm\":[%.17g,%.17g,%.17g],\"low_bpm\":%.17g,\"high_bpm\":%.17g", d->hr_bpm[0], d->hr_bpm[1],
                   d->hr_bpm[2], d->low_bpm, d->high_bpm);
        break;
    default: /* HS_POLICY_SIGNAL_QUALITY */
        n = printf("\"problem\":\"%s\",\"start_sample\":%s",
                   d->problem >= 0 && d->problem <= 5 ? problem_names[d->problem] : "?", i64(d->start_sample));
        break;
    }
    if (a->embedding_length > 0) {
        printf("%s\"embedding\":[", n > 0 ? "," : "");
        for (i = 0; i < a->embedding_length; i++) {
            printf("%s%.17g", i ? "," : "", kept->embedding[i]);
        }
        printf("]");
    }
    if (a->n_marks > 0) {
        printf(",\"beats\":[");
        for (i = 0; i < a->n_marks; i++) {
            printf("%s[%s,", i ? "," : "", i64(kept->marks[i].sample));
            print_label(kept->marks[i].label);
            printf("]");
        }
        printf("]");
    }
    printf("}");
}

static void print_alert(const queued_alert_t *kept)
{
    const hs_monitor_alert_t *a = &kept->alert;
    const char *label = hs_policy_label_name(&monitor.policy, &a->decision);
    alerts++;
    printf("{\"event\":\"alert\",\"type\":\"%s\",\"sample_index\":%s,\"label\":\"%s\",\"confidence\":%.17g,",
           hs_policy_alert_type_name(a->decision.type), i64(a->decision.sample), label != NULL ? label : "?",
           a->decision.confidence);
    printf("\"model\":{\"name\":\"%s\",\"version\":\"%s\",\"sha256\":\"%s\",\"backend\":\"c\",\"head_version\":%lu},",
           HS_MODEL_NAME, HS_MODEL_VERSION, HS_INT8_SHA256, (unsigned long)a->head_version);
    printf("\"signal\":{\"fs\":%.17g,\"start_sample\":%s,\"length\":%ld,\"truncated\":%s},", sensor_fs,
           i64(a->excerpt_start), (long)a->excerpt_length, a->truncated ? "true" : "false");
    print_details(kept);
    printf("}\n");
}

static void print_queued(void)
{
    int i;
    for (i = 0; i < n_queued; i++) {
        if (queued[i].kind == HS_MONITOR_EVENT_BEAT) {
            print_beat(&queued[i].beat);
        } else if (queued[i].kind == HS_MONITOR_EVENT_QUALITY) {
            print_quality(&queued[i].quality);
        } else {
            print_alert(&queued_alerts[queued[i].alert]);
        }
    }
    n_queued = n_queued_alerts = 0;
}

/* --- the run ----------------------------------------------------------------------------------------------------- */

/* monitor.cfg: "<samples file> <sensor rate>". */
static int read_config(char *path, double *fs)
{
    char text[MAX_PATH + 64];
    char *space, *end;
    int n, handle = sh_open_read(CONFIG_FILE);
    size_t length;
    if (handle < 0) {
        return -1;
    }
    n = sh_read(handle, text, (int)sizeof text - 1);
    (void)sh_close(handle);
    if (n <= 0) {
        return -1;
    }
    text[n] = '\0';
    space = strchr(text, ' ');
    if (space == NULL || space == text || (length = (size_t)(space - text)) >= MAX_PATH) {
        return -1;
    }
    memcpy(path, text, length);
    path[length] = '\0';
    *fs = strtod(space + 1, &end);
    return end == space + 1 ? -1 : 0;
}

/* The af_ model next to the beat path: one all-zero window through quantize, infer and explain. Its real inputs
 * (rhythm windows from hs_channels) come with the AF path, which is not ported yet. */
static void run_af(void)
{
    static float window[AF_INPUT_CHANNELS * AF_INPUT_LENGTH];
    static int8_t input[AF_INPUT_CHANNELS * AF_INPUT_LENGTH];
    static int8_t logits[AF_NUM_CLASSES];
    static int16_t trace[AF_INPUT_LENGTH];
    int64_t trace_sum = 0;
    int predicted, i;
    af_quantize_input(window, input);
    predicted = af_infer(input, logits);
    af_explain(predicted, trace);
    for (i = 0; i < AF_INPUT_LENGTH; i++) {
        trace_sum += trace[i];
    }
    printf("{\"event\":\"af\",\"model\":\"%s\",\"window\":\"zeros\",\"class\":%d,\"label\":\"%s\",\"logits\":[",
           AF_MODEL_NAME, predicted, af_class_names[predicted]);
    for (i = 0; i < AF_NUM_CLASSES; i++) {
        printf("%s%d", i ? "," : "", logits[i]);
    }
    printf("],\"trace_sum\":%s}\n", i64(trace_sum));
}

static void print_summary(const char *status, int64_t samples, int32_t chunks, int chunk_samples, uint32_t overflows,
                          uint32_t stack, uint32_t calibration_ticks)
{
    int s;
    printf("{\"event\":\"summary\",\"status\":\"%s\",\"fs\":%.17g,\"samples\":%s,\"chunks\":%ld,\"chunk_samples\":%d,",
           status, sensor_fs, i64(samples), (long)chunks, chunk_samples);
    printf("\"beats\":%lu,\"classified\":%lu,\"quality_events\":%lu,\"alerts\":%lu,\"overflows\":%lu,"
           "\"lost_events\":%lu,", (unsigned long)beats, (unsigned long)classified, (unsigned long)quality_events,
           (unsigned long)alerts, (unsigned long)overflows, (unsigned long)lost_events);
    printf("\"state_bytes\":%lu,\"stack_bytes\":%lu,\"stack_painted_bytes\":%d,\"max_fs\":%d,",
           (unsigned long)hs_monitor_state_size(), (unsigned long)stack, STACK_PAINT_BYTES, HS_MONITOR_MAX_FS);
#ifdef HS_PROFILE
    printf("\"profile\":true,");
#else
    printf("\"profile\":false,");
#endif
    printf("\"calibration\":{\"instructions\":%s,\"ticks\":%lu},\"switches\":%lu,\"ticks\":{",
           u64(2u * (uint64_t)CALIBRATION_LOOPS), (unsigned long)calibration_ticks, (unsigned long)stage_switches());
    for (s = 0; s < HS_STAGES; s++) {
        printf("%s\"%s\":%s", s ? "," : "", stage_names[s], u64(stage_ticks(s)));
    }
    printf("}}\n");
}

static int fail(const char *what, int status)
{
    printf("{\"event\":\"error\",\"where\":\"%s\",\"status\":%d}\n", what, status);
    return 1;
}

int main(void)
{
    static char out_buffer[256];
    static char path[MAX_PATH];
    hs_monitor_config_t config;
    uint32_t calibration_ticks, overflows = 0, stack = 0, used;
    int64_t samples = 0, total;
    int32_t chunks = 0;
    int handle, max_chunk = 0, status;
    long length;
    uintptr_t top;

    setvbuf(stdout, out_buffer, _IOLBF, sizeof out_buffer);  /* a line at a time: all printed so far survives a fault */
    stage_start();
    calibration_ticks = instruction_count_calibrate(CALIBRATION_LOOPS);

    if (read_config(path, &sensor_fs) != 0) {
        return fail("monitor.cfg: expected one line \\\"<samples file> <sensor rate>\\\"", -1);
    }
    status = hs_monitor_config_for(sensor_fs, &config);
    if (status != HS_MONITOR_OK) {
        return fail("hs_monitor_config_for: no tables for this rate", status);
    }
    config.model_context = &model_context;
    status = hs_monitor_init(&monitor, &config);
    if (status != HS_MONITOR_OK || hs_monitor_max_chunk(&monitor, &max_chunk) != HS_MONITOR_OK) {
        return fail("hs_monitor_init", status);
    }
    handle = sh_open_read(path);
    length = handle < 0 ? -1 : sh_flen(handle);
    if (length < 0 || length % (long)sizeof(float) != 0) {
        return fail("samples file: missing, or not whole float32 samples", (int)length);
    }
    total = length / (long)sizeof(float);

    top = stack_pointer();
    for (;;) {
        const int n = (int)(total - samples < max_chunk ? total - samples : max_chunk);
        const int finishing = n == 0;
        if (!finishing && sh_read(handle, chunk, n * (int)sizeof(float)) != n * (int)sizeof(float)) {
            return fail("reading the samples", -1);
        }
        stack_paint(top);
        (void)stage_switch(HS_STAGE_GLUE);
        status = finishing ? hs_monitor_finish(&monitor, on_event, NULL)
                           : hs_monitor_feed(&monitor, chunk, n, on_event, NULL);
        (void)stage_switch(HS_STAGE_HARNESS);
        used = stack_used(top);
        stack = used > stack ? used : stack;
        print_queued();
        if (status != HS_MONITOR_OK && status != HS_MONITOR_HELD) {
            print_summary("error", samples, chunks, max_chunk, overflows, stack, calibration_ticks);
            return fail(finishing ? "hs_monitor_finish" : "hs_monitor_feed", status);
        }
        if (finishing) {
            break;
        }
        samples += n;
        chunks++;
    }
    (void)sh_close(handle);
    run_af();
    (void)hs_monitor_overflows(&monitor, &overflows);
    print_summary("ok", samples, chunks, max_chunk, overflows, stack, calibration_ticks);
    return overflows == 0 && lost_events == 0 ? 0 : 1;
}
