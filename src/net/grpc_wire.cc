#include "net/grpc_wire.h"

#include "absl/strings/str_cat.h"

namespace capstan::net {

std::optional<std::chrono::nanoseconds> ParseGrpcTimeout(std::string_view value) {
  if (value.size() < 2 || value.size() > 9) return std::nullopt;
  int64_t amount = 0;
  for (char c : value.substr(0, value.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    amount = amount * 10 + (c - '0');
  }
  using std::chrono::duration_cast;
  using std::chrono::nanoseconds;
  switch (value.back()) {
    case 'H':
      return duration_cast<nanoseconds>(std::chrono::hours(amount));
    case 'M':
      return duration_cast<nanoseconds>(std::chrono::minutes(amount));
    case 'S':
      return duration_cast<nanoseconds>(std::chrono::seconds(amount));
    case 'm':
      return duration_cast<nanoseconds>(std::chrono::milliseconds(amount));
    case 'u':
      return duration_cast<nanoseconds>(std::chrono::microseconds(amount));
    case 'n':
      return nanoseconds(amount);
    default:
      return std::nullopt;
  }
}

std::string PercentEncodeGrpcMessage(std::string_view message) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(message.size());
  for (unsigned char c : message) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

void AppendGrpcMessagePrefix(Buffer* out, size_t size) {
  char prefix[5];
  EncodeGrpcMessagePrefix(prefix, size);
  if (!out->empty()) {
    out->Append(std::string_view(prefix, sizeof(prefix)));
    return;
  }
  // Alone in its buffer: a block of five bytes, not a default-sized one.
  std::span<char> room = out->Reserve(sizeof(prefix), sizeof(prefix));
  std::memcpy(room.data(), prefix, sizeof(prefix));
  out->Commit(sizeof(prefix));
}

void GrpcMessageReader::Append(std::string_view bytes) {
  if (!pending_.empty() || bytes.empty()) {
    pending_.Append(bytes);
    return;
  }
  // The usual request arrives in one piece: a block of its size, not a
  // default-sized one per call.
  std::span<char> room = pending_.Reserve(bytes.size(), bytes.size());
  std::memcpy(room.data(), bytes.data(), bytes.size());
  pending_.Commit(bytes.size());
}

absl::StatusOr<std::optional<Buffer>> GrpcMessageReader::Next() {
  if (!error_.ok()) return error_;
  if (pending_.size() < 5) return std::optional<Buffer>();
  unsigned char prefix[5];
  pending_.CopyTo(reinterpret_cast<char*>(prefix), 5);
  if (prefix[0] != 0) {
    // We announce grpc-accept-encoding: identity, so a compliant client
    // never compresses; one that does gets the status grpc-go gives.
    error_ = absl::UnimplementedError(
        prefix[0] == 1 ? "grpc: compressed messages are not supported (send identity encoding)"
                       : absl::StrCat("grpc: invalid message flags ", int{prefix[0]}));
    return error_;
  }
  size_t length = (size_t{prefix[1]} << 24) | (size_t{prefix[2]} << 16) | (size_t{prefix[3]} << 8) |
                  size_t{prefix[4]};
  if (length > max_message_bytes_) {
    error_ = absl::ResourceExhaustedError(absl::StrCat("grpc: received message larger than max (",
                                                       length, " vs. ", max_message_bytes_, ")"));
    return error_;
  }
  if (pending_.size() < 5 + length) return std::optional<Buffer>();
  pending_.Consume(5);
  return std::optional<Buffer>(pending_.Cut(length));
}

}  // namespace capstan::net
