// Pieces shared by the benchmark's raw HTTP/2 clients (raw_watch, raw_unary).
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "base/status.h"

namespace capstan::bench {

// A connected TCP socket (TCP_NODELAY) to `endpoint` (host:port, an
// http:// prefix accepted); `authority` gets host:port.
absl::StatusOr<int> ConnectTcp(const std::string& endpoint, std::string* authority);

// The length in a gRPC message prefix. REQUIRES: prefix.size() >= 5.
inline size_t GrpcMessageSize(std::string_view prefix) {
  return (static_cast<size_t>(static_cast<uint8_t>(prefix[1])) << 24) |
         (static_cast<size_t>(static_cast<uint8_t>(prefix[2])) << 16) |
         (static_cast<size_t>(static_cast<uint8_t>(prefix[3])) << 8) |
         static_cast<size_t>(static_cast<uint8_t>(prefix[4]));
}

// A header field for nghttp2_submit_request; both strings must outlive the call.
inline nghttp2_nv HeaderField(const char* name, const std::string& value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), std::strlen(name),
          value.size(), NGHTTP2_NV_FLAG_NONE};
}

}  // namespace capstan::bench
