// Fuzz target: the GrowthBook evaluator behind `capstan experiments eval`.
// Arbitrary bytes as one request line (payloads, conditions, regexes, sticky
// documents, ciphertexts) must give exactly one line of valid JSON — an answer
// or {"error": ...} — never a crash, a hang or a second line.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "experiments/eval_protocol.h"
#include "nlohmann/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view line(reinterpret_cast<const char*>(data), size);
  if (line.find('\n') != std::string_view::npos) return 0;  // the loop splits lines first
  std::string answer = capstan::experiments::HandleEvalRequest(line);
  if (answer.find('\n') != std::string::npos) std::abort();
  if (!nlohmann::json::accept(answer)) std::abort();
  return 0;
}
