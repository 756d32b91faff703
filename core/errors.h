#pragma once
// Errors: user mistakes throw qkv::Error with what, where, expected and got; broken internal invariants throw
// qkv::InternalError naming file and line (never abort: a library must not kill its host process).
#include <fmt/format.h>

#include <new>
#include <stdexcept>
#include <string>

namespace qkv {

/// A user mistake: bad shape, bad index, bad config value, bad file. The message names the op and the numbers.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A file qkv was asked to write could not be written (a full disk, a read-only folder): a failure while
/// running (the CLI's exit 1), not a user mistake, though it is a qkv::Error too.
class WriteError : public Error {
 public:
  using Error::Error;
};

/// Memory ran out: a std::bad_alloc (what callers already catch) whose message names the op that asked and the
/// bytes, e.g. "out of memory: `matmul` asked for 68719476736 bytes (68.7 GB)".
class OutOfMemoryError : public std::bad_alloc {
 public:
  explicit OutOfMemoryError(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

/// A bug in qkv itself (an invariant that should always hold did not).
class InternalError : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

/// Throws qkv::Error with a fmt-formatted message.
template <class... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

namespace detail {
[[noreturn]] void assert_fail(const char* cond, const char* file, int line);
/// The op running on this thread (set by the ops and by backward for each node; null outside them), and whether it
/// is that op's backward: what an out-of-memory error names.
extern thread_local const char* g_current_op;
extern thread_local bool g_in_backward;
}

}  // namespace qkv

/// Throws qkv::Error(message) unless cond holds.
#define QKV_CHECK(cond, ...)               \
  do {                                     \
    if (!(cond)) ::qkv::fail(__VA_ARGS__); \
  } while (0)

/// Internal invariant: throws qkv::InternalError naming the condition, file and line.
#define QKV_ASSERT(cond)                                                    \
  do {                                                                      \
    if (!(cond)) ::qkv::detail::assert_fail(#cond, __FILE__, __LINE__);     \
  } while (0)
