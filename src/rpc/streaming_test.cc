// Streaming calls end to end, on both I/O engines: server, client and
// bidirectional streams through the generated stubs, flow control (on the
// wire, with a raw client), cancellation, deadlines and lost connections.
#include <atomic>
#include <cctype>
#include <cstring>
#include <future>
#include <optional>
#include <thread>

#include "capstan/echo.capstan.h"
#include "gtest/gtest.h"
#include "net/block_on.h"
#include "net/loop_group.h"
#include "net/socket.h"
#include "net/test_util.h"
#include "net/wait_group.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/test_streams.h"

namespace capstan::rpc {
namespace {

using echo::Chunk;
using echo::ProduceRequest;
using echo::StreamSummary;
using namespace std::chrono_literals;

using testing::TestStreams;

using net::testing::Eventually;

Chunk MakeChunk(int64_t seq, size_t size) {
  Chunk chunk;
  chunk.set_seq(seq);
  chunk.set_payload(std::string(size, 'c'));
  return chunk;
}

class StreamingTest : public ::testing::TestWithParam<net::IoBackendKind> {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.threads = 2;
    options.backend = GetParam();
    server_ = std::make_unique<Server>(options);
    server_->AddService(&service_);
    ASSERT_TRUE(server_->Start().ok());
    net::LoopGroupOptions client;
    client.loop.backend = GetParam();
    client.name = "client";
    auto group = net::LoopGroup::Start(client);
    ASSERT_TRUE(group.ok()) << group.status();
    client_loops_ = std::move(group).value();
    loop_ = client_loops_->loop(0);
    channel_ = Channel::Create(loop_, "127.0.0.1", server_->port());
  }
  void TearDown() override {
    net::RunOn(loop_, [this] { channel_.reset(); });
    client_loops_->Stop();
    if (server_) server_->Shutdown(1s);
  }

  template <typename T>
  T Run(net::Task<T> task) {
    return net::BlockOn(loop_, std::move(task));
  }

