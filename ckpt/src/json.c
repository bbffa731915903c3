/*
 * A strict pull reader for the JSON that libckpt reads from disk (manifests,
 * shard headers). What is read from disk is untrusted: every step checks the
 * end of the buffer, strings are bounded by the caller's buffer, integers by
 * 64 bits, nesting by MAX_DEPTH, and the whole read is one linear pass.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MAX_DEPTH 32

void ckpt__jr_init(ckpt_jr *j, const char *text, size_t len)
{
	j->base = j->p = text;
	j->end = text + len;
	j->depth = 0;
	j->failed = 0;
	j->err[0] = '\0';
}

int ckpt__jr_fail(ckpt_jr *j, const char *fmt, ...)
{
	va_list ap;
	char what[120];

	if (j->failed)
		return -1;
	j->failed = 1;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	snprintf(j->err, sizeof j->err, "%s at byte %zu", what, (size_t)(j->p - j->base));
	return -1;
}

static void ws(ckpt_jr *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

int ckpt__jr_peek(ckpt_jr *j)
{
	ws(j);
	return j->p < j->end ? (unsigned char)*j->p : 0;
}

int ckpt__jr_expect(ckpt_jr *j, char c)
{
	if (j->failed)
		return -1;
	if (ckpt__jr_peek(j) != (unsigned char)c)
		return ckpt__jr_fail(j, "expected '%c'", c);
	j->p++;
	return 0;
}

static int hexval(int c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* out may be NULL (skip); cap counts the terminating NUL. */
static int string_into(ckpt_jr *j, char *out, size_t cap)
{
	size_t n = 0;

	if (ckpt__jr_expect(j, '"') < 0)
		return -1;
	for (;;) {
		if (j->p >= j->end)
			return ckpt__jr_fail(j, "unterminated string");
		unsigned char c = (unsigned char)*j->p++;
		unsigned code;
		if (c == '"')
			break;
		if (c < 0x20)
			return ckpt__jr_fail(j, "control character in a string");
		if (c == '\\') {
			if (j->p >= j->end)
				return ckpt__jr_fail(j, "unterminated escape");
			c = (unsigned char)*j->p++;
			switch (c) {
			case '"': case '\\': case '/': break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'n': c = '\n'; break;
			case 'r': c = '\r'; break;
			case 't': c = '\t'; break;
			case 'u':
				if (j->end - j->p < 4)
					return ckpt__jr_fail(j, "short \\u escape");
				code = 0;
				for (int i = 0; i < 4; i++) {
					int h = hexval((unsigned char)j->p[i]);
					if (h < 0)
						return ckpt__jr_fail(j, "bad \\u escape");
					code = code * 16 + (unsigned)h;
				}
				j->p += 4;
				/* names are byte strings: only \u0001-\u00ff round-trip as one byte */
				if (code == 0 || code > 0xff)
					return ckpt__jr_fail(j, "\\u%04x is not supported in libckpt names", code);
				c = (unsigned char)code;
				break;
			default:
				return ckpt__jr_fail(j, "bad escape \\%c", c);
			}
		}
		if (out) {
			if (n + 1 >= cap)
				return ckpt__jr_fail(j, "string longer than %zu bytes", cap - 1);
			out[n] = (char)c;
		}
		n++;
	}
	if (out)
		out[n] = '\0';
	return 0;
}

int ckpt__jr_string(ckpt_jr *j, char *out, size_t cap)
{
	return string_into(j, out, cap);
}

int ckpt__jr_u64(ckpt_jr *j, uint64_t *v)
{
	uint64_t x = 0;
	const char *start;

	if (j->failed)
		return -1;
	ws(j);
	start = j->p;
	while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
		unsigned d = (unsigned)(*j->p - '0');
		if (x > (UINT64_MAX - d) / 10)
			return ckpt__jr_fail(j, "integer out of range");
		x = x * 10 + d;
		j->p++;
	}
	if (j->p == start)
		return ckpt__jr_fail(j, "expected a non-negative integer");
	if (j->p - start > 1 && *start == '0')
		return ckpt__jr_fail(j, "integer with a leading zero");
	if (j->p < j->end && (*j->p == '.' || *j->p == 'e' || *j->p == 'E'))
		return ckpt__jr_fail(j, "expected an integer");
	*v = x;
	return 0;
}

int ckpt__jr_member(ckpt_jr *j, int *first, char *key, size_t cap)
{
	if (j->failed)
		return -1;
	if (*first) {
		if (ckpt__jr_expect(j, '{') < 0)
			return -1;
		if (++j->depth > MAX_DEPTH)
			return ckpt__jr_fail(j, "nested too deeply");
		*first = 0;
		if (ckpt__jr_peek(j) == '}') {
			j->p++;
			j->depth--;
			return 0;
		}
	} else {
		int c = ckpt__jr_peek(j);
		if (c == '}') {
			j->p++;
			j->depth--;
			return 0;
		}
		if (ckpt__jr_expect(j, ',') < 0)
			return -1;
	}
	if (ckpt__jr_peek(j) != '"')
		return ckpt__jr_fail(j, "expected a member name");
	if (string_into(j, key, cap) < 0 || ckpt__jr_expect(j, ':') < 0)
		return -1;
	return 1;
}

int ckpt__jr_element(ckpt_jr *j, int *first)
{
	if (j->failed)
		return -1;
	if (*first) {
		if (ckpt__jr_expect(j, '[') < 0)
			return -1;
		if (++j->depth > MAX_DEPTH)
			return ckpt__jr_fail(j, "nested too deeply");
		*first = 0;
		if (ckpt__jr_peek(j) == ']') {
			j->p++;
			j->depth--;
			return 0;
		}
		return 1;
	}
	int c = ckpt__jr_peek(j);
	if (c == ']') {
		j->p++;
		j->depth--;
		return 0;
	}
	if (ckpt__jr_expect(j, ',') < 0)
		return -1;
	return 1;
}

static int literal(ckpt_jr *j, const char *word)
{
	size_t n = strlen(word);
	if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0)
		return ckpt__jr_fail(j, "unexpected character");
	j->p += n;
	return 0;
}

int ckpt__jr_skip(ckpt_jr *j)
{
	int c = ckpt__jr_peek(j), first = 1, rc;

	if (j->failed)
		return -1;
	switch (c) {
	case '"':
		return string_into(j, NULL, 0);
	case '{':
		while ((rc = ckpt__jr_member(j, &first, NULL, 0)) == 1)
			if (ckpt__jr_skip(j) < 0)
				return -1;
		return rc;
	case '[':
		while ((rc = ckpt__jr_element(j, &first)) == 1)
			if (ckpt__jr_skip(j) < 0)
				return -1;
		return rc;
	case 't': return literal(j, "true");
	case 'f': return literal(j, "false");
	case 'n': return literal(j, "null");
	default:
		if (c == '-' || (c >= '0' && c <= '9')) {
			if (c == '-')
				j->p++;
			if (j->p >= j->end || *j->p < '0' || *j->p > '9')
				return ckpt__jr_fail(j, "bad number");
			while (j->p < j->end && ((*j->p >= '0' && *j->p <= '9') || *j->p == '.' || *j->p == 'e' ||
						 *j->p == 'E' || *j->p == '+' || *j->p == '-'))
				j->p++;
			return 0;
		}
		return ckpt__jr_fail(j, "expected a value");
	}
}

int ckpt__jr_end(ckpt_jr *j)
{
	if (j->failed)
		return -1;
	if (ckpt__jr_peek(j) != 0)
		return ckpt__jr_fail(j, "trailing data");
	return 0;
}
