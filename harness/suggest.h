/* "Did you mean": the closest valid word to a typo, for error messages. */
#ifndef HARNESS_SUGGEST_H
#define HARNESS_SUGGEST_H

/* Closest of the NULL-terminated valid words by edit distance, or NULL if none is close. */
const char *harness_suggest(const char *word, const char *const *valid);

#endif
