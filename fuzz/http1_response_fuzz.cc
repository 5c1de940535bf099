// Fuzz target: the HTTP/1.1 response parser. The first byte picks the
// request method the responses answer (GET, HEAD, CONNECT) and how the rest
// is split into pieces; the parse (heads, joined bodies, trailers, the end
// of input, the error) must be the same as all at once, never crash, and
// give no body beyond a head's Content-Length.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "net/http1.h"

namespace {

using capstan::net::Buffer;
namespace http1 = capstan::net::http1;

constexpr std::string_view kMethods[] = {"GET", "HEAD", "CONNECT", "POST"};

std::string Parse(std::string_view input, uint8_t control, bool split) {
  http1::Limits limits = http1::ResponseLimits();
  limits.max_header_bytes = 1024;
  limits.max_header_fields = 16;
  limits.max_chunk_extension_bytes = 64;
  limits.max_trailer_bytes = 256;
  http1::ResponseParser parser(limits);
  std::string_view method = kMethods[control & 3];
  parser.SetRequestMethod(method);
  Buffer in;
  std::string out, body;
  uint64_t got = 0, announced = 0;
  bool length_framed = false;
  size_t at = 0;
  uint32_t state = control;
  while (true) {
    bool more = at < input.size();
    if (more) {
      size_t piece = split ? 1 + (state % 13) : input.size();
      state = state * 1103515245u + 12345u;
      piece = std::min(piece, input.size() - at);
      in.Append(input.substr(at, piece));
      at += piece;
    }
    while (true) {
      http1::Event ev = parser.Next(&in);
      if (ev.type == http1::Event::kNeedMore) break;
      if (ev.type == http1::Event::kError) {
        return out + "open body " + body + "\nerror " +
               std::string(http1::ErrorCodeName(parser.error().code));
      }
      if (ev.type == http1::Event::kHead) {
        const http1::ResponseHead& h = parser.head();
        out += "head " + std::to_string(h.status) + " " + std::string(h.reason) + " " +
               std::to_string(static_cast<int>(h.framing)) + " " + std::to_string(h.fields.size()) +
               "\n";
        got = 0;
        announced = h.content_length;
        length_framed = h.framing == http1::Framing::kContentLength;
      } else if (ev.type == http1::Event::kBody) {
        if (ev.body.empty()) std::abort();
        got += ev.body.size();
        if (length_framed && got > announced) std::abort();
        body += ev.body.ToString();
      } else if (ev.type == http1::Event::kComplete) {
        if (length_framed && got != announced) std::abort();
        out += "body " + body + "\ncomplete " + std::to_string(parser.trailers().size()) + "\n";
        body.clear();
        // The next response answers another request of the same method.
        parser.SetRequestMethod(method);
      }
    }
    if (!more) break;
  }
  http1::Event end = parser.Finish(in);
  out += "body " + body + "\nend " + std::to_string(static_cast<int>(end.type));
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (Parse(input, data[0], false) != Parse(input, data[0], true)) std::abort();
  return 0;
}
