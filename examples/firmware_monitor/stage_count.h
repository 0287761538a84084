/* Instructions spent in each stage of the device path, counted with SysTick.
 *
 * QEMU does not model cycles, but with `-icount shift=N` its virtual clock advances 2^N ns per executed instruction
 * and SysTick (the 25 MHz processor clock on mps2-an386) counts that clock: one tick is 40 / 2^N instructions
 * (stage_calibrate checks it on each run). Without -icount the ticks follow host time and mean nothing.
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
/* Ticks taken by a loop of 2 * iterations instructions (subs, bne): the instructions per tick of this run. */
uint32_t stage_calibrate(uint32_t iterations);

#endif
