#include "client/client.h"

#include <fstream>
#include <future>
#include <mutex>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "net/address.h"

namespace capstan::client {

using namespace etcdserverpb;

namespace {

absl::Status FromGrpc(const grpc::Status& st) {
  if (st.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
}

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("client: cannot read ", what, " ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(ClientOptions options) {
  if (options.endpoints.empty()) return absl::InvalidArgumentError("client: no endpoints given");
  if (options.channels < 1) return absl::InvalidArgumentError("client: channels must be >= 1");
  if (options.cert_file.empty() != options.key_file.empty()) {
    return absl::InvalidArgumentError("client: cert_file and key_file must be given together");
  }
  std::shared_ptr<grpc::ChannelCredentials> tls;
  for (const std::string& ep : options.endpoints) {
    if (!ep.starts_with("https://") || tls != nullptr) continue;
    grpc::SslCredentialsOptions ssl;
    if (!options.ca_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(options.ca_file, "CA file"));
    }
    if (!options.cert_file.empty()) {
      ASSIGN_OR_RETURN(ssl.pem_cert_chain, ReadPem(options.cert_file, "certificate"));
      ASSIGN_OR_RETURN(ssl.pem_private_key, ReadPem(options.key_file, "key"));
    }
    tls = grpc::SslCredentials(ssl);
  }
  std::unique_ptr<Client> c(new Client(std::move(options)));
  for (int i = 0; i < c->options_.channels; ++i) {
    const std::string& ep =
        c->options_.endpoints[static_cast<size_t>(i) % c->options_.endpoints.size()];
    grpc::ChannelArguments args;
    // A distinct argument per channel keeps gRPC from sharing one connection.
    args.SetInt("capstan.client.channel", i);
    args.SetMaxReceiveMessageSize(-1);
    Conn conn;
    conn.channel = grpc::CreateCustomChannel(
        net::GrpcTarget(ep), ep.starts_with("https://") ? tls : grpc::InsecureChannelCredentials(),
        args);
    conn.kv = KV::NewStub(conn.channel);
    conn.lease = Lease::NewStub(conn.channel);
    conn.watch = etcdserverpb::Watch::NewStub(conn.channel);
    c->conns_.push_back(std::move(conn));
  }
  return c;
}

Client::~Client() {
  std::unique_lock<std::mutex> lock(calls_mu_);
  calls_cv_.wait(lock, [&] { return calls_in_flight_ == 0; });
}

Client::CallInFlight::CallInFlight(Client* client) : client_(client) {
  std::lock_guard<std::mutex> lock(client_->calls_mu_);
  ++client_->calls_in_flight_;
}

Client::CallInFlight::~CallInFlight() {
  std::lock_guard<std::mutex> lock(client_->calls_mu_);
  if (--client_->calls_in_flight_ == 0) client_->calls_cv_.notify_all();
}

Client::Conn& Client::Next() { return conns_[next_.fetch_add(1) % conns_.size()]; }

template <typename Resp, typename Call>
absl::StatusOr<Resp> Client::Blocking(Call call) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options_.timeout);
  Resp resp;
  grpc::Status st = call(&ctx, &resp);
  if (!st.ok()) return FromGrpc(st);
  return resp;
}

absl::StatusOr<PutResponse> Client::Put(const std::string& key, const std::string& value,
                                        int64_t lease) {
  PutRequest req;
  req.set_key(key);
  req.set_value(value);
  req.set_lease(lease);
  Conn& c = Next();
  return Blocking<PutResponse>(
      [&](grpc::ClientContext* ctx, PutResponse* resp) { return c.kv->Put(ctx, req, resp); });
}

absl::StatusOr<RangeResponse> Client::Get(const std::string& key, bool serializable) {
  RangeRequest req;
  req.set_key(key);
  req.set_serializable(serializable);
  return Range(req);
}

absl::StatusOr<RangeResponse> Client::Range(const RangeRequest& req) {
  Conn& c = Next();
  return Blocking<RangeResponse>(
      [&](grpc::ClientContext* ctx, RangeResponse* resp) { return c.kv->Range(ctx, req, resp); });
}

absl::StatusOr<DeleteRangeResponse> Client::Delete(const std::string& key,
                                                   const std::string& range_end) {
  DeleteRangeRequest req;
  req.set_key(key);
  req.set_range_end(range_end);
  Conn& c = Next();
  return Blocking<DeleteRangeResponse>([&](grpc::ClientContext* ctx, DeleteRangeResponse* resp) {
    return c.kv->DeleteRange(ctx, req, resp);
  });
}

absl::StatusOr<TxnResponse> Client::Txn(const TxnRequest& req) {
  Conn& c = Next();
  return Blocking<TxnResponse>(
      [&](grpc::ClientContext* ctx, TxnResponse* resp) { return c.kv->Txn(ctx, req, resp); });
}

absl::StatusOr<LeaseGrantResponse> Client::LeaseGrant(int64_t ttl_seconds, int64_t id) {
  LeaseGrantRequest req;
  req.set_ttl(ttl_seconds);
  req.set_id(id);
  Conn& c = Next();
  return Blocking<LeaseGrantResponse>([&](grpc::ClientContext* ctx, LeaseGrantResponse* resp) {
    return c.lease->LeaseGrant(ctx, req, resp);
  });
}

