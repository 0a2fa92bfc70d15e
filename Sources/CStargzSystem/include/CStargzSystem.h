/*
 * CStargzSystem: the few Linux system interfaces Swift's Glibc module does not
 * import (extended attributes, O_TMPFILE), re-exported as plain C for EStargzCore.
 */
#ifndef CSTARGZSYSTEM_H
#define CSTARGZSYSTEM_H

#include <sys/xattr.h>

/* O_TMPFILE needs _GNU_SOURCE and is a macro combining two flags; Swift cannot import it. */
extern const int sgs_o_tmpfile;

#endif
