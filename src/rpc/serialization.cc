#include "rpc/serialization.h"

#include "google/protobuf/io/zero_copy_stream.h"

namespace capstan::rpc {

namespace {

// Walks a Buffer's slices as protobuf's zero-copy input.
class BufferInputStream final : public google::protobuf::io::ZeroCopyInputStream {
 public:
  explicit BufferInputStream(const net::Buffer& buffer) : buffer_(buffer) {}

  bool Next(const void** data, int* size) override {
    if (backed_up_ > 0) {
      std::string_view s = buffer_.slice(slice_ - 1);
      *data = s.data() + s.size() - backed_up_;
      *size = static_cast<int>(backed_up_);
      byte_count_ += backed_up_;
      backed_up_ = 0;
      return true;
    }
    if (slice_ >= buffer_.slice_count()) return false;
    std::string_view s = buffer_.slice(slice_++);
    *data = s.data();
    *size = static_cast<int>(s.size());
    byte_count_ += static_cast<int64_t>(s.size());
    return true;
  }
  void BackUp(int count) override {
    backed_up_ = static_cast<size_t>(count);
    byte_count_ -= count;
  }
  bool Skip(int count) override {
    const void* data;
    int size;
    while (count > 0) {
      if (!Next(&data, &size)) return false;
      if (size > count) {
        BackUp(size - count);
        return true;
      }
      count -= size;
    }
    return true;
  }
  int64_t ByteCount() const override { return byte_count_; }

 private:
  const net::Buffer& buffer_;
  size_t slice_ = 0;
  size_t backed_up_ = 0;
  int64_t byte_count_ = 0;
};

}  // namespace

bool ParseFromBuffer(const net::Buffer& bytes, google::protobuf::MessageLite* message) {
  if (bytes.slice_count() <= 1) {
    std::string_view s = bytes.empty() ? std::string_view() : bytes.slice(0);
    return message->ParseFromArray(s.data(), static_cast<int>(s.size()));
  }
  BufferInputStream stream(bytes);
  return message->ParseFromZeroCopyStream(&stream);
}

}  // namespace capstan::rpc