absl::StatusOr<LeaseRevokeResponse> Client::LeaseRevoke(int64_t id) {
  LeaseRevokeRequest req;
  req.set_id(id);
  Conn& c = Next();
  return Blocking<LeaseRevokeResponse>([&](grpc::ClientContext* ctx, LeaseRevokeResponse* resp) {
    return c.lease->LeaseRevoke(ctx, req, resp);
  });
}

absl::StatusOr<LeaseTimeToLiveResponse> Client::LeaseTimeToLive(int64_t id, bool keys) {
  LeaseTimeToLiveRequest req;
  req.set_id(id);
  req.set_keys(keys);
  Conn& c = Next();
  return Blocking<LeaseTimeToLiveResponse>(
      [&](grpc::ClientContext* ctx, LeaseTimeToLiveResponse* resp) {
        return c.lease->LeaseTimeToLive(ctx, req, resp);
      });
}

absl::StatusOr<int64_t> Client::LeaseKeepAliveOnce(int64_t id) {
  Conn& c = Next();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options_.timeout);
  auto stream = c.lease->LeaseKeepAlive(&ctx);
  LeaseKeepAliveRequest req;
  req.set_id(id);
  LeaseKeepAliveResponse resp;
  if (!stream->Write(req) || !stream->Read(&resp)) {
    stream->WritesDone();
    return FromGrpc(stream->Finish());
  }
  stream->WritesDone();
  ctx.TryCancel();
  return resp.ttl();
}

template <typename Req, typename Resp, typename Method>
void Client::Async(const Req& req, Callback<Resp> done, Method method) {
  struct Call {
    explicit Call(Client* client) : in_flight(client) {}
    CallInFlight in_flight;  // first member: released after ctx lets go of the channel
    grpc::ClientContext ctx;
    Req req;
    Resp resp;
    Callback<Resp> done;
  };
  auto call = std::make_shared<Call>(this);
  call->ctx.set_deadline(std::chrono::system_clock::now() + options_.timeout);
  call->req = req;
  call->done = std::move(done);
  Conn& c = Next();
  method(c, &call->ctx, &call->req, &call->resp,
         [call](grpc::Status st) { call->done(FromGrpc(st), std::move(call->resp)); });
}

void Client::PutAsync(const PutRequest& req, Callback<PutResponse> done) {
  Async<PutRequest, PutResponse>(req, std::move(done),
                                 [](Conn& c, auto* ctx, auto* q, auto* r, auto cb) {
                                   c.kv->async()->Put(ctx, q, r, std::move(cb));
                                 });
}

void Client::RangeAsync(const RangeRequest& req, Callback<RangeResponse> done) {
  Async<RangeRequest, RangeResponse>(req, std::move(done),
                                     [](Conn& c, auto* ctx, auto* q, auto* r, auto cb) {
                                       c.kv->async()->Range(ctx, q, r, std::move(cb));
                                     });
}

void Client::TxnAsync(const TxnRequest& req, Callback<TxnResponse> done) {
  Async<TxnRequest, TxnResponse>(req, std::move(done),
                                 [](Conn& c, auto* ctx, auto* q, auto* r, auto cb) {
                                   c.kv->async()->Txn(ctx, q, r, std::move(cb));
                                 });
}

void Client::LeaseGrantAsync(const LeaseGrantRequest& req, Callback<LeaseGrantResponse> done) {
  Async<LeaseGrantRequest, LeaseGrantResponse>(
      req, std::move(done), [](Conn& c, auto* ctx, auto* q, auto* r, auto cb) {
        c.lease->async()->LeaseGrant(ctx, q, r, std::move(cb));
      });
}

namespace {

// A bidi watch stream on gRPC's callback API: one read outstanding at a time,
// the create request written once.
class WatchStream final : public Watch,
                          public grpc::ClientBidiReactor<WatchRequest, WatchResponse> {
 public:
  WatchStream(etcdserverpb::Watch::Stub* stub, const WatchCreateRequest& create,
              std::function<void(const WatchResponse&)> on_response,
              std::function<void(absl::Status)> on_done)
      : on_response_(std::move(on_response)), on_done_(std::move(on_done)) {
    *request_.mutable_create_request() = create;
    stub->async()->Watch(&ctx_, this);
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }
  ~WatchStream() override {
    Cancel();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return done_; });
  }
  void Cancel() override { ctx_.TryCancel(); }

  void OnWriteDone(bool) override {}
  void OnReadDone(bool ok) override {
    if (!ok) return;
    on_response_(response_);
    StartRead(&response_);
  }
  void OnDone(const grpc::Status& st) override {
    if (on_done_) on_done_(FromGrpc(st));
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  }

 private:
  grpc::ClientContext ctx_;
  WatchRequest request_;
  WatchResponse response_;
  std::function<void(const WatchResponse&)> on_response_;
  std::function<void(absl::Status)> on_done_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<Watch> Client::WatchAsync(const WatchCreateRequest& create,
                                          std::function<void(const WatchResponse&)> on_response,
                                          std::function<void(absl::Status)> on_done) {
  return std::make_unique<WatchStream>(Next().watch.get(), create, std::move(on_response),
                                       std::move(on_done));
}

}  // namespace capstan::client
