/* SysTick as an instruction counter under `qemu -icount`; see stage_count.h. */
#include "stage_count.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)
#define SYST_MASK 0x00FFFFFFu  /* a 24-bit down-counter */

const char *const stage_names[HS_STAGES] = {"glue", "preprocess", "rpeak", "windows", "model", "explainer", "policy",
                                            "harness"};

static uint64_t ticks[HS_STAGES];
static uint32_t last;
static uint32_t switches;
static int current = HS_STAGE_HARNESS;

void stage_start(void)
{
    SYST_RVR = SYST_MASK;
    SYST_CVR = 0;   /* any write clears it; it reloads from RVR */
    SYST_CSR = 5;   /* enable, processor clock, no interrupt */
    last = SYST_CVR;
    current = HS_STAGE_HARNESS;
}

int stage_switch(int next)
{
    const uint32_t now = SYST_CVR;
    const int previous = current;
    ticks[current] += (last - now) & SYST_MASK;  /* counting down; a wrap (every 2^24 ticks) is taken modulo */
    last = now;
    current = next;
    switches++;
    return previous;
}

int stage_current(void)
{
    return current;
}

uint64_t stage_ticks(int stage)
{
    return stage >= 0 && stage < HS_STAGES ? ticks[stage] : 0;
}

uint32_t stage_switches(void)
{
    return switches;
}

uint32_t stage_calibrate(uint32_t iterations)
{
    const uint32_t before = SYST_CVR;
    uint32_t after;
    __asm__ volatile("1:\n\tsubs %0, %0, #1\n\tbne 1b" : "+r"(iterations) : : "cc");
    after = SYST_CVR;
    return (before - after) & SYST_MASK;
}
