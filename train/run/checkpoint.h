#pragma once
// Checkpoints: RUN_DIR/checkpoints/step_N.safetensors holds the model ("model." names), the optimizer's state
// ("optim."), and in its "qkv.checkpoint" metadata the step, data position and generator states, so a resumed
// run continues bit for bit.
#include <qkv/optim/optimizer.h>
#include <qkv/layers/save.h>
#include <qkv/train/run/run.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace qkv {

/// Writes r's checkpoint at r.step (atomically), then keeps only the newest train.keep_checkpoints. `state` is
/// the optimizer's whole state (a sharded run gathers it on rank 0 first: DataParallel::optimizer_state).
void save_checkpoint(Run& r, OptimizerState state);
/// Restores r from a checkpoint file's contents, checking everything before changing anything: the metadata, the
/// data it was trained on (text vocabulary, jsonl fingerprint), finite tensors, the optimizer state's entries.
void load_checkpoint(Run& r, const SafetensorsFile& file, const std::filesystem::path& path);
/// Keeps the metrics lines up to `step` (a resumed run rewrites what came after its checkpoint).
void truncate_metrics(const std::filesystem::path& path, std::int64_t step);
/// The newest checkpoint of a run directory (RUN_DIR/checkpoints/step_*.safetensors), or "" when it has none.
std::string latest_checkpoint(const std::string& run_dir);
/// A checkpoint's model weights under their own names ("model." stripped) and its metadata without the
/// training state: what a model file holds.
SafetensorsFile checkpoint_model(const SafetensorsFile& checkpoint);

}  // namespace qkv
