// Role-specific message handling for the Raft core (see raft.h).
#include <algorithm>

#include "base/logging.h"
#include "raft/raft.h"

namespace capstan::raft {

absl::Status Raft::StepLeader(Message& m) {
  switch (m.type) {
    case MsgType::kPropose: {
      if (lead_transferee_ != 0) {
        return absl::UnavailableError("raft: leadership transfer in progress; retry");
      }
      if (!IsVoter(id_)) return absl::UnavailableError("raft: leader was removed");
      for (const Entry& e : m.entries) {
        if (e.type == EntryType::kConfChange && pending_conf_index_ > log_.applied()) {
          return absl::FailedPreconditionError("raft: a membership change is already in progress");
        }
      }
      bool conf = false;
      for (const Entry& e : m.entries) conf |= e.type == EntryType::kConfChange;
      AppendEntries(std::move(m.entries));
      if (conf) pending_conf_index_ = log_.last_index();
      BroadcastAppend();
      return absl::OkStatus();
    }
    case MsgType::kAppendResp: {
      auto it = prs_.find(m.from);
      if (it == prs_.end()) return absl::OkStatus();
      Progress& pr = it->second;
      pr.recent_active = true;
      if (m.reject) {
        if (pr.MaybeDecrTo(m.index, m.reject_hint)) {
          if (pr.state == Progress::State::kReplicate) pr.BecomeProbe();
          SendAppend(m.from);
        }
        return absl::OkStatus();
      }
      bool was_paused = pr.Paused(cfg_.max_inflight);
      if (!pr.MaybeUpdate(m.index)) {
        if (was_paused && !pr.Paused(cfg_.max_inflight)) SendAppend(m.from, false);
        return absl::OkStatus();
      }
      if (pr.state == Progress::State::kProbe) {
        pr.BecomeReplicate();
      } else if (pr.state == Progress::State::kSnapshot && pr.match >= pr.pending_snapshot) {
        pr.BecomeProbe();
        pr.BecomeReplicate();
      }
      if (MaybeCommit()) {
        BroadcastAppend();
      } else {
        SendAppend(m.from, false);
      }
      // Keep the window full while there is more to send.
      while (prs_[m.from].next <= log_.last_index() && !prs_[m.from].Paused(cfg_.max_inflight)) {
        uint64_t before = prs_[m.from].next;
        SendAppend(m.from, false);
        if (prs_[m.from].next == before) break;
      }
      if (m.from == lead_transferee_ && prs_[m.from].match == log_.last_index()) {
        Send(Message{.type = MsgType::kTimeoutNow, .to = m.from});
      }
      return absl::OkStatus();
    }
    case MsgType::kHeartbeatResp: {
      auto it = prs_.find(m.from);
      if (it == prs_.end()) return absl::OkStatus();
      Progress& pr = it->second;
      pr.recent_active = true;
      pr.probe_sent = false;
      // Appends may have been lost: a heartbeat answer frees one slot of a
      // full window so replication resumes (and a gap shows up as a reject).
      if (pr.state == Progress::State::kReplicate && pr.inflight.size() >= cfg_.max_inflight) {
        pr.inflight.pop_front();
      }
      if (pr.match < log_.last_index()) SendAppend(m.from);
      if (!m.context.empty()) HandleHeartbeatResp(m);
      return absl::OkStatus();
    }
    case MsgType::kSnapStatus: {
      auto it = prs_.find(m.from);
      if (it == prs_.end() || it->second.state != Progress::State::kSnapshot) {
        return absl::OkStatus();
      }
      if (m.reject) it->second.pending_snapshot = 0;
      it->second.BecomeProbe();
      it->second.probe_sent = true;  // wait for the follower's answer or a heartbeat
      return absl::OkStatus();
    }
    case MsgType::kUnreachable: {
      auto it = prs_.find(m.from);
      if (it != prs_.end() && it->second.state == Progress::State::kReplicate) {
        it->second.BecomeProbe();
      }
      return absl::OkStatus();
    }
    case MsgType::kTransferLeader: {
      uint64_t to = m.from;
      auto it = prs_.find(to);
      if (to == id_ || it == prs_.end() || it->second.learner) return absl::OkStatus();
      if (lead_transferee_ == to) return absl::OkStatus();
      lead_transferee_ = to;
      election_elapsed_ = 0;  // the transfer must finish within an election timeout
      if (it->second.match == log_.last_index()) {
        Send(Message{.type = MsgType::kTimeoutNow, .to = to});
      } else {
        SendAppend(to);
      }
      return absl::OkStatus();
    }
    case MsgType::kReadIndex:
      HandleReadIndexRequest(m);
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
}

absl::Status Raft::StepCandidate(Message& m) {
  switch (m.type) {
    case MsgType::kPropose:
      return absl::UnavailableError("raft: no leader (election in progress); retry");
    case MsgType::kReadIndex:
      return absl::UnavailableError("raft: no leader (election in progress); retry");
    case MsgType::kAppend:
      BecomeFollower(m.term, m.from);
      HandleAppend(m);
      return absl::OkStatus();
    case MsgType::kHeartbeat:
      BecomeFollower(m.term, m.from);
      HandleHeartbeat(m);
      return absl::OkStatus();
    case MsgType::kSnapshot:
      BecomeFollower(m.term, m.from);
      HandleSnapshot(m);
      return absl::OkStatus();
    case MsgType::kVoteResp:
    case MsgType::kPreVoteResp: {
      bool mine = (role_ == Role::kCandidate && m.type == MsgType::kVoteResp) ||
                  (role_ == Role::kPreCandidate && m.type == MsgType::kPreVoteResp);
      if (!mine) return absl::OkStatus();
      int result = TallyVotes(m.from, !m.reject);
      if (result == 1) {
        if (role_ == Role::kPreCandidate) {
          StartElection(false, false);
        } else {
          BecomeLeader();
          BroadcastAppend();
        }
      } else if (result == -1) {
        BecomeFollower(term_, 0);
      }
      return absl::OkStatus();
    }
    default:
      return absl::OkStatus();
  }
}

absl::Status Raft::StepFollower(Message& m) {
  switch (m.type) {
    case MsgType::kPropose:
      if (lead_ == 0) return absl::UnavailableError("raft: no leader; retry");
      m.to = lead_;
      Send(std::move(m));
      return absl::OkStatus();
    case MsgType::kAppend:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleAppend(m);
      return absl::OkStatus();
    case MsgType::kHeartbeat:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleHeartbeat(m);
      return absl::OkStatus();
    case MsgType::kSnapshot:
      election_elapsed_ = 0;
      lead_ = m.from;
      HandleSnapshot(m);
      return absl::OkStatus();
    case MsgType::kTransferLeader:
      if (lead_ == 0) return absl::UnavailableError("raft: no leader; retry");
      m.to = lead_;
      Send(std::move(m));
      return absl::OkStatus();
    case MsgType::kTimeoutNow:
      // The leader hands over: campaign at once, without pre-vote, and past
      // the other members' leader lease.
      if (Promotable()) StartElection(false, true);
      return absl::OkStatus();
    case MsgType::kReadIndex:
      if (lead_ == 0) return absl::UnavailableError("raft: no leader; retry");
      m.to = lead_;
      Send(std::move(m));
      return absl::OkStatus();
    case MsgType::kReadIndexResp:
      read_states_.push_back({m.index, m.context});
      return absl::OkStatus();
    default:
      return absl::OkStatus();
  }
}

void Raft::HandleAppend(const Message& m) {
  if (m.index < log_.committed()) {
    Send(Message{.type = MsgType::kAppendResp, .to = m.from, .index = log_.committed()});
    return;
  }
  if (auto last = log_.MaybeAppend(m.index, m.log_term, m.commit, m.entries)) {
    Send(Message{.type = MsgType::kAppendResp, .to = m.from, .index = *last});
    return;
  }
  // Hint: the last index at or before the probe whose term is no newer than
  // the leader's, so the leader skips a whole divergent term per round trip.
  uint64_t hint = std::min(m.index, log_.last_index());
  while (hint > log_.snapshot_index() && *log_.Term(hint) > m.log_term) --hint;
  Send(Message{.type = MsgType::kAppendResp,
               .to = m.from,
               .index = m.index,
               .reject = true,
               .reject_hint = hint});
}

void Raft::HandleHeartbeat(const Message& m) {
  log_.CommitTo(std::min(m.commit, log_.last_index()));
  Message resp{.type = MsgType::kHeartbeatResp, .to = m.from};
  resp.context = m.context;
  Send(std::move(resp));
}

void Raft::HandleSnapshot(const Message& m) {
  const SnapshotMeta& s = *m.snapshot;
  if (s.index <= log_.committed()) {
    Send(Message{.type = MsgType::kAppendResp, .to = m.from, .index = log_.committed()});
    return;
  }
  if (log_.MatchTerm(s.index, s.term)) {
    // We already have the entries: no need to install anything.
    log_.CommitTo(s.index);
  } else {
    CAPSTAN_LOG(info, "raft: installing snapshot", "id", id_, "index", s.index, "term", s.term);
    log_.Restore(s);
    ApplyConf(s.conf);
  }
  Send(Message{.type = MsgType::kAppendResp, .to = m.from, .index = log_.last_index()});
}

void Raft::RespondToRead(const PendingRead& read) {
  if (read.from == 0 || read.from == id_) {
    read_states_.push_back({read.index, read.context});
  } else {
    Message resp{.type = MsgType::kReadIndexResp, .to = read.from, .index = read.index};
    resp.context = read.context;
    Send(std::move(resp));
  }
}

void Raft::HandleReadIndexRequest(Message& m) {
  if (!CommittedEntryInCurrentTerm()) {
    // Our commit index may lag the real one until we commit in our term.
    reads_before_commit_.push_back(std::move(m));
    return;
  }
  PendingRead read{log_.committed(), m.from, m.context, {}};
  if (conf_.voters.size() == 1 || InLease()) {
    RespondToRead(read);
    return;
  }
  read.acks[id_] = true;
  pending_reads_.push_back(std::move(read));
  BroadcastHeartbeat(pending_reads_.back().context);
}

bool Raft::InLease() const {
  if (!cfg_.lease_reads || !cfg_.check_quorum || role_ != Role::kLeader) return false;
  // A transfer lets the target win votes inside other members' leases.
  if (lead_transferee_ != 0) return false;
  if (election_elapsed_ + cfg_.lease_margin_ticks >= cfg_.election_tick) return false;
  size_t active = 0;
  for (const auto& [id, pr] : prs_) {
    if ((id == id_ || pr.recent_active) && IsVoter(id)) ++active;
  }
  return active >= Quorum();
}

void Raft::HandleHeartbeatResp(const Message& m) {
  auto it = std::find_if(pending_reads_.begin(), pending_reads_.end(),
                         [&](const PendingRead& r) { return r.context == m.context; });
  if (it == pending_reads_.end()) return;
  it->acks[m.from] = true;
  size_t acks = 0;
  for (uint64_t v : conf_.voters) acks += it->acks.contains(v) ? 1 : 0;
  if (acks < Quorum()) return;
  // A quorum still follows us as of this read: it and every earlier one are safe.
  auto end = std::next(it);
  for (auto r = pending_reads_.begin(); r != end; ++r) RespondToRead(*r);
  pending_reads_.erase(pending_reads_.begin(), end);
}

void Raft::ReleasePendingReads() {
  std::vector<Message> waiting = std::move(reads_before_commit_);
  reads_before_commit_.clear();
  for (Message& m : waiting) HandleReadIndexRequest(m);
}

}  // namespace capstan::raft
