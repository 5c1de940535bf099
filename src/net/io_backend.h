// The interface between EventLoop and its two I/O engines (io_uring and
// epoll). Private to src/net: everything else uses Socket and Listener.
//
// Contract: every method runs on the loop thread except Wake. Completion
// handlers only change socket state and Schedule() coroutines; they never
// resume one on their own stack.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <memory>

#include "base/status.h"
#include "net/event_loop.h"

namespace capstan::net {

class FdWaiter;
class Listener;

class IoBackend {
 public:
  virtual ~IoBackend() = default;

  // Called once on the loop thread before its first turn.
  virtual void OnLoopThread() {}
  // Blocks until I/O completes or `timeout` passes (zero: only collect what
  // is already done; negative: no limit), dispatching completions.
  virtual void Wait(std::chrono::nanoseconds timeout) = 0;
  // Any thread: makes a blocked Wait return.
  virtual void Wake() = 0;
  virtual bool uses_provided_buffers() const { return false; }
  // Closed sockets whose I/O the kernel still holds (a stopping loop waits
  // for them so their memory is returned).
  virtual int busy_sockets() const { return 0; }

  // A connected (or connecting) socket joins the loop.
  virtual void Attach(Socket* s) = 0;
  // Receive into the socket's input until it has enough (Socket::WantsInput).
  virtual void StartReceive(Socket* s) = 0;
  // Send the socket's pending output; called when no send is in flight.
  // What the splice path wants (Socket::SendSpliced) goes that way first,
  // and again each time the socket becomes writable, until none is left.
  virtual void StartSend(Socket* s) = 0;
  // The socket's input limit became exact (Socket::set_input_limit): a
  // receive armed before that may deliver without bound and is re-armed.
  virtual void InputLimitBecameExact(Socket* s) { (void)s; }
  virtual void StartConnect(Socket* s, const sockaddr_storage& addr, socklen_t len) = 0;
  // Stop all I/O on the socket; Socket::OnDetached runs once nothing of it is
  // in flight any more (possibly in a later turn), and then the fd closes.
  virtual void Detach(Socket* s) = 0;

  // Parking (Socket::Release): stop receiving for a quiet socket; true when
  // nothing of it is in flight any more, else Socket::OnReleaseReady runs
  // once the engine holds nothing (the receive cancelled or completed).
  virtual bool BeginRelease(Socket* s) = 0;
  // Wait for the waiter's fd to be readable (or hung up); FdWaiter::Finish
  // takes the result. CancelPoll ends the wait early (-ECANCELED).
  virtual void StartPoll(FdWaiter* w) = 0;
  virtual void CancelPoll(FdWaiter* w) = 0;

  virtual void StartAccept(Listener* l) = 0;
  virtual void StopAccept(Listener* l) = 0;
};

absl::StatusOr<std::unique_ptr<IoBackend>> NewUringBackend(const LoopOptions& options);
absl::StatusOr<std::unique_ptr<IoBackend>> NewEpollBackend();

}  // namespace capstan::net