  TestStreams service_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<net::LoopGroup> client_loops_;
  net::EventLoop* loop_ = nullptr;
  std::shared_ptr<Channel> channel_;
};

struct Received {
  std::vector<int64_t> seqs;
  size_t bytes = 0;
  absl::Status status;
};

net::Task<Received> ReadAll(ClientReader<Chunk> reader) {
  Received out;
  Chunk chunk;
  while (co_await reader.Read(&chunk)) {
    out.seqs.push_back(chunk.seq());
    out.bytes += chunk.payload().size();
  }
  out.status = co_await reader.Finish();
  co_return out;
}

TEST_P(StreamingTest, ServerStreamDeliversEveryMessageInOrderThenTheStatus) {
  Received r = Run([](std::shared_ptr<Channel> ch) -> net::Task<Received> {
    echo::StreamsClient client(ch);
    ProduceRequest request;
    request.set_count(1000);
    request.set_size(100);
    co_return co_await ReadAll(co_await client.Produce(request, {.timeout = 10s}));
  }(channel_));
  ASSERT_TRUE(r.status.ok()) << r.status;
  ASSERT_EQ(r.seqs.size(), 1000u);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(r.seqs[i], i);
  EXPECT_EQ(r.bytes, 100'000u);

  // A stream that ends in an error delivers what came before it.
  r = Run([](std::shared_ptr<Channel> ch) -> net::Task<Received> {
    echo::StreamsClient client(ch);
    ProduceRequest request;
    request.set_count(3);
    request.set_fail_code(static_cast<int>(absl::StatusCode::kFailedPrecondition));
    co_return co_await ReadAll(co_await client.Produce(request));
  }(channel_));
  EXPECT_EQ(r.seqs.size(), 3u);
  EXPECT_EQ(r.status.code(), absl::StatusCode::kFailedPrecondition) << r.status;
  EXPECT_EQ(r.status.message(), "asked to fail");
}

TEST_P(StreamingTest, ClientStreamIsAnsweredOnceTheClientHalfCloses) {
  auto summary = Run([](std::shared_ptr<Channel> ch) -> net::Task<absl::StatusOr<StreamSummary>> {
    echo::StreamsClient client(ch);
    auto writer = co_await client.Consume({.timeout = 10s});
    for (int i = 0; i < 1000; ++i) {
      if (!co_await writer.Write(MakeChunk(i, 10))) break;
    }
    writer.CloseSend();
    co_return co_await writer.Finish();
  }(channel_));
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->chunks(), 1000);
  EXPECT_EQ(summary->bytes(), 10'000);
  EXPECT_EQ(summary->seq_sum(), 999 * 1000 / 2);
}

// 4 MiB through a 1 MiB window: the server must return credit as its
// handler reads, or the client's writes wait forever (until the deadline).
TEST_P(StreamingTest, AClientStreamLargerThanTheWindowFlows) {
  auto summary = Run([](std::shared_ptr<Channel> ch) -> net::Task<absl::StatusOr<StreamSummary>> {
    echo::StreamsClient client(ch);
    auto writer = co_await client.Consume({.timeout = 20s});
    for (int i = 0; i < 64; ++i) {
      if (!co_await writer.Write(MakeChunk(i, 64 * 1024))) break;
    }
    co_return co_await writer.Finish();  // half-closes first
  }(channel_));
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->chunks(), 64);
  EXPECT_EQ(summary->bytes(), 64 * 64 * 1024);
}

TEST_P(StreamingTest, BidiStreamsAnswerBeforeTheClientHalfCloses) {
  absl::Status status = Run([](net::EventLoop* loop,
                               std::shared_ptr<Channel> ch) -> net::Task<absl::Status> {
    echo::StreamsClient client(ch);
    auto stream = co_await client.Exchange({.timeout = 10s});
    // Lock-step: each answer arrives while the stream is still open.
    Chunk got;
    for (int i = 0; i < 100; ++i) {
      if (!co_await stream.Write(MakeChunk(i, 8))) co_return absl::InternalError("write failed");
      if (!co_await stream.Read(&got)) co_return absl::InternalError("read failed");
      if (got.seq() != i) co_return absl::InternalError("out of order");
    }
    // Then a writer of its own while this coroutine reads: 300 of 16 KiB
    // (more than a window) each way.
    net::WaitGroup writer_done(loop);
    writer_done.Add();
    loop->Spawn([](ClientReaderWriter<Chunk, Chunk>* s, net::WaitGroup* done) -> net::Task<void> {
      for (int i = 0; i < 300; ++i) {
        if (!co_await s->Write(MakeChunk(1000 + i, 16 * 1024))) break;
      }
      s->CloseSend();
      done->Done();
    }(&stream, &writer_done));
    int read = 0;
    while (co_await stream.Read(&got)) {
      if (got.seq() != 1000 + read) co_return absl::InternalError("out of order");
      ++read;
    }
    co_await writer_done.Wait();
    absl::Status finished = co_await stream.Finish();
    if (!finished.ok()) co_return finished;
    if (read != 300) co_return absl::InternalError(absl::StrCat("read ", read, " of 300"));
    co_return absl::OkStatus();
  }(loop_, channel_));
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_TRUE(Eventually([&] { return service_.exchanges_ended.load() == 1; }));
}

// The producer may run ahead of the reader by one window at most.
TEST_P(StreamingTest, AServerStreamWaitsForTheReader) {
  constexpr int kChunk = 64 * 1024;
  constexpr int kCount = 64;
  auto stats =
      Run([](std::shared_ptr<Channel> ch, TestStreams* service) -> net::Task<std::pair<int, int>> {
        echo::StreamsClient client(ch);
        ProduceRequest request;
        request.set_count(kCount);
        request.set_size(kChunk);
        auto reader = co_await client.Produce(request, {.timeout = 20s});
        Chunk chunk;
        int read = 0;
        int max_ahead = 0;
        while (co_await reader.Read(&chunk)) {
          ++read;
          if (read == 1) {
            // Give the producer every chance to run ahead.
            for (int i = 0; i < 2000 && service->produced.load() < 15; ++i) {
              co_await ch->loop()->Sleep(1ms);
            }
          }
          max_ahead = std::max(max_ahead, service->produced.load() - read);
        }
        absl::Status st = co_await reader.Finish();
        co_return std::pair(st.ok() ? read : -1, max_ahead);
      }(channel_, &service_));
  EXPECT_EQ(stats.first, kCount);
  // One window of credit (1 MiB = 16 chunks of a little over 64 KiB, so at
  // most 15 outstanding) plus the one being counted.
  EXPECT_GE(stats.second, 10);
  EXPECT_LE(stats.second, static_cast<int>(kStreamWindow / kChunk));
}

TEST_P(StreamingTest, CancellingAStreamStopsTheProducer) {
  int read = Run([](std::shared_ptr<Channel> ch) -> net::Task<int> {
    echo::StreamsClient client(ch);
    ProduceRequest request;
    request.set_count(1'000'000);
    request.set_size(1000);
    auto reader = co_await client.Produce(request);
    Chunk chunk;
    int n = 0;
    while (n < 10) {
      if (!co_await reader.Read(&chunk)) break;
      ++n;
    }
    reader.Cancel();
    absl::Status st = co_await reader.Finish();
    co_return st.code() == absl::StatusCode::kCancelled ? n : -1;
  }(channel_));
  EXPECT_EQ(read, 10);
  EXPECT_TRUE(Eventually([&] { return service_.writes_refused.load() == 1; }));
  EXPECT_TRUE(Eventually([&] { return server_->stats().calls_in_flight == 0; }));
  EXPECT_LT(service_.produced.load(), 1'000'000);
}

TEST_P(StreamingTest, TheDeadlineEndsAStreamOnBothSides) {
  absl::Status st = Run([](std::shared_ptr<Channel> ch) -> net::Task<absl::Status> {
    echo::StreamsClient client(ch);
    auto stream = co_await client.Exchange({.timeout = 200ms});
    Chunk chunk;
    // The server echoes nothing until we write, so this read waits for the
    // deadline.
    bool got = co_await stream.Read(&chunk);
    absl::Status finished = co_await stream.Finish();
    if (got) co_return absl::InternalError("read a message nobody sent");
    co_return finished;
  }(channel_));
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  // The server heard CANCEL: its handler's read returned.
  EXPECT_TRUE(Eventually([&] { return service_.exchanges_ended.load() == 1; }));
  EXPECT_TRUE(Eventually([&] { return server_->stats().calls_in_flight == 0; }));
}

TEST_P(StreamingTest, DroppingAStreamObjectCancelsTheCall) {
  Run([](std::shared_ptr<Channel> ch) -> net::Task<bool> {
    echo::StreamsClient client(ch);
    auto stream = co_await client.Exchange();
    co_await stream.Write(MakeChunk(1, 1));
    Chunk chunk;
    co_return co_await stream.Read(&chunk);
  }(channel_));
  EXPECT_TRUE(Eventually([&] { return service_.exchanges_ended.load() == 1; }));
  EXPECT_TRUE(Eventually([&] { return server_->stats().calls_in_flight == 0; }));
}

TEST_P(StreamingTest, ALostConnectionEndsTheStreamWithUnavailable) {
  std::promise<absl::Status> result;
  std::atomic<bool> opened{false};
  loop_->Spawn([](std::shared_ptr<Channel> ch, std::atomic<bool>* opened,
                  std::promise<absl::Status>* out) -> net::Task<void> {
    echo::StreamsClient client(ch);
    auto stream = co_await client.Exchange();
    co_await stream.Write(MakeChunk(1, 1));
    Chunk chunk;
    co_await stream.Read(&chunk);
    *opened = true;
    while (co_await stream.Read(&chunk)) {
    }
    out->set_value(co_await stream.Finish());
  }(channel_, &opened, &result));
  ASSERT_TRUE(Eventually([&] { return opened.load(); }));
  server_->Shutdown(100ms);  // the stream outlives the grace: connections close
  absl::Status st = result.get_future().get();
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  // The handler saw its call cancelled when the server gave up on it.
  EXPECT_EQ(service_.exchanges_ended.load(), 1);
  server_.reset();
}

TEST_P(StreamingTest, AStreamToAnUnknownMethodEndsUnimplemented) {
  absl::Status st = Run([](std::shared_ptr<Channel> ch) -> net::Task<absl::Status> {
    auto stream = co_await ch->OpenStream("capstan.echo.Streams/Nope");
    net::Buffer message;
    if (co_await stream->ReadBytes(&message)) co_return absl::InternalError("read something");
    co_return (co_await stream->Finish()).status;
  }(channel_));
  EXPECT_EQ(st.code(), absl::StatusCode::kUnimplemented) << st;
}

// The raw API proxies use: bytes in, bytes out, no generated code.
TEST_P(StreamingTest, GenericStreamsCarryRawBytesBothWays) {
  class Upper : public Service {
   public:
    Upper() : Service("test.Raw") {
      AddGenericStream("Upper", [](ServerCall& call) -> net::Task<void> {
        net::Buffer message;
        int64_t count = 0;
        while (co_await call.ReadBytes(&message)) {
          std::string text = message.ToString();
          for (char& c : text) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
          if (!co_await call.WriteWith(
                  text.size(), [&](char* dst) { std::memcpy(dst, text.data(), text.size()); })) {
            co_return;
          }
          ++count;
        }
        call.FinishBytes(absl::OkStatus(), net::Buffer(std::to_string(count)));
      });
    }
  };
  Upper upper;
  ServerOptions options;
  options.backend = GetParam();
  Server server(options);
  server.AddService(&upper);
  ASSERT_TRUE(server.Start().ok());
  auto channel =
      net::RunOn(loop_, [&] { return Channel::Create(loop_, "127.0.0.1", server.port()); });
  auto got = Run([](std::shared_ptr<Channel> ch) -> net::Task<std::pair<std::string, CallResult>> {
    auto stream = co_await ch->OpenStream("test.Raw/Upper", {.timeout = 5s});
    std::string echoed;
    for (std::string word : {"abc", "def", "xyz"}) {
      co_await stream->WriteBytes(net::Buffer(word));
      net::Buffer back;
      if (co_await stream->ReadBytes(&back)) echoed += back.ToString();
    }
    CallResult result = co_await stream->Finish();
    co_return std::pair(echoed, std::move(result));
  }(channel));
  EXPECT_EQ(got.first, "ABCDEFXYZ");
  EXPECT_TRUE(got.second.status.ok()) << got.second.status;
  EXPECT_EQ(got.second.payload.ToString(), "3");
  net::RunOn(loop_, [&] { channel.reset(); });
  server.Shutdown(1s);
}

// On the wire, with a client that follows the protocol by hand.
struct RawClient {
  std::shared_ptr<net::Socket> socket;
  Frame frame;
  std::string error;

