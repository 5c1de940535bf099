// Protobuf messages in and out of net::Buffer without an intermediate
// string: parsing reads the buffer's slices in place, serializing writes
// straight into a frame (rpc/protocol.h AppendFrameWith).
#pragma once

#include "google/protobuf/message_lite.h"
#include "net/buffer.h"

namespace capstan::rpc {

// False when the bytes are not a valid message of that type.
bool ParseFromBuffer(const net::Buffer& bytes, google::protobuf::MessageLite* message);

// Serializes message to exactly `size` bytes at dst, where size is what
// ByteSizeLong() returned just before (the cached sizes are used).
inline void SerializeTo(const google::protobuf::MessageLite& message, size_t size, char* dst) {
  (void)size;
  message.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(dst));
}

// The message's bytes in a buffer of their own (for requests that must
// outlive the caller's message: retries, hedged copies, stream openings).
inline net::Buffer SerializeToBuffer(const google::protobuf::MessageLite& message) {
  size_t size = message.ByteSizeLong();
  net::Buffer bytes;
  std::span<char> dst = bytes.Reserve(size);
  SerializeTo(message, size, dst.data());
  bytes.Commit(size);
  return bytes;
}

}  // namespace capstan::rpc
