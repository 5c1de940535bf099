#include "experiments/condition.h"

#include <vector>

namespace capstan::experiments {
namespace {

const Json kNull = nullptr;

bool IsAllDigits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// The canonical array index a property key names, if any ("01" names none).
bool ArrayIndexOf(const std::string& key, size_t size, size_t* index) {
  if (!IsAllDigits(key) || (key.size() > 1 && key[0] == '0') || key.size() > 10) return false;
  uint64_t value = std::stoull(key);
  if (value >= size) return false;
  *index = static_cast<size_t>(value);
  return true;
}

// isOperatorObject: an object whose keys all start with '$' (and has some).
// Object.keys of null throws; of a string or array it lists indices, which
// never start with '$'.
bool IsOperatorObject(const Json& value) {
  if (value.is_null()) throw JsTypeError("Cannot convert undefined or null to object");
  if (!value.is_object() || value.empty()) return false;
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (it.key().empty() || it.key()[0] != '$') return false;
  }
  return true;
}

std::string TypeOf(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::array:
      return "array";
    case Json::value_t::string:
      return "string";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::object:
      return "object";
    default:
      return "number";
  }
}

}  // namespace

std::string PaddedVersionString(const Json& version) {
  std::string input;
  if (version.is_number()) {
    input = JsNumberToString(version.get<double>());
  } else if (version.is_string()) {
    input = version.get<std::string>();
  }
  if (input.empty()) input.assign(1, '0');  // (= "0" trips GCC 12 -Wrestrict)
  // /(^v|\+.*$)/g: a leading "v", and a "+" with no line terminator after it
  // up to the end.
  if (input[0] == 'v') input.erase(0, 1);
  size_t last_terminator_end = 0;
  for (size_t i = 0; i < input.size(); ++i) {
    if (input[i] == '\n' || input[i] == '\r') {
      last_terminator_end = i + 1;
    } else if (input.compare(i, 3, "\xE2\x80\xA8") == 0 ||
               input.compare(i, 3, "\xE2\x80\xA9") == 0) {
      last_terminator_end = i + 3;
    }
  }
  size_t plus = input.find('+', last_terminator_end);
  if (plus != std::string::npos) input.erase(plus);

  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t i = 0; i <= input.size(); ++i) {
    if (i == input.size() || input[i] == '.' || input[i] == '-') {
      parts.push_back(input.substr(start, i - start));
      start = i + 1;
    }
  }
  if (parts.size() == 3) parts.push_back("~");
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out.push_back('-');
    if (IsAllDigits(parts[i]) && parts[i].size() < 5) out.append(5 - parts[i].size(), ' ');
    out += parts[i];
  }
  return out;
}

ConditionEvaluator::ConditionEvaluator(const Json& saved_groups) : saved_groups_(saved_groups) {}

bool ConditionEvaluator::Evaluate(const Json& attributes, const Json& condition) {
  // Object.entries(condition): an object's keys, an array's indices; other
  // primitives have none (strings would list characters: not supported).
  if (condition.is_null()) throw JsTypeError("Cannot convert undefined or null to object");
  if (condition.is_array()) {
    for (size_t i = 0; i < condition.size(); ++i) {
      if (!EvalConditionValue(condition[i], GetPath(attributes, std::to_string(i)), false)) {
        return false;
      }
    }
    return true;
  }
  if (!condition.is_object()) return true;
  for (auto it = condition.begin(); it != condition.end(); ++it) {
    const std::string& key = it.key();
    const Json& value = it.value();
    if (key == "$or") {
      if (!EvalOr(attributes, value)) return false;
    } else if (key == "$nor") {
      if (EvalOr(attributes, value)) return false;
    } else if (key == "$and") {
      if (!EvalAnd(attributes, value)) return false;
    } else if (key == "$not") {
      if (Evaluate(attributes, value)) return false;
    } else if (!EvalConditionValue(value, GetPath(attributes, key), false)) {
      return false;
    }
  }
  return true;
}

