#include "../support.h"

#include <qkv/core/files.h>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <thread>

using namespace qkv;
namespace fs = std::filesystem;

namespace {
std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
bool no_temporaries(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return false;
  return true;
}
}  // namespace

TEST_CASE("an output replaces a regular file whole and follows a link to one, keeping the link") {
  const fs::path box = test::scratch_dir("files_regular");
  write_file_atomic((box / "a.txt").string(), "first version, long");
  write_file_atomic((box / "a.txt").string(), "second");
  CHECK(slurp(box / "a.txt") == "second");
  fs::create_symlink("a.txt", box / "link.txt");
  write_file_atomic((box / "link.txt").string(), "through the link");
  CHECK(fs::is_symlink(box / "link.txt"));
  CHECK(slurp(box / "a.txt") == "through the link");
  CHECK(no_temporaries(box));
  CHECK_ERROR(write_file_atomic((box / "missing-dir" / "x").string(), "x"), "write: cannot create");
  CHECK_ERROR(write_file_atomic(box.string(), "x"), "is a directory");
  fs::create_symlink("nowhere.txt", box / "dangling");
  CHECK_ERROR(write_file_atomic((box / "dangling").string(), "x"), "symbolic link to a missing file");
}

// Run as root, qkv export --out /dev/null replaced the device node with a regular file.
TEST_CASE("an output onto a character device or FIFO is written through, never replaced") {
  write_file_atomic("/dev/null", "discarded");
  struct stat st {};
  REQUIRE(::stat("/dev/null", &st) == 0);
  CHECK(S_ISCHR(st.st_mode));
  const fs::path box = test::scratch_dir("files_fifo");
  const fs::path fifo = box / "pipe";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::string got;
  std::thread reader([&] { got = slurp(fifo); });
  write_file_atomic(fifo.string(), "through the pipe");
  reader.join();
  CHECK(got == "through the pipe");
  CHECK(fs::is_fifo(fifo));
  fs::create_symlink("/dev/null", box / "to-null");
  write_file_atomic((box / "to-null").string(), "x");
  CHECK(fs::is_symlink(box / "to-null"));
  REQUIRE(::stat("/dev/null", &st) == 0);
  CHECK(S_ISCHR(st.st_mode));
}

TEST_CASE("inputs: only regular files, bounded, never blocking") {
  const fs::path box = test::scratch_dir("files_inputs");
  std::ofstream(box / "small.txt") << "0123456789";
  CHECK(read_file_bytes((box / "small.txt").string(), "config", 10) == "0123456789");
  CHECK_ERROR(read_file_bytes((box / "small.txt").string(), "config", 9), "is 10 bytes, more than the 9");
  CHECK_ERROR(read_file_bytes("/dev/zero", "config"), "/dev/zero is a character device, not a regular file");
  REQUIRE(::mkfifo((box / "pipe").c_str(), 0600) == 0);
  CHECK_ERROR(read_file_bytes((box / "pipe").string(), "data"), "is a FIFO, not a regular file");  // no writer: would block
  CHECK_ERROR(read_file_bytes(box.string(), "data"), "is a directory, not a regular file");
  CHECK_ERROR(read_file_bytes((box / "none").string(), "data"), "none: no such file");
}

// A full disk for under a second lost a third of metrics.jsonl and left a truncated line.
TEST_CASE("a failed append is retried, then reported with only whole lines kept") {
  const fs::path box = test::scratch_dir("files_append");
  const auto old = std::signal(SIGXFSZ, SIG_IGN);  // as the qkv program does: EFBIG instead of a signal
  struct rlimit saved {};
  REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
  const auto limit = [&](rlim_t bytes) {
    struct rlimit r = saved;
    r.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &r) == 0);
  };
  const std::string line(40, 'x');
  {
    AppendFile f((box / "m.jsonl").string(), 0.2);
    f.append(line + "\n");
    limit(60);  // the next line fits only in part
    CHECK_ERROR(f.append(line + "\n"), "retried for 0 s; its last lines are missing");
    limit(saved.rlim_cur);
    CHECK(slurp(box / "m.jsonl") == line + "\n");  // the partial line was cut off
    limit(60);
    std::thread lift([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      limit(saved.rlim_cur);  // the disk has room again
    });
    AppendFile g((box / "m.jsonl").string(), 5.0);
    g.append(line + "\n");
    lift.join();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  std::signal(SIGXFSZ, old);
  CHECK(slurp(box / "m.jsonl") == line + "\n" + line + "\n");
}

