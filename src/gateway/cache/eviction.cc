#include "gateway/cache/eviction.h"

#include <algorithm>
#include <array>
#include <list>

#include "absl/container/flat_hash_map.h"

namespace capstan::gateway::cache {
namespace {

class Lru final : public EvictionPolicy {
 public:
  explicit Lru(size_t capacity) : capacity_(capacity) {}
  void Insert(uint64_t id, size_t charge, std::vector<uint64_t>* evicted) override {
    Erase(id);
    if (charge > capacity_) {
      evicted->push_back(id);
      return;
    }
    order_.push_front(id);
    index_[id] = {order_.begin(), charge};
    bytes_ += charge;
    while (bytes_ > capacity_) {
      uint64_t victim = order_.back();
      Erase(victim);
      evicted->push_back(victim);
    }
  }
  void Access(uint64_t id) override {
    auto it = index_.find(id);
    if (it == index_.end()) return;
    order_.splice(order_.begin(), order_, it->second.pos);
  }
  void Erase(uint64_t id) override {
    auto it = index_.find(id);
    if (it == index_.end()) return;
    bytes_ -= it->second.charge;
    order_.erase(it->second.pos);
    index_.erase(it);
  }
  size_t bytes() const override { return bytes_; }
  size_t entries() const override { return index_.size(); }
  size_t capacity() const override { return capacity_; }

 private:
  struct Node {
    std::list<uint64_t>::iterator pos;
    size_t charge;
  };
  size_t capacity_;
  size_t bytes_ = 0;
  std::list<uint64_t> order_;  // most recent first
  absl::flat_hash_map<uint64_t, Node> index_;
};

class S3Fifo final : public EvictionPolicy {
 public:
  explicit S3Fifo(size_t capacity)
      : capacity_(capacity), small_capacity_(std::max<size_t>(1, capacity / 10)) {}

  void Insert(uint64_t id, size_t charge, std::vector<uint64_t>* evicted) override {
    Erase(id);
    if (charge > capacity_) {
      evicted->push_back(id);
      return;
    }
    Node node{.charge = charge};
    auto ghost = ghost_index_.find(id);
    if (ghost != ghost_index_.end()) {
      ghost_bytes_ -= ghost->second.charge;
      ghost_.erase(ghost->second.pos);
      ghost_index_.erase(ghost);
      node.in_main = true;
      main_.push_front(id);
      node.pos = main_.begin();
      main_bytes_ += charge;
    } else {
      small_.push_front(id);
      node.pos = small_.begin();
      small_bytes_ += charge;
    }
    index_[id] = node;
    while (small_bytes_ + main_bytes_ > capacity_) EvictOne(evicted);
  }

  void Access(uint64_t id) override {
    auto it = index_.find(id);
    if (it != index_.end() && it->second.freq < 3) ++it->second.freq;
  }

  void Erase(uint64_t id) override {
    auto it = index_.find(id);
    if (it == index_.end()) return;
    if (it->second.in_main) {
      main_.erase(it->second.pos);
      main_bytes_ -= it->second.charge;
    } else {
      small_.erase(it->second.pos);
      small_bytes_ -= it->second.charge;
    }
    index_.erase(it);
  }

  size_t bytes() const override { return small_bytes_ + main_bytes_; }
  size_t entries() const override { return index_.size(); }
  size_t capacity() const override { return capacity_; }

 private:
  struct Node {
    std::list<uint64_t>::iterator pos;
    size_t charge = 0;
    uint8_t freq = 0;
    bool in_main = false;
  };
  struct Ghost {
    std::list<uint64_t>::iterator pos;
    size_t charge = 0;
  };

  void EvictOne(std::vector<uint64_t>* evicted) {
    if (small_bytes_ > small_capacity_ || main_.empty()) {
      EvictSmall(evicted);
    } else {
      EvictMain(evicted);
    }
  }

  void EvictSmall(std::vector<uint64_t>* evicted) {
    while (!small_.empty()) {
      uint64_t id = small_.back();
      small_.pop_back();
      Node& node = index_[id];
      small_bytes_ -= node.charge;
      if (node.freq > 0) {
        // Hit while in probation: promoted to main.
        node.freq = 0;
        node.in_main = true;
        main_.push_front(id);
        node.pos = main_.begin();
        main_bytes_ += node.charge;
        if (small_bytes_ + main_bytes_ <= capacity_) return;
        continue;
      }
      RememberGhost(id, node.charge);
      index_.erase(id);
      evicted->push_back(id);
      return;
    }
    EvictMain(evicted);
  }