const Json& ConditionEvaluator::GetPath(const Json& object, const std::string& path) {
  const Json* current = &object;
  std::string_view rest = path;
  while (true) {
    size_t dot = rest.find('.');
    std::string_view part = rest.substr(0, dot);
    if (current->is_object()) {
      auto it = current->begin();
      for (; it != current->end(); ++it) {
        if (it.key() == part) break;
      }
      if (it == current->end()) return kNull;
      current = &*it;
    } else if (current->is_array()) {
      size_t index;
      if (part == "length") {
        scratch_.push_back(std::make_unique<Json>(current->size()));
        current = scratch_.back().get();
      } else if (ArrayIndexOf(std::string(part), current->size(), &index)) {
        current = &(*current)[index];
      } else {
        return kNull;
      }
    } else {
      return kNull;
    }
    if (dot == std::string_view::npos) return *current;
    rest.remove_prefix(dot + 1);
  }
}

bool ConditionEvaluator::EvalConditionValue(const Json& condition, const Json& value,
                                            bool insensitive) {
  if (condition.is_string()) {
    if (insensitive) {
      return JsLowerCase(JsToString(value)) == JsLowerCase(condition.get<std::string>());
    }
    if (value.is_string()) {
      return value.get_ref<const std::string&>() == condition.get_ref<const std::string&>();
    }
    return JsToString(value) == condition.get_ref<const std::string&>();
  }
  if (condition.is_number()) return JsToNumber(value) == condition.get<double>();
  if (condition.is_boolean()) return !value.is_null() && JsTruthy(value) == condition.get<bool>();
  if (condition.is_null()) return value.is_null();
  if (condition.is_array() || !IsOperatorObject(condition)) {
    return JsonStringify(value) == JsonStringify(condition);
  }
  for (auto it = condition.begin(); it != condition.end(); ++it) {
    if (!EvalOperator(it.key(), value, it.value())) return false;
  }
  return true;
}

bool ConditionEvaluator::EvalOr(const Json& attributes, const Json& conditions) {
  // `if (!conditions.length) return true`: true for [] and for anything
  // without a length; null throws.
  if (conditions.is_null()) throw JsTypeError("Cannot read properties of null (reading 'length')");
  if (!conditions.is_array() || conditions.empty()) return true;
  for (const Json& c : conditions) {
    if (Evaluate(attributes, c)) return true;
  }
  return false;
}

bool ConditionEvaluator::EvalAnd(const Json& attributes, const Json& conditions) {
  if (conditions.is_null()) throw JsTypeError("Cannot read properties of null (reading 'length')");
  if (!conditions.is_array()) return true;
  for (const Json& c : conditions) {
    if (!Evaluate(attributes, c)) return false;
  }
  return true;
}

bool ConditionEvaluator::ElemMatch(const Json& actual, const Json& expected) {
  if (!actual.is_array()) return false;
  bool operator_object = IsOperatorObject(expected);
  for (const Json& element : actual) {
    if (!JsTruthy(element)) continue;
    bool matched = operator_object ? EvalConditionValue(expected, element, false)
                                   : Evaluate(element, expected);
    if (matched) return true;
  }
  return false;
}

bool ConditionEvaluator::IsIn(const Json& actual, const Json& expected, bool insensitive) {
  // Array.prototype.includes is SameValueZero, which is === for JSON values.
  auto equal = [&](const Json& a, const Json& b) {
    if (insensitive && a.is_string() && b.is_string()) {
      return JsLowerCase(a.get<std::string>()) == JsLowerCase(b.get<std::string>());
    }
    return JsStrictEquals(&a, &b);
  };
  auto contains = [&](const Json& needle) {
    for (const Json& candidate : expected) {
      if (equal(needle, candidate)) return true;
    }
    return false;
  };
  if (actual.is_array()) {
    for (const Json& element : actual) {
      if (contains(element)) return true;
    }
    return false;
  }
  return contains(actual);
}

