/*
 * units.c - sizes and durations as written in the configuration.
 */
#include <ctype.h>
#include <stddef.h>
#include <string.h>

#include "units.h"

struct unit_suffix {
	const char *suffix;
	uint64_t factor;
};

static const struct unit_suffix size_suffixes[] = {
	{ "", 1 },
	{ "K", 1024ULL },
	{ "M", 1024ULL * 1024 },
	{ "G", 1024ULL * 1024 * 1024 },
	{ NULL, 0 },
};

static const struct unit_suffix duration_suffixes[] = {
	{ "", 1000 },
	{ "ms", 1 },
	{ "s", 1000 },
	{ "m", 60ULL * 1000 },
	{ "h", 3600ULL * 1000 },
	{ "d", 86400ULL * 1000 },
	{ NULL, 0 },
};

/* Digits, then exactly one of SUFFIXES (compared case-sensitively). */
static int parse_with_suffix(const char *text,
			     const struct unit_suffix *suffixes,
			     uint64_t *value_r)
{
	uint64_t number = 0;
	const char *p = text;

	if (text == NULL || !isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned digit = (unsigned)(*p - '0');

		if (number > (UINT64_MAX - digit) / 10)
			return -1;
		number = number * 10 + digit;
	}
	for (const struct unit_suffix *u = suffixes; u->suffix != NULL; u++) {
		if (strcmp(p, u->suffix) != 0)
			continue;
		if (number != 0 && u->factor > UINT64_MAX / number)
			return -1;
		*value_r = number * u->factor;
		return 0;
	}
	return -1;
}

int units_parse_size(const char *text, uint64_t *octets_r)
{
	return parse_with_suffix(text, size_suffixes, octets_r);
}

int units_parse_duration(const char *text, uint64_t *msecs_r)
{
	return parse_with_suffix(text, duration_suffixes, msecs_r);
}
