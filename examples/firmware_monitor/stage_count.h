/* Instructions spent in each stage of the device path, counted with SysTick under `qemu -icount`
 * (examples/firmware/instruction_count.h: one tick is 40 / 2^N instructions at shift N, and
 * instruction_count_calibrate checks it on each run).
 *
 * The program is always in exactly one stage; stage_switch charges the ticks since the last switch to the stage that
 * was current, so the stages add up to the whole run. Without HS_PROFILE only HS_STAGE_GLUE (the whole path, entered
 * around each hs_monitor_feed / hs_monitor_finish) and HS_STAGE_HARNESS (everything else, the event callback
 * included) are used; with HS_PROFILE, stage_wraps.c splits the path into its parts. */
#ifndef STAGE_COUNT_H
#define STAGE_COUNT_H

#include <stdint.h>

enum {
    HS_STAGE_GLUE,        /* hs_monitor's own code: kept signal, readiness, excerpts, beat marks, forgetting */
    HS_STAGE_PREPROCESS,  /* quality gate, resampler, band-pass */
    HS_STAGE_RPEAK,       /* R-peak detector */
    HS_STAGE_WINDOWS,     /* hs_channels: beat context and model windows */
    HS_STAGE_MODEL,       /* quantize, infer, last sums */
    HS_STAGE_EXPLAINER,   /* hs_explain, then the softmax and the trace's interpolation to the sensor rate */
    HS_STAGE_POLICY,      /* hs_policy */
    HS_STAGE_HARNESS,     /* this program: reading samples, the event callback, printing */
    HS_STAGES
};

extern const char *const stage_names[HS_STAGES];

/* Starts SysTick free-running (24 bits, processor clock, no interrupt) in HS_STAGE_HARNESS. */
void stage_start(void);
/* Makes `next` the current stage; returns the stage it replaces. */
int stage_switch(int next);
int stage_current(void);
/* Ticks charged to a stage so far, and how many switches there were (each may misplace up to one tick). */
uint64_t stage_ticks(int stage);
uint32_t stage_switches(void);

#endif