bool ConditionEvaluator::IsInAll(const Json& actual, const Json& expected, bool insensitive) {
  if (!actual.is_array()) return false;
  for (const Json& wanted : expected) {
    bool passed = false;
    for (const Json& element : actual) {
      if (EvalConditionValue(wanted, element, insensitive)) {
        passed = true;
        break;
      }
    }
    if (!passed) return false;
  }
  return true;
}

bool ConditionEvaluator::RegexTest(const Json& pattern, const Json& actual, bool insensitive) {
  // The SDK calls pattern.replace(...), which throws for a non-string; its
  // try/catch turns that, and an invalid pattern, into false.
  if (!pattern.is_string()) return false;
  std::string cache_key = pattern.get<std::string>() + (insensitive ? "/i" : "");
  auto it = regex_cache_.find(cache_key);
  if (it == regex_cache_.end()) {
    it = regex_cache_.emplace(cache_key, JsRegex::Compile(pattern.get<std::string>(), insensitive))
             .first;
  }
  if (it->second == nullptr) return false;
  return it->second->Test(JsToString(actual));
}

bool ConditionEvaluator::EvalOperator(const std::string& op, const Json& actual,
                                      const Json& expected) {
  if (op.size() > 2 && op[1] == 'v') {
    int cmp = 0;
    bool version_op = true;
    if (op == "$veq" || op == "$vne" || op == "$vgt" || op == "$vgte" || op == "$vlt" ||
        op == "$vlte") {
      cmp = CompareUtf16(PaddedVersionString(actual), PaddedVersionString(expected));
    } else {
      version_op = false;
    }
    if (version_op) {
      if (op == "$veq") return cmp == 0;
      if (op == "$vne") return cmp != 0;
      if (op == "$vgt") return cmp > 0;
      if (op == "$vgte") return cmp >= 0;
      if (op == "$vlt") return cmp < 0;
      return cmp <= 0;
    }
  }
  if (op == "$eq") return JsStrictEquals(&actual, &expected);
  if (op == "$ne") return !JsStrictEquals(&actual, &expected);
  if (op == "$lt") return JsLessThan(&actual, &expected);
  if (op == "$lte") return JsLessOrEqual(&actual, &expected);
  if (op == "$gt") return JsGreaterThan(&actual, &expected);
  if (op == "$gte") return JsGreaterOrEqual(&actual, &expected);
  if (op == "$exists") return JsTruthy(expected) ? !actual.is_null() : actual.is_null();
  if (op == "$in") return expected.is_array() && IsIn(actual, expected, false);
  if (op == "$ini") return expected.is_array() && IsIn(actual, expected, true);
  if (op == "$nin") return expected.is_array() && !IsIn(actual, expected, false);
  if (op == "$nini") return expected.is_array() && !IsIn(actual, expected, true);
  if (op == "$inGroup" || op == "$notInGroup") {
    // savedGroups[expected] || []: the group id is a property key.
    static const Json kEmpty = Json::array();
    const Json* group = &kEmpty;
    if (saved_groups_.is_object()) {
      auto it = saved_groups_.find(JsToString(expected));
      if (it != saved_groups_.end() && JsTruthy(*it)) group = &*it;
    }
    if (!group->is_array()) throw JsTypeError("expected.includes is not a function");
    bool in = IsIn(actual, *group, false);
    return op == "$inGroup" ? in : !in;
  }
  if (op == "$not") return !EvalConditionValue(expected, actual, false);
  if (op == "$size") {
    if (!actual.is_array()) return false;
    return EvalConditionValue(expected, Json(actual.size()), false);
  }
  if (op == "$elemMatch") return ElemMatch(actual, expected);
  if (op == "$all") return expected.is_array() && IsInAll(actual, expected, false);
  if (op == "$alli") return expected.is_array() && IsInAll(actual, expected, true);
  if (op == "$regex") return RegexTest(expected, actual, false);
  if (op == "$regexi") return RegexTest(expected, actual, true);
  if (op == "$type") return expected.is_string() && TypeOf(actual) == expected.get<std::string>();
  return false;  // unknown operator
}

}  // namespace capstan::experiments
