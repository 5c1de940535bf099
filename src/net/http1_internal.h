// Inside the HTTP/1.1 codec (http1.cc, http1_chunked.cc): byte classes,
// the line scanner and error making that the head parsers and the chunked
// decoder share, and Codec, the part that fills HeaderFields. Not an API.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "net/http1.h"

namespace capstan::net::http1 {
namespace internal {

// Byte classes, one table lookup per byte.
enum : uint8_t {
  kTokenChar = 1,   // tchar (RFC 9110 §5.6.2)
  kValueChar = 2,   // field-vchar, SP, HTAB (obs-text included)
  kTargetChar = 4,  // visible ASCII other than '#'
  kHostChar = 8,    // reg-name: unreserved, sub-delims, '%'
  kHexChar = 16,
};

constexpr std::array<uint8_t, 256> MakeClasses() {
  std::array<uint8_t, 256> t{};
  for (int c = 0; c < 256; ++c) {
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    bool digit = c >= '0' && c <= '9';
    uint8_t v = 0;
    if (alpha || digit ||
        (c != 0 && std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) !=
                       std::string_view::npos)) {
      v |= kTokenChar;
    }
    if (c == '\t' || (c >= 0x20 && c != 0x7f)) v |= kValueChar;
    if (c > 0x20 && c < 0x7f && c != '#') v |= kTargetChar;
    if (alpha || digit ||
        (c != 0 && std::string_view("-._~!$&'()*+,;=%").find(static_cast<char>(c)) !=
                       std::string_view::npos)) {
      v |= kHostChar;
    }
    if (digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) v |= kHexChar;
    t[c] = v;
  }
  return t;
}
inline constexpr std::array<uint8_t, 256> kClasses = MakeClasses();

inline bool Is(char c, uint8_t cls) { return (kClasses[static_cast<uint8_t>(c)] & cls) != 0; }

inline bool AllAre(std::string_view s, uint8_t cls) {
  for (char c : s) {
    if (!Is(c, cls)) return false;
  }
  return true;
}

// field-value bytes, eight at a time: a word with no byte below 0x20 and no
// DEL is valid as a whole; one that has some (HTAB is the legal case) is
// checked byte by byte. Values are most of a head's bytes.
inline bool IsFieldValue(std::string_view s) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHighs = 0x8080808080808080ull;
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    uint64_t below_space = (w - kOnes * 0x20) & ~w & kHighs;
    uint64_t del = w ^ (kOnes * 0x7f);
    uint64_t is_del = (del - kOnes) & ~del & kHighs;
    if ((below_space | is_del) != 0 && !AllAre(s.substr(i, 8), kValueChar)) return false;
  }
  return AllAre(s.substr(i), kValueChar);
}

inline bool IsDigit(char c) { return c >= '0' && c <= '9'; }
inline bool IsOws(char c) { return c == ' ' || c == '\t'; }

inline std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && IsOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOws(s.back())) s.remove_suffix(1);
  return s;
}

inline int StatusFor(ErrorCode code, bool request) {
  if (!request) return 502;
  switch (code) {
    case ErrorCode::kRequestLineTooLong:
      return 414;
    case ErrorCode::kHeaderTooLarge:
    case ErrorCode::kTrailerTooLarge:
      return 431;
    case ErrorCode::kBodyTooLarge:
      return 413;
    case ErrorCode::kUnsupportedVersion:
      return 505;
    default:
      return 400;
  }
}

inline Error MakeError(ErrorCode code, const char* reason, bool request) {
  return Error{code, StatusFor(code, request), reason};
}

enum class ScanResult { kNeedMore, kFound, kBareLf };

