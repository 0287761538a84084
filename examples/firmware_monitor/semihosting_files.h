/* Reading host files through Arm semihosting (QEMU, or a debugger), next to ../firmware/semihosting.h's console
 * output. Paths are relative to the directory the emulator was started in. */
#ifndef SEMIHOSTING_FILES_H
#define SEMIHOSTING_FILES_H

#include <stddef.h>

/* Opens a file for reading in binary; returns a handle >= 0, or -1. */
int sh_open_read(const char *path);
/* Reads up to len bytes into buf; returns the number of bytes read (0 at the end of the file), or -1. */
int sh_read(int handle, void *buf, int len);
/* The file's length in bytes, or -1. */
long sh_flen(int handle);
/* Closes the handle; returns 0, or -1. */
int sh_close(int handle);

#endif
