// An echo service written by hand against the Service API, for the RPC
// tests (the generated one is tested in codegen_test). The request says how
// to behave (delay, fail, call downstream); `forced_failure` and
// `extra_delay` make a whole server misbehave.
#pragma once

#include <atomic>
#include <coroutine>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "capstan/echo.pb.h"
#include "net/block_on.h"
#include "rpc/channel.h"
#include "rpc/server.h"

namespace capstan::rpc::testing {

// A gate handlers wait at until a test opens it: ordering by an explicit
// signal instead of by delays. Handlers wait on their own loops; Open may
// come from any thread and resumes each waiter by Post onto its loop.
class Gate {
 public:
  auto Wait(net::EventLoop* loop) {
    struct Awaiter {
      Gate* gate;
      net::EventLoop* loop;
      bool await_ready() {
        std::lock_guard lock(gate->mu_);
        return gate->open_;
      }
      bool await_suspend(std::coroutine_handle<> h) {
        std::lock_guard lock(gate->mu_);
        if (gate->open_) return false;
        gate->waiters_.emplace_back(loop, h);
        return true;
      }
      void await_resume() {}
    };
    return Awaiter{this, loop};
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    for (auto [loop, h] : std::exchange(waiters_, {})) loop->Post([h] { h.resume(); });
  }

 private:
  std::mutex mu_;
  bool open_ = false;
  std::vector<std::pair<net::EventLoop*, std::coroutine_handle<>>> waiters_;
};

class TestEcho : public Service {
 public:
  explicit TestEcho(std::string name, std::shared_ptr<Channel>* downstream = nullptr)
      : Service("capstan.echo.Echo"), name_(std::move(name)), downstream_(downstream) {
    AddUnary<echo::EchoRequest, echo::EchoResponse>(
        "Echo", [this](ServerContext& ctx, const echo::EchoRequest& req, echo::EchoResponse* resp) {
          return Handle(ctx, req, resp);
        });
    // Server streaming (not in echo.proto's Echo service; tests call it by
    // name): three answers, each saying who served it.
    AddServerStreaming<echo::EchoRequest, echo::EchoResponse>(
        "Stream",
        [this](ServerContext& ctx, const echo::EchoRequest& req,
               ServerWriter<echo::EchoResponse>& writer) -> net::Task<absl::Status> {
          calls++;
          echo::EchoResponse resp;
          resp.set_payload(req.payload());
          resp.set_served_by(name_);
          for (int i = 0; i < 3; ++i) {
            if (!co_await writer.Write(resp)) co_return absl::CancelledError("caller went away");
          }
          co_return absl::OkStatus();
        });
  }

  std::atomic<int> calls{0};
  // Calls whose caller had cancelled them by the time they finished.
  std::atomic<int> cancelled{0};
  std::atomic<int> forced_failure{0};  // a status code every call returns
  std::atomic<int64_t> extra_delay_us{0};
  // When set, every call waits for it to open before answering.
  std::atomic<Gate*> hold{nullptr};

  // How many calls held at the gate their caller has cancelled by now (the
  // server has read their CANCEL), read on each call's loop.
  // REQUIRES: the gate is closed (the held calls' contexts are alive).
  int HeldCancelled() {
    std::vector<ServerContext*> held;
    {
      std::lock_guard lock(held_mu_);
      held = held_;
    }
    int cancelled_now = 0;
    for (ServerContext* ctx : held) {
      net::RunOn(ctx->loop(), [&] { cancelled_now += ctx->cancelled() ? 1 : 0; });
    }
    return cancelled_now;
  }

 private:
  net::Task<absl::Status> Handle(ServerContext& ctx, const echo::EchoRequest& req,
                                 echo::EchoResponse* resp) {
    calls++;
    int64_t delay = req.delay_us() + extra_delay_us.load();
    if (delay > 0) co_await ctx.loop()->Sleep(std::chrono::microseconds(delay));
    if (Gate* gate = hold.load(); gate != nullptr) {
      {
        std::lock_guard lock(held_mu_);
        held_.push_back(&ctx);
      }
      co_await gate->Wait(ctx.loop());
      std::lock_guard lock(held_mu_);
      std::erase(held_, &ctx);
    }
    if (ctx.cancelled()) cancelled++;
    if (req.fail_code() != 0) {
      co_return absl::Status(static_cast<absl::StatusCode>(req.fail_code()), "asked to fail");
    }
    if (int code = forced_failure.load(); code != 0) {
      co_return absl::Status(static_cast<absl::StatusCode>(code), name_ + " is set to fail");
    }
    if (req.call_downstream() && downstream_ != nullptr) {
      echo::EchoRequest next;
      next.set_payload(req.payload());
      auto r = co_await (*downstream_)
                   ->Call<echo::EchoRequest, echo::EchoResponse>("capstan.echo.Echo/Echo", next,
                                                                 CallOptions{.parent = &ctx});
      if (!r.ok()) co_return r.status();
      *resp = *r;
      co_return absl::OkStatus();
    }
    // A request for "traceparent" is answered with the trace context the
    // call arrived with (to test propagation through a hop).
    resp->set_payload(req.payload() == "traceparent" ? std::string(ctx.Metadata("traceparent"))
                                                     : req.payload());
    resp->set_served_by(name_);
    resp->set_caller(std::string(ctx.Metadata("caller")));
    resp->set_deadline_left_us(
        ctx.has_deadline()
            ? std::chrono::duration_cast<std::chrono::microseconds>(ctx.deadline() - Clock::now())
                  .count()
            : -1);
    co_return absl::OkStatus();
  }

  std::string name_;
  std::shared_ptr<Channel>* downstream_;
  std::mutex held_mu_;
  std::vector<ServerContext*> held_;
};

}  // namespace capstan::rpc::testing
