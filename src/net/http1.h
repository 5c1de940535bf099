// HTTP/1.1 codec (RFC 9112) over net::Buffer, written for a proxy: strict
// about framing, incremental, and without copies of bodies.
//
// Parsing. A RequestParser or ResponseParser is fed a connection's input
// Buffer; each Next() call consumes what it uses from the front and returns
// one Event: kNeedMore (append more bytes and call again), kHead (head() is a
// parsed message head), kBody (event.body is the next piece of the body, Cut
// from the input: the bytes are shared, not copied), kComplete (the message
// is over; trailers() holds a chunked body's trailer fields) or kError
// (error() says what and which status a server answers). After kComplete the
// next call parses the next message from the remaining bytes (pipelining).
// Bytes may arrive in any pieces, down to one at a time: the result is the
// same as when everything arrives at once (the unit tests and fuzz targets
// check this).
//
// Strictness, for a proxy that must never forward ambiguous framing (each
// rule names its ErrorCode; a server answers error().status and closes):
//  - Content-Length with Transfer-Encoding; a malformed Content-Length (not
//    1*DIGIT, more than 19 digits, signs, spaces inside); differing values.
//    Equal duplicates ("5, 5" or two lines of 5) and leading zeros are
//    NORMALIZED: the head then carries one canonical "Content-Length: 5".
//  - Transfer-Encoding other than a list ending in exactly one `chunked`
//    (`chunked, gzip`, `identity`, `xchunked`, `chunked, chunked`, empty list
//    elements, codings with parameters); any Transfer-Encoding in HTTP/1.0.
//  - Bare LF as a line ending (RFC 9112 §2.2 allows accepting it; a proxy
//    must not, since the next hop may disagree), bare CR anywhere, obs-fold,
//    whitespace between a field name and its colon or before the first
//    field, non-token bytes in names, CTLs other than HTAB (NUL, CR, LF...)
//    in values.
//  - Requests: a request line that is not `token SP target SP HTTP/x.y`
//    with single spaces; a target not in the form its method allows
//    (origin-form, absolute-form, authority-form for CONNECT only, `*` for
//    OPTIONS only); a missing or repeated Host in HTTP/1.1 (repeated in
//    1.0), an invalid Host value. Versions other than HTTP/1.0 and HTTP/1.1
//    are kUnsupportedVersion (505).
//  - Chunked: a chunk size that is not 1..16 hex digits (no `0x`, signs or
//    whitespace; overflow impossible), extensions that break RFC 9112 §7.1.1
//    grammar or exceed Limits::max_chunk_extension_bytes, chunk data not
//    followed by CRLF, trailers that break field rules or exceed
//    Limits::max_trailer_bytes.
//  - Responses: framed per RFC 9112 §6.3 given the request's method
//    (ResponseParser::SetRequestMethod): no body for HEAD, 1xx, 204, 304;
//    2xx to CONNECT and 101 switch protocols (head().switched_protocols, the
//    remaining input is the tunnel's); chunked; Content-Length; otherwise
//    (and for a Transfer-Encoding without chunked) until the server closes
//    (Finish). Every response error carries status 502.
// Leading empty lines before a request line are skipped (RFC 9112 §2.2).
// Trailer fields are kept as received: a proxy drops the ones that must not
// be trailers (framing, routing) before forwarding them.
//
// Serialization. WriteRequestHead / WriteResponseHead append a head (edited
// or not: HeaderFields has Add/Remove/Set) to an output Buffer; AppendChunk
// frames a body piece as one chunk by moving its slices (no copy), and
// AppendLastChunk ends a chunked body with optional trailers.
//
// Thread-safety: parsers, heads and fields are values owned by one thread.
//
//   http1::RequestParser parser;
//   while (true) {
//     http1::Event ev = parser.Next(&socket.input());
//     switch (ev.type) {
//       case http1::Event::kNeedMore: co_await socket.ReadMore(); break;
//       case http1::Event::kHead:     Route(parser.head()); break;
//       case http1::Event::kBody:     upstream.output().Append(std::move(ev.body)); break;
//       case http1::Event::kComplete: Finish(parser.trailers()); break;
//       case http1::Event::kError:    Reply(parser.error().status); Close(); break;
//       case http1::Event::kClosed:   break;  // only from Finish()
//     }
//   }
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "net/buffer.h"

