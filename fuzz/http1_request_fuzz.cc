// Fuzz target: the HTTP/1.1 request parser. The first byte picks how the
// rest is split into pieces; the parse must be the same as when everything
// arrives at once (heads, bodies, trailers, the error), never crash or read
// out of bounds, give no body beyond a head's Content-Length, and every head
// it accepts must survive WriteRequestHead and parse again the same.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "net/http1.h"

namespace {

using capstan::net::Buffer;
namespace http1 = capstan::net::http1;

std::string HeadText(const http1::RequestHead& h) {
  std::string out(h.method);
  out += ' ';
  out += h.target;
  out += http1::VersionText(h.version);
  for (const auto& f : h.fields) {
    out += '\n';
    out += f.name;
    out += ':';
    out += f.value;
  }
  out += " framing=" + std::to_string(static_cast<int>(h.framing)) +
         " cl=" + std::to_string(h.content_length) + " ka=" + std::to_string(h.keep_alive);
  return out;
}

// Parses `input` in pieces whose sizes come from `seed`; returns a transcript.
std::string Parse(std::string_view input, uint8_t seed) {
  http1::Limits limits;
  limits.max_request_line_bytes = 256;
  limits.max_header_bytes = 1024;
  limits.max_header_fields = 16;
  limits.max_body_bytes = 4096;
  limits.max_chunk_extension_bytes = 64;
  limits.max_trailer_bytes = 256;
  http1::RequestParser parser(limits);
  Buffer in;
  std::string out;
  std::string body;  // pieces joined: splits may cut a body anywhere
  uint64_t body_in_message = 0;
  uint64_t announced = 0;
  bool length_framed = false;
  size_t at = 0;
  uint32_t state = seed;
  bool done = false;
  while (!done) {
    if (at < input.size()) {
      size_t piece = seed == 0 ? input.size() : 1 + (state % 17);
      state = state * 1103515245u + 12345u;
      piece = std::min(piece, input.size() - at);
      in.Append(input.substr(at, piece));
      at += piece;
    } else {
      done = true;
    }
    while (true) {
      http1::Event ev = parser.Next(&in);
      if (ev.type == http1::Event::kNeedMore) break;
      if (ev.type == http1::Event::kError) {
        out += "open body " + body + "\nerror " +
               std::string(http1::ErrorCodeName(parser.error().code));
        return out;
      }
      if (ev.type == http1::Event::kHead) {
        const http1::RequestHead& h = parser.head();
        out += "head " + HeadText(h) + "\n";
        body_in_message = 0;
        announced = h.content_length;
        length_framed = h.framing == http1::Framing::kContentLength;
        // What the parser accepted, written out, parses back the same.
        Buffer written;
        http1::WriteRequestHead(h, &written);
        http1::RequestParser again;  // default limits: "a:b" is written "a: b"
        http1::Event back = again.Next(&written);
        if (back.type != http1::Event::kHead) std::abort();
        if (HeadText(again.head()) != HeadText(h)) std::abort();
      } else if (ev.type == http1::Event::kBody) {
        if (ev.body.empty()) std::abort();
        body_in_message += ev.body.size();
        if (length_framed && body_in_message > announced) std::abort();
        body += ev.body.ToString();
      } else if (ev.type == http1::Event::kComplete) {
        if (length_framed && body_in_message != announced) std::abort();
        out += "body " + body + "\ncomplete\n";
        body.clear();
        for (const auto& f : parser.trailers()) {
          out += std::string(f.name) + ":" + std::string(f.value) + "\n";
        }
      }
    }
  }
  return out + "open body " + body;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string whole = Parse(input, 0);
  std::string split = Parse(input, data[0] == 0 ? 1 : data[0]);
  if (whole != split) std::abort();
  return 0;
}
