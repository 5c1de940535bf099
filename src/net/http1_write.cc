// HTTP/1.1 output: request and response heads, chunked framing, and the
// names the codec gives things (error codes, reason phrases, a target's
// path and query). The parsers are in http1.cc.
#include <cstdio>
#include <cstring>

#include "net/http1.h"

namespace capstan::net::http1 {

// ---- Serialization -------------------------------------------------------

std::string_view VersionText(Version v) { return v == Version::kHttp10 ? "HTTP/1.0" : "HTTP/1.1"; }

namespace {
char* Put(char* out, std::string_view s) {
  if (!s.empty()) std::memcpy(out, s.data(), s.size());
  return out + s.size();
}
}  // namespace

void WriteRequestHead(const RequestHead& head, Buffer* out) {
  size_t size =
      head.method.size() + 1 + head.target.size() + 1 + 8 + 2 + head.fields.SerializedSize() + 2;
  char* p = out->Reserve(size, std::max(size, Buffer::kDefaultBlockSize)).data();
  p = Put(p, head.method);
  *p++ = ' ';
  p = Put(p, head.target);
  *p++ = ' ';
  p = Put(p, VersionText(head.version));
  p = Put(p, "\r\n");
  p = head.fields.WriteTo(p);
  Put(p, "\r\n");
  out->Commit(size);
}

void WriteResponseHead(const ResponseHead& head, Buffer* out) {
  size_t size = 8 + 5 + head.reason.size() + 2 + head.fields.SerializedSize() + 2;
  char* p = out->Reserve(size, std::max(size, Buffer::kDefaultBlockSize)).data();
  p = Put(p, VersionText(head.version));
  int status = std::clamp(head.status, 100, 999);
  *p++ = ' ';
  *p++ = static_cast<char>('0' + status / 100);
  *p++ = static_cast<char>('0' + status / 10 % 10);
  *p++ = static_cast<char>('0' + status % 10);
  *p++ = ' ';
  p = Put(p, head.reason);
  p = Put(p, "\r\n");
  p = head.fields.WriteTo(p);
  Put(p, "\r\n");
  out->Commit(size);
}

void AppendChunk(Buffer&& piece, Buffer* out) {
  if (piece.empty()) return;
  char line[20];
  char* end = line + sizeof(line);
  char* p = end;
  *--p = '\n';
  *--p = '\r';
  for (uint64_t n = piece.size(); n != 0 || p == end - 2; n >>= 4) {
    *--p = "0123456789abcdef"[n & 15];
  }
  out->Append(std::string_view(p, static_cast<size_t>(end - p)));
  out->Append(std::move(piece));
  out->Append("\r\n");
}

void AppendLastChunk(const HeaderFields* trailers, Buffer* out) {
  size_t size = 3 + (trailers != nullptr ? trailers->SerializedSize() : 0) + 2;
  char* p = out->Reserve(size, std::max(size, Buffer::kDefaultBlockSize)).data();
  p = Put(p, "0\r\n");
  if (trailers != nullptr) p = trailers->WriteTo(p);
  Put(p, "\r\n");
  out->Commit(size);
}

std::string_view ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kBadRequestLine:
      return "bad request line";
    case ErrorCode::kBadTarget:
      return "bad request target";
    case ErrorCode::kBadVersion:
      return "bad HTTP version";
    case ErrorCode::kUnsupportedVersion:
      return "unsupported HTTP version";
    case ErrorCode::kBadStatusLine:
      return "bad status line";
    case ErrorCode::kBadLineEnding:
      return "bad line ending";
    case ErrorCode::kObsFold:
      return "obs-fold";
    case ErrorCode::kBadFieldName:
      return "bad field name";
    case ErrorCode::kWhitespaceBeforeColon:
      return "whitespace before colon";
    case ErrorCode::kBadFieldValue:
      return "bad field value";
    case ErrorCode::kBadHost:
      return "bad Host";
    case ErrorCode::kBadContentLength:
      return "bad Content-Length";
    case ErrorCode::kConflictingFraming:
      return "conflicting framing";
    case ErrorCode::kBadTransferEncoding:
      return "bad Transfer-Encoding";
    case ErrorCode::kBadChunkSize:
      return "bad chunk size";
    case ErrorCode::kBadChunkExtension:
      return "bad chunk extension";
    case ErrorCode::kBadChunkData:
      return "bad chunk data";
    case ErrorCode::kRequestLineTooLong:
      return "request line too long";
    case ErrorCode::kHeaderTooLarge:
      return "header too large";
    case ErrorCode::kBodyTooLarge:
      return "body too large";
    case ErrorCode::kChunkExtensionTooLong:
      return "chunk extension too long";
    case ErrorCode::kTrailerTooLarge:
      return "trailer too large";
    case ErrorCode::kTruncated:
      return "truncated";
    case ErrorCode::kAfterSwitch:
      return "after protocol switch";
  }
  return "unknown";
}

std::string_view ReasonPhrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "";
  }
}

void SplitTarget(const RequestHead& head, std::string_view* path, std::string_view* query) {
  std::string_view target = head.target;
  if (head.target_form == TargetForm::kAbsolute) {
    size_t authority = target.find("://");
    authority = authority == std::string_view::npos ? 0 : authority + 3;
    size_t rest = target.find_first_of("/?", authority);
    target = rest == std::string_view::npos ? std::string_view() : target.substr(rest);
  }
  size_t q = target.find('?');
  *path = target.substr(0, q);
  if (path->empty()) *path = "/";
  *query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
}

}  // namespace capstan::net::http1
