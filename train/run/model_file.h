#pragma once
// A model file: a safetensors file of the model's weights under their state-dict names, with metadata "format"
// = "qkv", "qkv.version", "qkv.model" (the ModelConfig as JSON), "qkv.data" (the data options, so `qkv eval` can
// rebuild the validation set) and, for text models, "qkv.vocab". Written by training and `qkv init`, read by
// every command that takes a MODEL.
#include <qkv/datasets/dataset.h>
#include <qkv/layers/models.h>
#include <qkv/layers/save.h>
#include <qkv/train/run/config.h>

#include <map>
#include <string>
#include <vector>

namespace qkv {

/// qkv's version string.
const char* version();

/// The metadata of a model file for a model of `model` (with its tokenizer, or none), without data.
std::map<std::string, std::string> model_metadata(const ModelConfig& model, const BpeTokenizer* tokenizer);
/// Everything in a model file's metadata for a model of `model` trained by `config` on `data`.
std::map<std::string, std::string> model_metadata(const ModelConfig& model, const Config& config,
                                                  const Dataset& data);
/// ModelConfig from the "qkv.model" JSON, every size checked (integer, in the range model_fields() gives) and the
/// kind's own rules; `source` names the file in errors.
ModelConfig model_config_from_json(const std::string& json, const std::string& source = "qkv.model");
/// The data section a model file carries in "qkv.data" (a default Config when it has none).
Config config_from_metadata(const std::map<std::string, std::string>& metadata, const std::string& path);
/// A model file's metadata against its tensors, before anything is built from it (the metadata could describe a
/// model far larger than the file): the kind's parameter count, tok_emb's shape where there is one, then every
/// value finite.
void check_model_file(const ModelConfig& model, const SafetensorsFile& file, const std::string& path);

/// Throws qkv::Error when a tensor holds a value that is not finite: "WHERE: tensor 'NAME' has N values that are
/// not finite (NaN or inf)", then `consequence` when given.
void check_finite_tensors(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& where,
                          const std::string& consequence);
/// The same for a module's parameters.
void check_finite_weights(const Module& module, const std::string& where, const std::string& consequence);

}  // namespace qkv
