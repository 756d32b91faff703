#include <qkv/train/cli/cli.h>

#include <csignal>

int main(int argc, char** argv) {
  // The program owns process-wide settings: a file-size limit (ulimit -f) makes write() fail with EFBIG, which
  // qkv reports and cleans up after, instead of the default SIGXFSZ killing the process mid-write.
  std::signal(SIGXFSZ, SIG_IGN);
  return qkv::run_cli(argc, argv);
}
