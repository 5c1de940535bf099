// The gRPC services every rpc::Server carries unless told not to
// (ServerOptions::health_service, reflection_service): health checking
// (grpc.health.v1.Health) and server reflection (grpc.reflection.v1alpha and
// v1). They are ordinary Services, so Capstan clients reach them too.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "rpc/server.h"

namespace capstan::rpc::internal {

inline constexpr std::string_view kHealthServiceName = "grpc.health.v1.Health";

// Check answers SERVING for "" and each service of `server`, NOT_SERVING
// once it drains, NOT_FOUND for other names; Watch sends the status and each
// change (it ends UNAVAILABLE after NOT_SERVING when the server drains, so
// it does not hold the drain up).
std::unique_ptr<Service> NewHealthService(const Server* server);

// ServerReflectionInfo in both packages: list_services names the services of
// `server`; file_by_filename, file_containing_symbol,
// file_containing_extension and all_extension_numbers_of_type answer from
// the descriptors linked into the binary (the generated pool), a file with
// every file it imports.
std::vector<std::unique_ptr<Service>> NewReflectionServices(const Server* server);

}  // namespace capstan::rpc::internal