  void EvictMain(std::vector<uint64_t>* evicted) {
    while (!main_.empty()) {
      uint64_t id = main_.back();
      Node& node = index_[id];
      if (node.freq > 0) {
        --node.freq;
        main_.splice(main_.begin(), main_, node.pos);
        continue;
      }
      main_.pop_back();
      main_bytes_ -= node.charge;
      index_.erase(id);
      evicted->push_back(id);
      return;
    }
  }

  // The ghost queue remembers as many bytes as main holds at most.
  void RememberGhost(uint64_t id, size_t charge) {
    ghost_.push_front(id);
    ghost_index_[id] = {ghost_.begin(), charge};
    ghost_bytes_ += charge;
    size_t limit = capacity_ - small_capacity_;
    while (ghost_bytes_ > limit && !ghost_.empty()) {
      uint64_t old = ghost_.back();
      ghost_.pop_back();
      ghost_bytes_ -= ghost_index_[old].charge;
      ghost_index_.erase(old);
    }
  }

  size_t capacity_;
  size_t small_capacity_;
  size_t small_bytes_ = 0, main_bytes_ = 0, ghost_bytes_ = 0;
  std::list<uint64_t> small_, main_, ghost_;  // newest first
  absl::flat_hash_map<uint64_t, Node> index_;
  absl::flat_hash_map<uint64_t, Ghost> ghost_index_;
};

// W-TinyLFU (Einziger et al.): a 1% LRU window in front of a segmented LRU
// main (20% probation, 80% protected); an entry leaving the window enters
// main only if a count-min sketch (4 counters, halved every 10 x entries
// samples) says it is more frequent than main's victim.
class TinyLfu final : public EvictionPolicy {
 public:
  explicit TinyLfu(size_t capacity)
      : capacity_(capacity),
        window_(std::max<size_t>(1, capacity / 100)),
        main_(capacity - std::max<size_t>(1, capacity / 100)) {}

  void Insert(uint64_t id, size_t charge, std::vector<uint64_t>* evicted) override {
    Erase(id);
    Count(id);
    if (charge > capacity_) {
      evicted->push_back(id);
      return;
    }
    std::vector<uint64_t> out;
    window_.Insert(id, charge, &out);
    charges_[id] = charge;
    for (uint64_t candidate : out) {
      Admit(candidate, evicted);
    }
  }

  void Access(uint64_t id) override {
    Count(id);
    if (window_.Contains(id)) {
      window_.Touch(id);
    } else {
      main_.Touch(id);
    }
  }

  void Erase(uint64_t id) override {
    window_.Erase(id);
    main_.Erase(id);
    charges_.erase(id);
  }
  size_t bytes() const override { return window_.bytes + main_.bytes(); }
  size_t entries() const override { return charges_.size(); }
  size_t capacity() const override { return capacity_; }

 private:
  struct Segment {
    explicit Segment(size_t cap) : capacity_(cap) {}
    size_t capacity() const { return capacity_; }
    bool Contains(uint64_t id) const { return index.contains(id); }
    void Touch(uint64_t id) {
      auto it = index.find(id);
      if (it != index.end()) order.splice(order.begin(), order, it->second.first);
    }
    void Insert(uint64_t id, size_t charge, std::vector<uint64_t>* out) {
      order.push_front(id);
      index[id] = {order.begin(), charge};
      bytes += charge;
      while (bytes > capacity_ && !order.empty()) {
        uint64_t v = order.back();
        Erase(v);
        out->push_back(v);
      }
    }
    void Erase(uint64_t id) {
      auto it = index.find(id);
      if (it == index.end()) return;
      bytes -= it->second.second;
      order.erase(it->second.first);
      index.erase(it);
    }
    size_t capacity_;
    size_t bytes = 0;
    std::list<uint64_t> order;
    absl::flat_hash_map<uint64_t, std::pair<std::list<uint64_t>::iterator, size_t>> index;
  };

