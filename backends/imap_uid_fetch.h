/*
 * imap_uid_fetch.h - libetpan's UID FETCH, with its ownership rules fixed
 * in one place.
 *
 * libetpan 1.9 hands back the parsed FETCH list through *result, but after
 * a tagged NO it has already freed that list and leaves the pointer
 * dangling; freeing it again crashes the session.  Every UID FETCH that
 * libetpan parses goes through imap_uid_fetch(), whose result is either
 * the caller's list or NULL (message bodies are read by imap_body.c).
 */
#ifndef POPGATE_IMAP_UID_FETCH_H
#define POPGATE_IMAP_UID_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include <libetpan/libetpan.h>

/*
 * Run UID FETCH SET FT on IMAP.  Returns libetpan's code; on
 * MAILIMAP_NO_ERROR *result_r is the parsed list (NULL or a list the caller
 * frees with mailimap_fetch_list_free()), on any error it is NULL.  SET and
 * FT stay the caller's.  Blocks on the upstream.
 */
int imap_uid_fetch(mailimap *imap, struct mailimap_set *set,
		   struct mailimap_fetch_type *ft, clist **result_r);

/* A libetpan progress callback that does nothing: libetpan calls the
 * per-response and body handlers of a fetch only while one is set. */
void imap_ignore_progress(size_t current, size_t maximum, void *context);

/* A fetch type of BODY.PEEK[]<OFFSET.LEN> alone, or NULL when out of
 * memory.  Free with mailimap_fetch_type_free(). */
struct mailimap_fetch_type *imap_fetch_type_body_partial(uint32_t offset,
							 uint32_t len);

#endif