namespace capstan::net::http1 {

// Limits on what a peer may send. Each has its own ErrorCode and status.
struct Limits {
  // Request line (or status line), CRLF excluded. 414 (nginx: 8 KiB buffers).
  size_t max_request_line_bytes = 8 * 1024;
  // The field section after the start line, final CRLF included. 431
  // (nginx's 4 x 8 KiB large_client_header_buffers).
  size_t max_header_bytes = 32 * 1024;
  // Field lines in one head. 431 (Envoy's default is 100).
  size_t max_header_fields = 100;
  // Body bytes of one message, whatever its framing. 413 (nginx's
  // client_max_body_size). ResponseLimits() lifts it.
  uint64_t max_body_bytes = 1024 * 1024;
  // Chunk-extension bytes summed over one message (every byte of a chunk
  // line after its size). 400.
  size_t max_chunk_extension_bytes = 16 * 1024;
  // Trailer section of a chunked message, final CRLF included. 431.
  size_t max_trailer_bytes = 16 * 1024;
};
// Limits for a proxy's upstream responses: no body limit.
Limits ResponseLimits();

enum class ErrorCode : uint8_t {
  kBadRequestLine,      // not `method SP target SP version`, bad method token
  kBadTarget,           // target form not allowed for the method, bad bytes
  kBadVersion,          // not `HTTP/DIGIT.DIGIT`
  kUnsupportedVersion,  // HTTP/x.y other than 1.0 and 1.1 (505)
  kBadStatusLine,       // response: not `HTTP/x.y SP 3DIGIT SP reason`
  kBadLineEnding,       // bare LF or bare CR
  kObsFold,             // a field line starting with SP or HTAB
  kBadFieldName,        // empty or non-token field name
  kWhitespaceBeforeColon,
  kBadFieldValue,        // a CTL other than HTAB in a value
  kBadHost,              // missing, repeated or invalid Host
  kBadContentLength,     // malformed or differing Content-Length
  kConflictingFraming,   // Content-Length with Transfer-Encoding
  kBadTransferEncoding,  // not ending in exactly one chunked; or in HTTP/1.0
  kBadChunkSize,
  kBadChunkExtension,
  kBadChunkData,        // chunk data not followed by CRLF
  kRequestLineTooLong,  // 414
  kHeaderTooLarge,      // 431: header bytes or field count
  kBodyTooLarge,        // 413
  kChunkExtensionTooLong,
  kTrailerTooLarge,  // 431
  kTruncated,        // the peer closed inside a message
  kAfterSwitch,      // Next() after 101 / CONNECT 2xx / read-until-close
};

struct Error {
  ErrorCode code = ErrorCode::kBadRequestLine;
  // The status a server answers before closing (400, 413, 414, 431, 505);
  // 502 for every response-parsing error (what a proxy tells its client).
  int status = 400;
  const char* reason = "";  // short and static, e.g. "bad chunk size"
};

enum class Version : uint8_t { kHttp10, kHttp11 };
std::string_view VersionText(Version v);  // "HTTP/1.0", "HTTP/1.1"

// How the message's body is delimited (RFC 9112 §6.3).
enum class Framing : uint8_t { kNone, kContentLength, kChunked, kUntilClose };

// Header fields in received order: name/value views into storage the fields
// own (the received head, in one block, plus an arena for edits). Lookup is
// case-insensitive. Parsing allocates nothing per field.
class HeaderFields {
 public:
  struct Field {
    std::string_view name;
    std::string_view value;
  };

  HeaderFields() = default;
  HeaderFields(HeaderFields&&) = default;
  HeaderFields& operator=(HeaderFields&&) = default;

  size_t size() const { return fields_.size(); }
  bool empty() const { return fields_.empty(); }
  const Field& operator[](size_t i) const { return fields_[i]; }
  auto begin() const { return fields_.begin(); }
  auto end() const { return fields_.end(); }

  // The value of the first field named `name`, if any.
  std::optional<std::string_view> Get(std::string_view name) const;
  // The value of cookie `name` from the Cookie fields (RFC 6265 §5.4: pairs
  // separated by "; ", several Cookie fields as HTTP/2 sends them); the
  // first occurrence, without surrounding quotes' removal.
  std::optional<std::string_view> Cookie(std::string_view name) const;
  size_t Count(std::string_view name) const;
  // True when some field `name`, read as a comma-separated list, holds
  // `token` (case-insensitive): HasToken("Connection", "close").
  bool HasToken(std::string_view name, std::string_view token) const;

