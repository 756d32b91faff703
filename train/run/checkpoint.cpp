#include "qkv/train/run/checkpoint.h"

#include <qkv/train/io/files.h>
#include <qkv/train/run/model_file.h>
#include <qkv/train/run/run_dir.h>

#include <nlohmann/json.hpp>

#include <fstream>

namespace qkv {
namespace fs = std::filesystem;
namespace {

nlohmann::json gen_to_json(const Generator::State& s) {
  return {{"s", s.s}, {"spare", s.spare_normal}, {"has_spare", s.has_spare}};
}
Generator::State gen_from_json(const nlohmann::json& j) {
  Generator::State s;
  s.s = j.at("s").get<std::array<std::uint64_t, 4>>();
  s.spare_normal = j.at("spare").get<double>();
  s.has_spare = j.at("has_spare").get<bool>();
  return s;
}

}  // namespace

void save_checkpoint(Run& r, OptimizerState st) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [n, p] : r.model->named_parameters()) tensors.emplace_back("model." + n, p);
  r.schedule->save(st);
  for (const auto& [k, t] : st.tensors) tensors.emplace_back("optim." + k, t);
  const DataState ds = r.data->state();
  nlohmann::json ck = {{"step", r.step},
                       {"optim_scalars", st.scalars},
                       {"data_rng", gen_to_json(ds.rng)},
                       {"data_position", ds.position},
                       {"model_rng", gen_to_json(r.model->dropout_generator().state())},
                       {"reached_target", r.reached_target}};
  if (const std::string fp = r.data->fingerprint(); !fp.empty()) ck["data_fingerprint"] = fp;
  auto meta = model_metadata(r.model->config(), r.config, *r.data);
  meta["qkv.checkpoint"] = ck.dump();
  const fs::path dir = r.dir / "checkpoints";
  fs::create_directories(dir);
  write_safetensors((dir / checkpoint_name(r.step)).string(), tensors, meta);
  auto all = list_checkpoints(dir);
  while (static_cast<std::int64_t>(all.size()) > r.config.train.keep_checkpoints) {
    fs::remove(all.front());
    all.erase(all.begin());
  }
}

// A resumed run must read the data its checkpoint was trained on: a text file whose vocabulary changed (same
// size, 'e' became 'é') would silently give every id another meaning, a changed jsonl file other examples.
namespace {

void check_same_data(const Dataset& data, const SafetensorsFile& f, const nlohmann::json& ck, const fs::path& file) {
  if (const auto it = f.metadata.find("qkv.vocab"); it != f.metadata.end() && it->second != data.vocab()) {
    const CharVocab saved(it->second), now(data.vocab());
    std::int64_t id = 0;
    while (id < saved.size() && id < now.size() && saved.decode(id) == now.decode(id)) ++id;
    fail("resume: {}: the data's vocabulary changed since this checkpoint ({} characters then, {} now; id {} was "
         "'{}', is '{}'): every id would mean another character. Restore the data file, or start a new run",
         file.string(), saved.size(), now.size(), id, saved.decode(id), now.decode(id));
  }
  const std::string saved = ck.value("data_fingerprint", std::string()), now = data.fingerprint();
  QKV_CHECK(saved.empty() || saved == now,
            "resume: {}: the data changed since this checkpoint (its examples' fingerprint was {}, is {} now): restore "
            "the data files, or start a new run", file.string(), saved, now);
}

}  // namespace

void load_checkpoint(Run& r, const SafetensorsFile& f, const fs::path& file) {
  QKV_CHECK(f.metadata.count("qkv.checkpoint"), "resume: {} is not a qkv checkpoint", file.string());
  const auto ck = nlohmann::json::parse(f.metadata.at("qkv.checkpoint"), nullptr, /*allow_exceptions=*/false);
  QKV_CHECK(ck.is_object(), "resume: {}: the qkv.checkpoint metadata is not a JSON object", file.string());
  OptimizerState st;
  for (const auto& [n, t] : f.tensors)
    if (n.rfind("optim.", 0) == 0) st.tensors.emplace(n.substr(6), t);
  // Everything is read and checked before anything is changed, so a bad file leaves the run as it was.
  DataState data;
  Generator::State model_rng;
  std::int64_t step = 0;
  try {
    st.scalars = ck.at("optim_scalars").get<std::map<std::string, double>>();
    data = {gen_from_json(ck.at("data_rng")), ck.at("data_position").get<std::int64_t>()};
    model_rng = gen_from_json(ck.at("model_rng"));
    step = ck.at("step").get<std::int64_t>();
  } catch (const nlohmann::json::exception& e) {
    fail("resume: {}: the qkv.checkpoint metadata is incomplete or malformed: {}", file.string(), e.what());
  }
  QKV_CHECK(step >= 0, "resume: {}: step {} is negative", file.string(), step);
  check_same_data(*r.data, f, ck, file);
  check_finite_tensors(f.tensors, "resume: " + file.string(), "");  // written after the weights went NaN: use an older one
  load(*r.model, checkpoint_model(f), file.string(), /*strict=*/true);
  r.optimizer->load_state_dict(st);
  r.schedule->load(st);
  r.data->set_state(data);
  r.model->dropout_generator().set_state(model_rng);
  r.step = step;
  r.reached_target = ck.value("reached_target", 0.0);
}

// Keeps the metrics lines up to `step` (a resumed run rewrites what came after its checkpoint).
void truncate_metrics(const fs::path& path, std::int64_t step) {
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.value("step", std::int64_t{0}) <= step) kept += line + "\n";
  }
  in.close();
  write_file_atomic(path.string(), kept);
}

std::string latest_checkpoint(const std::string& run_dir) {
  const auto all = list_checkpoints(fs::path(run_dir) / "checkpoints");
  return all.empty() ? std::string() : all.back().string();
}

SafetensorsFile checkpoint_model(const SafetensorsFile& checkpoint) {
  SafetensorsFile out;
  out.metadata = checkpoint.metadata;
  out.metadata.erase("qkv.checkpoint");
  for (const auto& [n, t] : checkpoint.tensors)
    if (n.rfind("model.", 0) == 0) out.tensors.emplace_back(n.substr(6), t);
  return out;
}

}  // namespace qkv
