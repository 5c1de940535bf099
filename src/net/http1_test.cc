#include "net/http1.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "net/http1_test_util.h"

namespace capstan::net::http1 {
namespace {

using testing::Drive;
using testing::ParseHead;
using testing::ParseRequests;
using testing::ParseResponses;
using testing::RequestError;
using testing::Transcript;

TEST(Http1RequestTest, ParsesLineAndFieldsInOrderWithCaseInsensitiveLookup) {
  RequestParser parser;
  RequestHead h = ParseHead(
      "GET /a?b=c HTTP/1.1\r\nHost: example.com:8080\r\nX-One:  1 \r\nx-one: 2\r\n"
      "Accept:\r\n\r\n",
      &parser);
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.target, "/a?b=c");
  EXPECT_EQ(h.target_form, TargetForm::kOrigin);
  EXPECT_EQ(h.version, Version::kHttp11);
  ASSERT_EQ(h.fields.size(), 4u);
  EXPECT_EQ(h.fields[1].name, "X-One");
  EXPECT_EQ(h.fields[1].value, "1");  // OWS trimmed both sides
  EXPECT_EQ(h.fields[3].value, "");
  EXPECT_EQ(h.fields.Get("x-ONE"), "1");
  EXPECT_EQ(h.fields.Count("X-One"), 2u);
  EXPECT_FALSE(h.fields.Get("missing").has_value());
  EXPECT_EQ(h.authority, "example.com:8080");
  EXPECT_EQ(h.framing, Framing::kNone);
  EXPECT_TRUE(h.keep_alive);
}

TEST(Http1RequestTest, ManyFieldsKeepTheirOrderPastTheInlineRoom) {
  std::string input = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 60; ++i)
    input += "X-" + std::to_string(i) + ": v" + std::to_string(i) + "\r\n";
  input += "\r\n";
  for (size_t piece : {0, 1}) {
    RequestParser parser;
    Buffer in;
    Event ev;
    for (size_t at = 0; at < input.size() && ev.type != Event::kHead;) {
      size_t n = piece == 0 ? input.size() : piece;
      in.Append(std::string_view(input).substr(at, n));
      at += n;
      ev = parser.Next(&in);
      ASSERT_NE(ev.type, Event::kError) << ErrorCodeName(parser.error().code);
    }
    ASSERT_EQ(ev.type, Event::kHead);
    const HeaderFields& f = parser.head().fields;
    ASSERT_EQ(f.size(), 61u);
    EXPECT_EQ(f[60].name, "X-59");
    EXPECT_EQ(f[60].value, "v59");
    EXPECT_EQ(f.Get("x-17"), "v17");
  }
}

