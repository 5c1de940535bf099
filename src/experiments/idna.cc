#include "experiments/idna.h"

#include <cstdint>

namespace capstan::experiments {
namespace {

// RFC 3492 punycode of one label's code points (some above 0x7F).
std::string Punycode(const std::u32string& label) {
  constexpr uint32_t kBase = 36, kTmin = 1, kTmax = 26, kSkew = 38, kDamp = 700;
  auto digit = [](uint32_t d) { return static_cast<char>(d < 26 ? 'a' + d : '0' + (d - 26)); };
  auto adapt = [&](uint32_t delta, uint32_t points, bool first) {
    delta = first ? delta / kDamp : delta / 2;
    delta += delta / points;
    uint32_t k = 0;
    while (delta > ((kBase - kTmin) * kTmax) / 2) {
      delta /= kBase - kTmin;
      k += kBase;
    }
    return k + (kBase - kTmin + 1) * delta / (delta + kSkew);
  };
  std::string out;
  for (char32_t c : label) {
    if (c < 0x80) out.push_back(static_cast<char>(c));
  }
  uint32_t basic = static_cast<uint32_t>(out.size()), handled = basic;
  if (basic > 0) out.push_back('-');
  uint32_t n = 0x80, delta = 0, bias = 72;
  while (handled < label.size()) {
    uint32_t m = UINT32_MAX;
    for (char32_t c : label) {
      if (c >= n && c < m) m = c;
    }
    delta += (m - n) * (handled + 1);
    n = m;
    for (char32_t c : label) {
      if (c < n) ++delta;
      if (c != n) continue;
      uint32_t q = delta;
      for (uint32_t k = kBase;; k += kBase) {
        uint32_t t = k <= bias ? kTmin : (k >= bias + kTmax ? kTmax : k - bias);
        if (q < t) break;
        out.push_back(digit(t + (q - t) % (kBase - t)));
        q = (q - t) / (kBase - t);
      }
      out.push_back(digit(q));
      bias = adapt(delta, handled + 1, handled == basic);
      delta = 0;
      ++handled;
    }
    ++delta;
    ++n;
  }
  return out;
}

// RFC 3492 decoding of a label's punycode (after "xn--"); nullopt when it
// is not valid punycode.
std::optional<std::u32string> PunycodeDecode(std::string_view in) {
  constexpr uint32_t kBase = 36, kTmin = 1, kTmax = 26, kSkew = 38, kDamp = 700;
  std::u32string out;
  size_t dash = in.rfind('-');
  if (dash != std::string_view::npos) {
    for (char c : in.substr(0, dash)) {
      if (static_cast<unsigned char>(c) >= 0x80) return std::nullopt;
      out.push_back(static_cast<char32_t>(c));
    }
    in.remove_prefix(dash + 1);
  }
  uint64_t n = 0x80, i = 0, bias = 72;
  size_t pos = 0;
  while (pos < in.size()) {
    uint64_t old_i = i, w = 1;
    for (uint64_t k = kBase;; k += kBase) {
      if (pos >= in.size()) return std::nullopt;
      char c = in[pos++];
      uint64_t digit;
      if (c >= 'a' && c <= 'z') {
        digit = static_cast<uint64_t>(c - 'a');
      } else if (c >= '0' && c <= '9') {
        digit = static_cast<uint64_t>(c - '0') + 26;
      } else {
        return std::nullopt;
      }
      i += digit * w;
      if (i > 0x10FFFF * 64) return std::nullopt;
      uint64_t t = k <= bias ? kTmin : (k >= bias + kTmax ? kTmax : k - bias);
      if (digit < t) break;
      w *= kBase - t;
      if (w > 0x10FFFF * 64) return std::nullopt;
    }
    uint64_t points = out.size() + 1;
    uint64_t delta = old_i == 0 ? (i - old_i) / kDamp : (i - old_i) / 2;
    delta += delta / points;
    uint64_t k = 0;
    while (delta > ((kBase - kTmin) * kTmax) / 2) {
      delta /= kBase - kTmin;
      k += kBase;
    }
    bias = k + (kBase - kTmin + 1) * delta / (delta + kSkew);
    n += i / points;
    i %= points;
    if (n > 0x10FFFF) return std::nullopt;
    out.insert(out.begin() + static_cast<std::ptrdiff_t>(i), static_cast<char32_t>(n));
    ++i;
  }
  return out;
}

}  // namespace

std::optional<std::string> Latin1DomainToAscii(std::string_view utf8) {
  std::string out;
  std::u32string label;
  bool label_ascii = true;
  auto flush = [&] {
    if (label_ascii) {
      for (char32_t c : label) out.push_back(static_cast<char>(c));
    } else {
      out += "xn--" + Punycode(label);
    }
    label.clear();
    label_ascii = true;
  };
  for (size_t i = 0; i < utf8.size();) {
    auto b = static_cast<unsigned char>(utf8[i]);
    char32_t c;
    if (b < 0x80) {
      c = b;
      ++i;
    } else if ((b == 0xC3 || b == 0xC2) && i + 1 < utf8.size() &&
               (static_cast<unsigned char>(utf8[i + 1]) & 0xC0) == 0x80) {
      c = static_cast<char32_t>(((b & 0x1F) << 6) |
                                (static_cast<unsigned char>(utf8[i + 1]) & 0x3F));
      i += 2;
    } else {
      return std::nullopt;
    }
    if (c == '.') {
      flush();
      out.push_back('.');
      continue;
    }
    if (c >= 0x80) {
      if (c < 0xC0 || c == 0xD7 || c == 0xF7) return std::nullopt;
      if (c <= 0xDE) c += 0x20;
      label_ascii = false;
    }
    label.push_back(c);
  }
  flush();
  return out;
}

bool IsLatin1PunycodeLabel(std::string_view label) {
  std::optional<std::u32string> decoded = PunycodeDecode(label.substr(4));
  if (!decoded.has_value()) return false;
  bool non_ascii = false;
  for (char32_t c : *decoded) {
    if (c < 0x80) {
      if (c == '.' || (c >= 'A' && c <= 'Z')) return false;
      continue;
    }
    if (c < 0xDF || c > 0xFF || c == 0xF7) return false;
    non_ascii = true;
  }
  return non_ascii && "xn--" + Punycode(*decoded) == label;
}

}  // namespace capstan::experiments
