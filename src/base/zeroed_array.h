// ZeroedArray<T>: a fixed-size array of a trivial type, all bytes zero,
// mapped from the kernel (anonymous mmap) instead of the heap. For the large
// hash tables the event store probes at random (the dedup window, the unit
// table):
// - the kernel's pages are zero already, so nothing is written to make them
//   so (a std::vector<T>(n) writes every byte after the kernel zeroed it);
//   pages are touched only as entries are;
// - transparent huge pages are asked for (THP in "madvise" mode): every
//   access is random, and a 2 MiB page costs one TLB entry instead of 512;
// - freeing returns the memory to the kernel at once (munmap).
//
// Thread-safety: as a plain array.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace capstan {

template <typename T>
class ZeroedArray {
  static_assert(std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>,
                "ZeroedArray holds plain data whose all-zero bytes are a valid value");

 public:
  ZeroedArray() = default;
  // Throws std::bad_alloc when the kernel refuses the mapping.
  explicit ZeroedArray(size_t size) : size_(size) {
    if (size == 0) return;
    void* p = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    (void)madvise(p, bytes(), MADV_HUGEPAGE);  // advice: fine if refused
    data_ = static_cast<T*>(p);
  }
  ~ZeroedArray() { Release(); }
  ZeroedArray(ZeroedArray&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  ZeroedArray& operator=(ZeroedArray&& other) noexcept {
    if (this != &other) {
      Release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  ZeroedArray(const ZeroedArray&) = delete;
  ZeroedArray& operator=(const ZeroedArray&) = delete;

  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }

 private:
  void Release() {
    if (data_ != nullptr) munmap(data_, bytes());
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace capstan
