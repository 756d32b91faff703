#include <qkv/train/cli.h>

int main(int argc, char** argv) { return qkv::run_cli(argc, argv); }
