#include "gateway/cache/cache_control.h"

#include <algorithm>
#include <ctime>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace capstan::gateway::cache {
namespace {

bool IsOws(char c) { return c == ' ' || c == '\t'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsOws(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsOws(s.back())) s.remove_suffix(1);
  return s;
}

bool Eq(std::string_view a, std::string_view b) {
  return absl::EqualsIgnoreCase(absl::string_view(a.data(), a.size()),
                                absl::string_view(b.data(), b.size()));
}

// delta-seconds: 1*DIGIT, saturating at 2^31. nullopt: not digits.
std::optional<int64_t> DeltaSeconds(std::string_view v) {
  if (v.empty()) return std::nullopt;
  int64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return std::nullopt;
    if (n < kMaxDeltaSeconds) n = n * 10 + (c - '0');
  }
  return n > kMaxDeltaSeconds ? kMaxDeltaSeconds : n;
}

// Sets *slot from a delta-seconds value unless already set. An invalid value
// sets `invalid` (when given) instead, else leaves the slot alone.
void SetDelta(std::optional<int64_t>* slot, std::string_view value, bool has_value,
              std::optional<int64_t> invalid) {
  if (slot->has_value()) return;
  std::optional<int64_t> d = has_value ? DeltaSeconds(value) : std::nullopt;
  if (d) {
    *slot = d;
  } else if (invalid) {
    *slot = invalid;
  }
}

}  // namespace

void ParseCacheControlInto(std::string_view value, CacheControl* cc) {
  size_t i = 0;
  const size_t n = value.size();
  while (i < n) {
    // One directive: name [= token | quoted-string], up to the next comma
    // outside a quoted string.
    while (i < n && (IsOws(value[i]) || value[i] == ',')) ++i;
    if (i >= n) break;
    size_t name_start = i;
    while (i < n && value[i] != '=' && value[i] != ',') ++i;
    std::string_view name = Trim(value.substr(name_start, i - name_start));
    std::string arg;
    bool has_value = false;
    if (i < n && value[i] == '=') {
      has_value = true;
      ++i;
      while (i < n && IsOws(value[i])) ++i;
      if (i < n && value[i] == '"') {
        ++i;
        while (i < n && value[i] != '"') {
          if (value[i] == '\\' && i + 1 < n) ++i;
          arg.push_back(value[i]);
          ++i;
        }
        if (i < n) ++i;                        // closing quote
        while (i < n && value[i] != ',') ++i;  // junk after the quote is ignored
      } else {
        size_t start = i;
        while (i < n && value[i] != ',') ++i;
        arg = std::string(Trim(value.substr(start, i - start)));
      }
    }
    if (name.empty()) continue;
    cc->present = true;
    if (Eq(name, "max-age")) {
      SetDelta(&cc->max_age, arg, has_value, 0);
    } else if (Eq(name, "s-maxage")) {
      SetDelta(&cc->s_maxage, arg, has_value, 0);
    } else if (Eq(name, "no-store")) {
      cc->no_store = true;
    } else if (Eq(name, "no-cache")) {
      cc->no_cache = true;
    } else if (Eq(name, "private")) {
      cc->private_ = true;
    } else if (Eq(name, "public")) {
      cc->public_ = true;
    } else if (Eq(name, "must-revalidate")) {
      cc->must_revalidate = true;
    } else if (Eq(name, "proxy-revalidate")) {
      cc->proxy_revalidate = true;
    } else if (Eq(name, "must-understand")) {
      cc->must_understand = true;
    } else if (Eq(name, "no-transform")) {
      cc->no_transform = true;
    } else if (Eq(name, "immutable")) {
      cc->immutable = true;
    } else if (Eq(name, "stale-while-revalidate")) {
      SetDelta(&cc->stale_while_revalidate, arg, has_value, std::nullopt);
    } else if (Eq(name, "stale-if-error")) {
      SetDelta(&cc->stale_if_error, arg, has_value, std::nullopt);
    } else if (Eq(name, "max-stale")) {
      if (!has_value) {
        cc->max_stale_any = true;
      } else {
        SetDelta(&cc->max_stale, arg, true, std::nullopt);
      }
    } else if (Eq(name, "min-fresh")) {
      SetDelta(&cc->min_fresh, arg, has_value, std::nullopt);
    } else if (Eq(name, "only-if-cached")) {
      cc->only_if_cached = true;
    }
  }
}

