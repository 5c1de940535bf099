// Inside the gateway's configuration parser (config.cc, config_routes.cc):
// the YAML mapping reader every section is read with, and the sections that
// live in their own file.
#pragma once

#include <yaml-cpp/yaml.h>

#include <functional>
#include <set>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/config.h"
#include "gateway/config.h"

namespace capstan::gateway::config_internal {

// Reads one YAML mapping into a struct, field by field. The first error
// sticks (later reads do nothing) and names the source, the line and the
// field's path; Finish() also refuses keys nobody read, so a misspelt
// option is an error rather than a silent default.
class MapReader {
 public:
  MapReader(const YAML::Node& node, std::string path, std::string_view source, absl::Status* status)
      : node_(node), path_(std::move(path)), source_(std::string(source)), status_(status) {
    if (status_->ok() && !node_.IsMap()) Fail(node_, "must be a mapping");
  }

  int line() const { return node_.Mark().line + 1; }
  bool ok() const { return status_->ok(); }
  bool Has(const char* key) const { return ok() && node_[key].IsDefined() && !node_[key].IsNull(); }

  void Fail(const YAML::Node& at, std::string_view message, std::string_view key = {}) {
    if (!status_->ok()) return;
    int line = at.Mark().line >= 0 ? at.Mark().line + 1 : this->line();
    std::string where = key.empty() ? path_ : Join(key);
    *status_ = absl::InvalidArgumentError(absl::StrCat(
        source_, ":", line, ": ", where.empty() ? "" : where + ": ", std::string(message)));
  }

  // The child at `key`, or an undefined node; marks it read.
  YAML::Node Get(const char* key) {
    seen_.insert(key);
    if (!ok()) return YAML::Node();
    return node_[key];
  }

  void String(const char* key, std::string* out, bool required = false) {
    YAML::Node n = Get(key);
    if (!ok()) return;
    if (!n.IsDefined() || n.IsNull()) {
      if (required) Fail(node_, "is required", key);
      return;
    }
    if (!n.IsScalar()) return Fail(n, "must be a string", key);
    *out = n.Scalar();
  }
  void OptString(const char* key, std::optional<std::string>* out) {
    if (!Has(key)) {
      Get(key);
      return;
    }
    std::string s;
    String(key, &s);
    *out = std::move(s);
  }
  void OptBool(const char* key, std::optional<bool>* out) {
    if (!Has(key)) {
      Get(key);
      return;
    }
    bool value = false;
    Bool(key, &value);
    *out = value;
  }
  void Bool(const char* key, bool* out) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    std::string s = n.IsScalar() ? absl::AsciiStrToLower(n.Scalar()) : "";
    if (s == "true" || s == "yes" || s == "on") {
      *out = true;
    } else if (s == "false" || s == "no" || s == "off") {
      *out = false;
    } else {
      Fail(n, "must be true or false", key);
    }
  }
  template <typename T>
  void Int(const char* key, T* out, int64_t min, int64_t max) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    int64_t v;
    if (!n.IsScalar() || !absl::SimpleAtoi(n.Scalar(), &v))
      return Fail(n, "must be a whole number", key);
    if (v < min || v > max) {
      return Fail(n, absl::StrCat("must be from ", min, " to ", max), key);
    }
    *out = static_cast<T>(v);
  }
  void Time(const char* key, Duration* out) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    if (!n.IsScalar()) return Fail(n, "must be a duration like 500ms, 10s, 5m", key);
    absl::StatusOr<int64_t> ms = ParseDurationMillis(n.Scalar());
    if (!ms.ok() || *ms < 0) return Fail(n, "must be a duration like 500ms, 10s, 5m", key);
    *out = Duration(*ms);
  }
  void Bytes(const char* key, size_t* out) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    absl::StatusOr<size_t> v =
        n.IsScalar() ? ParseByteSize(n.Scalar()) : absl::InvalidArgumentError("not a scalar");
    if (!v.ok()) return Fail(n, "must be a size like 512, 64KiB, 16MiB", key);
    *out = *v;
  }
  void StringList(const char* key, std::vector<std::string>* out) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    if (n.IsScalar()) {
      *out = {n.Scalar()};
      return;
    }
    if (!n.IsSequence()) return Fail(n, "must be a list of strings", key);
    out->clear();
    for (const YAML::Node& item : n) {
      if (!item.IsScalar()) return Fail(item, "must be a list of strings", key);
      out->push_back(item.Scalar());
    }
  }
  // Calls `each(reader)` for every mapping in the list at `key`.
  void List(const char* key, const std::function<void(MapReader&)>& each) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    if (!n.IsSequence()) return Fail(n, "must be a list", key);
    size_t i = 0;
    for (const YAML::Node& item : n) {
      MapReader r(item, absl::StrCat(Join(key), "[", i++, "]"), source_, status_);
      if (!ok()) return;
      each(r);
      r.Finish();
      if (!ok()) return;
    }
  }
  // Calls `each(name, reader)` for every entry of the mapping at `key`
  // whose values are mappings (name -> {...}).
  void Entries(const char* key, const std::function<void(const std::string&, MapReader&)>& each) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return;
    if (!n.IsMap()) return Fail(n, "must be a mapping of names to entries", key);
    for (auto it = n.begin(); it != n.end(); ++it) {
      std::string name = it->first.Scalar();
      MapReader r(it->second, absl::StrCat(Join(key), ".", name), source_, status_);
      if (!ok()) return;
      each(name, r);
      r.Finish();
      if (!ok()) return;
    }
  }
  // Calls `fill(reader)` on the mapping at `key` when it is there.
  bool Map(const char* key, const std::function<void(MapReader&)>& fill) {
    YAML::Node n = Get(key);
    if (!ok() || !n.IsDefined() || n.IsNull()) return false;
    MapReader r(n, Join(key), source_, status_);
    if (!ok()) return false;
    fill(r);
    r.Finish();
    return true;
  }
  // The keys of this mapping, in order (for maps whose keys are names the
  // user picks: an experiment's variants).
  std::vector<std::string> Keys() const {
    std::vector<std::string> keys;
    if (!ok()) return keys;
    for (auto it = node_.begin(); it != node_.end(); ++it) keys.push_back(it->first.Scalar());
    return keys;
  }
  // Refuses keys nobody read.
  void Finish() {
    if (!ok()) return;
    for (auto it = node_.begin(); it != node_.end(); ++it) {
      std::string key = it->first.Scalar();
      if (!seen_.contains(key)) return Fail(it->first, "unknown option", key);
    }
  }
  // A check of a value already read: fails pointing at `key`.
  void Check(bool condition, const char* key, std::string_view message) {
    if (ok() && !condition) Fail(node_[key].IsDefined() ? node_[key] : node_, message, key);
  }
  const std::string& path() const { return path_; }

 private:
  std::string Join(std::string_view key) const {
    if (key.empty()) return path_;
    return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", std::string(key));
  }

  YAML::Node node_;
  std::string path_;
  std::string source_;
  absl::Status* status_;
  std::set<std::string> seen_;
};

// Virtual hosts and their routes (config_routes.cc).
void ReadVirtualHost(MapReader& r, VirtualHostConfig* vh);

}  // namespace capstan::gateway::config_internal
