// Fuzz target: the RPC frame decoder. Arbitrary bytes, fed in arbitrary
// pieces, must decode to frames, "need more" or an error with a reason —
// never a crash or an out-of-bounds read — and every decoded frame must
// re-encode to a frame that decodes to the same fields; WINDOW payloads
// parse or are refused with a reason.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "rpc/protocol.h"

namespace {

using capstan::rpc::DecodeFrame;
using capstan::rpc::DecodeStatus;
using capstan::rpc::Frame;

void CheckRoundTrip(Frame& f) {
  capstan::net::Buffer wire;
  std::string payload = f.payload.ToString();
  capstan::rpc::AppendFrame(&wire, f.type, f.flags, f.stream_id, f.meta,
                            capstan::net::Buffer(payload));
  Frame g;
  std::string error;
  if (DecodeFrame(wire, {}, &g, &error) != DecodeStatus::kFrame) std::abort();
  if (g.type != f.type || g.flags != f.flags || g.stream_id != f.stream_id ||
      g.meta.method != f.meta.method || g.meta.timeout_us != f.meta.timeout_us ||
      g.meta.status_code != f.meta.status_code || g.meta.status_message != f.meta.status_message ||
      g.meta.last_stream_id != f.meta.last_stream_id ||
      g.meta.entries.size() != f.meta.entries.size() || g.payload.ToString() != payload) {
    std::abort();
  }
  for (size_t i = 0; i < f.meta.entries.size(); ++i) {
    if (g.meta.entries[i] != f.meta.entries[i]) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  // The first byte picks the piece size the bytes arrive in.
  size_t piece = 1 + data[0] % 64;
  std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
  capstan::net::Buffer in;
  capstan::rpc::DecodeLimits limits{.max_frame_size = 1 << 20};
  for (size_t off = 0; off < bytes.size(); off += piece) {
    in.Append(bytes.substr(off, piece));
    while (true) {
      Frame f;
      std::string error;
      DecodeStatus st = DecodeFrame(in, limits, &f, &error);
      if (st == DecodeStatus::kNeedMore) break;
      if (st == DecodeStatus::kError) {
        if (error.empty()) std::abort();  // every error says why
        return 0;
      }
      CheckRoundTrip(f);
      if (f.type == capstan::rpc::FrameType::kWindow) {
        // A WINDOW payload parses to a positive increment or says why not.
        uint64_t increment = 0;
        std::string why;
        bool ok = capstan::rpc::ParseWindowIncrement(f.payload, &increment, &why);
        if (ok ? increment == 0 : why.empty()) std::abort();
      }
    }
  }
  return 0;
}
