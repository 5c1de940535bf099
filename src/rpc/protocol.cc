#include "rpc/protocol.h"

#include "absl/strings/str_cat.h"

namespace capstan::rpc {

namespace {

enum MetaTag : uint64_t {
  kTagMethod = 1,
  kTagTimeout = 2,
  kTagStatusCode = 3,
  kTagStatusMessage = 4,
  kTagEntry = 5,
  kTagLastStreamId = 6,
};

size_t FieldSize(uint64_t tag, size_t len) {
  return static_cast<size_t>(VarintLength(tag) + VarintLength(len)) + len;
}

char* WriteField(char* dst, uint64_t tag, std::string_view value) {
  dst += EncodeVarint64(dst, tag);
  dst += EncodeVarint64(dst, value.size());
  std::memcpy(dst, value.data(), value.size());
  return dst + value.size();
}

char* WriteVarintField(char* dst, uint64_t tag, uint64_t value) {
  dst += EncodeVarint64(dst, tag);
  dst += EncodeVarint64(dst, static_cast<uint64_t>(VarintLength(value)));
  return dst + EncodeVarint64(dst, value);
}

size_t VarintFieldSize(uint64_t tag, uint64_t value) {
  return FieldSize(tag, static_cast<size_t>(VarintLength(value)));
}

// A field's value that must be exactly one varint.
bool ParseVarintValue(std::string_view value, uint64_t* out) {
  return GetVarint64(&value, out) && value.empty();
}

void PutFixed32(char* p, uint32_t v) {
  p[0] = static_cast<char>(v);
  p[1] = static_cast<char>(v >> 8);
  p[2] = static_cast<char>(v >> 16);
  p[3] = static_cast<char>(v >> 24);
}

}  // namespace

const char* FrameTypeName(FrameType type) {
  switch (type) {
    case FrameType::kRequest:
      return "REQUEST";
    case FrameType::kMessage:
      return "MESSAGE";
    case FrameType::kResponse:
      return "RESPONSE";
    case FrameType::kCancel:
      return "CANCEL";
    case FrameType::kPing:
      return "PING";
    case FrameType::kPong:
      return "PONG";
    case FrameType::kGoAway:
      return "GOAWAY";
    case FrameType::kWindow:
      return "WINDOW";
  }
  return "?";
}

size_t MetaSize(const Meta& meta) {
  size_t n = 0;
  if (!meta.method.empty()) n += FieldSize(kTagMethod, meta.method.size());
  if (meta.timeout_us >= 0)
    n += VarintFieldSize(kTagTimeout, static_cast<uint64_t>(meta.timeout_us));
  if (meta.status_code != 0) n += VarintFieldSize(kTagStatusCode, meta.status_code);
  if (!meta.status_message.empty()) n += FieldSize(kTagStatusMessage, meta.status_message.size());
  for (const auto& [key, value] : meta.entries) {
    size_t len = static_cast<size_t>(VarintLength(key.size())) + key.size() + value.size();
    n += FieldSize(kTagEntry, len);
  }
  if (meta.last_stream_id != 0) n += VarintFieldSize(kTagLastStreamId, meta.last_stream_id);
  return n;
}

char* WriteMeta(const Meta& meta, char* dst) {
  if (!meta.method.empty()) dst = WriteField(dst, kTagMethod, meta.method);
  if (meta.timeout_us >= 0) {
    dst = WriteVarintField(dst, kTagTimeout, static_cast<uint64_t>(meta.timeout_us));
  }
  if (meta.status_code != 0) dst = WriteVarintField(dst, kTagStatusCode, meta.status_code);
  if (!meta.status_message.empty()) dst = WriteField(dst, kTagStatusMessage, meta.status_message);
  for (const auto& [key, value] : meta.entries) {
    size_t len = static_cast<size_t>(VarintLength(key.size())) + key.size() + value.size();
    dst += EncodeVarint64(dst, kTagEntry);
    dst += EncodeVarint64(dst, len);
    dst += EncodeVarint64(dst, key.size());
    std::memcpy(dst, key.data(), key.size());
    dst += key.size();
    std::memcpy(dst, value.data(), value.size());
    dst += value.size();
  }
  if (meta.last_stream_id != 0) dst = WriteVarintField(dst, kTagLastStreamId, meta.last_stream_id);
  return dst;
}

bool ParseMeta(std::string_view bytes, Meta* meta, std::string* error) {
  *meta = Meta{};
  while (!bytes.empty()) {
    uint64_t tag, len;
    if (!GetVarint64(&bytes, &tag) || !GetVarint64(&bytes, &len)) {
      *error = "metadata field header is truncated";
      return false;
    }
    if (len > bytes.size()) {
      *error = absl::StrCat("metadata field ", tag, " claims ", len, " bytes but ", bytes.size(),
                            " remain");
      return false;
    }
    std::string_view value = bytes.substr(0, len);
    bytes.remove_prefix(len);
    uint64_t number;
    switch (tag) {
      case kTagMethod:
        meta->method = value;
        break;
      case kTagTimeout:
        if (!ParseVarintValue(value, &number) || number > (uint64_t{1} << 62)) {
          *error = "timeout is not a varint";
          return false;
        }
        meta->timeout_us = static_cast<int64_t>(number);
        break;
      case kTagStatusCode:
        if (!ParseVarintValue(value, &number) || number > UINT32_MAX) {
          *error = "status code is not a varint";
          return false;
        }
        meta->status_code = static_cast<uint32_t>(number);
        break;
      case kTagStatusMessage:
        meta->status_message = value;
        break;
      case kTagEntry: {
        uint64_t key_len;
        if (!GetVarint64(&value, &key_len) || key_len > value.size()) {
          *error = "metadata entry key is truncated";
          return false;
        }
        meta->entries.emplace_back(value.substr(0, key_len), value.substr(key_len));
        break;
      }
      case kTagLastStreamId:
        if (!ParseVarintValue(value, &number) || number > UINT32_MAX) {
          *error = "last stream id is not a varint";
          return false;
        }
        meta->last_stream_id = static_cast<uint32_t>(number);
        break;
      default:
        break;  // a field from a later version
    }
  }
  return true;
}

void WriteHeader(char* dst, FrameType type, uint8_t flags, uint32_t stream_id, size_t meta_len,
                 size_t payload_len) {
  PutFixed32(dst, static_cast<uint32_t>(12 + meta_len + payload_len));
  dst[4] = static_cast<char>(kMagic);
  dst[5] = static_cast<char>(kVersion);
  dst[6] = static_cast<char>(type);
  dst[7] = static_cast<char>(flags);
  PutFixed32(dst + 8, stream_id);
  PutFixed32(dst + 12, static_cast<uint32_t>(meta_len));
}

void AppendFrame(net::Buffer* out, FrameType type, uint8_t flags, uint32_t stream_id,
                 const Meta& meta, net::Buffer&& payload) {
  size_t meta_len = MetaSize(meta);
  size_t head = kHeaderSize + meta_len;
  std::span<char> space = out->Reserve(head);
  WriteHeader(space.data(), type, flags, stream_id, meta_len, payload.size());
  WriteMeta(meta, space.data() + kHeaderSize);
  out->Commit(head);
  out->Append(std::move(payload));
}

DecodeStatus DecodeFrame(net::Buffer& in, const DecodeLimits& limits, Frame* frame,
                         std::string* error) {
  if (in.size() < kHeaderSize) return DecodeStatus::kNeedMore;
  char h[kHeaderSize];
  in.CopyTo(h, kHeaderSize);
  uint32_t frame_len = DecodeFixed32LE(h);
  uint8_t magic = static_cast<uint8_t>(h[4]);
  uint8_t version = static_cast<uint8_t>(h[5]);
  uint8_t type = static_cast<uint8_t>(h[6]);
  uint8_t flags = static_cast<uint8_t>(h[7]);
  uint32_t stream_id = DecodeFixed32LE(h + 8);
  uint32_t meta_len = DecodeFixed32LE(h + 12);
  if (magic != kMagic) {
    *error = absl::StrCat("bad magic byte 0x", absl::Hex(magic), " (not a Capstan RPC peer?)");
    return DecodeStatus::kError;
  }
  if (version != kVersion) {
    *error = absl::StrCat("unsupported protocol version ", version, " (this side speaks ", kVersion,
                          ")");
    return DecodeStatus::kError;
  }
  if (type < static_cast<uint8_t>(FrameType::kRequest) ||
      type > static_cast<uint8_t>(FrameType::kWindow)) {
    *error = absl::StrCat("unknown frame type ", type);
    return DecodeStatus::kError;
  }
  if ((flags & ~frame_flags::kAll) != 0) {
    *error = absl::StrCat("reserved flag bits set: 0x", absl::Hex(flags));
    return DecodeStatus::kError;
  }
  if (frame_len < kHeaderSize - 4 || frame_len > limits.max_frame_size) {
    *error = absl::StrCat("frame length ", frame_len, " is outside [12, ", limits.max_frame_size,
                          "] (the limit is max_frame_size)");
    return DecodeStatus::kError;
  }
  if (meta_len > kMaxMetaSize || meta_len > frame_len - (kHeaderSize - 4)) {
    *error = absl::StrCat("metadata length ", meta_len, " exceeds the frame (", frame_len,
                          ") or the 64 KiB limit");
    return DecodeStatus::kError;
  }
  if (in.size() < 4 + static_cast<size_t>(frame_len)) return DecodeStatus::kNeedMore;
  size_t payload_len = frame_len - (kHeaderSize - 4) - meta_len;
  in.Consume(kHeaderSize);
  frame->type = static_cast<FrameType>(type);
  frame->flags = flags;
  frame->stream_id = stream_id;
  frame->meta_bytes = in.Cut(meta_len);
  frame->payload = in.Cut(payload_len);
  if (!ParseMeta(frame->meta_bytes.Flatten(), &frame->meta, error)) return DecodeStatus::kError;
  return DecodeStatus::kFrame;
}

void AppendWindow(net::Buffer* out, uint32_t stream_id, uint64_t increment) {
  char varint[10];
  int len = EncodeVarint64(varint, increment);
  AppendFrameWith(out, FrameType::kWindow, 0, stream_id, Meta{}, static_cast<size_t>(len),
                  [&](char* dst) { std::memcpy(dst, varint, static_cast<size_t>(len)); });
}

bool ParseWindowIncrement(const net::Buffer& payload, uint64_t* increment, std::string* error) {
  char bytes[10];
  if (payload.size() > sizeof(bytes)) {
    *error = absl::StrCat("WINDOW payload of ", payload.size(), " bytes is not one varint");
    return false;
  }
  payload.CopyTo(bytes, payload.size());
  std::string_view in(bytes, payload.size());
  if (!GetVarint64(&in, increment) || !in.empty()) {
    *error = "WINDOW payload is not exactly one varint";
    return false;
  }
  if (*increment == 0) {
    *error = "WINDOW increment of 0";
    return false;
  }
  return true;
}

bool StreamWindow::Credit(uint64_t increment, std::string* error) {
  if (increment > outstanding_) {
    *error = absl::StrCat("WINDOW returns ", increment, " bytes but only ", outstanding_,
                          " are outstanding");
    return false;
  }
  outstanding_ -= increment;
  return true;
}

bool StreamWindow::Received(size_t size, std::string* error) {
  if (unreturned_ > 0 && unreturned_ + size > window_) {
    *error = absl::StrCat("MESSAGE of ", size, " bytes overruns the stream window (", unreturned_,
                          " of ", window_, " bytes not yet returned)");
    return false;
  }
  unreturned_ += size;
  return true;
}

uint64_t StreamWindow::Consumed(size_t size, bool queue_empty) {
  taken_ += size;
  if (taken_ == 0 || (!queue_empty && taken_ < window_ / 4)) return 0;
  uint64_t credit = std::exchange(taken_, 0);
  unreturned_ -= credit;
  return credit;
}

}  // namespace capstan::rpc
