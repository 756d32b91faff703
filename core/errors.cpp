#include "qkv/core/errors.h"

namespace qkv::detail {

thread_local const char* g_current_op = nullptr;
thread_local bool g_in_backward = false;

void assert_fail(const char* cond, const char* file, int line) {
  throw InternalError(fmt::format("qkv internal error: assertion `{}` failed at {}:{}", cond, file, line));
}

}  // namespace qkv::detail
