// Small helpers for the http:// URLs etcd-style flags carry.
#pragma once

#include <string>
#include <string_view>

namespace capstan::net {

// "http://host:port" (or https://, or a bare "host:port") -> "host:port", the
// form gRPC channels take.
inline std::string GrpcTarget(std::string_view url) {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (url.starts_with(scheme)) url.remove_prefix(scheme.size());
  }
  return std::string(url);
}

}  // namespace capstan::net
