// IDNA for whatwg_url.h: the URL Standard's "domain to ASCII" (beStrict
// false) as node's `new URL` runs it (node 20, its URL parser Ada 2.9):
// UTS #46 ToASCII with CheckHyphens off, CheckBidi and CheckJoiners on,
// UseSTD3ASCIIRules off, non-transitional processing and VerifyDnsLength
// off.
//
// The data is ICU's: its "uts46" normalizer is the UTS #46 mapping table
// and NFC of Unicode 15.0 (ICU 72; node's table is IDNA 15.0 too): case
// folding of every script, full-width and ideographic dots, compatibility
// forms, ignored code points; disallowed ones fail. The rules are node's
// where node departs from the letter of UTS #46 (the differential
// tests/e2e/growthbook/url_differential.cjs holds them to it):
//   - an all-ASCII host is only lower-cased and its "xn--" labels checked;
//     a label that is ASCII and not "xn--" is never validated, even in a
//     bidi domain name ("-a.\u0628" is a host);
//   - an "xn--" label must decode to a non-empty label that the mapping and
//     NFC leave unchanged and that is valid; it may decode to ASCII only
//     ("xn--a-" is a host), and is kept as written (lower case);
//   - validity: no leading combining mark; ContextJ decided by the first
//     joiner (a virama before it accepts the whole label); the RFC 5893
//     bidi rule only for labels with a right-to-left character, the last
//     character of such a label starting left-to-right unchecked;
//   - the properties those rules read (combining marks, viramas, bidi
//     classes) are Unicode 13's, and joining types a fixed subset
//     (idna.cc).
// Punycode is RFC 3492 with its 2^31 - 1 overflow limit.
//
// Thread-safety: pure functions (ICU's normalizer is immutable, shared).
//
// Example:
//   DomainToAscii("Пример。рф").ascii  // "xn--e1afmkfd.xn--p1ai"
#pragma once

#include <string>
#include <string_view>

namespace capstan::experiments {

struct IdnaResult {
  enum Status { kOk, kFailure, kUnsupported };
  Status status = kFailure;  // kFailure: the URL parser fails ("Invalid URL")
  std::string ascii;         // kOk: the domain as ASCII (punycode labels)
};

// domain: percent-decoded UTF-8 (invalid bytes are U+FFFD and so invalid),
// already known to be non-ASCII or to have an "xn--" label. The caller
// checks forbidden domain code points and IPv4 afterwards. kUnsupported
// only if ICU's UTS #46 data cannot be loaded.
IdnaResult DomainToAscii(std::string_view domain);

}  // namespace capstan::experiments