  // The next frame; false when the server closed the connection.
  net::Task<bool> Next() {
    while (true) {
      DecodeStatus st = DecodeFrame(socket->input(), {}, &frame, &error);
      if (st == DecodeStatus::kFrame) co_return true;
      if (st == DecodeStatus::kError) co_return false;
      if (!(co_await socket->ReadMore()).ok()) co_return false;
    }
  }
  void Send(FrameType type, uint8_t flags, uint32_t id, net::Buffer payload, Meta meta = {}) {
    AppendFrame(&socket->output(), type, flags, id, meta, std::move(payload));
    socket->MarkWritten();
  }
};

// Connects and opens stream 1 to Produce `count` chunks of 64 KiB.
net::Task<std::optional<RawClient>> RawProduce(net::EventLoop* loop, int port, uint8_t flags,
                                               int count) {
  auto s = co_await net::Socket::Connect(loop, "127.0.0.1", port);
  if (!s.ok()) co_return std::nullopt;
  RawClient raw{std::move(s).value()};
  ProduceRequest request;
  request.set_count(count);
  request.set_size(64 * 1024);
  Meta meta;
  meta.method = "capstan.echo.Streams/Produce";
  raw.Send(FrameType::kRequest, flags, 1, net::Buffer(request.SerializeAsString()), meta);
  co_return raw;
}

TEST_P(StreamingTest, OnTheWireTheServerSendsNoMoreThanAWindowAheadOfCredit) {
  struct Seen {
    uint64_t before_credit = 0;
    int messages_after_credit = 0;
    bool ended_ok = false;
  };
  Seen seen = Run([](net::EventLoop* loop, int port) -> net::Task<Seen> {
    Seen out;
    std::optional<RawClient> opened =
        co_await RawProduce(loop, port, frame_flags::kEndStream | frame_flags::kHasMessage, 40);
    if (!opened) co_return out;
    RawClient& raw = *opened;
    // Read messages until the window is full (no credit is returned), then
    // ping: everything the server could send was sent before the PONG.
    uint64_t window_full_at = kStreamWindow - (64 * 1024 + 16);
    // (No co_await inside && or ||: GCC 12 evaluates it regardless.)
    while (out.before_credit < window_full_at) {
      if (!co_await raw.Next()) co_return out;
      if (raw.frame.type == FrameType::kMessage) out.before_credit += raw.frame.payload.size();
    }
    raw.Send(FrameType::kPing, 0, 0, net::Buffer("p"));
    while (true) {
      if (!co_await raw.Next()) co_return out;
      if (raw.frame.type == FrameType::kPong) break;
      if (raw.frame.type == FrameType::kMessage) out.before_credit += raw.frame.payload.size();
    }
    // Credit for everything: the rest arrives, then the status.
    AppendWindow(&raw.socket->output(), 1, out.before_credit);
    raw.socket->MarkWritten();
    uint64_t unreturned = 0;
    while (co_await raw.Next()) {
      if (raw.frame.type == FrameType::kMessage) {
        out.messages_after_credit++;
        unreturned += raw.frame.payload.size();
        if (unreturned >= kStreamWindow / 2) {
          AppendWindow(&raw.socket->output(), 1, std::exchange(unreturned, 0));
          raw.socket->MarkWritten();
        }
      } else if (raw.frame.type == FrameType::kResponse) {
        out.ended_ok = raw.frame.meta.status_code == 0;
        break;
      }
    }
    raw.socket->Close();
    co_return out;
  }(loop_, server_->port()));
  EXPECT_LE(seen.before_credit, kStreamWindow);
  EXPECT_GE(seen.before_credit, kStreamWindow - 2 * (64 * 1024 + 16));
  int first = static_cast<int>(seen.before_credit / (64 * 1024));
  EXPECT_EQ(seen.messages_after_credit, 40 - first);
  EXPECT_TRUE(seen.ended_ok);
}

TEST_P(StreamingTest, OnTheWireAClientOverrunningTheWindowIsCutOff) {
  bool closed = Run([](net::EventLoop* loop, int port) -> net::Task<bool> {
    // Produce fills its window and waits for credit we never send. Its
    // REQUEST is not half-closed, and its handler never reads: nothing
    // returns credit for the messages that follow either.
    std::optional<RawClient> opened =
        co_await RawProduce(loop, port, frame_flags::kHasMessage, 100);
    if (!opened) co_return false;
    RawClient& raw = *opened;
    for (int i = 0; i < 3; ++i) {
      raw.Send(FrameType::kMessage, frame_flags::kHasMessage, 1,
               net::Buffer(std::string(kStreamWindow / 2, 'x')));
    }
    while (co_await raw.Next()) {
    }
    raw.socket->Close();
    co_return true;
  }(loop_, server_->port()));
  EXPECT_TRUE(closed);
  EXPECT_EQ(server_->stats().protocol_errors, 1);
}

INSTANTIATE_TEST_SUITE_P(Engines, StreamingTest,
                         ::testing::Values(net::IoBackendKind::kIoUring,
                                           net::IoBackendKind::kEpoll),
                         [](const auto& info) {
                           return std::string(
                               info.param == net::IoBackendKind::kIoUring ? "io_uring" : "epoll");
                         });

}  // namespace
}  // namespace capstan::rpc
