// The gRPC-over-HTTP/2 details that are plain parsing, kept apart from the
// HTTP/2 session so they can be unit-tested and fuzzed alone: the 5-byte
// length prefix of every message, the grpc-timeout header, and the
// percent-encoding of grpc-message.
// (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md)
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "base/status.h"
#include "net/buffer.h"

namespace capstan::net {

// "1S", "250m", "30000000n": up to 8 digits and a unit (H M S m u n). Returns
// nullopt for anything else (the caller answers INTERNAL, as grpc-go does).
std::optional<std::chrono::nanoseconds> ParseGrpcTimeout(std::string_view value);

// grpc-message is percent-encoded: bytes outside printable ASCII and '%'
// become %XX, so any UTF-8 message survives a header.
std::string PercentEncodeGrpcMessage(std::string_view message);

// Appends the length prefix of an uncompressed message of `size` bytes.
void AppendGrpcMessagePrefix(Buffer* out, size_t size);

// Writes the 5-byte prefix of an uncompressed message of `size` bytes at out.
inline void EncodeGrpcMessagePrefix(char* out, size_t size) {
  out[0] = 0;
  out[1] = static_cast<char>(size >> 24);
  out[2] = static_cast<char>(size >> 16);
  out[3] = static_cast<char>(size >> 8);
  out[4] = static_cast<char>(size);
}

// One length-prefixed message in a single block of exactly its size (a
// reply costs one allocation); `fill(char* out)` writes the `size` bytes.
template <typename Fill>
Buffer FrameGrpcMessage(size_t size, Fill&& fill) {
  Buffer out;
  std::span<char> room = out.Reserve(5 + size, 5 + size);
  EncodeGrpcMessagePrefix(room.data(), size);
  fill(room.data() + 5);
  out.Commit(5 + size);
  return out;
}
inline Buffer FrameGrpcMessage(std::string_view message) {
  return FrameGrpcMessage(message.size(), [&](char* out) {
    if (!message.empty()) std::memcpy(out, message.data(), message.size());
  });
}

// Cuts length-prefixed messages out of a request body as its DATA arrives.
class GrpcMessageReader {
 public:
  explicit GrpcMessageReader(size_t max_message_bytes) : max_message_bytes_(max_message_bytes) {}

  void Append(std::string_view bytes);
  // The next whole message, if one has arrived. An error (a compressed
  // message, one over the limit) is sticky: the call must end with it.
  absl::StatusOr<std::optional<Buffer>> Next();
  // Bytes of a message still incomplete (nonzero at END_STREAM: truncated).
  size_t pending_bytes() const { return pending_.size(); }

 private:
  size_t max_message_bytes_;
  Buffer pending_;
  absl::Status error_;
};

}  // namespace capstan::net
