// Sufficient statistics built from per-unit values, for the statistics
// tests (stats_test.cc, stats_simulation_test.cc).
#pragma once

#include "experiments/stats.h"

namespace capstan::experiments::stats::testing {

// Adds one unit's (M, D, M0, D0) to a CUPED-ratio arm: n, the post- and
// pre-period ratio sums and the four post×pre cross-products.
inline void AddCupedRatioUnit(CupedRatioArmSums* s, double m, double d, double m0, double d0) {
  s->n += 1;
  s->post.numerator_sum += m;
  s->post.numerator_sum_squares += m * m;
  s->post.denominator_sum += d;
  s->post.denominator_sum_squares += d * d;
  s->post.sum_of_products += m * d;
  s->pre.numerator_sum += m0;
  s->pre.numerator_sum_squares += m0 * m0;
  s->pre.denominator_sum += d0;
  s->pre.denominator_sum_squares += d0 * d0;
  s->pre.sum_of_products += m0 * d0;
  s->numerator_pre_numerator += m * m0;
  s->numerator_pre_denominator += m * d0;
  s->denominator_pre_numerator += d * m0;
  s->denominator_pre_denominator += d * d0;
  s->post.n = s->pre.n = s->n;
}

}  // namespace capstan::experiments::stats::testing
