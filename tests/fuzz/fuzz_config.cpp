// libFuzzer target for the config parser: TOML text, then after a line "%%" one override per line. Any input
// must parse or throw qkv::Error; any other exception (a raw toml++ or std error) or crash is a finding.
#include <qkv/train/run/config.h>

#include <cstddef>
#include <cstdint>
#include <sstream>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const auto split = input.find("\n%%\n");
  std::vector<std::string> overrides;
  if (split != std::string::npos) {
    std::istringstream lines(input.substr(split + 4));
    for (std::string line; std::getline(lines, line);) overrides.push_back(line);
  }
  try {
    const qkv::Config c = qkv::parse_config(input.substr(0, split), "fuzz.toml", overrides);
    (void)qkv::parse_config(qkv::to_toml(c), "resolved.toml");  // what qkv writes back must parse again
  } catch (const qkv::Error&) {
  }
  return 0;
}
