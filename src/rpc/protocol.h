// The Capstan RPC frame codec (docs/rpc-protocol.md is the specification).
// Pure functions over net::Buffer: no sockets, no threads, so the decoder is
// fuzzed on its own (fuzz/rpc_frame_fuzz.cc).
//
//   rpc::Frame frame;
//   std::string why;
//   while (true) {
//     switch (rpc::DecodeFrame(socket.input(), limits, &frame, &why)) {
//       case rpc::DecodeStatus::kFrame: Handle(std::move(frame)); continue;
//       case rpc::DecodeStatus::kNeedMore: break;   // await more bytes
//       case rpc::DecodeStatus::kError: Close(why); // protocol error
//     }
//   }
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include "absl/container/inlined_vector.h"
#include "base/coding.h"
#include "net/buffer.h"

namespace capstan::rpc {

enum class FrameType : uint8_t {
  kRequest = 1,
  kMessage = 2,
  kResponse = 3,
  kCancel = 4,
  kPing = 5,
  kPong = 6,
  kGoAway = 7,
  kWindow = 8,
};
const char* FrameTypeName(FrameType type);

namespace frame_flags {
inline constexpr uint8_t kEndStream = 0x01;
inline constexpr uint8_t kHasMessage = 0x02;
inline constexpr uint8_t kAll = kEndStream | kHasMessage;
}  // namespace frame_flags

inline constexpr uint8_t kMagic = 0xC7;
inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderSize = 16;
inline constexpr size_t kMaxMetaSize = 64 * 1024;
inline constexpr size_t kDefaultMaxFrameSize = 16 * 1024 * 1024;
inline constexpr size_t kMaxPingPayload = 64;
// Bytes of MESSAGE payload a stream may have outstanding in each direction.
inline constexpr uint64_t kStreamWindow = 1 << 20;

// A frame's metadata. The views point into bytes owned elsewhere: when
// decoding, Frame::meta_bytes; when encoding, the caller's strings.
struct Meta {
  std::string_view method;
  // Microseconds left until the caller's deadline; negative: no deadline.
  int64_t timeout_us = -1;
  uint32_t status_code = 0;
  std::string_view status_message;
  absl::InlinedVector<std::pair<std::string_view, std::string_view>, 2> entries;
  uint32_t last_stream_id = 0;
};

struct Frame {
  FrameType type = FrameType::kRequest;
  uint8_t flags = 0;
  uint32_t stream_id = 0;
  Meta meta;
  net::Buffer meta_bytes;
  net::Buffer payload;

  bool end_stream() const { return flags & frame_flags::kEndStream; }
  bool has_message() const { return flags & frame_flags::kHasMessage; }
};

struct DecodeLimits {
  size_t max_frame_size = kDefaultMaxFrameSize;
};

enum class DecodeStatus { kFrame, kNeedMore, kError };

// Takes one frame off the front of `in` into *frame. kNeedMore leaves `in`
// untouched; kError sets *error to the reason (the connection must close).
DecodeStatus DecodeFrame(net::Buffer& in, const DecodeLimits& limits, Frame* frame,
                         std::string* error);

// Parses a metadata section; false (with *error) when malformed.
bool ParseMeta(std::string_view bytes, Meta* meta, std::string* error);

// Bytes the metadata section of `meta` takes, and writing it.
size_t MetaSize(const Meta& meta);
char* WriteMeta(const Meta& meta, char* dst);

// Writes the 16-byte header at dst.
void WriteHeader(char* dst, FrameType type, uint8_t flags, uint32_t stream_id, size_t meta_len,
                 size_t payload_len);

// Appends a frame whose payload is `payload` (moved, not copied when large).
void AppendFrame(net::Buffer* out, FrameType type, uint8_t flags, uint32_t stream_id,
                 const Meta& meta, net::Buffer&& payload);

// Appends a frame whose payload of exactly `payload_size` bytes is written by
// write_payload(char* dst). Header, metadata and a payload of moderate size
// go into one contiguous region (one iovec when sent).
template <typename WritePayload>
void AppendFrameWith(net::Buffer* out, FrameType type, uint8_t flags, uint32_t stream_id,
                     const Meta& meta, size_t payload_size, WritePayload&& write_payload) {
  size_t meta_len = MetaSize(meta);
  size_t head = kHeaderSize + meta_len;
  constexpr size_t kInlinePayload = 256 * 1024;
  if (payload_size <= kInlinePayload) {
    std::span<char> space = out->Reserve(head + payload_size);
    WriteHeader(space.data(), type, flags, stream_id, meta_len, payload_size);
    WriteMeta(meta, space.data() + kHeaderSize);
    write_payload(space.data() + head);
    out->Commit(head + payload_size);
    return;
  }
  std::span<char> space = out->Reserve(head);
  WriteHeader(space.data(), type, flags, stream_id, meta_len, payload_size);
  WriteMeta(meta, space.data() + kHeaderSize);
  out->Commit(head);
  net::Buffer payload;
  std::span<char> body = payload.Reserve(payload_size, payload_size);
  write_payload(body.data());
  payload.Commit(payload_size);
  out->Append(std::move(payload));
}

// Appends a WINDOW frame returning `increment` bytes of credit on a stream.
void AppendWindow(net::Buffer* out, uint32_t stream_id, uint64_t increment);

// Reads a WINDOW frame's payload: exactly one varint, greater than zero.
bool ParseWindowIncrement(const net::Buffer& payload, uint64_t* increment, std::string* error);

// The flow-control ledger of one stream (docs/rpc-protocol.md, "Streaming
// flow control"), both directions. Pure bookkeeping: callers send the frames.
//
// Sending: at most `window` bytes of MESSAGE payload outstanding, except that
// a message larger than the whole window may go when nothing is outstanding
// (messages are never split). Receiving: the peer broke the rule when a
// message would take the unreturned bytes past the window while some are
// already unreturned (our view of unreturned bytes never exceeds the
// sender's view of outstanding ones, so the check holds despite credit in
// flight). Credit goes back once a quarter of the window has been taken by
// the application, or at once when the application has taken everything
// queued, so a sender waiting for room always gets it.
class StreamWindow {
 public:
  explicit StreamWindow(uint64_t window = kStreamWindow) : window_(window) {}

  bool CanSend(size_t size) const { return outstanding_ == 0 || outstanding_ + size <= window_; }
  void Sent(size_t size) { outstanding_ += size; }
  // A WINDOW frame arrived; false when it returns more than was sent.
  bool Credit(uint64_t increment, std::string* error);

  // A MESSAGE payload arrived; false when the peer overran the window.
  bool Received(size_t size, std::string* error);
  // The application took a message of `size` bytes; `queue_empty` when no
  // other received message waits. Returns the credit to send now (0: none).
  uint64_t Consumed(size_t size, bool queue_empty);

  uint64_t outstanding() const { return outstanding_; }
  uint64_t unreturned() const { return unreturned_; }

 private:
  uint64_t window_;
  uint64_t outstanding_ = 0;  // sent, not yet credited
  uint64_t unreturned_ = 0;   // received, credit not yet sent
  uint64_t taken_ = 0;        // of unreturned_, taken by the application
};

}  // namespace capstan::rpc
