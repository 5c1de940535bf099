// Test helpers for the HTTP/1.1 codec's tests (http1_test.cc,
// http1_smuggling_test.cc): drive a parser over input fed in pieces and
// describe what it made of it as comparable text.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gtest/gtest.h"
#include "net/http1.h"

namespace capstan::net::http1::testing {

// What a parser made of some input: one line per message and a final error,
// so feeding styles can be compared as strings.
struct Transcript {
  std::vector<std::string> heads;   // "METHOD target" or "status"
  std::vector<std::string> bodies;  // one per completed message
  std::vector<std::string> trailers;
  std::optional<ErrorCode> error;
  int error_status = 0;
  size_t completed = 0;
  std::string Text() const {
    std::string out;
    for (size_t i = 0; i < heads.size(); ++i) {
      out += heads[i] + " | " + (i < bodies.size() ? bodies[i] : "<open>") + " | " +
             (i < trailers.size() ? trailers[i] : "") + "\n";
    }
    if (error) out += "error: " + std::string(ErrorCodeName(*error));
    return out;
  }
};

inline std::string FieldsText(const HeaderFields& fields) {
  std::string out;
  for (const auto& f : fields) out += std::string(f.name) + "=" + std::string(f.value) + ";";
  return out;
}

// Drives a parser over `input` appended `piece` bytes at a time (0: all at
// once), then signals the end of input when `close` is set.
template <typename Parser, typename HeadText>
Transcript Drive(Parser& parser, std::string_view input, size_t piece, bool close,
                 HeadText head_text) {
  Transcript t;
  Buffer in;
  std::string body;
  size_t at = 0;
  if (piece == 0) piece = input.size() + 1;
  auto on_event = [&](Event& ev) {
    switch (ev.type) {
      case Event::kHead:
        t.heads.push_back(head_text(parser.head()));
        body.clear();
        break;
      case Event::kBody:
        EXPECT_FALSE(ev.body.empty());
        body += ev.body.ToString();
        break;
      case Event::kComplete:
        t.bodies.push_back(body);
        t.trailers.push_back(FieldsText(parser.trailers()));
        ++t.completed;
        break;
      case Event::kError:
        t.error = parser.error().code;
        t.error_status = parser.error().status;
        break;
      default:
        break;
    }
  };
  while (!t.error) {
    if (at < input.size()) {
      size_t n = std::min(piece, input.size() - at);
      in.Append(input.substr(at, n));
      at += n;
    }
    while (true) {
      Event ev = parser.Next(&in);
      if (ev.type == Event::kNeedMore) break;
      on_event(ev);
      if (ev.type == Event::kError) break;
    }
    if (t.error) break;
    if (at >= input.size()) {
      if (close) {
        Event ev = parser.Finish(in);
        on_event(ev);
      } else {
        EXPECT_TRUE(in.empty()) << "unparsed bytes: " << in.ToString();
      }
      break;
    }
  }
  return t;
}

inline Transcript ParseRequests(std::string_view input, size_t piece = 0, Limits limits = {}) {
  RequestParser parser(limits);
  return Drive(parser, input, piece, false, [](const RequestHead& h) {
    return std::string(h.method) + " " + std::string(h.target);
  });
}

inline Transcript ParseResponses(std::string_view input, std::string_view method = "GET",
                                 size_t piece = 0, bool close = true) {
  ResponseParser parser;
  parser.SetRequestMethod(method);
  return Drive(parser, input, piece, close,
               [](const ResponseHead& h) { return std::to_string(h.status); });
}

// Parses one request head all at once; fails the test if there is none.
inline RequestHead ParseHead(std::string_view input, RequestParser* parser) {
  Buffer in(input);
  Event ev = parser->Next(&in);
  EXPECT_EQ(ev.type, Event::kHead) << ErrorCodeName(parser->error().code);
  return std::move(parser->head());
}

inline std::optional<ErrorCode> RequestError(std::string_view input, Limits limits = {}) {
  return ParseRequests(input, 0, limits).error;
}

}  // namespace capstan::net::http1::testing
