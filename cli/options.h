/* options.h - moved to keys/options.h (the one key vocabulary). */
#include "keys/options.h"
