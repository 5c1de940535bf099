#include "experiments/decrypt.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <memory>

#include "base/utf8.h"
#include "experiments/js_value.h"

namespace capstan::experiments {
namespace {

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

std::optional<std::string> ForgivingBase64Decode(std::string_view input) {
  std::string data;
  for (char c : input) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r') continue;
    data.push_back(c);
  }
  if (data.size() % 4 == 0) {
    if (!data.empty() && data.back() == '=') data.pop_back();
    if (!data.empty() && data.back() == '=') data.pop_back();
  }
  if (data.size() % 4 == 1) return std::nullopt;
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : data) {
    int v = Base64Value(c);
    if (v < 0) return std::nullopt;
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  return out;
}

std::string DecodeUtf8Lossy(std::string_view bytes) {
  if (bytes.substr(0, 3) == "\xEF\xBB\xBF") bytes.remove_prefix(3);
  std::string out;
  out.reserve(bytes.size());
  char32_t code_point = 0;
  int needed = 0, seen = 0;
  unsigned lower = 0x80, upper = 0xBF;
  for (size_t i = 0; i < bytes.size();) {
    unsigned b = static_cast<unsigned char>(bytes[i]);
    if (needed == 0) {
      ++i;
      if (b < 0x80) {
        out.push_back(static_cast<char>(b));
      } else if (b >= 0xC2 && b <= 0xDF) {
        needed = 1;
        code_point = b & 0x1F;
      } else if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0) lower = 0xA0;
        if (b == 0xED) upper = 0x9F;
        needed = 2;
        code_point = b & 0xF;
      } else if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0) lower = 0x90;
        if (b == 0xF4) upper = 0x8F;
        needed = 3;
        code_point = b & 0x7;
      } else {
        utf8::Append(0xFFFD, &out);
      }
      continue;
    }
    if (b < lower || b > upper) {
      // The invalid byte is not consumed: it starts the next sequence.
      code_point = 0;
      needed = seen = 0;
      lower = 0x80;
      upper = 0xBF;
      utf8::Append(0xFFFD, &out);
      continue;
    }
    ++i;
    lower = 0x80;
    upper = 0xBF;
    code_point = (code_point << 6) | (b & 0x3F);
    if (++seen == needed) {
      utf8::Append(code_point, &out);
      code_point = 0;
      needed = seen = 0;
    }
  }
  if (needed != 0) utf8::Append(0xFFFD, &out);
  return out;
}

namespace {

const EVP_CIPHER* CbcCipherFor(size_t key_bytes) {
  switch (key_bytes) {
    case 16:
      return EVP_aes_128_cbc();
    case 24:
      return EVP_aes_192_cbc();
    case 32:
      return EVP_aes_256_cbc();
    default:
      return nullptr;
  }
}

std::string Base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

}  // namespace

std::optional<std::string> EncryptPayload(std::string_view plaintext, std::string_view key_base64) {
  std::optional<std::string> key = ForgivingBase64Decode(key_base64);
  if (!key) return std::nullopt;
  const EVP_CIPHER* cipher = CbcCipherFor(key->size());
  if (cipher == nullptr) return std::nullopt;
  unsigned char iv[16];
  if (RAND_bytes(iv, sizeof(iv)) != 1) return std::nullopt;
  std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(),
                                                                      EVP_CIPHER_CTX_free);
  if (ctx == nullptr ||
      EVP_EncryptInit_ex(ctx.get(), cipher, nullptr,
                         reinterpret_cast<const unsigned char*>(key->data()), iv) != 1) {
    return std::nullopt;
  }
  std::string sealed(plaintext.size() + 16, '\0');
  int written = 0, final_written = 0;
  auto* out = reinterpret_cast<unsigned char*>(sealed.data());
  if (EVP_EncryptUpdate(ctx.get(), out, &written,
                        reinterpret_cast<const unsigned char*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out + written, &final_written) != 1) {
    return std::nullopt;
  }
  sealed.resize(static_cast<size_t>(written + final_written));
  return Base64Encode(std::string_view(reinterpret_cast<const char*>(iv), sizeof(iv))) + "." +
         Base64Encode(sealed);
}

std::optional<std::string> DecryptPayload(std::string_view encrypted, std::string_view key_base64) {
  // encryptedString.split("."): the IV before the first dot, the ciphertext up
  // to the next one.
  size_t dot = encrypted.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  std::string_view cipher_part = encrypted.substr(dot + 1);
  cipher_part = cipher_part.substr(0, cipher_part.find('.'));
  std::optional<std::string> key = ForgivingBase64Decode(key_base64);
  std::optional<std::string> iv = ForgivingBase64Decode(encrypted.substr(0, dot));
  std::optional<std::string> cipher_text = ForgivingBase64Decode(cipher_part);
  if (!key || !iv || !cipher_text) return std::nullopt;
  const EVP_CIPHER* cipher = nullptr;
  switch (key->size()) {
    case 16:
      cipher = EVP_aes_128_cbc();
      break;
    case 24:
      cipher = EVP_aes_192_cbc();
      break;
    case 32:
      cipher = EVP_aes_256_cbc();
      break;
    default:
      return std::nullopt;
  }
  if (iv->size() != 16) return std::nullopt;
  if (cipher_text->empty() || cipher_text->size() % 16 != 0) return std::nullopt;
  std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)> ctx(EVP_CIPHER_CTX_new(),
                                                                      EVP_CIPHER_CTX_free);
  if (ctx == nullptr) return std::nullopt;
  auto* key_bytes = reinterpret_cast<const unsigned char*>(key->data());
  auto* iv_bytes = reinterpret_cast<const unsigned char*>(iv->data());
  if (EVP_DecryptInit_ex(ctx.get(), cipher, nullptr, key_bytes, iv_bytes) != 1) {
    return std::nullopt;
  }
  std::string plain(cipher_text->size() + 16, '\0');
  int written = 0, final_written = 0;
  auto* out = reinterpret_cast<unsigned char*>(plain.data());
  if (EVP_DecryptUpdate(ctx.get(), out, &written,
                        reinterpret_cast<const unsigned char*>(cipher_text->data()),
                        static_cast<int>(cipher_text->size())) != 1) {
    return std::nullopt;
  }
  if (EVP_DecryptFinal_ex(ctx.get(), out + written, &final_written) != 1) return std::nullopt;
  plain.resize(static_cast<size_t>(written + final_written));
  return DecodeUtf8Lossy(plain);
}

}  // namespace capstan::experiments
