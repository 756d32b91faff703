#pragma once
// How many threads qkv's ops use. Results do not depend on it: every op splits its work so that each output
// element is computed the same way whichever thread computes it, and reductions run in a fixed order, so a run
// is bit-identical for any thread count on the same machine kind (see README, "Reproducibility").

namespace qkv {

/// Sets the number of threads ops may use (>= 1; OpenMP's team size, process-wide).
void set_num_threads(int threads);
/// The number of threads ops may use.
int num_threads();

}  // namespace qkv
