#include "net/pipe_pool.h"

#include <fcntl.h>

#include "gtest/gtest.h"

namespace capstan::net {
namespace {

TEST(PipePoolTest, GrantsTheAskedSizeAndKeepsOnlyEmptyPipes) {
  PipePool pool(/*max_spare=*/1);
  SplicePipe a, b;
  ASSERT_TRUE(pool.Get(128 << 10, &a));
  ASSERT_TRUE(pool.Get(128 << 10, &b));
  EXPECT_EQ(a.capacity, 128u << 10);
  EXPECT_EQ(fcntl(a.write_fd, F_GETPIPE_SZ), 128 << 10);
  pool.Put(a, /*empty=*/true);
  pool.Put(b, /*empty=*/true);  // past max_spare: closed
  EXPECT_EQ(pool.spare(), 1u);
  SplicePipe again;
  ASSERT_TRUE(pool.Get(64 << 10, &again));  // the spare one, resized
  EXPECT_EQ(again.read_fd, a.read_fd);
  EXPECT_EQ(again.capacity, 64u << 10);
  pool.Put(again, /*empty=*/false);  // may hold bytes: never reused
  EXPECT_EQ(pool.spare(), 0u);
}

}  // namespace
}  // namespace capstan::net
