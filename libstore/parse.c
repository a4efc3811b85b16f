/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Option values as QEMU's tools take them; see vstor/parse.h. */
#include "vstor/parse.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>

static int unit_shift(char c)
{
	switch (tolower((unsigned char)c)) {
	case 'b':
		return 0;
	case 'k':
		return 10;
	case 'm':
		return 20;
	case 'g':
		return 30;
	case 't':
		return 40;
	case 'p':
		return 50;
	case 'e':
		return 60;
	default:
		return -1;
	}
}

/* Digits of @s into *@v (saturating at UINT64_MAX); returns the count. */
static size_t parse_digits(const char *s, int base, unsigned __int128 *v, size_t max_digits)
{
	size_t n = 0;

	*v = 0;
	for (;; n++) {
		int d;

		if (isdigit((unsigned char)s[n]))
			d = s[n] - '0';
		else if (base == 16 && isxdigit((unsigned char)s[n]))
			d = tolower((unsigned char)s[n]) - 'a' + 10;
		else
			break;
		if (n < max_digits && *v <= UINT64_MAX)
			*v = *v * base + d;
	}
	return n;
}

int vs_parse_size(const char *s, uint64_t *out)
{
	unsigned __int128 ival, frac = 0, fdiv = 1, res;
	size_t n, nfrac = 0;
	bool hex = false, has_frac = false;
	int shift = 0;

	while (isspace((unsigned char)*s))
		s++;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X') && isxdigit((unsigned char)s[2])) {
		hex = true;
		s += 2;
	}
	n = parse_digits(s, hex ? 16 : 10, &ival, 40);
	if (!n)
		return -EINVAL;
	s += n;
	if (!hex && *s == '.') {
		has_frac = true;
		s++;
		nfrac = parse_digits(s, 10, &frac, 18);
		s += nfrac;
		for (size_t i = 0; i < nfrac && i < 18; i++)
			fdiv *= 10;
	}
	if (*s) {
		shift = unit_shift(*s);
		if (shift < 0 || s[1])
			return -EINVAL;
	}
	if (has_frac && shift == 0 && frac)
		return -EINVAL;
	if (ival > INT64_MAX)
		return -ERANGE;
	res = (ival << shift) + ((frac << shift) / fdiv);
	if (res > INT64_MAX)
		return -ERANGE;
	*out = (uint64_t)res;
	return 0;
}

int vs_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "on", "yes", "true", "y" };
	static const char *const no[] = { "off", "no", "false", "n" };

	for (unsigned i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcmp(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcmp(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}
