/* Console output and exit status through Arm semihosting (QEMU, or a debugger on real hardware). */
#ifndef SEMIHOSTING_H
#define SEMIHOSTING_H

/* Writes len bytes to the host console; returns len, or -1 if the console could not be opened. */
int sh_write(const char *buf, int len);

/* Ends the program; under QEMU the emulator exits with this status. */
void sh_exit(int status) __attribute__((noreturn));

#endif
