#include "rpc/protocol.h"

#include <string>

#include "gtest/gtest.h"

namespace capstan::rpc {
namespace {

net::Buffer RequestFrame(uint32_t id, std::string_view payload) {
  Meta meta;
  meta.method = "capstan.test.Echo/Echo";
  meta.timeout_us = 1500000;
  meta.entries.emplace_back("traceparent", "00-abc-def-01");
  meta.entries.emplace_back("caller", "");
  net::Buffer out;
  AppendFrame(&out, FrameType::kRequest, frame_flags::kEndStream | frame_flags::kHasMessage, id,
              meta, net::Buffer(payload));
  return out;
}

TEST(ProtocolTest, EveryMetadataFieldRoundTrips) {
  net::Buffer wire = RequestFrame(7, "payload-bytes");
  Meta resp;
  resp.status_code = 14;
  resp.status_message = "draining";
  resp.last_stream_id = 99;
  std::string long_value(300, 'v');  // Meta holds views: the bytes must outlive it
  resp.entries.emplace_back("k", long_value);
  AppendFrameWith(&wire, FrameType::kResponse, 0, 7, resp, 3,
                  [](char* dst) { std::memcpy(dst, "abc", 3); });
  Frame f;
  std::string error;
  ASSERT_EQ(DecodeFrame(wire, {}, &f, &error), DecodeStatus::kFrame) << error;
  EXPECT_EQ(f.type, FrameType::kRequest);
  EXPECT_EQ(f.stream_id, 7u);
  EXPECT_TRUE(f.end_stream());
  EXPECT_TRUE(f.has_message());
  EXPECT_EQ(f.meta.method, "capstan.test.Echo/Echo");
  EXPECT_EQ(f.meta.timeout_us, 1500000);
  ASSERT_EQ(f.meta.entries.size(), 2u);
  EXPECT_EQ(f.meta.entries[0].first, "traceparent");
  EXPECT_EQ(f.meta.entries[0].second, "00-abc-def-01");
  EXPECT_EQ(f.meta.entries[1].first, "caller");
  EXPECT_EQ(f.meta.entries[1].second, "");
  EXPECT_EQ(f.payload.ToString(), "payload-bytes");
  Frame g;
  ASSERT_EQ(DecodeFrame(wire, {}, &g, &error), DecodeStatus::kFrame) << error;
  EXPECT_EQ(g.type, FrameType::kResponse);
  EXPECT_FALSE(g.has_message());
  EXPECT_EQ(g.meta.status_code, 14u);
  EXPECT_EQ(g.meta.status_message, "draining");
  EXPECT_EQ(g.meta.last_stream_id, 99u);
  EXPECT_EQ(g.meta.timeout_us, -1);
  EXPECT_EQ(g.meta.entries[0].second, std::string(300, 'v'));
  EXPECT_EQ(g.payload.ToString(), "abc");
  EXPECT_TRUE(wire.empty());
  EXPECT_EQ(DecodeFrame(wire, {}, &g, &error), DecodeStatus::kNeedMore);
}

TEST(ProtocolTest, FramesSplitAtAnyByteDecodeOnceComplete) {
  net::Buffer one = RequestFrame(1, "first");
  net::Buffer two = RequestFrame(2, std::string(5000, 'x'));
  std::string bytes = one.ToString() + two.ToString();
  for (size_t split = 0; split <= bytes.size(); split += 7) {
    net::Buffer in(std::string_view(bytes).substr(0, split));
    std::vector<uint32_t> ids;
    Frame f;
    std::string error;
    auto drain = [&] {
      DecodeStatus st;
      while ((st = DecodeFrame(in, {}, &f, &error)) == DecodeStatus::kFrame)
        ids.push_back(f.stream_id);
      ASSERT_EQ(st, DecodeStatus::kNeedMore) << error;
    };
    drain();
    in.Append(std::string_view(bytes).substr(split));
    drain();
    EXPECT_EQ(ids, (std::vector<uint32_t>{1, 2})) << "split at " << split;
  }
}

TEST(ProtocolTest, UnknownMetadataTagsAreSkipped) {
  std::string meta;
  PutVarint64(&meta, 42);  // a field from a later version
  PutVarint64(&meta, 3);
  meta += "xyz";
  PutVarint64(&meta, 1);
  PutVarint64(&meta, 3);
  meta += "a/b";
  Meta parsed;
  std::string error;
  ASSERT_TRUE(ParseMeta(meta, &parsed, &error)) << error;
  EXPECT_EQ(parsed.method, "a/b");
}

std::string Header(uint32_t frame_len, uint8_t magic, uint8_t version, uint8_t type, uint8_t flags,
                   uint32_t meta_len) {
  char h[kHeaderSize];
  WriteHeader(h, FrameType::kRequest, 0, 1, 0, 0);
  std::memcpy(h, &frame_len, 4);
  h[4] = static_cast<char>(magic);
  h[5] = static_cast<char>(version);
  h[6] = static_cast<char>(type);
  h[7] = static_cast<char>(flags);
  std::memcpy(h + 12, &meta_len, 4);
  return std::string(h, kHeaderSize);
}

TEST(ProtocolTest, GarbageIsAnErrorWithAReasonNeverACrash) {
  struct Case {
    std::string bytes;
    std::string reason;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "magic"},
      {Header(12, kMagic, 2, 1, 0, 0), "version"},
      {Header(12, kMagic, kVersion, 0, 0, 0), "frame type"},
      {Header(12, kMagic, kVersion, 9, 0, 0), "frame type"},
      {Header(12, kMagic, kVersion, 1, 0x80, 0), "flag"},
      {Header(11, kMagic, kVersion, 1, 0, 0), "frame length"},
      {Header(kDefaultMaxFrameSize + 1, kMagic, kVersion, 1, 0, 0), "max_frame_size"},
      {Header(20, kMagic, kVersion, 1, 0, 9), "metadata length"},
      {Header(12 + 2, kMagic, kVersion, 1, 0, 2) + "\x01\x05", "claims 5 bytes"},
      {Header(12 + 1, kMagic, kVersion, 1, 0, 1) + "\x81", "truncated"},
      {Header(12 + 3, kMagic, kVersion, 1, 0, 3) + "\x02\x01\x80", "timeout"},
  };
  for (const Case& c : cases) {
    net::Buffer in(c.bytes);
    Frame f;
    std::string error;
    EXPECT_EQ(DecodeFrame(in, {}, &f, &error), DecodeStatus::kError) << c.reason;
    EXPECT_NE(error.find(c.reason), std::string::npos) << "got: " << error;
  }
}

TEST(ProtocolTest, TheFrameLimitIsTheReceiversOwn) {
  net::Buffer wire = RequestFrame(1, std::string(2000, 'p'));
  Frame f;
  std::string error;
  DecodeLimits small{.max_frame_size = 1024};
  EXPECT_EQ(DecodeFrame(wire, small, &f, &error), DecodeStatus::kError);
  EXPECT_NE(error.find("max_frame_size"), std::string::npos) << error;
}

TEST(ProtocolTest, LargePayloadsTravelInTheirOwnBlock) {
  net::Buffer out;
  std::string big(1 << 20, 'z');
  AppendFrameWith(&out, FrameType::kMessage, frame_flags::kHasMessage, 3, Meta{}, big.size(),
                  [&](char* dst) { std::memcpy(dst, big.data(), big.size()); });
  EXPECT_EQ(out.slice_count(), 2u);
  Frame f;
  std::string error;
  ASSERT_EQ(DecodeFrame(out, {}, &f, &error), DecodeStatus::kFrame) << error;
  EXPECT_EQ(f.payload.ToString(), big);
}

TEST(ProtocolTest, WindowFramesCarryOnePositiveVarint) {
  net::Buffer wire;
  AppendWindow(&wire, 9, 300000);
  Frame f;
  std::string error;
  ASSERT_EQ(DecodeFrame(wire, {}, &f, &error), DecodeStatus::kFrame) << error;
  EXPECT_EQ(f.type, FrameType::kWindow);
  EXPECT_EQ(f.stream_id, 9u);
  uint64_t increment = 0;
  ASSERT_TRUE(ParseWindowIncrement(f.payload, &increment, &error)) << error;
  EXPECT_EQ(increment, 300000u);
  for (std::string bad : {std::string(), std::string("\x00", 1), std::string("\x80"),
                          std::string("\x01\x01"), std::string(11, '\x81')}) {
    error.clear();
    EXPECT_FALSE(ParseWindowIncrement(net::Buffer(bad), &increment, &error)) << bad.size();
    EXPECT_FALSE(error.empty());
  }
}

TEST(StreamWindowTest, SenderStopsAtTheWindowButAnOversizedMessageGoesAlone) {
  StreamWindow w(100);
  EXPECT_TRUE(w.CanSend(60));
  w.Sent(60);
  EXPECT_TRUE(w.CanSend(40));
  EXPECT_FALSE(w.CanSend(41));
  std::string error;
  ASSERT_TRUE(w.Credit(60, &error));
  EXPECT_TRUE(w.CanSend(250));  // nothing outstanding: a big message may go
  w.Sent(250);
  EXPECT_FALSE(w.CanSend(1));
  EXPECT_FALSE(w.Credit(251, &error));  // more than was sent
  EXPECT_NE(error.find("outstanding"), std::string::npos) << error;
}

TEST(StreamWindowTest, ReceiverRejectsAnOverrunAndReturnsCredit) {
  StreamWindow w(100);
  std::string error;
  ASSERT_TRUE(w.Received(250, &error));  // alone: allowed
  EXPECT_FALSE(w.Received(1, &error));
  EXPECT_NE(error.find("overruns"), std::string::npos) << error;
  EXPECT_EQ(w.Consumed(250, /*queue_empty=*/true), 250u);
  // Small messages taken while others wait are returned a quarter at a time.
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(w.Received(10, &error)) << error;
  EXPECT_FALSE(w.Received(1, &error));
  EXPECT_EQ(w.Consumed(10, false), 0u);
  EXPECT_EQ(w.Consumed(10, false), 0u);
  EXPECT_EQ(w.Consumed(10, false), 30u);
  EXPECT_EQ(w.unreturned(), 70u);
  // The rest are taken too: credit each time a quarter has been taken.
  uint64_t returned = 0;
  for (int i = 0; i < 7; ++i) returned += w.Consumed(10, i == 6);
  EXPECT_EQ(returned, 70u);
  EXPECT_EQ(w.unreturned(), 0u);
  // Below a quarter, taking the last queued message returns what was taken.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(w.Received(5, &error)) << error;
  EXPECT_EQ(w.Consumed(5, false), 0u);
  EXPECT_EQ(w.Consumed(5, false), 0u);
  EXPECT_EQ(w.Consumed(5, true), 15u);
  EXPECT_EQ(w.unreturned(), 0u);
}

}  // namespace
}  // namespace capstan::rpc
