// Request smuggling: every request whose framing two parsers could read
// differently (RFC 9112 §6.3, §11.2) is rejected, or parses as exactly one
// message whatever pieces it arrives in.
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "net/http1.h"
#include "net/http1_test_util.h"

namespace capstan::net::http1 {
namespace {

using testing::ParseRequests;
using testing::Transcript;

enum class Expect { kReject, kOne };
struct SmugglingCase {
  const char* name;
  std::string input;
  Expect expect;
  std::optional<ErrorCode> code = std::nullopt;  // checked when set
  const char* body = "";                         // checked for kOne
};

std::string Post(std::string_view fields, std::string_view body) {
  return "POST / HTTP/1.1\r\nHost: a\r\n" + std::string(fields) + "\r\n" + std::string(body);
}
std::string Chunked(std::string_view chunks) {
  return Post("Transfer-Encoding: chunked\r\n", chunks);
}
const std::string kSmuggled = "GET /admin HTTP/1.1\r\nHost: a\r\n\r\n";

std::vector<SmugglingCase> SmugglingCases() {
  using E = ErrorCode;
  return {
      {"CL.TE", Post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\nX"),
       Expect::kReject, E::kConflictingFraming},
      {"TE.CL", Post("Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "5c\r\n" + kSmuggled),
       Expect::kReject, E::kConflictingFraming},
      {"CL.TE tab", Post("Content-Length: 4\r\nTransfer-Encoding:\tchunked\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kConflictingFraming},
      {"TE.TE xchunked", Post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), Expect::kReject,
       E::kBadTransferEncoding},
      {"TE.TE space before colon", Post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kWhitespaceBeforeColon},
      {"TE.TE tab before colon", Post("Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kWhitespaceBeforeColon},
      {"TE.TE second line not chunked",
       Post("Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n", "0\r\n\r\n"), Expect::kReject,
       E::kBadTransferEncoding},
      {"TE.TE chunked, identity", Post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kBadTransferEncoding},
      {"TE identity", Post("Transfer-Encoding: identity\r\nContent-Length: 0\r\n", ""),
       Expect::kReject, E::kConflictingFraming},
      {"TE identity alone", Post("Transfer-Encoding: identity\r\n", ""), Expect::kReject,
       E::kBadTransferEncoding},
      {"TE chunked, gzip", Post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kBadTransferEncoding},
      {"TE chunked twice (two lines)",
       Post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kBadTransferEncoding},
      {"TE chunked twice (list)", Post("Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kBadTransferEncoding},
      {"TE empty list element", Post("Transfer-Encoding: , chunked\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kBadTransferEncoding},
      {"TE with parameter", Post("Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kBadTransferEncoding},
      {"TE with obs-text", Post("Transfer-Encoding: chunked\xff\r\n", "0\r\n\r\n"), Expect::kReject,
       E::kBadTransferEncoding},
      {"TE with vertical tab",
       Post("Transfer-Encoding: \x0b"
            "chunked\r\n",
            "0\r\n\r\n"),
       Expect::kReject, E::kBadFieldValue},
      {"TE uppercase is chunked", Post("Transfer-Encoding: CHUNKED\r\n", "5\r\nhello\r\n0\r\n\r\n"),
       Expect::kOne, std::nullopt, "hello"},
      {"TE odd spacing is chunked",
       Post("Transfer-Encoding:   chunked  \r\n", "5\r\nhello\r\n0\r\n\r\n"), Expect::kOne,
       std::nullopt, "hello"},
      {"TE in HTTP/1.0",
       "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + kSmuggled,
       Expect::kReject, E::kBadTransferEncoding},
      {"TE and CL in HTTP/1.0",
       "POST / HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
       Expect::kReject},
      {"obs-fold of TE", Post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"), Expect::kReject,
       E::kObsFold},
      {"obs-fold with tab", Post("X: y\r\n\tTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kObsFold},
      {"whitespace before first field",
       "POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: a\r\n\r\n0\r\n\r\n",
       Expect::kReject, E::kObsFold},
      {"CL plus sign", Post("Content-Length: +5\r\n", "hello"), Expect::kReject,
       E::kBadContentLength},
      {"CL minus sign", Post("Content-Length: -5\r\n", "hello"), Expect::kReject,
       E::kBadContentLength},
      {"CL differing list", Post("Content-Length: 5, 6\r\n", "hello!"), Expect::kReject,
       E::kBadContentLength},
      {"CL differing lines", Post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
       Expect::kReject, E::kBadContentLength},
      {"CL space inside", Post("Content-Length: 5 5\r\n", "hello"), Expect::kReject,
       E::kBadContentLength},
      {"CL hex", Post("Content-Length: 0x5\r\n", "hello"), Expect::kReject, E::kBadContentLength},
      {"CL decimal point", Post("Content-Length: 5.0\r\n", "hello"), Expect::kReject,
       E::kBadContentLength},
      {"CL empty", Post("Content-Length: \r\n", ""), Expect::kReject, E::kBadContentLength},
      {"CL empty list element", Post("Content-Length: 5,\r\n", "hello"), Expect::kReject,
       E::kBadContentLength},
      {"CL 20 digits", Post("Content-Length: 18446744073709551621\r\n", "hello"), Expect::kReject,
       E::kBadContentLength},
      {"CL space before colon", Post("Content-Length : 5\r\n", "hello"), Expect::kReject,
       E::kWhitespaceBeforeColon},
      {"CL leading zeros normalized", Post("Content-Length: 005\r\n", "hello"), Expect::kOne,
       std::nullopt, "hello"},
      {"CL equal list normalized", Post("Content-Length: 5, 5\r\n", "hello"), Expect::kOne,
       std::nullopt, "hello"},
      {"NUL in value", Post(std::string("X: a\0b\r\nContent-Length: 5\r\n", 27), "hello"),
       Expect::kReject, E::kBadFieldValue},
      {"NUL in name", Post(std::string("Transfer-Encoding\0: chunked\r\n", 30), "0\r\n\r\n"),
       Expect::kReject, E::kBadFieldName},
      {"bare CR in value", Post("X: a\rTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kBadLineEnding},
      {"bare LF line ending", "GET / HTTP/1.1\nHost: a\n\n", Expect::kReject, E::kBadLineEnding},
      {"bare LF mid-head", Post("Content-Length: 0\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"),
       Expect::kReject, E::kBadLineEnding},
      {"bare CR in request line", "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", Expect::kReject,
       E::kBadLineEnding},
      {"chunk size 0x", Chunked("0x5\r\nhello\r\n0\r\n\r\n"), Expect::kReject, E::kBadChunkSize},
      {"chunk size plus", Chunked("+5\r\nhello\r\n0\r\n\r\n"), Expect::kReject, E::kBadChunkSize},
      {"chunk size minus", Chunked("-1\r\nhello\r\n0\r\n\r\n"), Expect::kReject, E::kBadChunkSize},
      {"chunk size leading space", Chunked(" 5\r\nhello\r\n0\r\n\r\n"), Expect::kReject,
       E::kBadChunkSize},
      {"chunk size trailing space", Chunked("5 \r\nhello\r\n0\r\n\r\n"), Expect::kReject,
       E::kBadChunkExtension},
      {"chunk size 17 digits", Chunked("00000000000000005\r\nhello\r\n0\r\n\r\n"), Expect::kReject,
       E::kBadChunkSize},
      {"chunk size overflow", Chunked("1ffffffffffffffff\r\nhello\r\n0\r\n\r\n"), Expect::kReject,
       E::kBadChunkSize},
      {"chunk size 2^64-1", Chunked("ffffffffffffffff\r\nhello\r\n0\r\n\r\n"), Expect::kReject,
       E::kBodyTooLarge},
      {"chunk size empty", Chunked("\r\nhello\r\n0\r\n\r\n"), Expect::kReject, E::kBadChunkSize},
      {"chunk data without CRLF", Chunked("5\r\nhelloXX0\r\n\r\n" + kSmuggled), Expect::kReject,
       E::kBadChunkData},
      {"chunk data with LF only", Chunked("5\r\nhello\n0\r\n\r\n"), Expect::kReject,
       E::kBadChunkData},
      {"chunk line bare LF", Chunked("5\nhello\r\n0\r\n\r\n"), Expect::kReject, E::kBadLineEnding},
      {"chunk size too short for data", Chunked("3\r\nhello\r\n0\r\n\r\n"), Expect::kReject,
       E::kBadChunkData},
      {"last chunk bare LF", Chunked("0\n\r\n"), Expect::kReject, E::kBadLineEnding},
      {"chunk ext unterminated quote", Chunked("5;a=\"x\r\nhello\r\n0\r\n\r\n"), Expect::kReject,
       E::kBadChunkExtension},
      {"chunk ext without name", Chunked("5;\r\nhello\r\n0\r\n\r\n"), Expect::kReject,
       E::kBadChunkExtension},
      {"chunk ext bare CR", Chunked("5;a=b\rc\r\nhello\r\n0\r\n\r\n"), Expect::kReject,
       E::kBadChunkExtension},
      {"chunk ext valid", Chunked("5 ; a = b\r\nhello\r\n0\r\n\r\n"), Expect::kOne, std::nullopt,
       "hello"},
      {"trailer with bare LF", Chunked("0\r\nX: y\n\r\n"), Expect::kReject, E::kBadLineEnding},
      {"trailer obs-fold", Chunked("0\r\nX: y\r\n z\r\n\r\n"), Expect::kReject, E::kObsFold},
      {"trailer framing fields stay trailers",
       Chunked("5\r\nhello\r\n0\r\nContent-Length: 100\r\n\r\n"), Expect::kOne, std::nullopt,
       "hello"},
      {"missing Host", "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", Expect::kReject,
       E::kBadHost},
      {"two Hosts", Post("Host: b\r\n", ""), Expect::kReject, E::kBadHost},
      {"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Expect::kReject, E::kBadHost},
      {"double space in request line", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Expect::kReject,
       E::kBadRequestLine},
      {"trailing space in request line", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", Expect::kReject,
       E::kBadRequestLine},
      {"tab in request line", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", Expect::kReject,
       E::kBadRequestLine},
      {"bad method token", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", Expect::kReject,
       E::kBadRequestLine},
      {"smuggled request in target", "GET /a\r\nHost: a HTTP/1.1\r\nHost: a\r\n\r\n",
       Expect::kReject},
      {"absolute-form with other Host", "GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", Expect::kOne},
  };
}

TEST(Http1SmugglingTest, EveryAmbiguousRequestIsRejectedOrParsesAsExactlyOne) {
  std::vector<SmugglingCase> cases = SmugglingCases();
  EXPECT_GE(cases.size(), 40u);
  size_t rejected = 0;
  for (const SmugglingCase& c : cases) {
    SCOPED_TRACE(c.name);
    Transcript whole = ParseRequests(c.input);
    for (size_t piece : {1, 5}) {
      EXPECT_EQ(ParseRequests(c.input, piece).Text(), whole.Text()) << "piece " << piece;
    }
    EXPECT_LE(whole.heads.size(), 1u) << whole.Text();
    if (c.expect == Expect::kReject) {
      ASSERT_TRUE(whole.error.has_value()) << whole.Text();
      EXPECT_GE(whole.error_status, 400);
      if (c.code) {
        EXPECT_EQ(ErrorCodeName(*whole.error), ErrorCodeName(*c.code));
      }
      ++rejected;
    } else {
      EXPECT_FALSE(whole.error.has_value()) << whole.Text();
      EXPECT_EQ(whole.completed, 1u);
      EXPECT_EQ(whole.bodies.empty() ? "" : whole.bodies[0], c.body);
    }
  }
  EXPECT_GE(rejected, 40u);
}

}  // namespace
}  // namespace capstan::net::http1
