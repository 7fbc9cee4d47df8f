// SPDX-License-Identifier: GPL-2.0-or-later
// The tracer's architecture support (arch.h) for the CPU the compiler
// targets: one file per architecture, chosen here so that the build lists one
// source whatever the target.
#if defined(__x86_64__)
#include "arch_x86_64.c"
#elif defined(__aarch64__)
#include "arch_aarch64.c"
#else
#error "kexecd's tracer knows the registers of x86_64 and aarch64 only: add csrc/arch_<arch>.c"
#endif