// Resumes scanning `input` for line ends (CRLF) from where `scan` stopped.
// At each line end calls on_line(line_len, end) with `end` the offset after
// its LF; a true return stops the scan there (kFound). A LF without a CR
// before it is kBareLf. Scans at most `max_scan` bytes in all.
template <typename OnLine>
inline ScanResult ScanLines(const Buffer& input, LineScan* scan, size_t max_scan,
                            OnLine&& on_line) {
  size_t base = 0;
  size_t limit = std::min(input.size(), max_scan);
  for (size_t i = 0; i < input.slice_count() && scan->scanned < limit; ++i) {
    std::string_view s = input.slice(i);
    if (base + s.size() <= scan->scanned) {
      base += s.size();
      continue;
    }
    size_t from = scan->scanned - base;
    size_t to = std::min(s.size(), limit - base);
    while (from < to) {
      const void* hit = std::memchr(s.data() + from, '\n', to - from);
      if (hit == nullptr) {
        scan->last = s[to - 1];
        scan->scanned = base + to;
        break;
      }
      size_t k = static_cast<const char*>(hit) - s.data();
      char before = k > 0 ? s[k - 1] : scan->last;
      size_t lf = base + k;
      scan->scanned = lf + 1;
      scan->last = '\n';
      if (before != '\r' || lf == scan->line_start) return ScanResult::kBareLf;
      size_t line_len = lf - 1 - scan->line_start;
      scan->line_start = lf + 1;
      ++scan->lines;
      if (on_line(line_len, lf + 1)) return ScanResult::kFound;
      from = k + 1;
    }
    base += s.size();
  }
  return ScanResult::kNeedMore;
}

}  // namespace internal

// The parts that touch HeaderFields' insides.
class Codec {
 public:
  // Parses field lines from `text`, each ending in CRLF, the last one empty
  // (the scan that found the block guarantees a LF only ever follows a CR).
  static bool ParseFieldLines(std::string_view text, size_t max_fields, HeaderFields* fields,
                              ErrorCode* code, const char** reason) {
    // Fields are written in place into the array Adopt sized, then trimmed
    // to the count: cheaper than a push_back (and its capacity checks) per
    // field on the hot path.
    auto& out = fields->fields_;
    out.resize(out.capacity());
    size_t n = 0;
    size_t pos = 0;
    while (true) {
      const void* hit = std::memchr(text.data() + pos, '\r', text.size() - pos);
      size_t cr = hit == nullptr ? text.size() : static_cast<const char*>(hit) - text.data();
      if (cr + 1 >= text.size() || text[cr + 1] != '\n') {
        *code = ErrorCode::kBadLineEnding;
        *reason = "bare CR in a field line";
        return false;
      }
      std::string_view line = text.substr(pos, cr - pos);
      pos = cr + 2;
      if (line.empty()) {
        out.resize(n);
        return true;
      }
      if (internal::IsOws(line[0])) {
        *code = ErrorCode::kObsFold;
        *reason = "field line starts with whitespace (obs-fold)";
        return false;
      }
      size_t i = 0;
      while (i < line.size() && internal::Is(line[i], internal::kTokenChar)) ++i;
      if (i == line.size() || i == 0 || line[i] != ':') {
        if (i > 0 && i < line.size() && internal::IsOws(line[i])) {
          *code = ErrorCode::kWhitespaceBeforeColon;
          *reason = "whitespace between field name and colon";
        } else {
          *code = ErrorCode::kBadFieldName;
          *reason = "invalid field name";
        }
        return false;
      }
      std::string_view value = internal::TrimOws(line.substr(i + 1));
      if (!internal::IsFieldValue(value)) {
        *code = ErrorCode::kBadFieldValue;
        *reason = "control character in a field value";
        return false;
      }
      if (n >= max_fields) {
        *code = ErrorCode::kHeaderTooLarge;
        *reason = "too many header fields";
        return false;
      }
      if (n == out.size()) out.resize(std::min(2 * n, max_fields));
      out[n++] = {line.substr(0, i), value};
    }
  }

  // Makes `raw` the fields' storage (one slice) and returns its bytes.
  // `lines` (the field lines the scan counted) sizes the field array once
  // when the inline room is too small.
  static std::string_view Adopt(Buffer raw, size_t lines, HeaderFields* fields) {
    fields->Clear();
    fields->fields_.reserve(lines);
    fields->storage_ = std::move(raw);
    return fields->storage_.Flatten();
  }
};

}  // namespace capstan::net::http1
