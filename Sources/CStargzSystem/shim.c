#define _GNU_SOURCE
#include <fcntl.h>
#include "CStargzSystem.h"

const int sgs_o_tmpfile = O_TMPFILE;
