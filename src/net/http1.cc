#include "net/http1.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "absl/strings/ascii.h"
#include "net/http1_internal.h"

namespace capstan::net::http1 {

using internal::AllAre;
using internal::Is;
using internal::IsDigit;
using internal::IsFieldValue;
using internal::IsOws;
using internal::kHexChar;
using internal::kHostChar;
using internal::kTargetChar;
using internal::kTokenChar;
using internal::kValueChar;
using internal::MakeError;
using internal::ScanLines;
using internal::ScanResult;
using internal::StatusFor;
using internal::TrimOws;

namespace {

bool IsToken(std::string_view s) { return !s.empty() && AllAre(s, kTokenChar); }

// ASCII case-insensitive equality (field names, tokens).
bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(a[i])) !=
        absl::ascii_tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// Calls fn(element) for each comma-separated element of a list value,
// trimmed of OWS (empty elements included); stops early when fn returns false.
template <typename Fn>
bool ForEachListElement(std::string_view value, Fn&& fn) {
  while (true) {
    size_t comma = value.find(',');
    if (!fn(TrimOws(value.substr(0, comma)))) return false;
    if (comma == std::string_view::npos) return true;
    value.remove_prefix(comma + 1);
  }
}

// Host / authority (RFC 3986 §3.2.2): reg-name or IPv4 or [IPv6], then an
// optional (or required) ":port".
bool ValidAuthority(std::string_view s, bool port_required) {
  std::string_view rest;
  if (!s.empty() && s.front() == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    for (char c : s.substr(1, close - 1)) {
      if (!Is(c, kHexChar) && c != ':' && c != '.') return false;
    }
    rest = s.substr(close + 1);
  } else {
    size_t colon = s.find(':');
    std::string_view host = s.substr(0, colon);
    if (host.empty() || !AllAre(host, kHostChar)) return false;
    for (size_t i = 0; i < host.size(); ++i) {
      if (host[i] == '%' &&
          (i + 2 >= host.size() || !Is(host[i + 1], kHexChar) || !Is(host[i + 2], kHexChar))) {
        return false;
      }
    }
    rest = colon == std::string_view::npos ? std::string_view() : s.substr(colon);
  }
  if (rest.empty()) return !port_required;
  if (rest.front() != ':') return false;
  rest.remove_prefix(1);
  if (rest.empty() || rest.size() > 5) return false;
  for (char c : rest) {
    if (!IsDigit(c)) return false;
  }
  return true;
}

// Parses a Content-Length value: a list of 1*DIGIT that must all agree.
// *canonical is false when the value is not already one plain number.
bool ParseContentLength(std::string_view value, uint64_t* n, bool* canonical, bool* seen) {
  bool ok = true;
  size_t elements = 0;
  ForEachListElement(value, [&](std::string_view e) {
    if (e.empty() || e.size() > 19) return ok = false;
    uint64_t v = 0;
    for (char c : e) {
      if (!IsDigit(c)) return ok = false;
      v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    if (*seen && v != *n) return ok = false;
    if (e.size() > 1 && e[0] == '0') *canonical = false;
    *n = v;
    *seen = true;
    ++elements;
    return true;
  });
  if (elements > 1) *canonical = false;
  return ok;
}

struct TransferCodings {
  bool present = false;
  int chunked = 0;  // how many times chunked appears
  bool chunked_last = false;
  bool valid = true;  // every element a plain token
};

void ParseTransferEncoding(std::string_view value, TransferCodings* te) {
  te->present = true;
  ForEachListElement(value, [&](std::string_view e) {
    if (!IsToken(e)) return te->valid = false;
    bool chunked = EqualsNoCase(e, "chunked");
    te->chunked += chunked ? 1 : 0;
    te->chunked_last = chunked;
    return true;
  });
}

// What the fields that requests and responses share say about the body's
// framing and the connection, gathered in the head's one pass over its
// fields.
struct FramingFields {
  bool cl_seen = false, cl_canonical = true;
  size_t cl_fields = 0;
  uint64_t content_length = 0;
  TransferCodings te;
  bool close = false, keep_alive = false, connection_upgrade = false;
};

enum class FieldScan { kOther, kRead, kBadContentLength };

// Reads `f` into `out` when it is Content-Length, Transfer-Encoding or
// Connection.
FieldScan ScanFramingField(const HeaderFields::Field& f, FramingFields* out) {
  std::string_view n = f.name;
  if (n.size() == 14 && EqualsNoCase(n, "content-length")) {
    ++out->cl_fields;
    if (!ParseContentLength(f.value, &out->content_length, &out->cl_canonical, &out->cl_seen)) {
      return FieldScan::kBadContentLength;
    }
  } else if (n.size() == 17 && EqualsNoCase(n, "transfer-encoding")) {
    ParseTransferEncoding(f.value, &out->te);
  } else if (n.size() == 10 && EqualsNoCase(n, "connection")) {
    ForEachListElement(f.value, [&](std::string_view e) {
      out->close |= EqualsNoCase(e, "close");
      out->keep_alive |= EqualsNoCase(e, "keep-alive");
      out->connection_upgrade |= EqualsNoCase(e, "upgrade");
      return true;
    });
  } else {
    return FieldScan::kOther;
  }
  return FieldScan::kRead;
}

// Content-Length framing, once the length is known to be the message's:
// equal duplicates and leading zeros leave one plain number in the fields,
// so the next hop reads what this one did.
void SetContentLength(const FramingFields& ff, HeaderFields* fields, Framing* framing,
                      uint64_t* content_length) {
  *framing = Framing::kContentLength;
  *content_length = ff.content_length;
  if (!ff.cl_canonical || ff.cl_fields > 1) {
    fields->Set("Content-Length", fields->Own(std::to_string(ff.content_length)));
  }
}

// Parses "HTTP/d.d".
bool ParseVersion(std::string_view s, Version* v, ErrorCode* code) {
  if (s.size() != 8 || !s.starts_with("HTTP/") || !IsDigit(s[5]) || s[6] != '.' || !IsDigit(s[7])) {
    *code = ErrorCode::kBadVersion;
    return false;
  }
  if (s[5] == '1' && s[7] == '1') {
    *v = Version::kHttp11;
  } else if (s[5] == '1' && s[7] == '0') {
    *v = Version::kHttp10;
  } else {
    *code = ErrorCode::kUnsupportedVersion;
    return false;
  }
  return true;
}

}  // namespace

// ---- HeaderFields --------------------------------------------------------

std::optional<std::string_view> HeaderFields::Get(std::string_view name) const {
  for (const Field& f : fields_) {
    if (f.name.size() == name.size() && EqualsNoCase(f.name, name)) return f.value;
  }
  return std::nullopt;
}

std::optional<std::string_view> HeaderFields::Cookie(std::string_view name) const {
  for (const Field& f : fields_) {
    if (f.name.size() != 6 || !EqualsNoCase(f.name, "cookie")) continue;
    std::string_view rest = f.value;
    while (!rest.empty()) {
      size_t end = rest.find(';');
      std::string_view pair = rest.substr(0, end);
      rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
      while (!pair.empty() && (pair.front() == ' ' || pair.front() == '\t')) pair.remove_prefix(1);
      while (!pair.empty() && (pair.back() == ' ' || pair.back() == '\t')) pair.remove_suffix(1);
      size_t eq = pair.find('=');
      if (eq == std::string_view::npos) continue;
      std::string_view key = pair.substr(0, eq);
      while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.remove_suffix(1);
      if (key != name) continue;  // cookie names are case-sensitive
      std::string_view value = pair.substr(eq + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
        value.remove_prefix(1);
      }
      return value;
    }
  }
  return std::nullopt;
}

size_t HeaderFields::Count(std::string_view name) const {
  size_t n = 0;
  for (const Field& f : fields_) {
    if (f.name.size() == name.size() && EqualsNoCase(f.name, name)) ++n;
  }
  return n;
}

bool HeaderFields::HasToken(std::string_view name, std::string_view token) const {
  for (const Field& f : fields_) {
    if (f.name.size() != name.size() || !EqualsNoCase(f.name, name)) continue;
    bool found = false;
    ForEachListElement(f.value, [&](std::string_view e) {
      found = EqualsNoCase(e, token);
      return !found;
    });
    if (found) return true;
  }
  return false;
}

std::string_view HeaderFields::Own(std::string_view text) {
  if (text.empty()) return {};
  // A moved-from vector is empty: the check covers a moved-from arena too.
  if (arena_blocks_.empty() || arena_capacity_ - arena_used_ < text.size()) {
    arena_capacity_ = std::max<size_t>(256, text.size());
    arena_blocks_.push_back(std::make_unique_for_overwrite<char[]>(arena_capacity_));
    arena_used_ = 0;
  }
  char* at = arena_blocks_.back().get() + arena_used_;
  std::memcpy(at, text.data(), text.size());
  arena_used_ += text.size();
  return {at, text.size()};
}

void HeaderFields::Add(std::string_view name, std::string_view value) {
  fields_.push_back({Own(name), Own(value)});
}

size_t HeaderFields::Remove(std::string_view name) {
  size_t before = fields_.size();
  fields_.erase(std::remove_if(fields_.begin(), fields_.end(),
                               [&](const Field& f) {
                                 return f.name.size() == name.size() && EqualsNoCase(f.name, name);
                               }),
                fields_.end());
  return before - fields_.size();
}

void HeaderFields::Set(std::string_view name, std::string_view value) {
  Remove(name);
  Add(name, value);
}

void HeaderFields::Clear() {
  fields_.clear();
  storage_.Clear();
  arena_blocks_.clear();
  arena_used_ = arena_capacity_ = 0;
}

size_t HeaderFields::SerializedSize() const {
  size_t n = 0;
  for (const Field& f : fields_) n += f.name.size() + f.value.size() + 4;
  return n;
}

char* HeaderFields::WriteTo(char* out) const {
  for (const Field& f : fields_) {
    std::memcpy(out, f.name.data(), f.name.size());
    out += f.name.size();
    *out++ = ':';
    *out++ = ' ';
    if (!f.value.empty()) std::memcpy(out, f.value.data(), f.value.size());
    out += f.value.size();
    *out++ = '\r';
    *out++ = '\n';
  }
  return out;
}

// ---- MessageParser -------------------------------------------------------

Limits ResponseLimits() {
  Limits limits;
  limits.max_body_bytes = std::numeric_limits<uint64_t>::max();
  return limits;
}

MessageParser::MessageParser(const Limits& limits, bool request)
    : limits_(limits), request_(request), chunked_(limits, request) {}

bool MessageParser::SetError(ErrorCode code, const char* reason) {
  error_ = MakeError(code, reason, request_);
  state_ = State::kError;
  return false;
}

Event MessageParser::Fail(ErrorCode code, const char* reason) {
  SetError(code, reason);
  return Event{Event::kError, {}};
}

Event MessageParser::Next(Buffer* input) {
  while (true) {
    switch (state_) {
      case State::kHead: {
        if (request_ && scan_.scanned == 0) {
          // RFC 9112 §2.2: empty lines before a request line are ignored.
          while (!input->empty()) {
            std::string_view two = input->Peek(std::min<size_t>(2, input->size()), &scratch_);
            if (two[0] == '\n') return Fail(ErrorCode::kBadLineEnding, "bare LF");
            if (two[0] != '\r') break;
            if (two.size() < 2) return Event{Event::kNeedMore, {}};
            if (two[1] != '\n') return Fail(ErrorCode::kBadLineEnding, "bare CR");
            input->Consume(2);
          }
        }
        // Each scan stops where its limit ends, so which error a long or
        // broken head gets does not depend on how its bytes arrived.
        const size_t max_line = limits_.max_request_line_bytes;
        if (scan_.first_line_end == 0) {
          size_t line_len = 0;
          ScanResult r = ScanLines(*input, &scan_, max_line + 2, [&](size_t len, size_t e) {
            scan_.first_line_end = e;
            line_len = len;
            return true;
          });
          if (r == ScanResult::kBareLf) return Fail(ErrorCode::kBadLineEnding, "bare LF");
          if (r == ScanResult::kNeedMore && scan_.scanned < max_line + 2) {
            return Event{Event::kNeedMore, {}};
          }
          if (r == ScanResult::kNeedMore || line_len > max_line) {
            return request_ ? Fail(ErrorCode::kRequestLineTooLong, "request line too long")
                            : Fail(ErrorCode::kBadStatusLine, "status line too long");
          }
        }
        const size_t max_scan = scan_.first_line_end + limits_.max_header_bytes;
        size_t end = 0;
        ScanResult r = ScanLines(*input, &scan_, max_scan, [&](size_t len, size_t e) {
          end = e;
          return len == 0;
        });
        if (r == ScanResult::kBareLf) return Fail(ErrorCode::kBadLineEnding, "bare LF");
        if (r == ScanResult::kNeedMore) {
          if (scan_.scanned < max_scan) return Event{Event::kNeedMore, {}};
          return Fail(ErrorCode::kHeaderTooLarge, "header section too large");
        }
        // Field lines: all lines but the start line and the empty one.
        size_t lines = std::min(scan_.lines - 2, limits_.max_header_fields);
        scan_ = {};
        chunked_.Reset();
        body_bytes_ = 0;
        switched_ = false;
        informational_ = false;
        if (!ParseHead(input->Cut(end), lines)) return Event{Event::kError, {}};
        switch (framing_) {
          case Framing::kNone:
            state_ = State::kEnd;
            break;
          case Framing::kContentLength:
            state_ = body_left_ == 0 ? State::kEnd : State::kLength;
            break;
          case Framing::kChunked:
            state_ = State::kChunked;
            break;
          case Framing::kUntilClose:
            state_ = State::kUntilClose;
            break;
        }
        return Event{Event::kHead, {}};
      }
      case State::kLength: {
        if (input->empty()) return Event{Event::kNeedMore, {}};
        size_t n = static_cast<size_t>(std::min<uint64_t>(body_left_, input->size()));
        body_left_ -= n;
        if (body_left_ == 0) state_ = State::kEnd;
        return Event{Event::kBody, input->Cut(n)};
      }
      case State::kChunked: {
        Event ev = chunked_.Next(input);
        if (ev.type == Event::kError) {
          error_ = chunked_.error();
          state_ = State::kError;
        } else if (ev.type == Event::kComplete) {
          state_ = State::kEnd;
          continue;
        }
        return ev;
      }
      case State::kUntilClose: {
        if (input->empty()) return Event{Event::kNeedMore, {}};
        if (input->size() > limits_.max_body_bytes - body_bytes_) {
          return Fail(ErrorCode::kBodyTooLarge, "body too large");
        }
        body_bytes_ += input->size();
        return Event{Event::kBody, input->Cut(input->size())};
      }
      case State::kEnd:
        state_ = switched_ ? State::kSwitched : State::kHead;
        if (!informational_) head_request_ = connect_request_ = false;
        return Event{Event::kComplete, {}};
      case State::kSwitched:
        return Fail(ErrorCode::kAfterSwitch, "connection no longer carries HTTP/1.1");
      case State::kError:
        return Event{Event::kError, {}};
    }
  }
}

Event MessageParser::Finish(const Buffer& input) {
  switch (state_) {
    case State::kUntilClose:
      state_ = State::kSwitched;
      head_request_ = connect_request_ = false;
      return Event{Event::kComplete, {}};
    case State::kHead:
      if (input.empty()) return Event{Event::kClosed, {}};
      return Fail(ErrorCode::kTruncated, "connection closed inside a message head");
    case State::kSwitched:
      return Event{Event::kClosed, {}};
    case State::kError:
      return Event{Event::kError, {}};
    default:
      return Fail(ErrorCode::kTruncated, "connection closed inside a message body");
  }
}

// ---- RequestParser -------------------------------------------------------

bool RequestParser::ParseHead(Buffer raw, size_t lines) {
  RequestHead& h = head_;
  std::string_view text = Codec::Adopt(std::move(raw), lines, &h.fields);
  size_t line_len = text.find("\r\n");  // the scan guarantees one exists
  std::string_view line = text.substr(0, line_len);
  if (line.find('\r') != std::string_view::npos) {
    return SetError(ErrorCode::kBadLineEnding, "bare CR in request line");
  }
  // method SP request-target SP HTTP-version, single spaces.
  size_t i = 0;
  while (i < line.size() && Is(line[i], kTokenChar)) ++i;
  if (i == 0 || i == line.size() || line[i] != ' ') {
    return SetError(ErrorCode::kBadRequestLine, "bad method or request line");
  }
  h.method = line.substr(0, i);
  size_t target_end = line.find(' ', i + 1);
  if (target_end == std::string_view::npos || target_end == i + 1) {
    return SetError(ErrorCode::kBadRequestLine, "bad request line");
  }
  h.target = line.substr(i + 1, target_end - i - 1);
  std::string_view version = line.substr(target_end + 1);
  if (version.find(' ') != std::string_view::npos) {
    return SetError(ErrorCode::kBadRequestLine, "bad request line");
  }
  ErrorCode code;
  if (!ParseVersion(version, &h.version, &code)) {
    return SetError(code, code == ErrorCode::kUnsupportedVersion ? "HTTP version not supported"
                                                                 : "bad HTTP version");
  }
  if (!AllAre(h.target, kTargetChar)) return SetError(ErrorCode::kBadTarget, "bad request target");

  // Target forms (RFC 9112 §3.2).
  bool connect = h.method == "CONNECT";
  h.authority = {};
  if (connect) {
    if (!ValidAuthority(h.target, /*port_required=*/true)) {
      return SetError(ErrorCode::kBadTarget, "CONNECT needs authority-form host:port");
    }
    h.target_form = TargetForm::kAuthority;
    h.authority = h.target;
  } else if (h.target[0] == '/') {
    h.target_form = TargetForm::kOrigin;
  } else if (h.target == "*") {
    if (h.method != "OPTIONS") return SetError(ErrorCode::kBadTarget, "* is for OPTIONS only");
    h.target_form = TargetForm::kAsterisk;
  } else {
    // absolute-form: scheme "://" authority [ path-abempty [ "?" query ] ]
    size_t s = 0;
    while (s < h.target.size() &&
           (absl::ascii_isalnum(static_cast<unsigned char>(h.target[s])) || h.target[s] == '+' ||
            h.target[s] == '-' || h.target[s] == '.')) {
      ++s;
    }
    if (s == 0 || !absl::ascii_isalpha(static_cast<unsigned char>(h.target[0])) ||
        h.target.substr(s, 3) != "://") {
      return SetError(ErrorCode::kBadTarget, "bad request target");
    }
    std::string_view rest = h.target.substr(s + 3);
    std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
    if (!ValidAuthority(authority, /*port_required=*/false)) {
      return SetError(ErrorCode::kBadTarget, "bad authority in absolute-form target");
    }
    h.target_form = TargetForm::kAbsolute;
    h.authority = authority;
  }

  if (!Codec::ParseFieldLines(text.substr(line_len + 2), limits_.max_header_fields, &h.fields,
                              &code, &error_.reason)) {
    return SetError(code, error_.reason);
  }

  // What the fields say about the message, in one pass.
  size_t hosts = 0;
  std::string_view host;
  FramingFields ff;
  bool has_upgrade = false;
  h.expect_continue = false;
  for (const HeaderFields::Field& f : h.fields) {
    FieldScan scan = ScanFramingField(f, &ff);
    if (scan == FieldScan::kBadContentLength) {
      return SetError(ErrorCode::kBadContentLength, "bad Content-Length");
    }
    if (scan == FieldScan::kRead) continue;
    std::string_view n = f.name;
    if (n.size() == 4 && EqualsNoCase(n, "host")) {
      ++hosts;
      host = f.value;
    } else if (n.size() == 6 && EqualsNoCase(n, "expect")) {
      h.expect_continue = EqualsNoCase(f.value, "100-continue");
    } else if (n.size() == 7 && EqualsNoCase(n, "upgrade")) {
      has_upgrade = true;
    }
  }
  bool http11 = h.version == Version::kHttp11;
  // RFC 9112 §3.2: exactly one Host in HTTP/1.1, never two.
  if ((http11 && hosts != 1) || hosts > 1)
    return SetError(ErrorCode::kBadHost, "missing or repeated Host");
  if (hosts == 1 && !host.empty() && !ValidAuthority(host, false)) {
    return SetError(ErrorCode::kBadHost, "invalid Host");
  }
  if (h.authority.empty() && h.target_form != TargetForm::kAbsolute) h.authority = host;

  // Framing (RFC 9112 §6.3), refusing every ambiguity.
  h.content_length = 0;
  if (ff.te.present) {
    if (ff.cl_seen || ff.cl_fields > 0) {
      return SetError(ErrorCode::kConflictingFraming, "Content-Length with Transfer-Encoding");
    }
    if (!http11) return SetError(ErrorCode::kBadTransferEncoding, "Transfer-Encoding in HTTP/1.0");
    if (!ff.te.valid || ff.te.chunked != 1 || !ff.te.chunked_last) {
      return SetError(ErrorCode::kBadTransferEncoding, "Transfer-Encoding must end in chunked");
    }
    h.framing = Framing::kChunked;
  } else if (ff.cl_seen) {
    if (ff.content_length > limits_.max_body_bytes) {
      return SetError(ErrorCode::kBodyTooLarge, "body too large");
    }
    SetContentLength(ff, &h.fields, &h.framing, &h.content_length);
  } else {
    h.framing = Framing::kNone;
  }
  h.keep_alive = http11 ? !ff.close : (ff.keep_alive && !ff.close);
  if (!http11) h.expect_continue = false;  // RFC 9110 §10.1.1
  h.upgrade = http11 && has_upgrade && ff.connection_upgrade;
  framing_ = h.framing;
  body_left_ = h.content_length;
  return true;
}

// ---- ResponseParser ------------------------------------------------------

void ResponseParser::SetRequestMethod(std::string_view method) {
  head_request_ = method == "HEAD";
  connect_request_ = method == "CONNECT";
}

bool ResponseParser::ParseHead(Buffer raw, size_t lines) {
  ResponseHead& h = head_;
  std::string_view text = Codec::Adopt(std::move(raw), lines, &h.fields);
  size_t line_len = text.find("\r\n");
  std::string_view line = text.substr(0, line_len);
  if (line.find('\r') != std::string_view::npos) {
    return SetError(ErrorCode::kBadLineEnding, "bare CR in status line");
  }
  // HTTP-version SP 3DIGIT SP [ reason ]; a missing SP before an empty
  // reason is accepted (common in the wild, and unambiguous).
  ErrorCode code;
  if (line.size() < 12 || line[8] != ' ' || !IsDigit(line[9]) || !IsDigit(line[10]) ||
      !IsDigit(line[11]) || (line.size() > 12 && line[12] != ' ')) {
    if (line.size() >= 8 && !ParseVersion(line.substr(0, 8), &h.version, &code)) {
      return SetError(code, "bad HTTP version");
    }
    return SetError(ErrorCode::kBadStatusLine, "bad status line");
  }
  if (!ParseVersion(line.substr(0, 8), &h.version, &code))
    return SetError(code, "bad HTTP version");
  h.status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  if (h.status < 100 || h.status > 599)
    return SetError(ErrorCode::kBadStatusLine, "bad status code");
  h.reason = line.size() > 12 ? line.substr(13) : std::string_view();
  if (!AllAre(h.reason, kValueChar))
    return SetError(ErrorCode::kBadStatusLine, "bad reason phrase");

  if (!Codec::ParseFieldLines(text.substr(line_len + 2), limits_.max_header_fields, &h.fields,
                              &code, &error_.reason)) {
    return SetError(code, error_.reason);
  }
  FramingFields ff;
  for (const HeaderFields::Field& f : h.fields) {
    if (ScanFramingField(f, &ff) == FieldScan::kBadContentLength) {
      return SetError(ErrorCode::kBadContentLength, "bad Content-Length");
    }
  }
  bool http11 = h.version == Version::kHttp11;
  h.switched_protocols = false;
  h.content_length = 0;
  informational_ = false;
  // Framing (RFC 9112 §6.3).
  if (h.status < 200) {
    h.framing = Framing::kNone;
    h.switched_protocols = h.status == 101;
    informational_ = !h.switched_protocols;
  } else if (head_request_ || h.status == 204 || h.status == 304) {
    h.framing = Framing::kNone;
  } else if (connect_request_ && h.status < 300) {
    h.framing = Framing::kNone;
    h.switched_protocols = true;
  } else if (ff.te.present) {
    if (ff.cl_fields > 0) {
      return SetError(ErrorCode::kConflictingFraming, "Content-Length with Transfer-Encoding");
    }
    if (!http11) return SetError(ErrorCode::kBadTransferEncoding, "Transfer-Encoding in HTTP/1.0");
    if (!ff.te.valid || ff.te.chunked > 1 || (ff.te.chunked == 1 && !ff.te.chunked_last)) {
      return SetError(ErrorCode::kBadTransferEncoding, "chunked must be the final coding, once");
    }
    // Without chunked the body runs until the server closes (§6.3 rule 4).
    h.framing = ff.te.chunked == 1 ? Framing::kChunked : Framing::kUntilClose;
  } else if (ff.cl_seen) {
    if (ff.content_length > limits_.max_body_bytes) {
      return SetError(ErrorCode::kBodyTooLarge, "body too large");
    }
    SetContentLength(ff, &h.fields, &h.framing, &h.content_length);
  } else {
    h.framing = Framing::kUntilClose;
  }
  h.keep_alive = (http11 ? !ff.close : (ff.keep_alive && !ff.close)) &&
                 h.framing != Framing::kUntilClose && !h.switched_protocols;
  switched_ = h.switched_protocols;
  framing_ = h.framing;
  body_left_ = h.content_length;
  return true;
}

}  // namespace capstan::net::http1
