// GrowthBook's targeting-condition language, evaluated as the JavaScript SDK
// (`mongrule.ts` of @growthbook/growthbook) evaluates it.
//
// A condition is a Mongo-style JSON document: keys are dot paths into the
// attributes or the logical operators $and/$or/$nor/$not; values are literals
// (compared with JavaScript's loose rules) or operator objects ($eq $ne $lt
// $lte $gt $gte $in $nin $ini $nini $all $alli $elemMatch $size $exists $type
// $regex $regexi $not $veq $vne $vgt $vgte $vlt $vlte $inGroup $notInGroup).
//
// Known differences from the SDK, all outside what GrowthBook's UI writes:
//  * regular expressions: see js_regex.h (no lookbehind; a supplementary
//    character is one character, not two UTF-16 units);
//  * case-insensitive operators use each character's simple lower-case
//    mapping (JavaScript applies the few multi-character ones too);
//  * a dot path never resolves to inherited JavaScript properties
//    ("constructor", "toString"), only to own keys, array indices and an
//    array's "length".
//
// Thread-safety: a ConditionEvaluator caches compiled regular expressions and
// is not thread-safe; use one per thread or per evaluation.
//
// Example:
//   ConditionEvaluator eval(/*saved_groups=*/Json::object());
//   bool ok = eval.Evaluate(Json::parse(R"({"age":21})"),
//                           Json::parse(R"({"age":{"$gt":18}})"));  // true
#ifndef CAPSTAN_EXPERIMENTS_CONDITION_H_
#define CAPSTAN_EXPERIMENTS_CONDITION_H_

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "experiments/js_regex.h"
#include "experiments/js_value.h"

namespace capstan::experiments {

// util.ts paddedVersionString: strips a leading "v" and "+build", splits on
// "." and "-", appends "~" to a plain x.y.z, left-pads numeric parts to 5.
// Numbers are converted with String(); other non-strings and "" become "0".
std::string PaddedVersionString(const Json& version);

class ConditionEvaluator {
 public:
  // `saved_groups` is {groupId: [values]} for $inGroup/$notInGroup; it must
  // outlive the evaluator.
  explicit ConditionEvaluator(const Json& saved_groups);

  // evalCondition(attributes, condition, savedGroups). Throws JsTypeError
  // where the SDK throws (for example `{"$or": null}`).
  bool Evaluate(const Json& attributes, const Json& condition);

 private:
  bool EvalConditionValue(const Json& condition, const Json& value, bool insensitive);
  bool EvalOperator(const std::string& op, const Json& actual, const Json& expected);
  bool EvalOr(const Json& attributes, const Json& conditions);
  bool EvalAnd(const Json& attributes, const Json& conditions);
  bool ElemMatch(const Json& actual, const Json& expected);
  bool IsIn(const Json& actual, const Json& expected, bool insensitive);
  bool IsInAll(const Json& actual, const Json& expected, bool insensitive);
  bool RegexTest(const Json& pattern, const Json& actual, bool insensitive);
  // getPath: the value at a dot path, or JSON null when any step is missing.
  const Json& GetPath(const Json& object, const std::string& path);

  const Json& saved_groups_;
  // Array lengths read through a path ("tags.length") live here so GetPath can
  // hand out references (held by pointer, so they stay put; an empty vector
  // costs nothing to construct, which keeps an evaluator cheap to make).
  std::vector<std::unique_ptr<Json>> scratch_;
  // Compiled patterns, keyed by pattern plus "/i"; nullptr caches an invalid one.
  std::unordered_map<std::string, std::unique_ptr<JsRegex>> regex_cache_;
};

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_CONDITION_H_