TEST(Http1RequestTest, ContentLengthBodyIsCutFromTheInputWithoutCopy) {
  RequestParser parser;
  Buffer in("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
  const char* block = in.slice(0).data();
  ASSERT_EQ(parser.Next(&in).type, Event::kHead);
  EXPECT_EQ(parser.head().framing, Framing::kContentLength);
  EXPECT_EQ(parser.head().content_length, 5u);
  Event body = parser.Next(&in);
  ASSERT_EQ(body.type, Event::kBody);
  ASSERT_EQ(body.body.slice_count(), 1u);
  EXPECT_EQ(body.body.slice(0).data(), block + 48);  // the same bytes
  EXPECT_EQ(body.body.ToString(), "hello");
  EXPECT_EQ(parser.Next(&in).type, Event::kComplete);
  EXPECT_EQ(parser.Next(&in).type, Event::kNeedMore);
}

TEST(Http1RequestTest, ChunkedBodyWithExtensionsAndTrailers) {
  Transcript t = ParseRequests(
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;name=value\r\nhello\r\n6 ; a ; b=\"q\\\"x\"\r\n world\r\nA\r\n0123456789\r\n"
      "0\r\nExpires: never\r\nX-Sum: 1\r\n\r\n");
  ASSERT_FALSE(t.error) << t.Text();
  ASSERT_EQ(t.completed, 1u);
  EXPECT_EQ(t.bodies[0], "hello world0123456789");
  EXPECT_EQ(t.trailers[0], "Expires=never;X-Sum=1;");
}

TEST(Http1RequestTest, PipelinedRequestsParseOneAfterAnother) {
  std::string input =
      "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
      "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
      "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
      "\r\nGET /4 HTTP/1.0\r\n\r\n";
  Transcript t = ParseRequests(input);
  ASSERT_FALSE(t.error) << t.Text();
  EXPECT_EQ(t.Text(), "GET /1 |  | \nPOST /2 | abc | \nPOST /3 | x | \nGET /4 |  | \n");
}

// Inputs, valid and invalid, that every feeding style must treat the same.
const char* const kFeedingCases[] = {
    "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n"
    "10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.1\r\nHost: b\r\n\r\n",
    "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\nHost: a\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: v\n\r\n",
};

TEST(Http1RequestTest, ByteAtATimeEqualsAllAtOnce) {
  for (const char* input : kFeedingCases) {
    std::string whole = ParseRequests(input).Text();
    for (size_t piece : {1, 2, 3, 7}) {
      EXPECT_EQ(ParseRequests(input, piece).Text(), whole) << "piece " << piece << ": " << input;
    }
  }
}

TEST(Http1RequestTest, ByteAtATimeAcrossSlicesCutsTheSameBody) {
  // Every byte in its own block: the head spans slices and is flattened.
  std::string input = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody";
  RequestParser parser;
  Buffer in;
  std::string body;
  bool head = false, done = false;
  for (char c : input) {
    Buffer one;
    one.Reserve(1, 1)[0] = c;
    one.Commit(1);
    in.Append(std::move(one));
    for (Event ev = parser.Next(&in); ev.type != Event::kNeedMore; ev = parser.Next(&in)) {
      ASSERT_NE(ev.type, Event::kError) << ErrorCodeName(parser.error().code);
      if (ev.type == Event::kHead) {
        head = true;
        EXPECT_EQ(parser.head().target, "/x");
        EXPECT_EQ(parser.head().fields.Get("host"), "a");
      }
      if (ev.type == Event::kBody) body += ev.body.ToString();
      if (ev.type == Event::kComplete) done = true;
    }
  }
  EXPECT_TRUE(head);
  EXPECT_TRUE(done);
  EXPECT_EQ(body, "body");
}

TEST(Http1RequestTest, KeepAliveFollowsVersionAndConnection) {
  struct Case {
    const char* input;
    bool keep_alive;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
      {"GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n", false},
      {"GET / HTTP/1.1\r\nHost: a\r\nConnection: te, close\r\n\r\n", false},
      {"GET / HTTP/1.0\r\n\r\n", false},
      {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
      {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
  };
  for (const Case& c : cases) {
    RequestParser parser;
    EXPECT_EQ(ParseHead(c.input, &parser).keep_alive, c.keep_alive) << c.input;
  }
}

TEST(Http1RequestTest, ExpectContinueAndUpgrade) {
  RequestParser parser;
  RequestHead h = ParseHead(
      "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", &parser);
  EXPECT_TRUE(h.expect_continue);
  RequestParser p10;
  EXPECT_FALSE(
      ParseHead("PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", &p10)
          .expect_continue);
  RequestParser ws;
  h = ParseHead(
      "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
      "\r\n",
      &ws);
  EXPECT_TRUE(h.upgrade);
  EXPECT_EQ(h.fields.Get("upgrade"), "websocket");
  RequestParser no_conn;
  EXPECT_FALSE(ParseHead("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n", &no_conn).upgrade);
}

TEST(Http1RequestTest, TargetForms) {
  RequestParser p1;
  RequestHead h =
      ParseHead("GET http://origin.example:81/x?y HTTP/1.1\r\nHost: other\r\n\r\n", &p1);
  EXPECT_EQ(h.target_form, TargetForm::kAbsolute);
  EXPECT_EQ(h.authority, "origin.example:81");  // RFC 9112 §3.2.2: the target wins
  RequestParser p2;
  h = ParseHead("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &p2);
  EXPECT_EQ(h.target_form, TargetForm::kAsterisk);
  RequestParser p3;
  h = ParseHead("CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n", &p3);
  EXPECT_EQ(h.target_form, TargetForm::kAuthority);
  EXPECT_EQ(h.authority, "[::1]:443");

  EXPECT_EQ(RequestError("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), ErrorCode::kBadTarget);
  EXPECT_EQ(RequestError("CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n"), ErrorCode::kBadTarget);
  EXPECT_EQ(RequestError("CONNECT /x HTTP/1.1\r\nHost: a\r\n\r\n"), ErrorCode::kBadTarget);
  EXPECT_EQ(RequestError("GET example.com/x HTTP/1.1\r\nHost: a\r\n\r\n"), ErrorCode::kBadTarget);
  EXPECT_EQ(RequestError("GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n"), ErrorCode::kBadTarget);
  EXPECT_EQ(RequestError("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n"), ErrorCode::kBadTarget);
  EXPECT_EQ(RequestError("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), ErrorCode::kBadTarget);
}

TEST(Http1RequestTest, VersionsOtherThan10And11AreTheirOwnError) {
  Transcript t = ParseRequests("GET / HTTP/2.0\r\nHost: a\r\n\r\n");
  EXPECT_EQ(t.error, ErrorCode::kUnsupportedVersion);
  EXPECT_EQ(t.error_status, 505);
  EXPECT_EQ(RequestError("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), ErrorCode::kUnsupportedVersion);
  EXPECT_EQ(RequestError("GET / HTTP/0.9\r\n\r\n"), ErrorCode::kUnsupportedVersion);
  EXPECT_EQ(RequestError("GET / http/1.1\r\nHost: a\r\n\r\n"), ErrorCode::kBadVersion);
  EXPECT_EQ(RequestError("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), ErrorCode::kBadVersion);
  EXPECT_EQ(RequestError("GET /\r\n\r\n"), ErrorCode::kBadRequestLine);
}

TEST(Http1RequestTest, HostRules) {
  EXPECT_EQ(RequestError("GET / HTTP/1.1\r\n\r\n"), ErrorCode::kBadHost);
  EXPECT_EQ(RequestError("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), ErrorCode::kBadHost);
  EXPECT_EQ(RequestError("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), ErrorCode::kBadHost);
  EXPECT_EQ(RequestError("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), ErrorCode::kBadHost);
  EXPECT_EQ(RequestError("GET / HTTP/1.1\r\nHost: a:b\r\n\r\n"), ErrorCode::kBadHost);
  EXPECT_EQ(RequestError("GET / HTTP/1.1\r\nHost: a:80:80\r\n\r\n"), ErrorCode::kBadHost);
  EXPECT_FALSE(RequestError("GET / HTTP/1.0\r\n\r\n"));
  EXPECT_FALSE(RequestError("GET / HTTP/1.1\r\nHost: \r\n\r\n"));
  EXPECT_FALSE(RequestError("GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n"));
  EXPECT_FALSE(RequestError("GET / HTTP/1.1\r\nHost: xn--bcher-kva.example\r\n\r\n"));
}

TEST(Http1RequestTest, LimitsHaveTheirOwnStatus) {
  Limits limits;
  limits.max_request_line_bytes = 64;
  limits.max_header_bytes = 128;
  limits.max_header_fields = 3;
  limits.max_body_bytes = 10;
  limits.max_chunk_extension_bytes = 16;
  limits.max_trailer_bytes = 32;
  std::string long_target = "GET /" + std::string(70, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n";
  for (size_t piece : {0, 1}) {
    Transcript t = ParseRequests(long_target, piece, limits);
    EXPECT_EQ(t.error, ErrorCode::kRequestLineTooLong);
    EXPECT_EQ(t.error_status, 414);
    // A line that never ends is refused once it passes the limit.
    t = ParseRequests(std::string(200, 'G'), piece, limits);
    EXPECT_EQ(t.error, ErrorCode::kRequestLineTooLong);
    t = ParseRequests("GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(150, 'v') + "\r\n\r\n",
                      piece, limits);
    EXPECT_EQ(t.error, ErrorCode::kHeaderTooLarge);
    EXPECT_EQ(t.error_status, 431);
  }
  // Exactly at the limits passes.
  std::string at_line = "GET /" + std::string(64 - 14, 'a') + " HTTP/1.1";
  ASSERT_EQ(at_line.size(), 64u);
  EXPECT_FALSE(RequestError(at_line + "\r\nHost: a\r\n\r\n", limits));
  Transcript t =
      ParseRequests("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 0, limits);
  EXPECT_EQ(t.error, ErrorCode::kHeaderTooLarge);
  EXPECT_EQ(t.error_status, 431);
  t = ParseRequests("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", 0, limits);
  EXPECT_EQ(t.error, ErrorCode::kBodyTooLarge);
  EXPECT_EQ(t.error_status, 413);
  EXPECT_FALSE(
      RequestError("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", limits));
  std::string chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
  t = ParseRequests(chunked + "6\r\nabcdef\r\n5\r\nabcde\r\n0\r\n\r\n", 0, limits);
  EXPECT_EQ(t.error, ErrorCode::kBodyTooLarge);
  EXPECT_EQ(t.error_status, 413);
  EXPECT_EQ(RequestError(chunked + "1;aaaaaaaaaa\r\nx\r\n1;bbbbbbbbbb\r\nx\r\n0\r\n\r\n", limits),
            ErrorCode::kChunkExtensionTooLong);
  EXPECT_EQ(RequestError(chunked + "1;" + std::string(100, 'e') + "\r\nx\r\n0\r\n\r\n", limits),
            ErrorCode::kChunkExtensionTooLong);
  t = ParseRequests(chunked + "0\r\nT: " + std::string(40, 't') + "\r\n\r\n", 0, limits);
  EXPECT_EQ(t.error, ErrorCode::kTrailerTooLarge);
  EXPECT_EQ(t.error_status, 431);
}

TEST(Http1RequestTest, ErrorOfAnOverlongHeadDoesNotDependOnHowItArrived) {
  // Regression (found by http1_request_fuzz): a bare LF past the line limit
  // was reported as kBadLineEnding when the bytes came at once, but as
  // kRequestLineTooLong when they came in pieces.
  Limits limits;
  limits.max_request_line_bytes = 32;
  limits.max_header_bytes = 64;
  std::string line = std::string(40, 'x') + "\n";
  std::string fields = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(70, 'v') + "\n";
  for (size_t piece : {0, 1, 4}) {
    EXPECT_EQ(ParseRequests(line, piece, limits).error, ErrorCode::kRequestLineTooLong);
    EXPECT_EQ(ParseRequests(fields, piece, limits).error, ErrorCode::kHeaderTooLarge);
  }
}

TEST(Http1RequestTest, EqualDuplicateContentLengthsAreNormalizedToOne) {
  for (const char* input : {
           "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
           "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
           "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0005\r\n\r\nhello",
       }) {
    RequestParser parser;
    RequestHead h = ParseHead(input, &parser);
    EXPECT_EQ(h.content_length, 5u);
    EXPECT_EQ(h.fields.Count("content-length"), 1u) << input;
    EXPECT_EQ(h.fields.Get("content-length"), "5") << input;
  }
}

TEST(Http1RequestTest, FinishReportsCleanCloseOrTruncation) {
  RequestParser parser;
  Buffer in("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_EQ(parser.Next(&in).type, Event::kHead);
  ASSERT_EQ(parser.Next(&in).type, Event::kComplete);
  EXPECT_EQ(parser.Finish(in).type, Event::kClosed);

  RequestParser mid_head;
  Buffer partial("GET / HT");
  EXPECT_EQ(mid_head.Next(&partial).type, Event::kNeedMore);
  EXPECT_EQ(mid_head.Finish(partial).type, Event::kError);
  EXPECT_EQ(mid_head.error().code, ErrorCode::kTruncated);

  RequestParser mid_body;
  Buffer body("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc");
  ASSERT_EQ(mid_body.Next(&body).type, Event::kHead);
  ASSERT_EQ(mid_body.Next(&body).type, Event::kBody);
  EXPECT_EQ(mid_body.Finish(body).type, Event::kError);
  EXPECT_EQ(mid_body.error().code, ErrorCode::kTruncated);
}

TEST(Http1RequestTest, ErrorsAreSticky) {
  RequestParser parser;
  Buffer in("GET / HTTP/1.1\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(parser.Next(&in).type, Event::kError);
  EXPECT_EQ(parser.Next(&in).type, Event::kError);
  EXPECT_EQ(parser.error().code, ErrorCode::kBadLineEnding);
  EXPECT_EQ(parser.error().status, 400);
}

// ---- The ambiguous-framing battery ---------------------------------------
//
// Every request here is one the client sent as ONE request (plus perhaps a
// smuggled one hidden in its body). Each must be rejected, or parse as
// exactly one request that consumes every byte — never two.

// ---- Responses -----------------------------------------------------------

TEST(Http1ResponseTest, FramingFollowsMethodAndStatus) {
  const std::string cl = "Content-Length: 5\r\n\r\n";
  EXPECT_EQ(ParseResponses("HTTP/1.1 200 OK\r\n" + cl + "hello").Text(), "200 | hello | \n");
  // HEAD: Content-Length describes the body a GET would get; none follows.
  EXPECT_EQ(ParseResponses("HTTP/1.1 200 OK\r\n" + cl + "HTTP/1.1 204 No\r\n\r\n", "HEAD").Text(),
            "200 |  | \n204 |  | \n");
  EXPECT_EQ(ParseResponses("HTTP/1.1 304 Not Modified\r\n" + cl).Text(), "304 |  | \n");
  EXPECT_EQ(ParseResponses("HTTP/1.1 204 No Content\r\n\r\n").Text(), "204 |  | \n");
  // 1xx then the final response to the same request.
  EXPECT_EQ(ParseResponses("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\n"
                           "HTTP/1.1 200 OK\r\n" +
                           cl + "hello")
                .Text(),
            "100 |  | \n103 |  | \n200 | hello | \n");
  EXPECT_EQ(ParseResponses("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                           "3\r\nabc\r\n0\r\nGrpc-Status: 0\r\n\r\n")
                .Text(),
            "200 | abc | Grpc-Status=0;\n");
  // No framing fields: until close (Finish completes it).
  EXPECT_EQ(ParseResponses("HTTP/1.0 200 OK\r\n\r\nall of it").Text(), "200 | all of it | \n");
  EXPECT_EQ(ParseResponses("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz").Text(),
            "200 | zz | \n");
  // Without the close the until-close body stays open.
  EXPECT_EQ(ParseResponses("HTTP/1.1 200 OK\r\n\r\nab", "GET", 0, false).Text(),
            "200 | <open> | \n");
}

TEST(Http1ResponseTest, SwitchingProtocolsEndsHttp) {
  ResponseParser parser;
  parser.SetRequestMethod("CONNECT");
  Buffer in("HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x01");
  ASSERT_EQ(parser.Next(&in).type, Event::kHead);
  EXPECT_TRUE(parser.head().switched_protocols);
  EXPECT_FALSE(parser.head().keep_alive);
  EXPECT_EQ(parser.Next(&in).type, Event::kComplete);
  EXPECT_EQ(in.size(), 3u);  // tunnel bytes untouched
  EXPECT_EQ(parser.Next(&in).type, Event::kError);
  EXPECT_EQ(parser.error().code, ErrorCode::kAfterSwitch);

  ResponseParser ws;
  Buffer up(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
  ASSERT_EQ(ws.Next(&up).type, Event::kHead);
  EXPECT_TRUE(ws.head().switched_protocols);
  EXPECT_EQ(ws.Next(&up).type, Event::kComplete);
}

TEST(Http1ResponseTest, RequestMethodAppliesToOneFinalResponse) {
  ResponseParser parser;
  parser.SetRequestMethod("HEAD");
  Buffer in(
      "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: "
      "3\r\n\r\nabc");
  ASSERT_EQ(parser.Next(&in).type, Event::kHead);
  EXPECT_EQ(parser.head().framing, Framing::kNone);
  ASSERT_EQ(parser.Next(&in).type, Event::kComplete);
  ASSERT_EQ(parser.Next(&in).type, Event::kHead);
  EXPECT_EQ(parser.head().framing, Framing::kContentLength);
}

TEST(Http1ResponseTest, KeepAliveAndStrictness) {
  ResponseParser p10;
  Buffer in("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
  ASSERT_EQ(p10.Next(&in).type, Event::kHead);
  EXPECT_TRUE(p10.head().keep_alive);
  EXPECT_EQ(p10.head().version, Version::kHttp10);

  auto error_of = [](std::string input) {
    ResponseParser p;
    Transcript t =
        Drive(p, input, 0, true, [](const ResponseHead& h) { return std::to_string(h.status); });
    EXPECT_TRUE(!t.error || t.error_status == 502) << input;
    return t.error;
  };
  EXPECT_EQ(error_of("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ErrorCode::kConflictingFraming);
  EXPECT_EQ(error_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            ErrorCode::kBadTransferEncoding);
  EXPECT_EQ(error_of("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            ErrorCode::kBadTransferEncoding);
  EXPECT_EQ(error_of("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab"),
            ErrorCode::kBadContentLength);
  EXPECT_EQ(error_of("HTTP/1.1 2000 OK\r\n\r\n"), ErrorCode::kBadStatusLine);
  EXPECT_EQ(error_of("HTTP/1.1 099 OK\r\n\r\n"), ErrorCode::kBadStatusLine);
  EXPECT_EQ(error_of("HTTP/3.0 200 OK\r\n\r\n"), ErrorCode::kUnsupportedVersion);
  EXPECT_EQ(error_of("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"), ErrorCode::kBadLineEnding);
  EXPECT_EQ(error_of("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc"), ErrorCode::kTruncated);
  EXPECT_FALSE(error_of("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"));
}

TEST(Http1ResponseTest, ByteAtATimeEqualsAllAtOnce) {
  for (const char* input : {
           "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           "4\r\nabcd\r\n0\r\nT: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nxy"
           "HTTP/1.1 200 OK\r\n\r\nuntil close",
           "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nxyHTTP/1.1 200 OK\nX: y\r\n\r\n",
       }) {
    std::string whole = ParseResponses(input).Text();
    for (size_t piece : {1, 3}) {
      EXPECT_EQ(ParseResponses(input, "GET", piece).Text(), whole) << input;
    }
  }
}

// ---- Serialization -------------------------------------------------------

TEST(Http1WriteTest, EditedRequestHeadRoundTrips) {
  RequestParser parser;
  RequestHead h = ParseHead(
      "POST /api HTTP/1.1\r\nHost: front\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n"
      "Content-Length: 2\r\n\r\n",
      &parser);
  EXPECT_EQ(h.fields.Remove("connection"), 1u);
  h.fields.Remove("keep-alive");
  h.fields.Set("Host", "backend:9000");
  h.fields.Add("X-Forwarded-For", "127.0.0.1");
  h.target = h.fields.Own("/v2/api");
  Buffer out;
  WriteRequestHead(h, &out);
  EXPECT_EQ(out.ToString(),
            "POST /v2/api HTTP/1.1\r\nContent-Length: 2\r\nHost: backend:9000\r\n"
            "X-Forwarded-For: 127.0.0.1\r\n\r\n");
  RequestParser again;
  RequestHead back = ParseHead(out.ToString(), &again);
  EXPECT_EQ(back.authority, "backend:9000");
  EXPECT_EQ(back.content_length, 2u);
}

TEST(Http1WriteTest, ResponseHead) {
  ResponseHead h;
  h.status = 404;
  h.reason = "Not Found";
  h.fields.Add("Content-Length", "0");
  Buffer out;
  WriteResponseHead(h, &out);
  EXPECT_EQ(out.ToString(), "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
}

TEST(Http1WriteTest, ChunksMoveBodySlicesAndDecodeBack) {
  Buffer big;
  big.Append(std::string(70000, 'b'));
  const char* big_bytes = big.slice(0).data();
  Buffer out;
  AppendChunk(Buffer("hello"), &out);
  AppendChunk(Buffer(), &out);  // writes nothing: an empty chunk would end the body
  AppendChunk(std::move(big), &out);
  HeaderFields trailers;
  trailers.Add("Grpc-Status", "0");
  AppendLastChunk(&trailers, &out);
  bool shared = false;
  for (size_t i = 0; i < out.slice_count(); ++i) shared |= out.slice(i).data() == big_bytes;
  EXPECT_TRUE(shared) << "the 70000-byte piece was copied";
  EXPECT_TRUE(out.ToString().starts_with("5\r\nhello\r\n11170\r\nbbb"));

  ChunkedDecoder decoder;
  std::string body;
  while (true) {
    Event ev = decoder.Next(&out);
    ASSERT_NE(ev.type, Event::kError) << ErrorCodeName(decoder.error().code);
    ASSERT_NE(ev.type, Event::kNeedMore);
    if (ev.type == Event::kComplete) break;
    body += ev.body.ToString();
  }
  EXPECT_EQ(body, "hello" + std::string(70000, 'b'));
  EXPECT_EQ(decoder.trailers().Get("grpc-status"), "0");
  EXPECT_TRUE(out.empty());
}

}  // namespace
}  // namespace capstan::net::http1

namespace capstan::net::http1 {
namespace {

TEST(Http1TargetTest, SplitTargetGivesPathAndQueryForEveryForm) {
  struct Case {
    std::string_view request, path, query;
  };
  const Case cases[] = {
      {"GET /a/b?x=1&y HTTP/1.1\r\nHost: h\r\n\r\n", "/a/b", "x=1&y"},
      {"GET /plain HTTP/1.1\r\nHost: h\r\n\r\n", "/plain", ""},
      {"GET http://h:80/a?x HTTP/1.1\r\nHost: h\r\n\r\n", "/a", "x"},
      {"GET http://h HTTP/1.1\r\nHost: h\r\n\r\n", "/", ""},
      {"GET http://h?x/y HTTP/1.1\r\nHost: h\r\n\r\n", "/", "x/y"},
      {"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "*", ""},
  };
  for (const Case& c : cases) {
    RequestParser parser;
    RequestHead head = ParseHead(c.request, &parser);
    std::string_view path, query;
    SplitTarget(head, &path, &query);
    EXPECT_EQ(path, c.path) << c.request;
    EXPECT_EQ(query, c.query) << c.request;
  }
  EXPECT_EQ(ReasonPhrase(404), "Not Found");
  EXPECT_EQ(ReasonPhrase(431), "Request Header Fields Too Large");
  EXPECT_EQ(ReasonPhrase(299), "");
}

TEST(Http1FieldsTest, CookieFindsANamedPairInEveryCookieField) {
  HeaderFields fields;
  fields.Add("Cookie", "theme=dark; session = abc123 ;lang=en");
  fields.Add("cookie", "cart=7");
  EXPECT_EQ(fields.Cookie("session"), "abc123");
  EXPECT_EQ(fields.Cookie("theme"), "dark");
  EXPECT_EQ(fields.Cookie("lang"), "en");
  EXPECT_EQ(fields.Cookie("cart"), "7");              // from the second field
  EXPECT_EQ(fields.Cookie("Session"), std::nullopt);  // names are case-sensitive
  EXPECT_EQ(fields.Cookie("sess"), std::nullopt);
  HeaderFields none;
  none.Add("x-cookie", "session=1");
  EXPECT_EQ(none.Cookie("session"), std::nullopt);
}

}  // namespace
}  // namespace capstan::net::http1