  // Segmented LRU: probation and protected.
  struct Main {
    explicit Main(size_t cap) : probation(cap), protected_(cap * 8 / 10), capacity(cap) {}
    size_t bytes() const { return probation.bytes + protected_.bytes; }
    void Touch(uint64_t id) {
      auto it = probation.index.find(id);
      if (it != probation.index.end()) {
        size_t charge = it->second.second;
        probation.Erase(id);
        std::vector<uint64_t> demoted;
        protected_.Insert(id, charge, &demoted);
        for (uint64_t d : demoted) {
          probation.order.push_front(d);
          probation.index[d] = {probation.order.begin(), charges->at(d)};
          probation.bytes += charges->at(d);
        }
        return;
      }
      protected_.Touch(id);
    }
    void Erase(uint64_t id) {
      probation.Erase(id);
      protected_.Erase(id);
    }
    // The next victim (probation's LRU end, else protected's).
    bool Victim(uint64_t* id) const {
      if (!probation.order.empty()) {
        *id = probation.order.back();
        return true;
      }
      if (!protected_.order.empty()) {
        *id = protected_.order.back();
        return true;
      }
      return false;
    }
    Segment probation, protected_;
    size_t capacity;
    const absl::flat_hash_map<uint64_t, size_t>* charges = nullptr;
  };

  void Admit(uint64_t candidate, std::vector<uint64_t>* evicted) {
    main_.charges = &charges_;
    size_t charge = charges_[candidate];
    if (charge > main_.capacity) {
      charges_.erase(candidate);
      evicted->push_back(candidate);
      return;
    }
    // Make room, each victim contested by frequency.
    std::vector<uint64_t> victims;
    size_t freed = 0;
    size_t need =
        main_.bytes() + charge > main_.capacity ? main_.bytes() + charge - main_.capacity : 0;
    uint32_t candidate_freq = Frequency(candidate);
    while (freed < need) {
      uint64_t victim;
      if (!main_.Victim(&victim)) break;
      if (Frequency(victim) >= candidate_freq) {
        // The candidate loses: it goes, main is unchanged.
        charges_.erase(candidate);
        evicted->push_back(candidate);
        return;
      }
      freed += charges_[victim];
      main_.Erase(victim);
      charges_.erase(victim);
      evicted->push_back(victim);
    }
    main_.probation.order.push_front(candidate);
    main_.probation.index[candidate] = {main_.probation.order.begin(), charge};
    main_.probation.bytes += charge;
  }

  static uint64_t Mix(uint64_t x, uint64_t seed) {
    x ^= seed;
    x *= 0x9E3779B97F4A7C15ULL;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ULL;
    return x ^ (x >> 32);
  }

  void EnsureSketch() {
    // Counters for about 4 x the entries that fit (charges of one unit in
    // the simulator; bytes in a store, where the cap bounds the sketch).
    size_t want = std::min<size_t>(std::max<size_t>(1024, capacity_ * 4), size_t{1} << 20);
    if (sketch_.empty()) {
      width_ = 1;
      while (width_ < want) width_ <<= 1;
      sketch_.assign(4 * width_, 0);
      sample_limit_ = 10 * width_ / 4;
    }
  }

  void Count(uint64_t id) {
    EnsureSketch();
    for (uint64_t i = 0; i < 4; ++i) {
      uint8_t& c = sketch_[i * width_ + (Mix(id, i + 1) & (width_ - 1))];
      if (c < 15) ++c;
    }
    if (++samples_ >= sample_limit_) {
      for (uint8_t& c : sketch_) c >>= 1;
      samples_ /= 2;
    }
  }

  uint32_t Frequency(uint64_t id) const {
    if (sketch_.empty()) return 0;
    uint32_t f = 15;
    for (uint64_t i = 0; i < 4; ++i) {
      f = std::min<uint32_t>(f, sketch_[i * width_ + (Mix(id, i + 1) & (width_ - 1))]);
    }
    return f;
  }

  size_t capacity_;
  Segment window_;
  Main main_;
  absl::flat_hash_map<uint64_t, size_t> charges_;
  std::vector<uint8_t> sketch_;
  size_t width_ = 0;
  size_t samples_ = 0, sample_limit_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeEvictionPolicy(EvictionKind kind, size_t capacity_bytes) {
  switch (kind) {
    case EvictionKind::kLru:
      return std::make_unique<Lru>(capacity_bytes);
    case EvictionKind::kTinyLfu:
      return std::make_unique<TinyLfu>(capacity_bytes);
    case EvictionKind::kS3Fifo:
      break;
  }
  return std::make_unique<S3Fifo>(capacity_bytes);
}

std::string_view EvictionKindName(EvictionKind kind) {
  switch (kind) {
    case EvictionKind::kLru:
      return "lru";
    case EvictionKind::kTinyLfu:
      return "w-tinylfu";
    case EvictionKind::kS3Fifo:
      break;
  }
  return "s3-fifo";
}

}  // namespace capstan::gateway::cache
