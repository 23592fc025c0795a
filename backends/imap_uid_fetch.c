/*
 * imap_uid_fetch.c - libetpan's UID FETCH with one ownership rule, and
 * the pieces every fetch through it needs.
 */
#include "imap_uid_fetch.h"

int imap_uid_fetch(mailimap *imap, struct mailimap_set *set,
		   struct mailimap_fetch_type *ft, clist **result_r)
{
	clist *result = NULL;
	int r = mailimap_uid_fetch(imap, set, ft, &result);

	/* On error the list, if libetpan made one, is already freed. */
	*result_r = r == MAILIMAP_NO_ERROR ? result : NULL;
	return r;
}

void imap_ignore_progress(size_t current, size_t maximum, void *context)
{
	(void)current;
	(void)maximum;
	(void)context;
}

struct mailimap_fetch_type *imap_fetch_type_body_partial(uint32_t offset,
							 uint32_t len)
{
	struct mailimap_fetch_type *ft =
		mailimap_fetch_type_new_fetch_att_list_empty();
	struct mailimap_section *section = mailimap_section_new(NULL);
	struct mailimap_fetch_att *att = NULL;

	if (section != NULL) {
		att = mailimap_fetch_att_new_body_peek_section_partial(section,
								       offset,
								       len);
		if (att == NULL)
			mailimap_section_free(section);
	}
	if (ft == NULL || att == NULL ||
	    mailimap_fetch_type_new_fetch_att_list_add(ft, att) != 0) {
		if (att != NULL)
			mailimap_fetch_att_free(att);
		if (ft != NULL)
			mailimap_fetch_type_free(ft);
		return NULL;
	}
	return ft;
}