CacheControl ParseCacheControl(const net::http1::HeaderFields& fields, bool request) {
  CacheControl cc;
  bool any = false;
  for (const auto& f : fields) {
    if (Eq(f.name, "cache-control")) {
      ParseCacheControlInto(f.value, &cc);
      any = true;
    }
  }
  if (request && !any && fields.HasToken("pragma", "no-cache")) {
    cc.no_cache = true;
    cc.present = true;
  }
  return cc;
}

namespace {

// RFC 8941 (Structured Field Values) Dictionary parsing, as much as a
// targeted cache-control field needs: every bare item type is recognised
// (so a valid field is accepted whatever its extensions carry); only
// Integers and Booleans are kept.
class SfDictionary {
 public:
  struct Item {
    enum class Type { kInteger, kDecimal, kString, kToken, kBytes, kBoolean, kInnerList } type;
    int64_t integer = 0;  // kInteger, kBoolean (0 / 1)
  };

  explicit SfDictionary(std::string_view in) : in_(in) {}

  // Calls member(key, item) for each member, in order; false when the text
  // is not a Dictionary.
  template <typename Fn>
  bool Parse(Fn&& member) {
    SkipSp();
    if (Done()) return true;
    while (true) {
      std::string_view key;
      if (!Key(&key)) return false;
      Item item{Item::Type::kBoolean, 1};
      if (Peek('=')) {
        ++pos_;
        if (!ItemOrInnerList(&item)) return false;
      } else if (!Parameters()) {
        return false;
      }
      member(key, item);
      SkipOws();
      if (Done()) return true;
      if (!Peek(',')) return false;
      ++pos_;
      SkipOws();
      if (Done()) return false;  // a trailing comma
    }
  }

 private:
  bool Done() const { return pos_ >= in_.size(); }
  bool Peek(char c) const { return pos_ < in_.size() && in_[pos_] == c; }
  void SkipSp() {
    while (Peek(' ')) ++pos_;
  }
  void SkipOws() {
    while (Peek(' ') || Peek('\t')) ++pos_;
  }
  static bool LcAlpha(char c) { return c >= 'a' && c <= 'z'; }
  static bool Digit(char c) { return c >= '0' && c <= '9'; }
  static bool Alpha(char c) { return LcAlpha(c) || (c >= 'A' && c <= 'Z'); }
  static bool TChar(char c) {
    return Alpha(c) || Digit(c) ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  }

  bool Key(std::string_view* key) {
    size_t start = pos_;
    if (Done() || !(LcAlpha(in_[pos_]) || in_[pos_] == '*')) return false;
    ++pos_;
    while (!Done() && (LcAlpha(in_[pos_]) || Digit(in_[pos_]) || in_[pos_] == '_' ||
                       in_[pos_] == '-' || in_[pos_] == '.' || in_[pos_] == '*')) {
      ++pos_;
    }
    *key = in_.substr(start, pos_ - start);
    return true;
  }

  bool Parameters() {
    while (Peek(';')) {
      ++pos_;
      SkipSp();
      std::string_view key;
      if (!Key(&key)) return false;
      if (Peek('=')) {
        ++pos_;
        Item ignored{};
        if (!BareItem(&ignored)) return false;
      }
    }
    return true;
  }

  bool ItemOrInnerList(Item* item) {
    if (Peek('(')) {
      ++pos_;
      item->type = Item::Type::kInnerList;
      while (true) {
        SkipSp();
        if (Peek(')')) {
          ++pos_;
          return Parameters();
        }
        Item inner{};
        if (!BareItem(&inner) || !Parameters()) return false;
        if (!Peek(' ') && !Peek(')')) return false;
      }
    }
    return BareItem(item) && Parameters();
  }

  bool BareItem(Item* item) {
    if (Done()) return false;
    char c = in_[pos_];
    if (c == '-' || Digit(c)) return Number(item);
    if (c == '"') {
      item->type = Item::Type::kString;
      for (++pos_; !Done(); ++pos_) {
        char s = in_[pos_];
        if (s == '\\') {
          if (++pos_ >= in_.size() || (in_[pos_] != '"' && in_[pos_] != '\\')) return false;
        } else if (s == '"') {
          ++pos_;
          return true;
        } else if (s < 0x20 || s > 0x7e) {
          return false;
        }
      }
      return false;
    }
    if (c == '*' || Alpha(c)) {
      item->type = Item::Type::kToken;
      ++pos_;
      while (!Done() && (TChar(in_[pos_]) || in_[pos_] == ':' || in_[pos_] == '/')) ++pos_;
      return true;
    }
    if (c == ':') {
      item->type = Item::Type::kBytes;
      for (++pos_; !Done(); ++pos_) {
        char b = in_[pos_];
        if (b == ':') {
          ++pos_;
          return true;
        }
        if (!(Alpha(b) || Digit(b) || b == '+' || b == '/' || b == '=')) return false;
      }
      return false;
    }
    if (c == '?') {
      ++pos_;
      if (Done() || (in_[pos_] != '0' && in_[pos_] != '1')) return false;
      item->type = Item::Type::kBoolean;
      item->integer = in_[pos_] == '1' ? 1 : 0;
      ++pos_;
      return true;
    }
    return false;
  }

