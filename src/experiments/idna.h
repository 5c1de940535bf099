// The part of IDNA (UTS #46, non-transitional, as the WHATWG URL Standard's
// "domain to ASCII" runs it) that needs no Unicode tables, for whatwg_url.h:
// hosts of ASCII and the Latin-1 letters U+00C0-U+00FF (not U+00D7 and
// U+00F7). Their UTS #46 mapping is their lower case (U+00DF and U+00FF map
// to themselves); they are NFC and left-to-right as they stand, so no other
// rule applies. Punycode is RFC 3492.
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace capstan::experiments {

// A lower-cased (ASCII) domain, UTF-8, to ASCII: each label with a Latin-1
// letter becomes "xn--" + its punycode. nullopt for anything else (invalid
// UTF-8, other scripts, full-width dots, combining marks).
std::optional<std::string> Latin1DomainToAscii(std::string_view utf8);

// An "xn--" label (lower-case) that decodes to ASCII and at least one
// Latin-1 letter as Latin1DomainToAscii leaves them and is that label's own
// encoding; false for other labels (not validated here).
bool IsLatin1PunycodeLabel(std::string_view label);

}  // namespace capstan::experiments
