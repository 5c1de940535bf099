// Endpoint targets: one string names where a client finds a service's
// endpoints, and NewEndpointSource makes the source for it.
//
//   auto source = mesh::NewEndpointSource("store://127.0.0.1:2379/services/echo").value();
//
// Targets:
//   static:///10.0.0.1:7000,10.0.0.2:7000    a fixed list (also "host:port,...")
//   dns:///echo.internal:7000                A/AAAA records, re-resolved every 30 s
//   store://127.0.0.1:2379/services/echo     the store's registry under a prefix
//                                            (also etcd://; see registry.h)
//
// This sits above both discovery.h (static, DNS) and registry.h (the
// store), which know nothing of each other's users: registry uses
// discovery's Endpoint parsing, and only this file knows every kind.
//
// Thread-safety: NewEndpointSource may be called from any thread.
#pragma once

#include <memory>
#include <string_view>

#include "base/status.h"
#include "mesh/discovery.h"

namespace capstan::mesh {

// A source from a target string (forms above); INVALID_ARGUMENT saying what
// was expected otherwise.
absl::StatusOr<std::unique_ptr<EndpointSource>> NewEndpointSource(std::string_view target);

}  // namespace capstan::mesh
