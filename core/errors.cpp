#include "qkv/core/errors.h"

namespace qkv::detail {

void assert_fail(const char* cond, const char* file, int line) {
  throw InternalError(fmt::format("qkv internal error: assertion `{}` failed at {}:{}", cond, file, line));
}

}  // namespace qkv::detail
