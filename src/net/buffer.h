// Buffer: a chained, reference-counted byte buffer. Bytes live in blocks;
// a Buffer is a list of slices of blocks. Cutting a frame off an input
// buffer, appending one buffer to another or handing a payload to a socket
// moves slices and bumps reference counts: the bytes themselves are written
// once (by recv or by a serializer) and read once (by send or a parser).
//
// Appending small pieces copies them into the tail block; a tail block shared
// with another Buffer is still extended in place when nobody else has written
// past this Buffer's end (an atomic high-water mark per block decides that).
//
// Thread-safety: a Buffer is a value owned by one thread at a time; blocks may
// be shared between Buffers on different threads (reference counts and the
// high-water mark are atomic, the bytes of a slice never change once written).
//
//   net::Buffer out;
//   out.Append(header);
//   out.Append(std::move(payload));        // no copy
//   int n = out.FillIovecs(iov, 64);       // writev(fd, iov, n)
//   out.Consume(written);
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/container/inlined_vector.h"

namespace capstan::net {

class Buffer {
 public:
  // Block size for appends that do not say otherwise: large enough that a
  // recv fills many small frames, small enough that an idle connection costs
  // little.
  static constexpr size_t kDefaultBlockSize = 16 * 1024 - 64;

  Buffer() = default;
  ~Buffer() { Clear(); }
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  // Copies the bytes of `data`.
  explicit Buffer(std::string_view data) { Append(data); }

  // Another Buffer over the same bytes (no copy).
  Buffer Share() const;
  // Another Buffer over bytes [offset, offset + n) of this one (no copy).
  // REQUIRES: offset + n <= size().
  Buffer ShareRange(size_t offset, size_t n) const;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  size_t slice_count() const { return slices_.size(); }
  std::string_view slice(size_t i) const {
    const Slice& s = slices_[i];
    return {s.block->data + s.offset, s.length};
  }

  void Append(std::string_view data);
  // Moves other's slices to the end of this buffer; `other` becomes empty.
  void Append(Buffer&& other);
  // Space to write at least `min` bytes contiguously at the end; returns the
  // writable span (possibly larger). Commit(n) then makes n of them part of
  // the buffer. Nothing else may touch the buffer between the two calls.
  std::span<char> Reserve(size_t min, size_t block_size = kDefaultBlockSize);
  void Commit(size_t n);

  // Removes the first n bytes. REQUIRES: n <= size().
  void Consume(size_t n);
  // Removes and returns the first n bytes (sharing blocks). REQUIRES: n <= size().
  Buffer Cut(size_t n);
  void Clear();

  // Copies up to n bytes starting at `offset` into out; returns the count.
  size_t CopyTo(char* out, size_t n, size_t offset = 0) const;
  std::string ToString() const;
  // Appends the bytes to *out, slice by slice (one copy; `out += ToString()`
  // made a temporary of them first).
  void AppendTo(std::string* out) const;
  // The first n bytes as one contiguous view: without copying when they sit
  // in one slice, else copied into *scratch. REQUIRES: n <= size().
  std::string_view Peek(size_t n, std::string* scratch) const;
  // Makes the whole buffer one slice (copying if it is not already).
  std::string_view Flatten();

  // A copy of `data` in one block of its own whose pages come from mmap and
  // go back to the kernel with munmap, never to the allocator: nothing else
  // is ever written where these bytes are. So the kernel may keep
  // references to the pages past the Buffer's life (vmsplice into a socket:
  // Socket sends such slices without copying them, see socket.h) and still
  // send these bytes. Costs a system call pair per copy and rounds up to
  // pages: for large bodies stored once and sent many times (the HTTP
  // cache's), not for per-request data.
  static Buffer MappedCopy(const Buffer& data);
  // Reserve for such a block of exactly n bytes (n > 0), always a new
  // slice; Commit as after Reserve. For bytes read from elsewhere (a file)
  // straight into a mapped block. Both fall back to an ordinary block when
  // mmap fails (vm.max_map_count reached: 65530 mappings by default, one
  // per block unless the kernel merges neighbours); its slices are then
  // sent by copy.
  std::span<char> ReserveMapped(size_t n);
  // Whether slice i lies in such a block.
  bool slice_mapped(size_t i) const { return (slices_[i].block->flags & kMapped) != 0; }

  // Fills up to max iovecs with the buffer's slices from the start; returns
  // how many were filled.
  int FillIovecs(struct iovec* iov, int max) const;

 private:
  struct Block {
    std::atomic<int32_t> refs;
    // Bytes [0, used) have been written by some Buffer. A Buffer whose last
    // slice ends at `used` may claim more by moving it forward.
    std::atomic<uint32_t> used;
    uint32_t capacity;
    uint32_t flags;  // kMapped
    char data[];
  };
  static constexpr uint32_t kMapped = 1;
  struct Slice {
    Block* block;
    uint32_t offset;
    uint32_t length;
  };

  static Block* InitBlock(void* memory, size_t capacity, uint32_t flags);
  static Block* NewBlock(size_t capacity);
  // Null when mmap fails.
  static Block* NewMappedBlock(size_t capacity);
  // Reserve's span in a fresh block (a new slice at Commit).
  std::span<char> ReserveNewBlock(Block* b);
  static void Ref(Block* b) { b->refs.fetch_add(1, std::memory_order_relaxed); }
  static void Unref(Block* b);
  // Tries to extend the last slice by up to `want` bytes in place; returns
  // how many bytes it may write at the slice's end.
  size_t ClaimTail(size_t want);

  absl::InlinedVector<Slice, 4> slices_;
  size_t size_ = 0;
  // Set by Reserve: the block the reserved span belongs to and whether the
  // span extends the last slice (true) or starts a new one.
  Block* reserved_block_ = nullptr;
  bool reserved_extends_ = false;
};

}  // namespace capstan::net
