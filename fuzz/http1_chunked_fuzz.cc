// Fuzz target: the chunked body decoder. The first byte picks how the rest
// is split; decoding must be the same as all at once and never crash. A
// body it accepts, encoded again with AppendChunk / AppendLastChunk (in
// pieces the first byte also picks), must decode to the same bytes and
// trailers.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "net/http1.h"

namespace {

using capstan::net::Buffer;
namespace http1 = capstan::net::http1;

http1::Limits FuzzLimits() {
  http1::Limits limits;
  limits.max_body_bytes = 1 << 16;
  limits.max_chunk_extension_bytes = 64;
  limits.max_trailer_bytes = 256;
  limits.max_header_fields = 16;
  return limits;
}

struct Decoded {
  bool complete = false;
  std::string error;
  std::string body;
  std::string trailers;
  bool operator==(const Decoded&) const = default;
};

Decoded Decode(Buffer* in, http1::ChunkedDecoder* decoder) {
  Decoded d;
  while (true) {
    http1::Event ev = decoder->Next(in);
    if (ev.type == http1::Event::kNeedMore) return d;
    if (ev.type == http1::Event::kError) {
      d.error = http1::ErrorCodeName(decoder->error().code);
      return d;
    }
    if (ev.type == http1::Event::kBody) {
      if (ev.body.empty()) std::abort();
      d.body += ev.body.ToString();
    }
    if (ev.type == http1::Event::kComplete) {
      d.complete = true;
      for (const auto& f : decoder->trailers()) {
        d.trailers += std::string(f.name) + ":" + std::string(f.value) + "\n";
      }
      return d;
    }
  }
}

Decoded DecodeInPieces(std::string_view input, uint32_t state) {
  http1::ChunkedDecoder decoder(FuzzLimits());
  Buffer in;
  Decoded all;
  size_t at = 0;
  while (true) {
    size_t piece = state == 0 ? input.size() : 1 + (state % 11);
    state = state * 1103515245u + 12345u;
    piece = std::min(piece, input.size() - at);
    in.Append(input.substr(at, piece));
    at += piece;
    Decoded d = Decode(&in, &decoder);
    all.body += d.body;
    all.trailers = d.trailers;
    all.error = d.error;
    all.complete = d.complete;
    if (d.complete || !d.error.empty() || at == input.size()) return all;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  Decoded whole = DecodeInPieces(input, 0);
  Decoded split = DecodeInPieces(input, data[0] == 0 ? 1 : data[0]);
  if (!(whole == split)) std::abort();
  if (!whole.complete) return 0;

  // Encode what was decoded and decode it again.
  Buffer encoded;
  size_t step = 1 + data[0] % 7;
  for (size_t at = 0; at < whole.body.size(); at += step) {
    http1::AppendChunk(Buffer(std::string_view(whole.body).substr(at, step)), &encoded);
  }
  http1::ChunkedDecoder first(FuzzLimits());
  Buffer again(input);
  (void)Decode(&again, &first);
  http1::AppendLastChunk(&first.trailers(), &encoded);
  http1::Limits roomy = FuzzLimits();
  roomy.max_trailer_bytes = 1024;  // "a:b" is written "a: b"
  http1::ChunkedDecoder decoder(roomy);
  Decoded round = Decode(&encoded, &decoder);
  if (!round.complete || round.body != whole.body || round.trailers != whole.trailers) {
    std::abort();
  }
  if (!encoded.empty()) std::abort();
  return 0;
}
