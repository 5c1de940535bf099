// The chunked transfer coding's decoder (RFC 9112 §7.1): sizes,
// extensions, data and trailer fields, with the codec's limits.
#include "absl/strings/ascii.h"
#include "net/http1.h"
#include "net/http1_internal.h"

namespace capstan::net::http1 {

using internal::Is;
using internal::IsDigit;
using internal::IsOws;
using internal::kHexChar;
using internal::kTokenChar;
using internal::kValueChar;
using internal::MakeError;
using internal::ScanLines;
using internal::ScanResult;

// ---- ChunkedDecoder ------------------------------------------------------

void ChunkedDecoder::Reset() {
  state_ = State::kSize;
  chunk_left_ = 0;
  body_bytes_ = 0;
  extension_bytes_ = 0;
  scan_ = {};
  trailers_.Clear();
}

Event ChunkedDecoder::Fail(ErrorCode code, const char* reason) {
  error_ = MakeError(code, reason, request_);
  state_ = State::kError;
  return Event{Event::kError, {}};
}

Event ChunkedDecoder::Next(Buffer* input) {
  while (true) {
    switch (state_) {
      case State::kSize: {
        // chunk-size [ chunk-ext ] CRLF: at most 16 digits and what is left
        // of the extension budget.
        size_t max_line = 16 + (limits_.max_chunk_extension_bytes - extension_bytes_) + 2;
        size_t line_end = 0;
        ScanResult r = ScanLines(*input, &scan_, max_line, [&](size_t, size_t end) {
          line_end = end;
          return true;
        });
        if (r == ScanResult::kBareLf)
          return Fail(ErrorCode::kBadLineEnding, "bare LF in chunk line");
        if (r == ScanResult::kNeedMore) {
          if (scan_.scanned < max_line) return Event{Event::kNeedMore, {}};
          // No line end within the budget: say which part is at fault.
          std::string_view head = input->Peek(std::min<size_t>(input->size(), 17), &scratch_);
          size_t digits = 0;
          while (digits < head.size() && Is(head[digits], kHexChar)) ++digits;
          if (digits > 16 || digits == 0) return Fail(ErrorCode::kBadChunkSize, "bad chunk size");
          return Fail(ErrorCode::kChunkExtensionTooLong, "chunk extensions too long");
        }
        std::string_view line = input->Peek(line_end, &scratch_);
        line.remove_suffix(2);
        scan_ = {};
        size_t digits = 0;
        uint64_t size = 0;
        while (digits < line.size() && Is(line[digits], kHexChar)) {
          char c = line[digits];
          int v = IsDigit(c) ? c - '0' : (absl::ascii_tolower(c) - 'a' + 10);
          size = (size << 4) | static_cast<uint64_t>(v);
          ++digits;
        }
        if (digits == 0 || digits > 16) return Fail(ErrorCode::kBadChunkSize, "bad chunk size");
        std::string_view ext = line.substr(digits);
        if (!ext.empty() && !IsOws(ext[0]) && ext[0] != ';') {
          return Fail(ErrorCode::kBadChunkSize, "bad chunk size");
        }
        extension_bytes_ += ext.size();
        if (extension_bytes_ > limits_.max_chunk_extension_bytes) {
          return Fail(ErrorCode::kChunkExtensionTooLong, "chunk extensions too long");
        }
        // chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
        size_t p = 0;
        auto skip_bws = [&] {
          while (p < ext.size() && IsOws(ext[p])) ++p;
        };
        auto token = [&] {
          size_t start = p;
          while (p < ext.size() && Is(ext[p], kTokenChar)) ++p;
          return p > start;
        };
        while (p < ext.size()) {
          skip_bws();
          if (p == ext.size() || ext[p] != ';') {
            return Fail(ErrorCode::kBadChunkExtension, "bad chunk extension");
          }
          ++p;
          skip_bws();
          if (!token()) return Fail(ErrorCode::kBadChunkExtension, "bad chunk extension");
          size_t after_name = p;
          skip_bws();
          if (p < ext.size() && ext[p] == '=') {
            ++p;
            skip_bws();
            if (p < ext.size() && ext[p] == '"') {
              ++p;
              bool closed = false;
              while (p < ext.size()) {
                char c = ext[p];
                if (c == '"') {
                  closed = true;
                  ++p;
                  break;
                }
                if (c == '\\') {
                  if (p + 1 >= ext.size() || !Is(ext[p + 1], kValueChar)) break;
                  p += 2;
                  continue;
                }
                if (!Is(c, kValueChar)) break;
                ++p;
              }
              if (!closed) return Fail(ErrorCode::kBadChunkExtension, "bad chunk extension");
            } else if (!token()) {
              return Fail(ErrorCode::kBadChunkExtension, "bad chunk extension");
            }
          } else {
            p = after_name;  // BWS belongs to the next ";" (or is trailing: an error)
          }
        }
        input->Consume(line_end);
        if (size == 0) {
          state_ = State::kTrailers;
          continue;
        }
        if (size > limits_.max_body_bytes - body_bytes_ || body_bytes_ > limits_.max_body_bytes) {
          return Fail(ErrorCode::kBodyTooLarge, "body too large");
        }
        chunk_left_ = size;
        state_ = State::kData;
        continue;
      }
      case State::kData: {
        if (input->empty()) return Event{Event::kNeedMore, {}};
        size_t n = static_cast<size_t>(std::min<uint64_t>(chunk_left_, input->size()));
        chunk_left_ -= n;
        body_bytes_ += n;
        if (chunk_left_ == 0) state_ = State::kDataEnd;
        return Event{Event::kBody, input->Cut(n)};
      }
      case State::kDataEnd: {
        if (input->empty()) return Event{Event::kNeedMore, {}};
        std::string_view crlf = input->Peek(std::min<size_t>(2, input->size()), &scratch_);
        if (crlf[0] != '\r' || (crlf.size() == 2 && crlf[1] != '\n')) {
          return Fail(ErrorCode::kBadChunkData, "chunk data not followed by CRLF");
        }
        if (crlf.size() < 2) return Event{Event::kNeedMore, {}};
        input->Consume(2);
        state_ = State::kSize;
        continue;
      }
      case State::kTrailers: {
        size_t end = 0;
        ScanResult r =
            ScanLines(*input, &scan_, limits_.max_trailer_bytes, [&](size_t len, size_t e) {
              end = e;
              return len == 0;
            });
        if (r == ScanResult::kBareLf) return Fail(ErrorCode::kBadLineEnding, "bare LF in trailers");
        if (r == ScanResult::kNeedMore) {
          if (scan_.scanned < limits_.max_trailer_bytes) return Event{Event::kNeedMore, {}};
          return Fail(ErrorCode::kTrailerTooLarge, "trailer section too large");
        }
        size_t lines = std::min(scan_.lines - 1, limits_.max_header_fields);
        scan_ = {};
        std::string_view text = Codec::Adopt(input->Cut(end), lines, &trailers_);
        ErrorCode code;
        const char* reason;
        if (!Codec::ParseFieldLines(text, limits_.max_header_fields, &trailers_, &code, &reason)) {
          if (code == ErrorCode::kHeaderTooLarge) code = ErrorCode::kTrailerTooLarge;
          return Fail(code, reason);
        }
        state_ = State::kSize;
        body_bytes_ = 0;
        extension_bytes_ = 0;
        return Event{Event::kComplete, {}};
      }
      case State::kError:
        return Event{Event::kError, {}};
    }
  }
}

}  // namespace capstan::net::http1
