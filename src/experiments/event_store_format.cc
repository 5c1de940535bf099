#include "experiments/event_store_format.h"

#include <algorithm>
#include <cstring>

#include "experiments/event_store.h"
#include "nlohmann/json.hpp"

namespace capstan::experiments {

using event_format::AppendRaw;
using event_format::AppendShortString;
using event_format::kLogRecordHeader;
using event_format::kLogRecordVersion;
using event_format::LogRecordCount;
using event_format::Reader;

void AppendLogRecordEvent(const EventRef& event, std::string* record) {
  // Sized once and written in place: the writer encodes every event of a
  // group here, and appending field by field checked the capacity 14 times.
  const size_t at = record->size();
  record->resize(at + event_format::kLogRecordEventFixedBytes + event.key.size() +
                 event.experiment.size() + event.unit.size() + event.variant.size() +
                 event.metric.size());
  char* p = record->data() + at;
  *p++ = static_cast<char>(event.type);
  for (std::string_view s :
       {event.key, event.experiment, event.unit, event.variant, event.metric}) {
    *p++ = static_cast<char>(s.size());  // identifiers are at most 128 bytes
    if (s.empty()) continue;             // an absent one's data() may be null
    std::memcpy(p, s.data(), s.size());
    p += s.size();
  }
  std::memcpy(p, &event.value, 8);
  std::memcpy(p + 8, &event.denominator, 8);
  std::memcpy(p + 16, &event.timestamp_ms, 8);
}

void AppendLogRecordEvent(const Event& event, std::string* record) {
  AppendLogRecordEvent(RefOf(event), record);
}

absl::Status DecodeLogRecordRefs(std::string_view record, std::vector<EventRef>* events) {
  auto corrupt = [] { return absl::DataLossError("event store: log record is corrupt"); };
  events->clear();
  if (record.size() < kLogRecordHeader || static_cast<uint8_t>(record[0]) != kLogRecordVersion) {
    return corrupt();
  }
  const uint32_t count = LogRecordCount(record);
  Reader r(record.substr(kLogRecordHeader));
  // A corrupt count cannot make this reserve much.
  events->reserve(
      std::min<size_t>(count, record.size() / event_format::kLogRecordEventFixedBytes + 1));
  for (uint32_t i = 0; i < count; ++i) {
    EventRef& e = events->emplace_back();
    uint8_t type = 0;
    if (!r.Raw(&type) || type > 3 || !r.ShortString(&e.key) || !r.ShortString(&e.experiment) ||
        !r.ShortString(&e.unit) || !r.ShortString(&e.variant) || !r.ShortString(&e.metric) ||
        !r.Raw(&e.value) || !r.Raw(&e.denominator) || !r.Raw(&e.timestamp_ms)) {
      return corrupt();
    }
    e.type = static_cast<EventType>(type);
  }
  if (!r.done()) return corrupt();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Event>> DecodeLogRecord(std::string_view record) {
  std::vector<EventRef> refs;
  absl::Status status = DecodeLogRecordRefs(record, &refs);
  if (!status.ok()) return status;
  return EventsOf(refs);
}

namespace event_format {

bool DecodeUnitRecord(std::string_view data, UnitRecord* out) {
  Reader r(data);
  uint64_t key_size = 0, exposure = 0, count = 0;
  uint8_t version = 0;
  if (!r.Varint(&key_size) || key_size > data.size() || !r.Bytes(key_size, &out->key) ||
      !r.Raw(&version) || version != kUnitRecordVersion || !r.Varint32(&out->variant) ||
      !r.Varint(&exposure) || !r.Varint(&count) || count > data.size()) {
    return false;
  }
  out->exposure_ms = UnZigZag(exposure);
  out->metrics.clear();
  for (uint64_t i = 0; i < count; ++i) {
    UnitRecordMetric& m = out->metrics.emplace_back();
    uint8_t tags = 0;
    if (!r.Varint32(&m.metric) || !r.Raw(&tags) || (tags >> 6) != 0 || !r.Number(tags & 3, &m.x) ||
        !r.Number((tags >> 2) & 3, &m.den) || !r.Number((tags >> 4) & 3, &m.covariate)) {
      return false;
    }
  }
  out->held.clear();
  if (!r.Varint(&count) || count > kMaxHeldEventsPerUnit) return false;
  for (uint64_t i = 0; i < count; ++i) {
    UnitRecordHeld& h = out->held.emplace_back();
    uint64_t ts = 0;
    uint8_t tags = 0;
    if (!r.Varint32(&h.metric) || !r.Varint(&ts) || !r.Raw(&tags) || (tags >> 4) != 0 ||
        !r.Number(tags & 3, &h.value) || !r.Number((tags >> 2) & 3, &h.denominator)) {
      return false;
    }
    h.timestamp_ms = UnZigZag(ts);
  }
  return r.done();
}

}  // namespace event_format

std::string EncodeExperimentSums(const ExperimentSums& sums) {
  nlohmann::ordered_json variants = nlohmann::ordered_json::object();
  for (const auto& [name, v] : sums.variants) {
    nlohmann::ordered_json metrics = nlohmann::ordered_json::array();
    for (const auto& [id, m] : v.metrics) {
      metrics.push_back({{"kind", std::string(EventTypeName(id.kind))},
                         {"metric", id.name},
                         {"sum", m.sum},
                         {"sumSquares", m.sum_squares},
                         {"denSum", m.den_sum},
                         {"denSumSquares", m.den_sum_squares},
                         {"products", m.products},
                         {"covariateSum", m.covariate_sum},
                         {"covariateSumSquares", m.covariate_sum_squares},
                         {"covariateProducts", m.covariate_products}});
      if (id.kind == EventType::kRatio) {
        // Added with CUPED for ratios; older records lack them (read as 0).
        nlohmann::ordered_json& record = metrics.back();
        record["covariateDenSum"] = m.covariate_den_sum;
        record["covariateDenSumSquares"] = m.covariate_den_sum_squares;
        record["covariateNumDenProducts"] = m.covariate_num_den_products;
        record["covariateDenProducts"] = m.covariate_den_products;
        record["denCovariateProducts"] = m.den_covariate_products;
        record["denCovariateDenProducts"] = m.den_covariate_den_products;
      }
    }
    variants[name] = {{"units", v.units}, {"metrics", std::move(metrics)}};
  }
  return nlohmann::ordered_json{{"variants", std::move(variants)}}.dump();
}

absl::StatusOr<ExperimentSums> DecodeExperimentSums(std::string_view text) {
  nlohmann::ordered_json doc =
      nlohmann::ordered_json::parse(text.begin(), text.end(), nullptr, false);
  auto corrupt = [] { return absl::DataLossError("event store: aggregate record is corrupt"); };
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("variants")) return corrupt();
  ExperimentSums sums;
  try {
    for (const auto& [name, v] : doc.at("variants").items()) {
      VariantSums& variant = sums.variants[name];
      variant.units = v.at("units").get<uint64_t>();
      for (const nlohmann::ordered_json& m : v.at("metrics")) {
        std::string kind = m.at("kind").get<std::string>();
        MetricId id{kind == "conversion" ? EventType::kConversion
                    : kind == "ratio"    ? EventType::kRatio
                                         : EventType::kValue,
                    m.at("metric").get<std::string>()};
        MetricSums& sums_of_metric = variant.metrics[id];
        sums_of_metric =
            MetricSums{m.at("sum").get<double>(),           m.at("sumSquares").get<double>(),
                       m.at("denSum").get<double>(),        m.at("denSumSquares").get<double>(),
                       m.at("products").get<double>(),      m.value("covariateSum", 0.0),
                       m.value("covariateSumSquares", 0.0), m.value("covariateProducts", 0.0)};
        sums_of_metric.covariate_den_sum = m.value("covariateDenSum", 0.0);
        sums_of_metric.covariate_den_sum_squares = m.value("covariateDenSumSquares", 0.0);
        sums_of_metric.covariate_num_den_products = m.value("covariateNumDenProducts", 0.0);
        sums_of_metric.covariate_den_products = m.value("covariateDenProducts", 0.0);
        sums_of_metric.den_covariate_products = m.value("denCovariateProducts", 0.0);
        sums_of_metric.den_covariate_den_products = m.value("denCovariateDenProducts", 0.0);
      }
    }
  } catch (const nlohmann::json::exception&) {
    return corrupt();
  }
  return sums;
}

}  // namespace capstan::experiments
