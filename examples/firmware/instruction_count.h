/* SysTick as an instruction counter under `qemu-system-arm -icount shift=N`.
 *
 * QEMU does not model cycles, but with -icount its virtual clock advances 2^N ns per executed instruction, and
 * SysTick, clocked by mps2-an386's 25 MHz processor clock, counts that clock: one tick is 40 / 2^N instructions.
 * instruction_count_calibrate runs a loop of known length so that every run checks the conversion. Without -icount
 * the ticks follow host time and mean nothing. Instructions are not cycles: a Cortex-M4 takes one or more cycles per
 * instruction, so a latency from them is a lower bound. */
#ifndef INSTRUCTION_COUNT_H
#define INSTRUCTION_COUNT_H

#include <stdint.h>

/* Starts SysTick free-running: 24 bits, processor clock, no interrupt. */
void instruction_count_start(void);
/* The counter now (it counts down). */
uint32_t instruction_count_read(void);
/* Ticks from one reading to a later one (modulo 2^24: an interval must stay under 671 M instructions at shift 0). */
uint32_t instruction_count_between(uint32_t earlier, uint32_t later);
/* Ticks taken by a loop of 2 * iterations instructions (subs, bne). */
uint32_t instruction_count_calibrate(uint32_t iterations);

#endif
