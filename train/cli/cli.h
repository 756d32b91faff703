#pragma once
// The qkv command line. main.cpp only calls run_cli, so tests drive exactly what users run; the commands only
// parse their options and call the library (train/run, train/use, train/report).
// Exit codes: 0 success; 2 usage, config and input errors (qkv::Error); 1 runtime failures; 130/143 when a
// training run was interrupted by SIGINT/SIGTERM (after writing a checkpoint).
#include <string>
#include <vector>

namespace qkv {

/// Parses argv and runs the subcommand; returns the process exit code (never throws).
int run_cli(int argc, const char* const* argv);
/// The commands, in the order `qkv --help` lists them.
std::vector<std::string> command_names();

}  // namespace qkv
