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

}  // namespace capstan::rpc
