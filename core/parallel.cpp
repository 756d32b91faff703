#include "qkv/core/parallel.h"

#include <qkv/core/errors.h>

#include <omp.h>

namespace qkv {

void set_num_threads(int threads) {
  QKV_CHECK(threads >= 1, "set_num_threads: the thread count must be at least 1, got {}", threads);
  omp_set_num_threads(threads);
}

int num_threads() { return omp_get_max_threads(); }

bool parallel_worth(Work kind, double units) {
  switch (kind) {
    case Work::Elementwise: return units >= double(1 << 15);
    case Work::Rows: return units >= double(1 << 13);
    case Work::Gemm: return units >= double(1 << 20);
    case Work::Attention: return units > double(1 << 18);
  }
  return false;
}

}  // namespace qkv
