// Fuzz target: the gRPC message framing the HTTP/2 server parses itself.
// Arbitrary request bytes, fed in arbitrary pieces, must yield whole
// messages, "need more" or a sticky error — never a crash, an over-long
// message or an out-of-bounds read — and every message must be exactly what
// its prefix announced. The first bytes also go through the grpc-timeout
// parser and the grpc-message percent-encoder (printable ASCII out, every
// byte either kept or written as %XX).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "net/grpc_wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  if (input.size() < 2) return 0;
  // First byte: the message limit (in 16-byte units); second: piece size.
  size_t limit = static_cast<size_t>(static_cast<uint8_t>(input[0])) * 16;
  size_t piece = static_cast<size_t>(static_cast<uint8_t>(input[1]) % 64) + 1;
  std::string_view body = input.substr(2);

  (void)capstan::net::ParseGrpcTimeout(body.substr(0, 12));
  std::string_view text = body.substr(0, 64);
  std::string encoded = capstan::net::PercentEncodeGrpcMessage(text);
  size_t escapes = 0;
  for (char c : encoded) {
    if (c < 0x20 || c > 0x7e) std::abort();
    if (c == '%') ++escapes;
  }
  if (encoded.size() != text.size() + 2 * escapes) std::abort();

  capstan::net::GrpcMessageReader reader(limit);
  size_t consumed = 0;  // bytes of whole messages cut so far, prefixes included
  bool failed = false;
  for (size_t at = 0; at < body.size() && !failed; at += piece) {
    reader.Append(body.substr(at, piece));
    while (true) {
      auto next = reader.Next();
      if (!next.ok()) {
        failed = true;
        break;
      }
      if (!next->has_value()) break;
      const capstan::net::Buffer& msg = **next;
      if (msg.size() > limit) std::abort();
      // The message is the bytes after its prefix in the input.
      std::string_view expected = body.substr(consumed + 5, msg.size());
      if (msg.ToString() != expected) std::abort();
      consumed += 5 + msg.size();
    }
  }
  if (!failed && consumed + reader.pending_bytes() != body.size()) std::abort();
  return 0;
}