  // Edits for forwarding; the strings are copied into the fields' arena.
  void Add(std::string_view name, std::string_view value);
  // Removes every field `name`; returns how many.
  size_t Remove(std::string_view name);
  // Replaces every field `name` with one (added at the end if none).
  void Set(std::string_view name, std::string_view value);
  void Clear();

  // Bytes WriteTo appends: "name: value\r\n" per field.
  size_t SerializedSize() const;
  // Writes SerializedSize() bytes at out; returns the end.
  char* WriteTo(char* out) const;

  // Copies `text` into the arena; the view lives as long as these fields.
  std::string_view Own(std::string_view text);

 private:
  friend class Codec;
  absl::InlinedVector<Field, 16> fields_;
  Buffer storage_;  // the received bytes the views point into (one slice)
  // Edited text, bump-allocated in blocks that never move (views stay
  // valid); nothing is allocated until the first edit, and a few edits
  // share one block. (std::deque would allocate even when empty.)
  std::vector<std::unique_ptr<char[]>> arena_blocks_;
  size_t arena_used_ = 0;  // in the last block
  size_t arena_capacity_ = 0;
};

enum class TargetForm : uint8_t { kOrigin, kAbsolute, kAuthority, kAsterisk };

struct RequestHead {
  std::string_view method;  // case-sensitive token, e.g. "GET"
  std::string_view target;  // as received
  TargetForm target_form = TargetForm::kOrigin;
  Version version = Version::kHttp11;
  HeaderFields fields;

  // Derived while parsing.
  // The target's authority for absolute- and authority-form (RFC 9112
  // §3.2.2: it overrides Host), else the Host value.
  std::string_view authority;
  Framing framing = Framing::kNone;
  uint64_t content_length = 0;  // when framing == kContentLength
  // HTTP/1.1 without Connection: close, or HTTP/1.0 with keep-alive.
  bool keep_alive = true;
  bool expect_continue = false;  // Expect: 100-continue
  // Upgrade with Connection: upgrade (HTTP/1.1); the protocols are in the
  // Upgrade field. The switch happens only if the server answers 101.
  bool upgrade = false;
};

struct ResponseHead {
  Version version = Version::kHttp11;
  int status = 200;
  std::string_view reason;
  HeaderFields fields;

  Framing framing = Framing::kNone;
  uint64_t content_length = 0;
  bool keep_alive = true;
  // 101, or 2xx to CONNECT: the connection is a tunnel after this head.
  bool switched_protocols = false;
};

struct Event {
  enum Type : uint8_t {
    kNeedMore,  // the input holds no whole next step: read more
    kHead,      // head() is ready
    kBody,      // `body` is the next piece of the body
    kComplete,  // the message ended (trailers() for chunked)
    kError,     // error(); sticky
    kClosed,    // Finish(): the peer closed between messages
  };
  Type type = kNeedMore;
  Buffer body;
};

namespace internal {
// Where a resumable scan for the end of a block of CRLF-terminated lines
// stopped: offsets into the input, which only grows at its end meanwhile.
struct LineScan {
  size_t scanned = 0;         // bytes looked at
  size_t line_start = 0;      // offset of the line being scanned
  size_t first_line_end = 0;  // offset after the first line's LF; 0: none yet
  char last = 0;              // the byte at scanned - 1
  size_t lines = 0;           // line ends seen
};
}  // namespace internal

// Decodes a chunked body (RFC 9112 §7.1) incrementally. Used by the parsers;
// public so it can be fuzzed and reused alone.
class ChunkedDecoder {
 public:
  // `request`: errors carry a server's status (400, 413, 431); otherwise
  // they carry 502 (a proxy parsing an upstream response).
  explicit ChunkedDecoder(const Limits& limits = {}, bool request = true)
      : limits_(limits), request_(request) {}

  // kNeedMore, kBody (a piece of chunk data), kComplete (after the trailer
  // section; trailers() is filled) or kError (sticky until Reset). After
  // kComplete the next call starts a new body.
  Event Next(Buffer* input);
  const HeaderFields& trailers() const { return trailers_; }
  HeaderFields& trailers() { return trailers_; }
  const Error& error() const { return error_; }
  uint64_t body_bytes() const { return body_bytes_; }
  void Reset();

