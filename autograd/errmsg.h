/* errmsg.h - the one way library code reports an error to its caller.
 *
 * Library functions in pare return a status and write a message naming the
 * thing and what was expected into a buffer the caller owns (err, errlen).
 */
#ifndef PARE_AG_ERRMSG_H
#define PARE_AG_ERRMSG_H

#include <stddef.h>

/* Formats the message into err (at most errlen bytes, NUL-terminated,
 * truncated if longer). err may be NULL or errlen 0: then nothing is written. */
void ag_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
