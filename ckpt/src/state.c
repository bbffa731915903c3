#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int ckpt_state_new(ckpt_state **out)
{
	*out = calloc(1, sizeof **out);
	return *out ? 0 : -ENOMEM;
}

void ckpt_state_free(ckpt_state *s)
{
	if (!s)
		return;
	free(s->e);
	free(s);
}

int ckpt_state_add_tensor(ckpt_state *s, const char *name, const char *component, ckpt_stage stage,
			  ckpt_dtype dtype, void *data, size_t local_elems, size_t global_elems,
			  size_t global_offset)
{
	if (!name || !*name || strlen(name) >= CKPT_NAME_MAX || strcmp(name, "__metadata__") == 0 ||
	    !component || strlen(component) >= CKPT_COMPONENT_MAX || (unsigned)stage >= CKPT_STAGE_COUNT ||
	    (unsigned)dtype > CKPT_U8 || (!data && local_elems) || global_offset + local_elems > global_elems)
		return -EINVAL;
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->e[i].name, name) == 0)
			return -EEXIST;
	if (s->n == s->cap) {
		int cap = s->cap ? 2 * s->cap : 16;
		ckpt_entry *e = realloc(s->e, sizeof *e * (size_t)cap);
		if (!e)
			return -ENOMEM;
		s->e = e;
		s->cap = cap;
	}
	ckpt_entry *e = &s->e[s->n++];
	memset(e, 0, sizeof *e);
	strcpy(e->name, name);
	strcpy(e->component, component);
	e->stage = stage;
	e->dtype = dtype;
	e->data = data;
	e->local_elems = local_elems;
	e->global_elems = global_elems;
	e->global_offset = global_offset;
	return 0;
}

int ckpt_state_add_blob(ckpt_state *s, const char *name, const char *component, ckpt_stage stage,
			void *data, size_t bytes)
{
	return ckpt_state_add_tensor(s, name, component, stage, CKPT_U8, data, bytes, bytes, 0);
}
