// The Streams service of echo.proto, written for the RPC tests: Produce
// sends `count` chunks, Consume sums what arrives, Exchange echoes each chunk
// back. Shared by the streaming tests over Capstan's protocol and over gRPC.
#pragma once

#include <atomic>
#include <string>

#include "capstan/echo.capstan.h"
#include "rpc/server.h"
#include "rpc/test_echo.h"

namespace capstan::rpc::testing {

using echo::Chunk;
using echo::ProduceRequest;
using echo::StreamSummary;

class TestStreams : public echo::StreamsServer {
 public:
  net::Task<absl::Status> Produce(ServerContext& context, const ProduceRequest& request,
                                  ServerWriter<Chunk>& writer) override {
    Chunk chunk;
    chunk.set_payload(std::string(static_cast<size_t>(request.size()), 'p'));
    for (int i = 0; i < request.count(); ++i) {
      chunk.set_seq(i);
      if (!co_await writer.Write(chunk)) {
        writes_refused++;
        co_return absl::CancelledError("the caller went away");
      }
      produced++;
    }
    if (request.fail_code() != 0) {
      co_return absl::Status(static_cast<absl::StatusCode>(request.fail_code()), "asked to fail");
    }
    co_return absl::OkStatus();
  }

  net::Task<absl::Status> Consume(ServerContext& context, ServerReader<Chunk>& reader,
                                  StreamSummary* summary) override {
    // Held: the client's messages pile up unread until the gate opens.
    if (Gate* gate = hold_consume.load(); gate != nullptr) co_await gate->Wait(context.loop());
    Chunk chunk;
    while (co_await reader.Read(&chunk)) {
      summary->set_chunks(summary->chunks() + 1);
      summary->set_bytes(summary->bytes() + static_cast<int64_t>(chunk.payload().size()));
      summary->set_seq_sum(summary->seq_sum() + chunk.seq());
    }
    co_return absl::OkStatus();
  }

  net::Task<absl::Status> Exchange(ServerContext& context,
                                   ServerReaderWriter<Chunk, Chunk>& stream) override {
    Chunk chunk;
    while (co_await stream.Read(&chunk)) {
      if (!co_await stream.Write(chunk)) break;
    }
    exchanges_ended++;
    co_return context.cancelled() ? absl::CancelledError("cancelled") : absl::OkStatus();
  }

  std::atomic<Gate*> hold_consume{nullptr};
  std::atomic<int> produced{0};
  std::atomic<int> writes_refused{0};
  std::atomic<int> exchanges_ended{0};
};

}  // namespace capstan::rpc::testing
