// Fuzz target: the HTTP cache's on-disk record parser (gateway/cache/
// disk_record.h), what the disk tier reads back from files that a crash may
// have torn or a disk may have damaged. The input is a whole record file.
// Invariants: no crash; a record that decodes has a body of the length its
// head says and re-encodes to the same bytes (the format has one spelling),
// and its head alone decodes on its own.
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "base/crc32c.h"
#include "gateway/cache/disk_record.h"
#include "gateway/cache/store.h"

namespace {

namespace cache = capstan::gateway::cache;

void Check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  cache::RecordHead head;
  if (cache::DecodeRecordHead(input, &head).ok()) {
    Check(head.meta_len <= cache::kMaxRecordMetaBytes);
    Check(head.body_len <= cache::kMaxRecordBodyBytes);
  }
  cache::RecordMeta meta;
  std::string_view body;
  if (!cache::DecodeRecord(input, &meta, &body).ok()) return 0;
  Check(cache::DecodeRecordHead(input, &head).ok());
  Check(body.size() == head.body_len);
  cache::StoredResponse object;
  object.key = meta.key;
  object.vary = meta.vary;
  object.tags = meta.tags;
  object.status = meta.status;
  for (const auto& [name, value] : meta.fields) object.fields.Add(name, value);
  object.body.Append(body);
  object.times = meta.times;
  object.stored_at = meta.stored_at;
  std::string again = cache::EncodeRecordPrefix(object, meta.seq, capstan::crc32c::Value(body));
  again.append(body);
  Check(again == input);
  return 0;
}
