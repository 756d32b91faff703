#include "qkv/train/trainer.h"

#include <qkv/core/autograd.h>
#include <qkv/core/gemm.h>
#include <qkv/core/ops.h>
#include <qkv/core/parallel.h>
#include <qkv/datasets/dataset.h>
#include <qkv/optim/schedule.h>
#include <qkv/train/distributed.h>
#include <qkv/train/report.h>
#include <qkv/train/run_dir.h>
#include <qkv/train/files.h>
#include <qkv/train/safetensors.h>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <new>
#include <iterator>
#include <map>
#include <set>
#include <span>
#include <thread>
#include <utility>
#include <mutex>

namespace qkv {
namespace fs = std::filesystem;
namespace {

// Seeds of the independent streams derived from run.seed.
constexpr std::uint64_t kInitStream = 0x696e6974ULL;


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

std::unique_ptr<Optimizer> make_optimizer(const Config& c, NamedParameters params) {
  const auto& o = c.optim;
  return qkv::make_optimizer(o.name, std::move(params),
                             {.lr = o.lr, .beta1 = o.betas[0], .beta2 = o.betas[1], .eps = o.eps,
                              .weight_decay = o.weight_decay, .momentum = o.momentum, .nesterov = o.nesterov});
}

std::string fmt_duration(double seconds) {
  const auto s = static_cast<long>(seconds);
  return fmt::format("{:02d}:{:02d}:{:02d}", s / 3600, (s / 60) % 60, s % 60);
}

// Everything one run holds; built fresh or from a checkpoint.
struct Run {
  Config config;
  fs::path dir;
  std::unique_ptr<Dataset> data;
  std::shared_ptr<LanguageModel> model;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Shard> shard;             // optim.shard under mpirun
  std::unique_ptr<GradientBuckets> buckets;  // otherwise, under mpirun
  std::unique_ptr<LRSchedule> schedule;
  std::int64_t step = 0;
  double reached_target = 0;  // the validation sequence accuracy at which train.target_accuracy stopped it, or 0
};

void check_memory(const Config& c, std::int64_t vocab);  // below, with the estimate

// What train, bench and init share: the dataset, the model (initialised from run.seed, or model.init's weights),
// its optimizer and schedule, all from r.config.
void set_up(Run& r) {
  const Config& c = r.config;
  r.data = make_dataset(c.data, c.run.seed);
  check_memory(c, r.data->vocab_size());
  Generator init(c.run.seed ^ kInitStream);  // then the model's dropout stream continues it
  r.model = build_model(c.model_config(r.data->vocab_size()), init);
  if (!c.model.init.empty()) {
    load(*r.model, c.model.init, /*strict=*/true);
    for (const auto& [name, p] : r.model->named_parameters())  // as every model file qkv reads is checked
      if (const auto bad = p.count_non_finite(); bad > 0)
        fail("model.init: {}: tensor '{}' has {} value{} that {} not finite (NaN or inf); training cannot start from it",
             c.model.init, name, bad, bad == 1 ? "" : "s", bad == 1 ? "is" : "are");
  }
  r.model->train();
  r.optimizer = make_optimizer(c, r.model->named_parameters());
  r.schedule = std::make_unique<LRSchedule>(
      *r.optimizer, ScheduleOptions{.kind = c.schedule.kind, .warmup_steps = c.schedule.warmup_steps,
                                    .total_steps = c.train.steps, .min_lr = c.schedule.min_lr,
                                    .step_size = c.schedule.step_size, .gamma = c.schedule.gamma});
}

// `st` is the optimizer's whole state (a sharded run gathers it on rank 0 first: optimizer_state()).
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
  for (const auto& [name, t] : f.tensors)  // a checkpoint written after weights went NaN: resume from an older one
    if (const auto bad = t.count_non_finite(); bad > 0)
      fail("resume: {}: tensor '{}' has {} value{} that {} not finite", file.string(), name, bad, bad == 1 ? "" : "s",
           bad == 1 ? "is" : "are");
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

}  // namespace

int thread_count(const Config& c) {
  if (c.train.threads > 0) return static_cast<int>(c.train.threads);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // Under mpirun the ranks on one machine share its cores (OpenMPI says how many ranks it started here).
  const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int ranks_here = local != nullptr ? std::max(1, std::atoi(local)) : 1;
  return std::max(1, cores / ranks_here);
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

const char* version() { return "0.1.0"; }

namespace {

// This rank's rows of a global batch: rank r of N takes rows [r B/N, (r + 1) B/N).
Batch rank_slice(const Batch& global, const Comm& comm) {
  if (!comm.distributed()) return global;
  const std::int64_t rows = global.inputs.size(0) / comm.size(), first = comm.rank() * rows;
  return {narrow(global.inputs, 0, first, rows).clone(), narrow(global.targets, 0, first, rows).clone()};
}

// The bytes of this program, so ranks started from different builds are told apart.
std::uint64_t binary_hash() {
  std::ifstream in("/proc/self/exe", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return fnv1a(bytes.data(), bytes.size());
}

// Every rank must run the same config with the same program, and split the global batch evenly.
void check_ranks(const Config& c, const Comm& comm) {
  if (!comm.distributed()) return;
  QKV_CHECK(c.train.batch_size % comm.size() == 0,
            "train.batch_size = {} is not divisible by the {} ranks of this job: each rank takes an equal slice of "
            "the global batch (choose a batch size that is a multiple of mpirun -np)",
            c.train.batch_size, comm.size());
  const std::string toml = to_toml(c);
  const auto configs = comm.gather(fnv1a(toml.data(), toml.size()));
  const auto binaries = comm.gather(binary_hash());
  const auto hosts = comm.hosts();
  std::vector<std::string> odd;
  for (std::size_t r = 1; r < configs.size(); ++r) {
    if (configs[r] != configs[0]) odd.push_back(fmt::format("rank {} (on {}) has a different config", r, hosts[r]));
    if (binaries[r] != binaries[0]) odd.push_back(fmt::format("rank {} (on {}) runs a different qkv binary", r, hosts[r]));
  }
  QKV_CHECK(odd.empty(), "the ranks of this job disagree with rank 0 (on {}): {}; every machine needs the same qkv "
            "build and the same config and overrides", hosts[0], fmt::join(odd, "; "));
}

// Each rank's Dropouts draw the masks of its own rows of the global batch (rank_slice's rows), so N ranks follow
// the 1-process run with dropout too.
void slice_dropout(LanguageModel& model, const Comm& comm, std::int64_t batch_size) {
  if (!comm.distributed()) return;
  const std::int64_t rows = batch_size / comm.size();
  model.set_batch_slice(comm.rank() * rows, batch_size);
}

// Every rank starts from rank 0's weights (the same seed gives the same ones; a different build or CPU might
// not), checked by hashing every rank's bytes afterwards.
void share_weights(LanguageModel& model, const Comm& comm) {
  if (!comm.distributed()) return;
  const std::vector<Tensor> params = model.parameters();
  comm.broadcast_values(params);
  std::uint64_t h = fnv1a(nullptr, 0);
  for (const Tensor& p : params) h = fnv1a(p.raw_data(), static_cast<std::size_t>(p.numel()) * itemsize(p.dtype()), h);
  const auto all = comm.gather(h);
  for (std::size_t r = 1; r < all.size(); ++r)
    QKV_CHECK(all[r] == all[0], "rank {}'s weights differ from rank 0's after the broadcast", r);
}

// Under mpirun, how gradients are shared: optim.shard's parameter owners, with each rank's optimizer state cut
// to its own parameters; otherwise the all-reduce buckets.
void share_gradients(Run& r, const Comm& comm) {
  if (!comm.distributed()) return;
  if (!r.config.optim.shard) {
    r.buckets = std::make_unique<GradientBuckets>(r.optimizer->parameters(), comm,
                                                  static_cast<std::size_t>(r.config.train.bucket_mb * 1e6));
    return;
  }
  r.shard = std::make_unique<Shard>(r.optimizer->parameters(), comm);
  std::set<std::string> mine;
  const auto& named = r.optimizer->params();
  for (std::size_t i = 0; i < named.size(); ++i)
    if (r.shard->owns(i)) mine.insert(named[i].first);
  r.optimizer->retain_state([&](const std::string& name) { return mine.count(name) > 0; });
}

// The optimizer's whole state: a sharded run's pieces gathered on rank 0 (collective; other ranks get theirs).
OptimizerState optimizer_state(const Run& r, const Comm& comm) {
  OptimizerState st = r.optimizer->state_dict();
  if (!r.shard) return st;
  std::vector<std::pair<std::string, Tensor>> mine(st.tensors.begin(), st.tensors.end());
  const auto pieces = comm.gather_to_lead(to_safetensors_bytes(mine, {}));
  for (const std::string& piece : pieces)
    for (auto& [name, t] : parse_safetensors(std::as_bytes(std::span(piece.data(), piece.size())), "a rank's state").tensors)
      st.tensors.emplace(name, t.to(r.optimizer->parameters().front().dtype()));
  return st;
}

// The step's loss: the mean over counted targets. On several ranks each holds a slice of the batch, so its sum
// is divided by the count over every rank (the global mean, however the -100s fall), and the gradients summed
// across ranks are the 1-process gradients. A batch whose targets are all -100 contributes zero loss and zero
// gradient (a plain mean would be 0/0 = NaN, as in torch).
Tensor step_loss(const Tensor& logits, const Batch& batch, const Comm* comm, double& reported) {
  const std::int64_t v = logits.size(-1);
  const std::int64_t* y = batch.targets.data<std::int64_t>();
  const auto counted = std::count_if(y, y + batch.targets.numel(), [](std::int64_t t) { return t != -100; });
  if (comm == nullptr || !comm->distributed()) {
    const Tensor loss = cross_entropy(reshape(logits, {-1, v}), reshape(batch.targets, {-1}), -100,
                                      counted > 0 ? Reduction::Mean : Reduction::Sum);
    reported = loss.item();
    return loss;
  }
  const double global = comm->sum(static_cast<double>(counted));
  Tensor loss = cross_entropy(reshape(logits, {-1, v}), reshape(batch.targets, {-1}), -100, Reduction::Sum);
  if (global > 0) loss = loss * (1.0 / global);
  reported = comm->sum(loss.item());
  return loss;
}
}  // namespace

StepStats train_step(LanguageModel& model, Optimizer& optimizer, LRSchedule& schedule, const Batch& batch,
                     double clip_grad_norm_to, const Comm* comm, const Shard* shard, GradientBuckets* buckets) {
  const Tensor logits = model.logits(batch.inputs);  // (B, T, V)
  StepStats st;
  const Tensor loss = step_loss(logits, batch, comm, st.loss);
  st.lr = optimizer.lr();
  if (!std::isfinite(st.loss)) return st;  // the caller stops before touching the weights (every rank alike)
  optimizer.zero_grad();
  if (buckets != nullptr) buckets->backward(loss);  // summed across ranks, overlapping backward
  else loss.backward();
  // The optimizer's cached list: model.parameters() would rebuild every dotted name on each step.
  const auto& params = optimizer.parameters();
  if (shard != nullptr) {  // each rank the sums of its own parameters; the norm from every rank's part
    shard->reduce_scatter_gradients();
    st.grad_norm = clip_grad_norm_to > 0 ? shard->clip_grad_norm(clip_grad_norm_to) : shard->grad_norm();
  } else {
    if (comm != nullptr && buckets == nullptr) comm->sum_gradients(params);  // then clipping sees the global norm
    st.grad_norm = clip_grad_norm_to > 0 ? clip_grad_norm(params, clip_grad_norm_to) : grad_norm(params);
  }
  if (!std::isfinite(st.grad_norm)) return st;
  optimizer.step();  // a sharded run: only this rank's parameters have gradients
  if (shard != nullptr) shard->all_gather_parameters();
  schedule.step();
  return st;
}

namespace {

// The op families of a profile: what a user tuning a model would look at.
std::string op_family(const std::string& op) {
  static const std::map<std::string, std::string> family = {
      {"linear", "GEMM (linear, matmul)"}, {"matmul", "GEMM (linear, matmul)"}, {"attention", "attention"},
      {"layer_norm", "LayerNorm"}, {"gelu", "GELU"}, {"relu", "activations"}, {"tanh", "activations"},
      {"sigmoid", "activations"}, {"softmax", "softmax"}, {"log_softmax", "softmax"},
      {"cross_entropy", "cross-entropy"}, {"embedding", "embedding"}, {"dropout", "dropout"},
      {"(autograd)", "autograd bookkeeping"}};
  if (const auto it = family.find(op); it != family.end()) return it->second;
  static const std::set<std::string> shape = {"reshape", "permute", "narrow", "concat", "broadcast_to", "flip",
                                              "gather", "index_select", "clone", "to"};
  return shape.count(op) != 0 ? "shape and copies" : "elementwise and reductions";
}

std::vector<ProfileRow> profile_rows(const std::vector<OpTime>& ops, double step_seconds, std::int64_t steps) {
  std::map<std::string, ProfileRow> by_family;
  double accounted = 0;
  for (const OpTime& op : ops) {
    ProfileRow& row = by_family[op_family(op.name)];
    row.forward_ms += 1e3 * op.forward_s / double(steps);
    row.backward_ms += 1e3 * op.backward_s / double(steps);
    accounted += op.forward_s + op.backward_s;
  }
  std::vector<ProfileRow> rows;
  for (auto& [family, row] : by_family) {
    row.family = family;
    rows.push_back(row);
  }
  std::sort(rows.begin(), rows.end(), [](const ProfileRow& a, const ProfileRow& b) {
    return a.forward_ms + a.backward_ms > b.forward_ms + b.backward_ms;
  });
  rows.push_back({"optimizer, clipping and the rest", 1e3 * (step_seconds - accounted / double(steps)), 0});
  return rows;
}

}  // namespace

constexpr std::int64_t kMaxBenchSteps = 1'000'000;

BenchResult bench(const Config& c, std::int64_t steps, std::int64_t warmup, bool profile) {
  QKV_CHECK(steps > 0 && steps <= kMaxBenchSteps && warmup >= 0 && warmup <= kMaxBenchSteps,
            "bench: --steps must be 1 to {} and --warmup 0 to {}, got {} and {}", kMaxBenchSteps, kMaxBenchSteps, steps,
            warmup);
  const Comm& comm = Comm::world();
  check_ranks(c, comm);
  Run r;
  r.config = c;
  set_up(r);
  share_weights(*r.model, comm);
  share_gradients(r, comm);
  slice_dropout(*r.model, comm, c.train.batch_size);
  auto& model = r.model;
  const ModelConfig mc = model->config();
  // Batches are drawn up front so the timed loop measures the model, not the data generator.
  std::vector<Batch> batches;
  for (std::int64_t i = 0; i < std::min<std::int64_t>(steps + warmup, 64); ++i)
    batches.push_back(rank_slice(r.data->next_batch(c.train.batch_size), comm));
  const auto step = [&](std::int64_t i) {
    train_step(*model, *r.optimizer, *r.schedule, batches[static_cast<std::size_t>(i) % batches.size()],
               c.optim.clip_grad_norm, &comm, r.shard.get(), r.buckets.get());
  };
  for (std::int64_t i = 0; i < warmup; ++i) step(i);
  comm.take_comm_seconds();
  reset_op_profile();
  set_op_profiling(profile);
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t i = 0; i < steps; ++i) {
    profile_mark();
    step(warmup + i);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  set_op_profiling(false);
  BenchResult b;
  if (profile) b.profile = profile_rows(op_profile(), secs / double(steps), steps);
  b.ranks = comm.size();
  b.comm_fraction = comm.take_comm_seconds() / secs;
  if (r.buckets) {
    b.buckets = static_cast<std::int64_t>(r.buckets->size());
    b.buckets_early = static_cast<std::int64_t>(r.buckets->started_early());
  }
  b.steps_per_s = double(steps) / secs;
  b.tokens_per_s = b.steps_per_s * double(c.train.batch_size * c.data.seq_len);
  b.gflops = 3.0 * flops_per_token(mc, c.data.seq_len) * b.tokens_per_s / 1e9;  // forward + backward (2x forward)
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  b.peak_rss_mb = double(ru.ru_maxrss) / 1024.0;
  return b;
}

std::int64_t write_initial_model(const Config& config, const std::string& path) {
  Run r;
  r.config = config;
  set_up(r);
  save(*r.model, path, model_metadata(r.model->config(), config, *r.data));
  return r.model->num_parameters();
}

std::map<std::string, std::string> model_metadata(const ModelConfig& m, const Config& c, const Dataset& data) {
  nlohmann::json mj = nlohmann::json::object();
  for (const ModelField& f : model_fields()) std::visit([&](auto member) { mj[f.name] = m.*member; }, f.member);
  std::map<std::string, std::string> meta = {{"format", "qkv"},
                                             {"qkv.version", version()},
                                             {"qkv.model", mj.dump()},
                                             {"qkv.data", data_to_json(c)}};
  if (!data.vocab().empty()) meta["qkv.vocab"] = data.vocab();
  return meta;
}

namespace {

// One "qkv.model" value into its ModelConfig field, checked for type and range (the config key's range), so a
// crafted file cannot make qkv build something enormous before its tensors are compared.
void read_model_field(const ModelField& f, const nlohmann::json& v, ModelConfig& m, const std::string& source) {
  const auto bad = [&](const char* expected) {
    fail("{}: qkv.model: \"{}\" must be {}, got {}", source, f.name, expected, v.dump());
  };
  const auto out_of_range = [&] {
    fail("{}: qkv.model: \"{}\" = {} is out of range (expected {} to {})", source, f.name, v.dump(), f.min, f.max);
  };
  std::visit(
      [&](auto member) {
        using T = std::remove_reference_t<decltype(m.*member)>;
        if constexpr (std::is_same_v<T, std::string>) {
          if (!v.is_string()) bad("a string");
          m.*member = v.get<std::string>();
        } else if constexpr (std::is_same_v<T, bool>) {
          if (!v.is_boolean()) bad("true or false");
          m.*member = v.get<bool>();
        } else if constexpr (std::is_same_v<T, double>) {
          if (!v.is_number()) bad("a number");
          const double x = v.get<double>();
          if (!(x >= f.min && x <= f.max)) out_of_range();
          m.*member = x;
        } else {
          if (!v.is_number_integer()) bad("an integer");
          if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(f.max)) out_of_range();
          const auto x = v.get<std::int64_t>();
          if (double(x) < f.min || double(x) > f.max) out_of_range();
          m.*member = x;
        }
      },
      f.member);
}

}  // namespace

ModelConfig model_config_from_json(const std::string& text, const std::string& source) {
  const auto j = nlohmann::json::parse(text, nullptr, false);
  QKV_CHECK(!j.is_discarded() && j.is_object(), "{}: the qkv.model metadata is not a JSON object", source);
  // What no file can do without; the other fields default as in ModelConfig (0.1 files have no "dropout").
  static const std::set<std::string> required = {"kind", "vocab_size", "seq_len", "d_model"};
  ModelConfig m;
  for (const ModelField& f : model_fields()) {
    if (j.contains(f.name)) read_model_field(f, j[f.name], m, source);
    else QKV_CHECK(!required.count(f.name), "{}: qkv.model metadata has no \"{}\"", source, f.name);
  }
  const auto kinds = model_kinds();
  QKV_CHECK(std::find(kinds.begin(), kinds.end(), m.kind) != kinds.end(),
            "{}: qkv.model: unknown kind \"{}\" (expected {})", source, m.kind, fmt::join(kinds, " or "));
  QKV_CHECK(m.kind != "transformer" || m.d_model % m.heads == 0,
            "{}: qkv.model: heads = {} does not divide d_model = {}", source, m.heads, m.d_model);
  return m;
}

EvalResult evaluate(LanguageModel& model, const Batch& data, std::int64_t batch_size) {
  NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const std::int64_t n = data.inputs.size(0), t = data.inputs.size(1);
  double loss_sum = 0;
  std::int64_t tokens = 0, right = 0, seqs_right = 0, seqs = 0;  // seqs: those with a target to get right
  for (std::int64_t start = 0; start < n; start += batch_size) {
    const std::int64_t len = std::min(batch_size, n - start);
    const Tensor x = narrow(data.inputs, 0, start, len), y = narrow(data.targets, 0, start, len);
    const Tensor logits = model.logits(x);
    const std::int64_t v = logits.size(-1);
    loss_sum += cross_entropy(reshape(logits, {-1, v}), reshape(y, {-1}), -100, Reduction::Sum).item();
    const Tensor pred = argmax(logits, -1);
    const auto* pp = pred.data<std::int64_t>();
    const auto* py = y.data<std::int64_t>();
    for (std::int64_t s = 0; s < len; ++s) {
      bool all = true, any = false;
      for (std::int64_t i = s * t; i < (s + 1) * t; ++i) {
        if (py[i] == -100) continue;
        ++tokens;
        any = true;
        const bool ok = pp[i] == py[i];
        right += ok;
        all = all && ok;
      }
      seqs += any;  // a sequence with no target is neither right nor wrong
      seqs_right += any && all;
    }
  }
  if (was_training) model.train();
  return {tokens ? loss_sum / double(tokens) : 0.0, tokens ? double(right) / double(tokens) : 0.0,
          seqs ? double(seqs_right) / double(seqs) : 0.0};
}

std::vector<std::int64_t> rows_not_distributions(const Tensor& weights) {
  const std::int64_t t = weights.size(-1), rows = weights.numel() / std::max<std::int64_t>(1, t);
  const auto w = weights.to_vector();
  std::vector<std::int64_t> bad;
  for (std::int64_t i = 0; i < rows; ++i) {
    double sum = 0;
    for (std::int64_t j = 0; j < t; ++j) sum += w[static_cast<std::size_t>(i * t + j)];
    if (!(std::abs(sum - 1.0) <= 1e-3)) bad.push_back(i);  // NaN sums land here too
  }
  return bad;
}

std::string render_attention(const Tensor& weights, const std::vector<std::string>& tokens) {
  static const char* kShades = " .:-=+*#%@";
  const auto t = static_cast<std::int64_t>(tokens.size());
  QKV_CHECK(weights.dim() == 2 && weights.size(0) == t && weights.size(1) == t,
            "render_attention: expected ({0}, {0}) weights for {0} tokens, got shape {1}", t, weights.shape().str());
  const auto w = weights.to_vector();
  const auto bad = rows_not_distributions(weights);
  std::size_t width = 1;
  for (const auto& s : tokens) width = std::max(width, s.size());
  std::string out = std::string(width + 3, ' ');
  for (std::int64_t j = 0; j < t; ++j) out += fmt::format("{:>{}}", tokens[static_cast<std::size_t>(j)], width + 1);
  out += "   (keys)\n";
  for (std::int64_t i = 0; i < t; ++i) {
    out += fmt::format("{:>{}} | ", tokens[static_cast<std::size_t>(i)], width);
    for (std::int64_t j = 0; j < t; ++j) {
      const double raw = w[static_cast<std::size_t>(i * t + j)];
      const double v = std::clamp(raw, 0.0, 1.0);  // NaN would index out of the table: '?' instead
      out += std::string(width, ' ') + (std::isfinite(raw) ? kShades[std::min(9, static_cast<int>(v * 9.999))] : '?');
    }
    out += std::find(bad.begin(), bad.end(), i) != bad.end() ? "   <- does not sum to 1\n" : "\n";
  }
  return out + fmt::format("{:>{}}   (rows: queries; darker = more weight, '@' ~ 1, '?' not finite)\n", "", width);
}

// What reading a data file holds: its bytes and the ids made from them (text: 2 or 4 bytes per character, jsonl:
// 8 per id of at least 2 bytes of JSON), at most 5 times the file. Generated tasks read nothing.
double data_file_bytes(const DataOptions& d) {
  if (d.task != "text" && d.task != "jsonl") return 0;
  double bytes = 0;
  for (const std::string& p : {d.path, d.val_path}) {
    std::error_code ec;
    if (!p.empty() && fs::is_regular_file(p, ec)) bytes += double(fs::file_size(p, ec));
  }
  return 5 * bytes;
}

MemoryEstimate estimate_memory(const Config& c, std::int64_t vocab) {
  // Float32 throughout. Parameters: weights, gradients and two Adam moments. Activations: what forward keeps for
  // backward, per token (B x T of them), generously counted. Attention keeps one log-sum-exp per row and head, not
  // its T x T weights (core/ops/attention.cpp), so nothing here grows with T^2.
  const ModelConfig m = c.model_config(vocab);
  const double d = double(m.d_model), v = double(vocab), t = double(c.data.seq_len), tokens = double(c.train.batch_size) * t;
  const double dff = double(m.d_ff ? m.d_ff : 4 * m.d_model), heads = double(m.kind == "seed" ? 1 : m.heads);
  const double per_token = m.kind == "seed" ? 10 * d + 2 + 4 * v
                                            : double(m.layers) * (16 * d + 3 * dff + 2 * heads) + 4 * d + 4 * v;
  MemoryEstimate e;
  e.parameters = parameter_count(m);
  e.parameter_bytes = 16 * e.parameters;
  e.activation_bytes = 4 * per_token * tokens;
  e.data_bytes = 16 * double(c.data.val_size) * t + data_file_bytes(c.data);  // + validation inputs and targets
  return e;
}

namespace {

// Refuses a run whose estimate exceeds the machine's memory, naming the keys that drive each part.
void check_memory(const Config& c, std::int64_t vocab) {
  const MemoryEstimate e = estimate_memory(c, vocab);
  const double total = e.parameter_bytes + e.activation_bytes + e.data_bytes;
  const auto have = static_cast<double>(physical_memory_bytes());
  QKV_CHECK(have == 0 || total <= have,
            "config: this run needs about {:.1f} GB but the machine has {:.1f} GB: parameters and optimizer state {:.1f} "
            "GB ({:.3g} parameters: model.d_model, model.layers, model.d_ff, vocabulary), activations {:.1f} GB "
            "(train.batch_size x data.seq_len x model.d_model, model.d_ff, model.layers), data {:.1f} GB "
            "(up to 5x the size of data.path, and data.val_size x data.seq_len)",
            total / 1e9, have / 1e9, e.parameter_bytes / 1e9, e.parameters, e.activation_bytes / 1e9, e.data_bytes / 1e9);
}

// A write (checkpoint, model) that fails while running is a runtime failure (exit 1), not a usage error.
template <class F>
void guarded_write(const char* what, std::int64_t step, const fs::path& dir, F&& write) {
  const auto failed = [&](const char* why) {
    return TrainingError(fmt::format("step {}: writing the {} failed: {} (earlier checkpoints in {} are intact)", step,
                                     what, why, (dir / "checkpoints").string()));
  };
  try {
    write();
  } catch (const Error& e) {
    throw failed(e.what());
  } catch (const fs::filesystem_error& e) {
    throw failed(e.what());
  }
}

// train.log through AppendFile: a failed write is retried, and one that keeps failing is kept (spdlog would
// only print it) so the run can stop instead of finishing with an incomplete log.
class AppendSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit AppendSink(const std::string& path) : file_(path) {}
  /// The first write that failed for good, or "".
  std::string failure() {
    std::lock_guard<std::mutex> lock(mutex_);
    return failure_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (!failure_.empty()) return;
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    try {
      file_.append(std::string(buf.data(), buf.size()));
    } catch (const Error& e) {
      failure_ = e.what();
    }
  }
  void flush_() override {}

 private:
  AppendFile file_;
  std::string failure_;
};

// One training run, in named steps: open (directory, log, model, optimizer, maybe a checkpoint), then per step
// train -> log -> validate -> checkpoint, then the final model.
class Trainer {
 public:
  Trainer(const Config& config, const TrainOptions& options);
  TrainResult run();

 private:
  void open_log();
  void build();
  void resume();
  /// Rank 0: loads the newest readable checkpoint and returns its bytes (its path in `source`).
  std::string load_newest_checkpoint(std::string& source);
  void log_progress(const StepStats& st);
  /// One metrics.jsonl line (rank 0). A write that fails even after retrying ends the run (exit 1): a run never
  /// finishes with its own records incomplete.
  void append_metrics(const nlohmann::json& line) { pending_metrics_ += line.dump() + "\n"; }
  /// After a step that logged: rank 0 appends the metrics lines and checks that train.log's were written; a
  /// failure ends every rank (collective).
  void write_records() {
    on_every_rank_agree(comm_, [&] {
      if (!comm_.lead()) return;
      guarded_write("run's records", r_.step, r_.dir, [&] { dir_->check_present(); });
      const std::string lines = std::exchange(pending_metrics_, {});
      guarded_write("records in metrics.jsonl", r_.step, r_.dir, [&] { metrics_.append(lines); });
      if (const std::string f = file_sink_->failure(); !f.empty())
        throw TrainingError(fmt::format("step {}: writing train.log failed: {} (earlier checkpoints in {} are intact)",
                                        r_.step, f, (r_.dir / "checkpoints").string()));
    });
  }
  void validate();
  void checkpoint() {
    const OptimizerState state = optimizer_state(r_, comm_);
    on_every_rank_agree(comm_, [&] {
      if (comm_.lead()) guarded_write("checkpoint", r_.step, r_.dir, [&] {
        dir_->check_present();
        save_checkpoint(r_, state);
      });
    });
    report();
  }
  void log_sharded_state();
  void report();
  TrainResult interrupted(int sig);
  TrainResult finished();
  /// The signal options.stop holds (the CLI's SIGINT/SIGTERM handler sets it), or 0; on several ranks, the
  /// largest any rank holds, so every rank stops at the same step.
  int agreed_stop_signal() const {
    const int sig = opt_.stop != nullptr ? opt_.stop->load() : 0;
    return comm_.distributed() ? static_cast<int>(comm_.max(sig)) : sig;
  }
  [[noreturn]] void stop_non_finite(const char* what, double value) const;

  const TrainOptions& opt_;
  const Comm& comm_;  // rank 0 alone writes the run directory, logs and checkpoints
  Run r_;
  std::unique_ptr<RunDir> dir_;
  std::shared_ptr<spdlog::logger> log_;
  std::shared_ptr<AppendSink> file_sink_;
  AppendFile metrics_;
  std::string pending_metrics_;  // lines of this step, written by write_records()
  bool tty_ = false;
  TrainResult result_;
  std::chrono::steady_clock::time_point start_time_, window_start_;
  std::int64_t window_tokens_ = 0, start_step_ = 0;
};

Trainer::Trainer(const Config& config, const TrainOptions& options) : opt_(options), comm_(Comm::world()) {
  r_.config = config;
  const bool resuming = !options.resume_dir.empty();
  check_ranks(config, comm_);
  if (!resuming) check_run_name(config.run.name, "config");
  check_memory(config, config.data.task == "text" ? 0 : config.data.vocab_size);  // before anything is allocated
  const fs::path dir = resuming ? fs::path(options.resume_dir) : fs::path(config.run.out_dir) / config.run.name;
  r_.dir = dir;
  on_every_rank_agree(comm_, [&] {  // only rank 0 has a run directory: other machines need no copy of it
    if (comm_.lead())
      dir_ = std::make_unique<RunDir>(dir, resuming ? RunDirMode::Resume
                                                    : options.force ? RunDirMode::Force : RunDirMode::Create);
    open_log();
  });
  if (dir_ && !dir_->note().empty()) log_->info("{}", dir_->note());
  build();
  if (resuming) {
    resume();
    share_gradients(r_, comm_);  // the checkpoint held every parameter's state
  }
  result_ = {r_.dir.string(), r_.step, {}, false, 0};
}

void Trainer::open_log() {
  std::vector<spdlog::sink_ptr> sinks;  // none on ranks other than 0: their logger says nothing
  if (comm_.lead()) {
    file_sink_ = std::make_shared<AppendSink>((r_.dir / "train.log").string());
    sinks.push_back(file_sink_);
  }
  if (!opt_.quiet && comm_.lead()) sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  log_ = std::make_shared<spdlog::logger>("qkv", sinks.begin(), sinks.end());
  log_->set_pattern("[%H:%M:%S] %v");
  log_->flush_on(spdlog::level::info);
  tty_ = !opt_.quiet && comm_.lead() && ::isatty(STDERR_FILENO);
}

void Trainer::build() {
  on_every_rank_agree(comm_, [&] { set_up(r_); });  // a data file missing on one machine ends every rank
  share_weights(*r_.model, comm_);
  share_gradients(r_, comm_);
  slice_dropout(*r_.model, comm_, r_.config.train.batch_size);
  const Config& c = r_.config;
  if (opt_.resume_dir.empty())
    log_->info("run {}: {} model, {} parameters, task {} (vocab {}, seq_len {}), {} threads{}", r_.dir.string(),
               c.model.kind, r_.model->num_parameters(), c.data.task, r_.data->vocab_size(), c.data.seq_len,
               num_threads(),
               comm_.distributed() ? fmt::format(" on each of {} ranks ({} sequences each per step)", comm_.size(),
                                                 c.train.batch_size / comm_.size())
                                   : "");
  log_->info("{}", gemm_summary());
}

// From the newest checkpoint that reads back whole; a damaged newer one is skipped, saying so. Rank 0 reads it
// and sends its bytes to the other ranks, so they need no copy of the run directory.
void Trainer::resume() {
  std::string bytes;
  std::string source;
  on_every_rank_agree(comm_, [&] {
    if (comm_.lead()) bytes = load_newest_checkpoint(source);
  });
  if (!comm_.distributed()) return;
  comm_.broadcast(bytes);
  comm_.broadcast(source);
  if (!comm_.lead())
    load_checkpoint(r_, parse_safetensors(std::as_bytes(std::span(bytes.data(), bytes.size())), source), source);
}

std::string Trainer::load_newest_checkpoint(std::string& source) {
  auto all = list_checkpoints(r_.dir / "checkpoints");
  QKV_CHECK(!all.empty(), "resume: {} has no checkpoints to resume from", r_.dir.string());
  std::string skipped;
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    std::string bytes;
    try {
      bytes = read_file_bytes(it->string());
      load_checkpoint(r_, parse_safetensors(std::as_bytes(std::span(bytes.data(), bytes.size())), it->string()), *it);
    } catch (const Error& e) {
      log_->warn("resume: skipping {}: {}", it->filename().string(), e.what());
      skipped = e.what();
      continue;
    }
    truncate_metrics(r_.dir / "metrics.jsonl", r_.step);
    log_->info("resumed {} from {} (step {}){}", r_.dir.string(), it->filename().string(), r_.step,
               skipped.empty() ? "" : ", the newest intact checkpoint");
    source = it->string();
    return bytes;
  }
  fail("resume: no checkpoint of {} could be read (the newest: {})", r_.dir.string(), skipped);
}

// The optimizer state each rank holds, against the whole (collective: every rank calls it at the same step).
void Trainer::log_sharded_state() {
  const double mine = static_cast<double>(r_.optimizer->state_bytes());
  const double all = comm_.sum(mine);
  log_->info("optim.shard: optimizer state {:.2f} MB on rank 0, {:.2f} MB over all {} ranks ({:.0f}% here)",
             mine / 1e6, all / 1e6, comm_.size(), 100.0 * mine / all);
}

void Trainer::log_progress(const StepStats& st) {
  const auto now = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(now - window_start_).count();
  const double tps = secs > 0 ? double(window_tokens_) / secs : 0.0;
  window_start_ = now;
  window_tokens_ = 0;
  append_metrics({{"step", r_.step}, {"split", "train"}, {"loss", st.loss}, {"lr", st.lr}, {"grad_norm", st.grad_norm},
                  {"tokens_per_s", tps}});
  const auto& tc = r_.config.train;
  const double elapsed = std::chrono::duration<double>(now - start_time_).count();
  const double eta = elapsed / double(r_.step - start_step_) * double(tc.steps - r_.step);
  const std::string line = fmt::format("step {}/{}  loss {:.4f}  lr {:.2e}  {:.0f} tok/s  ETA {}", r_.step, tc.steps,
                                       st.loss, st.lr, tps, fmt_duration(eta));
  if (!tty_) return log_->info("{}", line);
  fmt::print(stderr, "\r\033[K{}", line);  // a live progress line, redrawn in place
  std::fflush(stderr);
  file_sink_->log(spdlog::details::log_msg("qkv", spdlog::level::info, line));
}

void Trainer::validate() {
  result_.val = evaluate(*r_.model, r_.data->validation(), r_.config.train.batch_size);
  const EvalResult& v = result_.val;
  append_metrics({{"step", r_.step}, {"split", "val"}, {"loss", v.loss}, {"token_acc", v.token_acc},
                  {"seq_acc", v.seq_acc}});
  if (tty_) fmt::print(stderr, "\r\033[K");
  log_->info("step {} validation: loss {:.4f}  token accuracy {:.4f}  sequence accuracy {:.4f}", r_.step, v.loss,
             v.token_acc, v.seq_acc);
  const double target = r_.config.train.target_accuracy;
  if (target > 0 && v.seq_acc >= target) {
    log_->info("reached target sequence accuracy {} at step {}", target, r_.step);
    result_.stopped_early = true;
    r_.reached_target = v.seq_acc;  // saved in the checkpoint: resuming it trains nothing
  }
}

void Trainer::stop_non_finite(const char* what, double value) const {
  const std::string newest = latest_checkpoint(r_.dir.string());
  throw TrainingError(fmt::format("step {}: the {} is {}; stopping ({})", r_.step + 1, what, value,
                                  newest.empty() ? "no checkpoint had been written yet"
                                                 : "the last good checkpoint is " + newest));
}

// The run's page, rewritten at every checkpoint so a long run can be watched by reloading it. It is a view of
// the run, so a failure to write it is a warning, never the end of training.
void Trainer::report() {
  if (!opt_.report || !comm_.lead()) return;
  try {
    write_report({r_.dir.string()});
  } catch (const std::exception& e) {
    log_->warn("report: not written: {}", e.what());
  }
}

TrainResult Trainer::interrupted(int sig) {
  if (tty_) fmt::print(stderr, "\n");
  log_->warn("{} at step {}: checkpoint written. Resume with: qkv train --resume {}",
             sig == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)", r_.step, shell_quote(r_.dir.string()));
  result_.steps = r_.step;
  result_.exit_code = sig == SIGINT ? 130 : 143;
  return result_;
}

TrainResult Trainer::finished() {
  if (tty_) fmt::print(stderr, "\n");
  const ModelConfig& mc = r_.model->config();
  on_every_rank_agree(comm_, [&] {
    if (!comm_.lead()) return;
    guarded_write("final model", r_.step, r_.dir, [&] {
      save(*r_.model, (r_.dir / "model.safetensors").string(), model_metadata(mc, r_.config, *r_.data));
    });
  });
  result_.steps = r_.step;
  report();
  log_->info("done: {} steps; outputs in {} (model.safetensors, metrics.jsonl, train.log, checkpoints/, report.html)",
             r_.step, r_.dir.string());
  // A signal that arrived at the end or during the final save ends the process with its code, after the save.
  if (const int sig = agreed_stop_signal(); sig != 0) {
    log_->warn("{} during the final save: the run is complete", sig == SIGINT ? "interrupted (SIGINT)" : "terminated (SIGTERM)");
    result_.exit_code = sig == SIGINT ? 130 : 143;
  }
  return result_;
}

TrainResult Trainer::run() {
  const auto& tc = r_.config.train;
  // A finished run resumed without raising train.steps, or one that stopped at train.target_accuracy, unless
  // the target was raised or turned off.
  const bool at_target = r_.reached_target > 0 && tc.target_accuracy > 0 && r_.reached_target >= tc.target_accuracy;
  if (r_.step >= tc.steps || at_target) {
    // (rank 0 decides: only it has the directory)
    if (comm_.max(comm_.lead() && !fs::exists(r_.dir / "model.safetensors")) != 0) return finished();
    result_.finished_note =
        r_.step < tc.steps ? fmt::format("{} is already finished: it reached train.target_accuracy = {} (sequence accuracy "
                                "{:.4f}) at step {}; nothing to do. To train on: qkv train --resume {} "
                                "train.target_accuracy=0", r_.dir.string(), tc.target_accuracy, r_.reached_target,
                                r_.step, shell_quote(r_.dir.string()))
                  : fmt::format("{} is already finished: {} of train.steps = {} done; nothing to do. To train longer: "
                                "qkv train --resume {} train.steps=N", r_.dir.string(), r_.step, tc.steps,
                                shell_quote(r_.dir.string()));
    log_->info("{}", result_.finished_note);
    result_.already_finished = true;
    return result_;
  }
  on_every_rank_agree(comm_, [&] {
    if (!comm_.lead()) return;
    write_file_atomic((r_.dir / "config.toml").string(), to_toml(r_.config));
    metrics_ = AppendFile((r_.dir / "metrics.jsonl").string());
  });
  start_time_ = window_start_ = std::chrono::steady_clock::now();
  start_step_ = r_.step;
  while (r_.step < tc.steps) {
    const Batch batch = rank_slice(r_.data->next_batch(tc.batch_size), comm_);  // every rank draws the same
    StepStats st;
    try {
      st = train_step(*r_.model, *r_.optimizer, *r_.schedule, batch, r_.config.optim.clip_grad_norm, &comm_,
                      r_.shard.get(), r_.buckets.get());
    } catch (const std::bad_alloc&) {
      throw TrainingError(fmt::format("step {}: out of memory (lower train.batch_size, data.seq_len or the model "
                                      "size)", r_.step + 1));
    }
    if (!std::isfinite(st.loss)) stop_non_finite("loss", st.loss);
    if (!std::isfinite(st.grad_norm)) stop_non_finite("gradient norm", st.grad_norm);
    ++r_.step;
    if (r_.step == start_step_ + 1 && r_.shard) log_sharded_state();
    window_tokens_ += batch.inputs.numel() * comm_.size();
    const bool last = r_.step == tc.steps;
    const bool log = r_.step % tc.log_every == 0 || last, eval = r_.step % tc.eval_every == 0 || last;
    if (log) log_progress(st);
    if (eval) validate();
    if (log || eval) write_records();
    if (opt_.on_step) opt_.on_step(r_.step);
    if (const int sig = agreed_stop_signal(); sig != 0 && !last) {  // on the last step, finished() saves first
      checkpoint();
      return interrupted(sig);
    }
    if (result_.stopped_early || last || (tc.checkpoint_every > 0 && r_.step % tc.checkpoint_every == 0)) checkpoint();
    if (result_.stopped_early) break;
  }
  return finished();
}

}  // namespace

TrainResult train(const Config& config, const TrainOptions& options) { return Trainer(config, options).run(); }

}  // namespace qkv
