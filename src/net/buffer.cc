#include "net/buffer.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <new>

namespace capstan::net {

Buffer::Block* Buffer::InitBlock(void* memory, size_t capacity, uint32_t flags) {
  Block* b = static_cast<Block*>(memory);
  new (&b->refs) std::atomic<int32_t>(1);
  new (&b->used) std::atomic<uint32_t>(0);
  b->capacity = static_cast<uint32_t>(capacity);
  b->flags = flags;
  return b;
}

Buffer::Block* Buffer::NewBlock(size_t capacity) {
  void* memory = std::malloc(sizeof(Block) + capacity);
  if (memory == nullptr) throw std::bad_alloc();
  return InitBlock(memory, capacity, 0);
}

namespace {

size_t MappedBytes(size_t capacity, size_t header) {
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return (header + capacity + page - 1) / page * page;
}

}  // namespace

void Buffer::Unref(Block* b) {
  if (b->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  if ((b->flags & kMapped) != 0) {
    ::munmap(b, MappedBytes(b->capacity, sizeof(Block)));
  } else {
    std::free(b);
  }
}

Buffer::Block* Buffer::NewMappedBlock(size_t capacity) {
  void* memory = ::mmap(nullptr, MappedBytes(capacity, sizeof(Block)), PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return nullptr;
  return InitBlock(memory, capacity, kMapped);
}

std::span<char> Buffer::ReserveMapped(size_t n) {
  Block* b = NewMappedBlock(n);
  // Out of mappings (vm.max_map_count) or memory: an ordinary block, sent
  // by copy, rather than no block.
  if (b == nullptr) b = NewBlock(n);
  return ReserveNewBlock(b);
}

Buffer Buffer::MappedCopy(const Buffer& data) {
  Buffer out;
  if (data.empty()) return out;
  std::span<char> space = out.ReserveMapped(data.size());
  data.CopyTo(space.data(), data.size());
  out.Commit(data.size());
  return out;
}

Buffer::Buffer(Buffer&& other) noexcept : slices_(std::move(other.slices_)), size_(other.size_) {
  other.slices_.clear();
  other.size_ = 0;
}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    Clear();
    slices_ = std::move(other.slices_);
    size_ = other.size_;
    other.slices_.clear();
    other.size_ = 0;
  }
  return *this;
}

Buffer Buffer::Share() const {
  Buffer copy;
  copy.slices_ = slices_;
  for (const Slice& s : slices_) Ref(s.block);
  copy.size_ = size_;
  return copy;
}

Buffer Buffer::ShareRange(size_t offset, size_t n) const {
  Buffer part;
  for (const Slice& s : slices_) {
    if (n == 0) break;
    if (offset >= s.length) {
      offset -= s.length;
      continue;
    }
    uint32_t take = static_cast<uint32_t>(std::min<size_t>(n, s.length - offset));
    Ref(s.block);
    part.slices_.push_back(Slice{s.block, s.offset + static_cast<uint32_t>(offset), take});
    part.size_ += take;
    n -= take;
    offset = 0;
  }
  return part;
}

void Buffer::Clear() {
  // A reservation never committed (a reader that failed half-way) gives its
  // block back too: the destructor comes here.
  if (reserved_block_ != nullptr) Commit(0);
  for (const Slice& s : slices_) Unref(s.block);
  slices_.clear();
  size_ = 0;
}

size_t Buffer::ClaimTail(size_t want) {
  if (slices_.empty() || want == 0) return 0;
  Slice& last = slices_.back();
  Block* b = last.block;
  uint32_t end = last.offset + last.length;
  uint32_t room = b->capacity - end;
  if (room == 0) return 0;
  uint32_t take = static_cast<uint32_t>(std::min<size_t>(want, room));
  uint32_t expected = end;
  // Only the Buffer whose slice ends at the high-water mark may grow into the
  // block; everyone else sees a different `used` and allocates.
  if (!b->used.compare_exchange_strong(expected, end + take, std::memory_order_acq_rel)) return 0;
  return take;
}

void Buffer::Append(std::string_view data) {
  while (!data.empty()) {
    size_t take = ClaimTail(data.size());
    if (take > 0) {
      Slice& last = slices_.back();
      std::memcpy(last.block->data + last.offset + last.length, data.data(), take);
      last.length += static_cast<uint32_t>(take);
      size_ += take;
      data.remove_prefix(take);
      continue;
    }
    Block* b = NewBlock(std::max(kDefaultBlockSize, std::min<size_t>(data.size(), 1 << 20)));
    slices_.push_back(Slice{b, 0, 0});
  }
}

void Buffer::Append(Buffer&& other) {
  if (other.empty()) return;
  if (empty()) {
    *this = std::move(other);
    return;
  }
  // Small pieces are copied into our tail rather than adding a slice each:
  // a response header followed by a payload should become one iovec, not two.
  if (other.size_ <= 256 && other.slices_.size() <= 2) {
    for (const Slice& s : other.slices_)
      Append(std::string_view(s.block->data + s.offset, s.length));
    other.Clear();
    return;
  }
  for (const Slice& s : other.slices_) slices_.push_back(s);
  size_ += other.size_;
  other.slices_.clear();
  other.size_ = 0;
}

std::span<char> Buffer::Reserve(size_t min, size_t block_size) {
  if (!slices_.empty()) {
    Slice& last = slices_.back();
    Block* b = last.block;
    uint32_t end = last.offset + last.length;
    // ClaimTail takes all the room or nothing, so a success has >= min bytes.
    if (b->capacity - end >= min) {
      if (size_t take = ClaimTail(b->capacity - end); take > 0) {
        reserved_block_ = b;
        reserved_extends_ = true;
        return {b->data + end, take};
      }
    }
  }
  return ReserveNewBlock(NewBlock(std::max(block_size, min)));
}

std::span<char> Buffer::ReserveNewBlock(Block* b) {
  // All of it claimed until Commit says how much was written.
  b->used.store(b->capacity, std::memory_order_relaxed);
  reserved_block_ = b;
  reserved_extends_ = false;
  return {b->data, b->capacity};
}

void Buffer::Commit(size_t n) {
  Block* b = reserved_block_;
  reserved_block_ = nullptr;
  if (b == nullptr) return;
  if (reserved_extends_) {
    Slice& last = slices_.back();
    uint32_t end = last.offset + last.length;
    last.length += static_cast<uint32_t>(n);
    size_ += n;
    // Return what was reserved but not written, so a later append can use it.
    uint32_t claimed = b->capacity;
    b->used.compare_exchange_strong(claimed, end + static_cast<uint32_t>(n),
                                    std::memory_order_acq_rel);
    return;
  }
  if (n == 0) {
    Unref(b);
    return;
  }
  b->used.store(static_cast<uint32_t>(n), std::memory_order_release);
  slices_.push_back(Slice{b, 0, static_cast<uint32_t>(n)});
  size_ += n;
}

void Buffer::Consume(size_t n) {
  size_ -= n;
  size_t drop = 0;
  while (n > 0) {
    Slice& s = slices_[drop];
    if (n < s.length) {
      s.offset += static_cast<uint32_t>(n);
      s.length -= static_cast<uint32_t>(n);
      break;
    }
    n -= s.length;
    Unref(s.block);
    ++drop;
  }
  if (drop > 0) slices_.erase(slices_.begin(), slices_.begin() + drop);
}

Buffer Buffer::Cut(size_t n) {
  Buffer head;
  if (n == size_) {
    head = std::move(*this);
    return head;
  }
  size_t i = 0;
  size_t left = n;
  while (left > 0) {
    Slice& s = slices_[i];
    if (left < s.length) {
      Ref(s.block);
      head.slices_.push_back(Slice{s.block, s.offset, static_cast<uint32_t>(left)});
      s.offset += static_cast<uint32_t>(left);
      s.length -= static_cast<uint32_t>(left);
      left = 0;
      break;
    }
    head.slices_.push_back(s);  // the reference moves with the slice
    left -= s.length;
    ++i;
  }
  slices_.erase(slices_.begin(), slices_.begin() + i);
  head.size_ = n;
  size_ -= n;
  return head;
}

size_t Buffer::CopyTo(char* out, size_t n, size_t offset) const {
  size_t copied = 0;
  for (const Slice& s : slices_) {
    if (copied == n) break;
    if (offset >= s.length) {
      offset -= s.length;
      continue;
    }
    size_t take = std::min<size_t>(s.length - offset, n - copied);
    std::memcpy(out + copied, s.block->data + s.offset + offset, take);
    copied += take;
    offset = 0;
  }
  return copied;
}

std::string Buffer::ToString() const {
  std::string out(size_, '\0');
  CopyTo(out.data(), size_);
  return out;
}

void Buffer::AppendTo(std::string* out) const {
  for (size_t i = 0; i < slices_.size(); ++i) out->append(slice(i));
}

std::string_view Buffer::Peek(size_t n, std::string* scratch) const {
  if (n == 0) return {};
  const Slice& first = slices_.front();
  if (first.length >= n) return {first.block->data + first.offset, n};
  scratch->resize(n);
  CopyTo(scratch->data(), n);
  return *scratch;
}

std::string_view Buffer::Flatten() {
  if (slices_.empty()) return {};
  if (slices_.size() > 1) {
    Block* b = NewBlock(size_);
    CopyTo(b->data, size_);
    b->used.store(static_cast<uint32_t>(size_), std::memory_order_relaxed);
    size_t total = size_;
    Clear();
    slices_.push_back(Slice{b, 0, static_cast<uint32_t>(total)});
    size_ = total;
  }
  return slice(0);
}

int Buffer::FillIovecs(struct iovec* iov, int max) const {
  int n = 0;
  for (const Slice& s : slices_) {
    if (n == max) break;
    iov[n].iov_base = s.block->data + s.offset;
    iov[n].iov_len = s.length;
    ++n;
  }
  return n;
}

}  // namespace capstan::net
