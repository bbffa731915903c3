#include "suggest.h"

#include <string.h>

/* Levenshtein distance; words of 64 characters or more are never close. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];

	if (la >= 64 || lb >= 64)
		return 99;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

const char *harness_suggest(const char *word, const char *const *valid)
{
	const char *best = NULL;
	size_t bd = 99, wl = strlen(word);

	for (int i = 0; valid[i]; i++) {
		size_t d = edit_distance(word, valid[i]);
		if (d < bd) {
			bd = d;
			best = valid[i];
		}
	}
	/* close enough to be a typo: a third of the word, at least 2 edits */
	return bd <= (wl / 3 > 2 ? wl / 3 : 2) ? best : NULL;
}
