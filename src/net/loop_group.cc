#include "net/loop_group.h"

#include "absl/strings/str_cat.h"
#include "base/thread_name.h"
#include "net/block_on.h"

namespace capstan::net {

absl::StatusOr<std::unique_ptr<LoopGroup>> LoopGroup::Start(const LoopGroupOptions& options) {
  if (options.threads < 1 || options.threads > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("loop threads must be in 1..1024, got ", options.threads));
  }
  std::unique_ptr<LoopGroup> group(new LoopGroup());
  for (int i = 0; i < options.threads; ++i) {
    ASSIGN_OR_RETURN(auto loop, EventLoop::Create(options.loop));
    group->loops_.push_back(std::move(loop));
  }
  for (int i = 0; i < options.threads; ++i) {
    EventLoop* loop = group->loops_[static_cast<size_t>(i)].get();
    std::string name = absl::StrCat(options.name, "-", i);
    group->threads_.emplace_back([loop, name] {
      SetThreadName(name);
      loop->Run();
    });
    // Until its Run starts, a loop counts its creator as its thread; wait, so
    // a Spawn from here afterwards goes through Post instead of running here.
    RunOn(loop, [] {});
  }
  return group;
}

void LoopGroup::Stop() {
  for (auto& loop : loops_) loop->Stop();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

}  // namespace capstan::net
