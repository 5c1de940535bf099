#include "raft/sim/linearizability.h"

#include <algorithm>
#include <climits>
#include <map>
#include <set>
#include <sstream>
#include <unordered_set>

namespace capstan::raft::sim {
namespace {

struct Search {
  const std::vector<Op>* ops;
  // Memo of (set of linearized ops, register value) already explored.
  std::unordered_set<std::string> seen;
  size_t budget = 2'000'000;
  bool exhausted = false;

  // Applies op to `state`; false when the op's observed result contradicts it.
  static bool Apply(const Op& op, std::string* state) {
    switch (op.kind) {
      case Op::Kind::kRead:
        return op.output == *state;
      case Op::Kind::kWrite:
        *state = op.value;
        return true;
      case Op::Kind::kCas:
        if (op.complete == INT64_MAX) {
          // Unknown outcome: the caller tries both.
          return false;
        }
        if (op.ok) {
          if (*state != op.expected) return false;
          *state = op.value;
          return true;
        }
        return *state != op.expected;
    }
    return false;
  }

  bool Dfs(std::vector<bool>& done, size_t remaining_required, const std::string& state) {
    if (remaining_required == 0) return true;
    if (budget == 0) {
      exhausted = true;  // reported as inconclusive, not as a pass
      return true;
    }
    --budget;
    std::string key(done.size() / 8 + 1, '\0');
    for (size_t i = 0; i < done.size(); ++i) {
      if (done[i]) key[i / 8] = static_cast<char>(key[i / 8] | (1 << (i % 8)));
    }
    key += state;
    if (!seen.insert(std::move(key)).second) return false;
    // The earliest completion among ops not yet linearized bounds which ops
    // may go next: anything invoked after it must wait.
    int64_t min_complete = INT64_MAX;
    for (size_t i = 0; i < ops->size(); ++i) {
      if (!done[i]) min_complete = std::min(min_complete, (*ops)[i].complete);
    }
    // Ops with a known outcome first: a linearization that leaves the
    // unknown ones out (they never took effect) is found without trying every
    // place to put them.
    for (size_t k = 0; k < 2 * ops->size(); ++k) {
      size_t i = k % ops->size();
      const Op& op = (*ops)[i];
      bool required = op.complete != INT64_MAX;
      if ((k < ops->size()) != required) continue;
      if (done[i] || op.invoke > min_complete) continue;
      std::vector<std::string> outcomes;
      if (op.kind == Op::Kind::kCas && !required) {
        // Unacknowledged CAS: it either swapped or did not.
        if (state == op.expected) outcomes.push_back(op.value);
        outcomes.push_back(state);
      } else {
        std::string next = state;
        if (!Apply(op, &next)) continue;
        outcomes.push_back(next);
      }
      for (const auto& next : outcomes) {
        done[i] = true;
        if (Dfs(done, remaining_required - (required ? 1 : 0), next)) return true;
        done[i] = false;
      }
    }
    return false;
  }
};

std::string Describe(const std::vector<Op>& ops) {
  std::ostringstream os;
  for (const Op& op : ops) {
    os << "  client " << op.client << " [" << op.invoke << ", "
       << (op.complete == INT64_MAX ? std::string("?") : std::to_string(op.complete)) << "] ";
    switch (op.kind) {
      case Op::Kind::kRead:
        os << "read -> '" << op.output << "'";
        break;
      case Op::Kind::kWrite:
        os << "write '" << op.value << "'" << (op.complete == INT64_MAX ? " (unknown)" : "");
        break;
      case Op::Kind::kCas:
        os << "cas '" << op.expected << "' -> '" << op.value << "' "
           << (op.complete == INT64_MAX ? "unknown" : (op.ok ? "ok" : "failed"));
        break;
    }
    os << "\n";
  }
  return os.str();
}

}  // namespace

CheckResult CheckLinearizable(const std::vector<Op>& history) {
  std::map<std::string, std::vector<Op>> by_key;
  for (const Op& op : history) {
    if (op.kind == Op::Kind::kRead && op.complete == INT64_MAX) continue;
    by_key[op.key].push_back(op);
  }
  CheckResult result;
  for (auto& [key, ops] : by_key) {
    std::sort(ops.begin(), ops.end(), [](const Op& a, const Op& b) { return a.invoke < b.invoke; });
    Search s;
    s.ops = &ops;
    std::vector<bool> done(ops.size(), false);
    size_t required = 0;
    for (const Op& op : ops) required += op.complete != INT64_MAX ? 1 : 0;
    if (!s.Dfs(done, required, "")) {
      return {false, key, Describe(ops), result.inconclusive_keys};
    }
    if (s.exhausted) ++result.inconclusive_keys;
  }
  return result;
}

}  // namespace capstan::raft::sim
