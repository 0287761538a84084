/* SysTick as an instruction counter under `qemu -icount` (examples/firmware/instruction_count.c), per stage; see
 * stage_count.h. */
#include "instruction_count.h"
#include "stage_count.h"

const char *const stage_names[HS_STAGES] = {"glue", "preprocess", "rpeak", "windows", "model", "explainer", "policy",
                                            "harness"};

static uint64_t ticks[HS_STAGES];
static uint32_t last;
static uint32_t switches;
static int current = HS_STAGE_HARNESS;

void stage_start(void)
{
    instruction_count_start();
    last = instruction_count_read();
    current = HS_STAGE_HARNESS;
}

int stage_switch(int next)
{
    const uint32_t now = instruction_count_read();
    const int previous = current;
    ticks[current] += instruction_count_between(last, now);
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
