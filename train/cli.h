#pragma once
// The qkv command line. main.cpp only calls run_cli, so tests drive exactly what users run.
// Exit codes: 0 success; 2 usage, config and input errors (qkv::Error); 1 runtime failures; 130/143 when a
// training run was interrupted by SIGINT/SIGTERM (after writing a checkpoint).
#include <qkv/datasets/dataset.h>
#include <qkv/train/trainer.h>

#include <functional>
#include <memory>
#include <string>

namespace qkv {

/// A model rebuilt from a run directory (its model.safetensors and config.toml) or from a weight file alone.
struct TrainedModel {
  std::shared_ptr<LanguageModel> model;
  std::map<std::string, std::string> metadata;
  Config config;      ///< the run's config (data section from the file's "qkv.data" when there is no run dir)
  CharVocab vocab;    ///< text models: one character per id (empty for token models)
  bool text() const { return vocab.size() > 0; }
  std::string path;   ///< the weight file read
  bool data_from_metadata = false;  ///< the data section came from the file's "qkv.data", not a run's config.toml
};
TrainedModel load_trained(const std::string& run_dir_or_file);

/// Generates `length` tokens after the prompt `ids` from a causal model (temperature 0 = greedy), calling
/// on_token as each comes. The context is the last model.positions tokens (the positional table, ModelConfig::seq_len):
/// a sliding window.
/// `cached` keeps each layer's keys and values (LanguageModel::logits(ids, cache)), so a token costs one row
/// rather than the whole context; without it every token re-runs the context. Both give the same tokens.
std::vector<std::int64_t> sample_tokens(const TrainedModel& model, std::vector<std::int64_t> ids, std::int64_t length,
                                        double temperature, std::uint64_t seed,
                                        const std::function<void(std::int64_t)>& on_token = {}, bool cached = true);

/// Parses argv and runs the subcommand; returns the process exit code (never throws).
int run_cli(int argc, const char* const* argv);

}  // namespace qkv