  // sf-integer: up to 15 digits; sf-decimal: up to 12 integer and 3 fraction digits.
  bool Number(Item* item) {
    bool negative = Peek('-');
    if (negative) ++pos_;
    int64_t v = 0;
    int digits = 0;
    while (!Done() && Digit(in_[pos_])) {
      v = v * 10 + (in_[pos_] - '0');
      ++pos_;
      if (++digits > 15) return false;
    }
    if (digits == 0) return false;
    if (Peek('.')) {
      if (digits > 12) return false;
      ++pos_;
      int fraction = 0;
      while (!Done() && Digit(in_[pos_])) {
        ++pos_;
        ++fraction;
      }
      if (fraction < 1 || fraction > 3) return false;
      item->type = Item::Type::kDecimal;
      return true;
    }
    item->type = Item::Type::kInteger;
    item->integer = negative ? -v : v;
    return true;
  }

  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace

bool ParseTargetedCacheControl(std::string_view value, CacheControl* cc) {
  using Item = SfDictionary::Item;
  CacheControl out;
  out.targeted = true;
  bool valid = true;
  auto delta = [&valid](const Item& item, std::optional<int64_t>* slot) {
    if (item.type != Item::Type::kInteger || item.integer < 0) {
      valid = false;
      return;
    }
    *slot = std::min(item.integer, kMaxDeltaSeconds);
  };
  auto flag = [&valid](const Item& item, bool* slot) {
    if (item.type != Item::Type::kBoolean) {
      valid = false;
      return;
    }
    *slot = item.integer == 1;
  };
  // Dictionary semantics: a repeated key's last value wins.
  bool parsed = SfDictionary(value).Parse([&](std::string_view key, const Item& item) {
    out.present = true;
    if (key == "max-age") {
      delta(item, &out.max_age);
    } else if (key == "s-maxage") {
      delta(item, &out.s_maxage);
    } else if (key == "stale-while-revalidate") {
      delta(item, &out.stale_while_revalidate);
    } else if (key == "stale-if-error") {
      delta(item, &out.stale_if_error);
    } else if (key == "no-store") {
      flag(item, &out.no_store);
    } else if (key == "no-cache") {
      flag(item, &out.no_cache);
    } else if (key == "private") {
      flag(item, &out.private_);
    } else if (key == "public") {
      flag(item, &out.public_);
    } else if (key == "must-revalidate") {
      flag(item, &out.must_revalidate);
    } else if (key == "proxy-revalidate") {
      flag(item, &out.proxy_revalidate);
    } else if (key == "must-understand") {
      flag(item, &out.must_understand);
    } else if (key == "no-transform") {
      flag(item, &out.no_transform);
    } else if (key == "immutable") {
      flag(item, &out.immutable);
    }
  });
  if (!parsed || !valid || !out.present) return false;
  *cc = out;
  return true;
}

CacheControl ResponseCacheControl(const net::http1::HeaderFields& fields,
                                  const std::vector<std::string>& targeted) {
  for (const std::string& name : targeted) {
    std::string joined;
    size_t lines = 0;
    for (const auto& f : fields) {
      if (!Eq(f.name, name)) continue;
      if (lines++ > 0) joined += ", ";
      joined.append(f.value.data(), f.value.size());
    }
    if (lines == 0) continue;
    CacheControl cc;
    if (ParseTargetedCacheControl(Trim(joined), &cc)) return cc;
  }
  return ParseCacheControl(fields);
}

namespace {

int MonthIndex(std::string_view m) {
  static constexpr std::string_view kMonths[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                                 "jul", "aug", "sep", "oct", "nov", "dec"};
  for (int i = 0; i < 12; ++i) {
    if (Eq(m, kMonths[i])) return i;
  }
  return -1;
}

// Reads exactly `digits` digits (or 1..digits when `exact` is false).
bool Number(std::string_view s, size_t* pos, int min_digits, int max_digits, int* out) {
  int v = 0, d = 0;
  while (*pos < s.size() && d < max_digits && s[*pos] >= '0' && s[*pos] <= '9') {
    v = v * 10 + (s[*pos] - '0');
    ++*pos;
    ++d;
  }
  if (d < min_digits) return false;
  *out = v;
  return true;
}

bool Literal(std::string_view s, size_t* pos, char c) {
  if (*pos < s.size() && s[*pos] == c) {
    ++*pos;
    return true;
  }
  return false;
}

bool Word(std::string_view s, size_t* pos, std::string_view* out) {
  size_t start = *pos;
  while (*pos < s.size() && absl::ascii_isalpha(static_cast<unsigned char>(s[*pos]))) ++*pos;
  *out = s.substr(start, *pos - start);
  return *pos > start;
}

bool Spaces(std::string_view s, size_t* pos) {
  size_t start = *pos;
  while (*pos < s.size() && s[*pos] == ' ') ++*pos;
  return *pos > start;
}

// Exactly one SP, as IMF-fixdate and rfc850-date have between their parts
// ("Thu, 18  Aug  2050 ..." is not a date; asctime pads its day with one).
bool OneSpace(std::string_view s, size_t* pos) {
  if (*pos < s.size() && s[*pos] == ' ' && !(*pos + 1 < s.size() && s[*pos + 1] == ' ')) {
    ++*pos;
    return true;
  }
  return false;
}

bool Clock(std::string_view s, size_t* pos, int* h, int* m, int* sec) {
  return Number(s, pos, 2, 2, h) && Literal(s, pos, ':') && Number(s, pos, 2, 2, m) &&
         Literal(s, pos, ':') && Number(s, pos, 2, 2, sec);
}

std::optional<int64_t> ToUnix(int year, int month, int day, int h, int m, int s) {
  if (month < 0 || day < 1 || day > 31 || h > 23 || m > 59 || s > 60) return std::nullopt;
  // Days from civil (Howard Hinnant's algorithm), no time zone involved.
  int m1 = month + 1;  // 1..12
  int y = year - (m1 <= 2 ? 1 : 0);
  int mp = (m1 + 9) % 12;
  int era = (y >= 0 ? y : y - 399) / 400;
  int yoe = y - era * 400;
  int doy = (153 * mp + 2) / 5 + day - 1;
  int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  int64_t days = static_cast<int64_t>(era) * 146097 + doe - 719468;
  return days * 86400 + h * 3600 + m * 60 + s;
}

}  // namespace

std::optional<int64_t> ParseHttpDate(std::string_view text) {
  std::string_view s = Trim(text);
  size_t pos = 0;
  std::string_view weekday;
  if (!Word(s, &pos, &weekday)) return std::nullopt;
  int day = 0, year = 0, h = 0, m = 0, sec = 0;
  std::string_view month;
  if (Literal(s, &pos, ',')) {
    if (!OneSpace(s, &pos)) return std::nullopt;
    if (weekday.size() == 3) {
      // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
      if (!Number(s, &pos, 2, 2, &day) || !OneSpace(s, &pos) || !Word(s, &pos, &month) ||
          !OneSpace(s, &pos) || !Number(s, &pos, 4, 4, &year) || !OneSpace(s, &pos) ||
          !Clock(s, &pos, &h, &m, &sec)) {
        return std::nullopt;
      }
    } else {
      // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT (two-digit years: within 50
      // years of now is what RFC 9110 asks; 70..99 -> 19xx is the usual rule).
      if (!Number(s, &pos, 2, 2, &day) || !Literal(s, &pos, '-') || !Word(s, &pos, &month) ||
          !Literal(s, &pos, '-') || !Number(s, &pos, 2, 4, &year) || !OneSpace(s, &pos) ||
          !Clock(s, &pos, &h, &m, &sec)) {
        return std::nullopt;
      }
      if (year < 100) year += year < 70 ? 2000 : 1900;
    }
    if (!OneSpace(s, &pos)) return std::nullopt;
    std::string_view zone;
    if (!Word(s, &pos, &zone) || !Eq(zone, "GMT")) return std::nullopt;
  } else {
    // asctime: Sun Nov  6 08:49:37 1994
    if (!Spaces(s, &pos) || !Word(s, &pos, &month) || !Spaces(s, &pos) ||
        !Number(s, &pos, 1, 2, &day) || !Spaces(s, &pos) || !Clock(s, &pos, &h, &m, &sec) ||
        !Spaces(s, &pos) || !Number(s, &pos, 4, 4, &year)) {
      return std::nullopt;
    }
  }
  Spaces(s, &pos);
  if (pos != s.size()) return std::nullopt;
  return ToUnix(year, MonthIndex(month), day, h, m, sec);
}

std::string FormatHttpDate(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char out[40];
  snprintf(out, sizeof(out), "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday], tm.tm_mday,
           kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return out;
}

}  // namespace capstan::gateway::cache
