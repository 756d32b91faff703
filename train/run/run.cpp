#include "qkv/train/run/run.h"

#include <qkv/train/run/memory.h>
#include <qkv/train/run/model_file.h>

namespace qkv {
namespace {

// Seeds of the independent streams derived from run.seed.
constexpr std::uint64_t kInitStream = 0x696e6974ULL;

}  // namespace

void set_up(Run& r) {
  const Config& c = r.config;
  r.data = make_dataset(c.data, c.run.seed);
  check_memory(c, r.data->vocab_size());
  Generator init(c.run.seed ^ kInitStream);  // then the model's dropout stream continues it
  r.model = build_model(c.model_config(r.data->vocab_size()), init);
  if (!c.model.init.empty()) {
    load(*r.model, c.model.init, /*strict=*/true);
    check_finite_weights(*r.model, "model.init: " + c.model.init, "training cannot start from it");
  }
  r.model->train();
  r.optimizer = make_optimizer(c.optim.name, r.model->named_parameters(), optimizer_options(c));
  r.schedule = std::make_unique<LRSchedule>(*r.optimizer, schedule_options(c));
}

std::int64_t write_initial_model(const Config& config, const std::string& path) {
  Run r;
  r.config = config;
  set_up(r);
  save(*r.model, path, model_metadata(r.model->config(), config, *r.data));
  return r.model->num_parameters();
}

}  // namespace qkv
