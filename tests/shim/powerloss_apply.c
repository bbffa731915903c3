/*
 * powerloss_apply PREFIX WORLD ROOT: roll ROOT back with
 * harness_powerloss_apply from the undo records PREFIX.rank-R.jsonl, as the
 * harness does after a power_loss fault; prints how many records were undone.
 */
#include <stdio.h>
#include <stdlib.h>

#include "powerloss.h"

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	const char *prefixes[1] = { argv[1] };
	int n = harness_powerloss_apply(prefixes, 1, atoi(argv[2]), argv[3], stderr);
	printf("undone %d\n", n);
	return n < 0 ? 1 : 0;
}
