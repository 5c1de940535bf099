// Helpers shared by the native handlers of the etcd API (etcd_grpc.cc and
// the *_service.cc files): parse a request, serialize a reply, answer a
// call from any thread, propose and answer from the applier.
#pragma once

#include "google/protobuf/message.h"
#include "grpcpp/support/status.h"
#include "net/grpc_server.h"
#include "net/worker_pool.h"
#include "store/auth_gate.h"
#include "store/store.h"

namespace capstan::store {

inline bool ParseFrom(net::Buffer& bytes, google::protobuf::MessageLite* msg) {
  if (bytes.slice_count() <= 1) {
    std::string_view s = bytes.empty() ? std::string_view() : bytes.slice(0);
    return msg->ParseFromArray(s.data(), static_cast<int>(s.size()));
  }
  std::string_view flat = bytes.Flatten();
  return msg->ParseFromArray(flat.data(), static_cast<int>(flat.size()));
}

// The reply as one framed gRPC message, serialized in place.
inline net::Buffer Serialize(const google::protobuf::MessageLite& msg) {
  size_t size = msg.ByteSizeLong();
  return net::FrameGrpcMessage(size, [&](char* out) {
    msg.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(out));
  });
}

// Answers a unary call on its loop: `resp` as it is, then OK.
inline void Reply(const net::GrpcCallPtr& call, const google::protobuf::MessageLite& resp) {
  call->WriteFramed(Serialize(resp));
  call->Finish(absl::OkStatus());
}

// A status from a libgrpc++ client call (a request forwarded to the
// leader), passed on unchanged.
inline absl::Status FromGrpc(const grpc::Status& st) {
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
}

// Ends `call` with `resp` as it is, or the error, from any thread.
inline void AnswerAsIs(const net::GrpcCallPtr& call, const absl::Status& st,
                       const google::protobuf::MessageLite& resp) {
  if (!st.ok()) {
    net::GrpcCall::FinishFromAnyThread(call, st, std::nullopt);
    return;
  }
  net::GrpcCall::FinishFromAnyThread(call, absl::OkStatus(), Serialize(resp));
}

// Ends `call` with `resp` (header filled) or the error, from any thread.
// (`resp` may be null with an error: an apply that failed has no result.)
template <typename Resp>
void Answer(Store* store, const net::GrpcCallPtr& call, const absl::Status& st, Resp* resp) {
  if (!st.ok()) {
    net::GrpcCall::FinishFromAnyThread(call, st, std::nullopt);
    return;
  }
  store->FillHeader(resp->mutable_header());
  AnswerAsIs(call, st, *resp);
}

// Proposes `entry`; the applied result answers the call.
template <typename Resp>
void ProposeAndAnswer(Store* store, const net::GrpcCallPtr& call, LogEntry entry) {
  store->ProposeFromLoop(
      std::move(entry),
      [store, call](absl::Status st, google::protobuf::Message* msg) {
        if (st.ok() && msg == nullptr) st = absl::InternalError("no apply result");
        Answer(store, call, st, static_cast<Resp*>(msg));
      },
      call->loop());
}

// Parses the request of a unary call, or ends the call as gRPC does for a
// message that does not parse.
template <typename Req>
bool ParseRequest(const net::GrpcCallPtr& call, net::Buffer& bytes, Req* req) {
  if (ParseFrom(bytes, req)) return true;
  call->Finish(absl::InternalError(
      "grpc: error unmarshalling request: proto: cannot parse invalid wire-format data"));
  return false;
}

// Registration of each service's native handlers (etcd_grpc.cc calls them).
// Blocking work (disk scans, checkpoints, waits) goes to `pool`.
// They register into a MethodTable, which installs every handler behind
// the auth gate (auth_gate.h).
void AddNativeCluster(Store* store, MethodTable* server);
void AddNativeLease(Store* store, MethodTable* server);
void AddNativeMaintenance(Store* store, MethodTable* server, net::WorkerPool* pool);
void AddNativeConcurrency(Store* store, MethodTable* server);
void AddNativeAuth(Store* store, MethodTable* server, net::WorkerPool* pool);

}  // namespace capstan::store
