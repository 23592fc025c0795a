/*
 * units.h - sizes and durations as written in the configuration.
 *
 * Sizes: a bare integer is octets; suffixes K, M, G multiply by 1024^n.
 * Durations: a bare integer is seconds; suffixes ms, s, m, h, d.
 * Suffixes are case-sensitive ("50m" is not a size, "30M" not a duration);
 * no sign, no spaces, no fractions.  Overflow of uint64 is an error.
 */
#ifndef POPGATE_UNITS_H
#define POPGATE_UNITS_H

#include <stdint.h>

/* Returns 0 and stores octets, or -1 when TEXT is not a valid size. */
int units_parse_size(const char *text, uint64_t *octets_r);

/* Returns 0 and stores milliseconds, or -1 when TEXT is not a valid duration. */
int units_parse_duration(const char *text, uint64_t *msecs_r);

#endif
