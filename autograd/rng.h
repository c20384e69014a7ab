/* rng.h - the one random number generator of pare: xoshiro256** seeded by
 * splitmix64 (Blackman and Vigna, "Scrambled linear pseudorandom number
 * generators", 2018). Its whole state is four words, so a checkpoint can store
 * it and a resumed run draws exactly the numbers it would have drawn.
 * Every random stream in pare is one ag_rng seeded explicitly.
 */
#ifndef PARE_AG_RNG_H
#define PARE_AG_RNG_H

#include <stdint.h>

typedef struct ag_rng {
    uint64_t s[4];
} ag_rng;

/* Seeds the generator; any seed (0 included) gives a valid state. */
void ag_rng_seed(ag_rng *r, uint64_t seed);

/* Next 64 random bits. */
uint64_t ag_rng_next(ag_rng *r);

/* Uniform float in [0, 1) with 24 random bits. */
float ag_rng_uniform(ag_rng *r);

/* Uniform integer in [0, n), n >= 1, without modulo bias. */
uint64_t ag_rng_below(ag_rng *r, uint64_t n);

/* Standard normal (Box-Muller, computed in double; one value per call). */
float ag_rng_normal(ag_rng *r);

#endif
