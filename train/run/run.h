#pragma once
// What one run holds (data, model, optimizer, schedule, position), built from a config: what train, bench,
// init and resuming share.
#include <qkv/datasets/dataset.h>
#include <qkv/optim/optimizer.h>
#include <qkv/optim/schedule.h>
#include <qkv/train/run/config.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace qkv {

struct Run {
  Config config;
  std::filesystem::path dir;
  std::unique_ptr<Dataset> data;
  std::shared_ptr<LanguageModel> model;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<LRSchedule> schedule;
  std::int64_t step = 0;
  double reached_target = 0;  ///< the validation sequence accuracy at which train.target_accuracy stopped it, or 0
};

/// The optimizer's parameter groups for `model`: all in one, or, for kinds with decay_matrices_only (gpt2),
/// the parameters of 2+ dims first and the rest (biases, LayerNorm weights) with weight_decay 0, as nanoGPT.
ParamGroups optimizer_groups(const LanguageModel& model);

/// Builds r's dataset, model (initialised from run.seed, or model.init's weights, checked finite), optimizer and
/// schedule from r.config, after checking that the run fits the machine's memory.
void set_up(Run& r);

/// The weights a run of `config` starts from (run.seed's initialisation, or model.init's weights) written to `path`
/// with a trained model's full metadata, so another framework can start from exactly qkv's initialisation.
/// Returns the number of parameters.
std::int64_t write_initial_model(const Config& config, const std::string& path);

}  // namespace qkv
