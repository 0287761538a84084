/* SysTick as an instruction counter; see instruction_count.h. */
#include "instruction_count.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018)
#define SYST_MASK 0x00FFFFFFu  /* a 24-bit down-counter */

void instruction_count_start(void)
{
    SYST_RVR = SYST_MASK;
    SYST_CVR = 0;   /* any write clears it; it reloads from RVR */
    SYST_CSR = 5;   /* enable, processor clock, no interrupt */
}

uint32_t instruction_count_read(void)
{
    return SYST_CVR;
}

uint32_t instruction_count_between(uint32_t earlier, uint32_t later)
{
    return (earlier - later) & SYST_MASK;  /* counting down */
}

uint32_t instruction_count_calibrate(uint32_t iterations)
{
    const uint32_t before = SYST_CVR;
    __asm__ volatile("1:\n\tsubs %0, %0, #1\n\tbne 1b" : "+r"(iterations) : : "cc");
    return instruction_count_between(before, SYST_CVR);
}