 private:
  enum class State : uint8_t { kSize, kData, kDataEnd, kTrailers, kError };
  Event Fail(ErrorCode code, const char* reason);

  Limits limits_;
  bool request_;
  State state_ = State::kSize;
  uint64_t chunk_left_ = 0;
  uint64_t body_bytes_ = 0;
  size_t extension_bytes_ = 0;
  internal::LineScan scan_;
  std::string scratch_;  // a chunk line split across slices
  HeaderFields trailers_;
  Error error_;
};

class MessageParser {
 public:
  MessageParser(const MessageParser&) = delete;
  MessageParser& operator=(const MessageParser&) = delete;

  // REQUIRES: between calls the caller only appends to *input.
  Event Next(Buffer* input);
  // The peer closed its side: kComplete for a body read until close,
  // kClosed between messages (nothing pending in *input), else kError
  // kTruncated.
  Event Finish(const Buffer& input);

  const Error& error() const { return error_; }
  // Trailer fields of the message that just completed (chunked only).
  const HeaderFields& trailers() const { return chunked_.trailers(); }

 protected:
  MessageParser(const Limits& limits, bool request);
  virtual ~MessageParser() = default;
  // Parses the head block (start line through the empty line; `lines`
  // line ends in all) into the subclass's head; sets framing_ and
  // body_left_.
  virtual bool ParseHead(Buffer raw, size_t lines) = 0;
  Event Fail(ErrorCode code, const char* reason);
  // Records an error from ParseHead; returns false for `return SetError(..)`.
  bool SetError(ErrorCode code, const char* reason);

  enum class State : uint8_t { kHead, kLength, kChunked, kUntilClose, kEnd, kSwitched, kError };
  Limits limits_;
  bool request_;
  State state_ = State::kHead;
  Framing framing_ = Framing::kNone;
  bool switched_ = false;       // the head switches protocols after it
  bool informational_ = false;  // 1xx other than 101: another head follows
  uint64_t body_left_ = 0;
  uint64_t body_bytes_ = 0;
  internal::LineScan scan_;  // for the end of the head
  std::string scratch_;      // leading CRLF split across slices
  // Responses: the request was HEAD / CONNECT (see SetRequestMethod).
  bool head_request_ = false;
  bool connect_request_ = false;
  ChunkedDecoder chunked_;
  Error error_;
};

class RequestParser final : public MessageParser {
 public:
  explicit RequestParser(const Limits& limits = {}) : MessageParser(limits, true) {}
  // Valid from kHead until the next head is parsed; may be moved out.
  RequestHead& head() { return head_; }

 private:
  bool ParseHead(Buffer raw, size_t lines) override;
  RequestHead head_;
};

class ResponseParser final : public MessageParser {
 public:
  explicit ResponseParser(const Limits& limits = ResponseLimits()) : MessageParser(limits, false) {}
  // The method of the request the next response answers (HEAD and CONNECT
  // change its framing). Holds until that request's final (non-1xx)
  // response completes, then reverts to GET.
  void SetRequestMethod(std::string_view method);
  ResponseHead& head() { return head_; }

 private:
  bool ParseHead(Buffer raw, size_t lines) override;
  ResponseHead head_;
};

// Serialization. Heads are written as they are: a proxy edits fields (and
// framing headers) before writing. Each appends in one reservation.
void WriteRequestHead(const RequestHead& head, Buffer* out);
void WriteResponseHead(const ResponseHead& head, Buffer* out);
// One chunk holding `piece` (moved, not copied). An empty piece writes
// nothing: a zero-size chunk would end the body.
void AppendChunk(Buffer&& piece, Buffer* out);
// The last chunk and the trailer section.
void AppendLastChunk(const HeaderFields* trailers, Buffer* out);

std::string_view ErrorCodeName(ErrorCode code);
// The reason phrase of a status ("Not Found"); "" for one not listed (a
// reason phrase may be empty).
std::string_view ReasonPhrase(int status);
// A request's target as path and query: origin-form "/a?x" and absolute-form
// "http://h/a?x" both give "/a" and "x"; "http://h" and "http://h?x" give
// "/"; "*" gives "*".
void SplitTarget(const RequestHead& head, std::string_view* path, std::string_view* query);

}  // namespace capstan::net::http1
