// What the console's System page shows about the store the service uses:
// GET /v1/system/store asks every store endpoint the service was given for
// etcd's Maintenance.Status (its member id, the leader it sees, term, raft
// index, version, database size, errors) and the first that answers for
// Cluster.MemberList, each with a 2 s deadline:
//   {"endpoints": [{"endpoint", "ok", "error"?, "memberId", "leader", "raftTerm",
//                   "raftIndex", "version", "dbSize", "errors"}],
//    "members": [{"id", "name", "peerURLs", "clientURLs", "isLearner", "leader"}],
//    "leader": "<id>" | null, "membersError"?: "..."}
// Ids are hex strings (as etcdctl prints them; 64-bit numbers do not survive
// JavaScript). Always 200: an endpoint that does not answer is "ok": false.
//
// Thread-safety: the handler runs on any worker thread (it blocks on the
// store for at most 2 s per endpoint).
#pragma once

#include <string>
#include <vector>

#include "experiments/js_value.h"
#include "net/http_router.h"

namespace capstan::experiments {

// The JSON above, asked of `endpoints` (host:port) now.
Json StoreSystemStatus(const std::vector<std::string>& endpoints);

// Adds GET /v1/system/store to `router`.
void AddSystemRoutes(net::HttpRouter* router, std::vector<std::string> store_endpoints);

}  // namespace capstan::experiments
