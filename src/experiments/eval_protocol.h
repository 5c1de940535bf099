// The line protocol of `capstan experiments eval` (docs: the shared
// experiments-eval-protocol.md): one JSON request per line in, one JSON answer
// per line out, ops named after the GrowthBook JavaScript SDK's functions.
//
// Each request is independent and builds its own evaluation context. Every
// non-blank line gets exactly one answer line, in order; a request that cannot
// be answered gets {"error": "..."}; the request's "seq" is copied into the
// answer.
//
// Thread-safety: HandleEvalRequest is reentrant (no shared state).
//
// Example:
//   HandleEvalRequest(R"({"op":"hash","seed":"seed","value":"a","version":2})");
//   // -> {"result":0.0505}
#ifndef CAPSTAN_EXPERIMENTS_EVAL_PROTOCOL_H_
#define CAPSTAN_EXPERIMENTS_EVAL_PROTOCOL_H_

#include <cstddef>
#include <iosfwd>
#include <string>
#include <string_view>

namespace capstan::experiments {

// Requests nested deeper than this (arrays and objects) get an error answer:
// evaluation recurses on nesting and must not run out of stack.
inline constexpr size_t kMaxRequestNesting = 256;

struct EvalOptions {
  // Answer `feature` requests through the in-process SDK (sdk.h), whose
  // compiled payload takes the features it covers; the default answers with
  // the reference evaluator. Both must give the same answers: the npm
  // differential runs against each.
  bool compiled_engine = false;
};

// Answers one request line (without its newline) with one JSON line (without
// a newline). `compiled_taken`, if given, is set to whether the compiled
// engine answered.
std::string HandleEvalRequest(std::string_view line, const EvalOptions& options = {},
                              bool* compiled_taken = nullptr);

// Reads requests from `in` until EOF, answering each non-blank line on `out`
// and flushing after every answer; with the compiled engine, reports on
// `log` how many feature requests it answered. Returns the exit status (0).
int RunEvalLoop(std::istream& in, std::ostream& out, const EvalOptions& options = {},
                std::ostream* log = nullptr);

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_EVAL_PROTOCOL_H_
