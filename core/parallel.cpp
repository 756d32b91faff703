#include "qkv/core/parallel.h"

#include <qkv/core/errors.h>

#include <omp.h>

namespace qkv {

void set_num_threads(int threads) {
  QKV_CHECK(threads >= 1, "set_num_threads: the thread count must be at least 1, got {}", threads);
  omp_set_num_threads(threads);
}

int num_threads() { return omp_get_max_threads(); }

}  // namespace qkv
