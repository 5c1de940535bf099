// `capstan bench null-server`: an etcd v3 KV server that does no work. Put,
// Range, DeleteRange and Txn answer at once with an empty response (header
// only), on gRPC's callback API with the same server settings as `capstan
// store`. Loading it with `capstan bench store --pid` measures what gRPC
// itself costs per unary call on this machine: the floor under the store's
// CPU per operation for as long as the store serves through libgrpc++.
#pragma once

#include <string>

#include "base/status.h"

namespace capstan::bench {

struct NullServerOptions {
  std::string listen = "127.0.0.1:2379";
};

// Serves until SIGINT or SIGTERM (which the caller has blocked).
absl::Status RunNullServer(const NullServerOptions& options);

}  // namespace capstan::bench
