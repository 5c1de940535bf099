// Decryption (and, for the service, encryption) of GrowthBook's encrypted payload fields
// (encryptedFeatures, encryptedSavedGroups, ...), as util.ts `decrypt` does with WebCrypto.
//
// Format: "<base64 IV>.<base64 ciphertext>", AES-CBC with PKCS#7 padding, the
// key base64 (16, 24 or 32 bytes). Base64 is decoded as the browser's atob
// does (white space ignored, padding optional), and the plaintext as
// TextDecoder does (UTF-8, a leading BOM dropped, invalid bytes become U+FFFD).
//
// Thread-safety: pure function.
//
// Example:
//   std::optional<std::string> json = DecryptPayload(payload["encryptedFeatures"], key);
//   if (!json) { /* wrong key or corrupt payload */ }
#ifndef CAPSTAN_EXPERIMENTS_DECRYPT_H_
#define CAPSTAN_EXPERIMENTS_DECRYPT_H_

#include <optional>
#include <string>
#include <string_view>

namespace capstan::experiments {

// The plaintext, or std::nullopt for any failure: bad base64, a missing ".",
// a key that is not 16/24/32 bytes, an IV that is not 16 bytes, bad padding.
std::optional<std::string> DecryptPayload(std::string_view encrypted, std::string_view key_base64);

// The inverse, as GrowthBook's back-end encrypts a payload field for an SDK
// connection: a random IV, "<base64 IV>.<base64 ciphertext>". std::nullopt
// for a key that is not base64 of 16, 24 or 32 bytes.
std::optional<std::string> EncryptPayload(std::string_view plaintext, std::string_view key_base64);

// atob: forgiving base64 decoding; std::nullopt where atob throws.
std::optional<std::string> ForgivingBase64Decode(std::string_view input);

// TextDecoder("utf-8").decode: strips one leading BOM and replaces each
// maximal invalid subpart with U+FFFD (the WHATWG Encoding Standard).
std::string DecodeUtf8Lossy(std::string_view bytes);

}  // namespace capstan::experiments

#endif  // CAPSTAN_EXPERIMENTS_DECRYPT_H_
