#include "raft/raft.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/logging.h"

namespace capstan::raft {

namespace {

constexpr char kTransferContext[] = "capstan-transfer";
constexpr size_t kMaxCommittedBytesPerReady = 8 << 20;

bool IsLocal(MsgType t) {
  return t == MsgType::kHup || t == MsgType::kPropose || t == MsgType::kTransferLeader ||
         t == MsgType::kReadIndex || t == MsgType::kSnapStatus || t == MsgType::kUnreachable;
}

MsgType ResponseTo(MsgType t) {
  return t == MsgType::kVote ? MsgType::kVoteResp : MsgType::kPreVoteResp;
}

}  // namespace

const char* MsgTypeName(MsgType t) {
  static const char* kNames[] = {
      "Hup",       "Propose",       "TransferLeader", "ReadIndex",  "SnapStatus",   "Unreachable",
      "Append",    "AppendResp",    "Vote",           "VoteResp",   "PreVote",      "PreVoteResp",
      "Heartbeat", "HeartbeatResp", "Snapshot",       "TimeoutNow", "ReadIndexResp"};
  return kNames[static_cast<int>(t)];
}

const char* RoleName(Role r) {
  static const char* kNames[] = {"follower", "pre-candidate", "candidate", "leader"};
  return kNames[static_cast<int>(r)];
}

std::string ConfChange::Encode() const {
  std::string out;
  out.push_back(static_cast<char>(type));
  PutFixed64LE(&out, node);
  out += context;
  return out;
}

bool ConfChange::Decode(std::string_view data, ConfChange* out) {
  if (data.size() < 9 || static_cast<uint8_t>(data[0]) > 2) return false;
  out->type = static_cast<Type>(data[0]);
  out->node = DecodeFixed64LE(data.data() + 1);
  out->context = std::string(data.substr(9));
  return true;
}

Raft::Raft(const Config& config, PersistentState state)
    : id_(config.id),
      cfg_(config),
      log_(state.snapshot, std::move(state.entries), state.hard_state.commit),
      rng_(config.seed * 0x9e3779b97f4a7c15ull + config.id) {
  ApplyConf(state.snapshot.conf);
  term_ = state.hard_state.term;
  vote_ = state.hard_state.vote;
  prev_hs_ = state.hard_state;
  BecomeFollower(term_, 0);
}

// ----- roles -------------------------------------------------------------

void Raft::ResetRandomizedElectionTimeout() {
  std::uniform_int_distribution<int> d(cfg_.election_tick, 2 * cfg_.election_tick - 1);
  randomized_election_timeout_ = d(rng_);
}

void Raft::Reset(uint64_t term) {
  if (term != term_) {
    term_ = term;
    vote_ = 0;
  }
  lead_ = 0;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  ResetRandomizedElectionTimeout();
  lead_transferee_ = 0;
  votes_.clear();
  for (auto& [id, pr] : prs_) {
    bool learner = pr.learner;
    pr = Progress();
    pr.learner = learner;
    pr.next = log_.last_index() + 1;
    if (id == id_) pr.match = log_.stable();
  }
  pending_reads_.clear();
  reads_before_commit_.clear();
}

void Raft::BecomeFollower(uint64_t term, uint64_t lead) {
  Reset(term);
  lead_ = lead;
  role_ = Role::kFollower;
}

void Raft::BecomePreCandidate() {
  // A pre-candidate changes neither term nor vote: a partitioned node that
  // keeps failing pre-votes never disturbs the cluster with higher terms.
  votes_.clear();
  lead_ = 0;
  role_ = Role::kPreCandidate;
}

void Raft::BecomeCandidate() {
  Reset(term_ + 1);
  vote_ = id_;
  role_ = Role::kCandidate;
}

void Raft::BecomeLeader() {
  Reset(term_);
  lead_ = id_;
  role_ = Role::kLeader;
  for (auto& [id, pr] : prs_) {
    if (id == id_) {
      pr.BecomeReplicate();
      pr.match = log_.stable();
      pr.next = log_.last_index() + 1;
    }
  }
  // Any membership change still in the log must apply before another starts.
  pending_conf_index_ = log_.last_index();
  // An entry of our own term: committing it commits everything before it,
  // and makes ReadIndex safe (§6.4).
  AppendEntries({Entry{}});
  CAPSTAN_LOG(debug, "raft: became leader", "id", id_, "term", term_);
}

bool Raft::IsVoter(uint64_t id) const {
  return std::find(conf_.voters.begin(), conf_.voters.end(), id) != conf_.voters.end();
}

bool Raft::Promotable() const { return IsVoter(id_); }

size_t Raft::Quorum() const { return conf_.voters.size() / 2 + 1; }

void Raft::ApplyConf(const ConfState& cs) {
  conf_ = cs;
  std::map<uint64_t, Progress> next;
  auto add = [&](uint64_t id, bool learner) {
    auto it = prs_.find(id);
    Progress pr = it != prs_.end() ? it->second : Progress();
    if (it == prs_.end()) pr.next = log_.last_index() + 1;
    pr.learner = learner;
    if (id == id_) pr.match = log_.stable();
    next[id] = pr;
  };
  for (uint64_t v : cs.voters) add(v, false);
  for (uint64_t l : cs.learners) add(l, true);
  prs_ = std::move(next);
}

// ----- driving ----------------------------------------------------------

void Raft::Tick() {
  if (role_ != Role::kLeader) {
    ++election_elapsed_;
    if (Promotable() && election_elapsed_ >= randomized_election_timeout_) {
      election_elapsed_ = 0;
      (void)Step(Message{.type = MsgType::kHup});
    }
    return;
  }
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (election_elapsed_ >= cfg_.election_tick) {
    election_elapsed_ = 0;
    if (cfg_.check_quorum) {
      size_t active = 0;
      for (auto& [id, pr] : prs_) {
        if ((id == id_ || pr.recent_active) && IsVoter(id)) ++active;
        if (id != id_) pr.recent_active = false;
      }
      if (active < Quorum()) {
        // A leader that cannot reach a quorum steps down instead of serving
        // stale reads and taking writes that can never commit.
        CAPSTAN_LOG(info, "raft: leader lost quorum, stepping down", "id", id_, "term", term_);
        BecomeFollower(term_, 0);
        return;
      }
    }
    lead_transferee_ = 0;  // a transfer that did not finish in an election timeout is abandoned
    if (!IsVoter(id_)) HandOver();  // removed: try again
  }
  if (heartbeat_elapsed_ >= cfg_.heartbeat_tick) {
    heartbeat_elapsed_ = 0;
    BroadcastHeartbeat(pending_reads_.empty() ? "" : pending_reads_.back().context);
  }
}

void Raft::Campaign() { (void)Step(Message{.type = MsgType::kHup}); }

absl::Status Raft::Propose(std::string data) {
  Message m{.type = MsgType::kPropose};
  m.entries.push_back(Entry{.data = std::move(data)});
  return Step(std::move(m));
}

absl::Status Raft::CanPropose() const {
  if (role_ == Role::kLeader) {
    if (lead_transferee_ != 0) {
      return absl::UnavailableError("raft: leadership transfer in progress; retry");
    }
    if (!IsVoter(id_)) return absl::UnavailableError("raft: leader was removed");
    return absl::OkStatus();
  }
  if (role_ == Role::kFollower && lead_ != 0) return absl::OkStatus();
  return absl::UnavailableError("raft: no leader; retry");
}

absl::Status Raft::ProposeConfChange(const ConfChange& cc) {
  if (role_ != Role::kLeader) return absl::FailedPreconditionError("raft: not the leader");
  if (pending_conf_index_ > log_.applied()) {
    return absl::FailedPreconditionError("raft: a membership change is already in progress");
  }
  if (!CommittedEntryInCurrentTerm()) {
    // A new leader must commit in its term first (the single-server change
    // bug Ongaro described in raft-dev, 2015).
    return absl::UnavailableError("raft: leader has not committed in its term yet; retry");
  }
  Message m{.type = MsgType::kPropose};
  m.entries.push_back(Entry{.type = EntryType::kConfChange, .data = cc.Encode()});
  return Step(std::move(m));
}

void Raft::ReadIndex(std::string context) {
  Message m{.type = MsgType::kReadIndex, .from = id_};
  m.context = std::move(context);
  (void)Step(std::move(m));
}

void Raft::TransferLeader(uint64_t to) {
  (void)Step(Message{.type = MsgType::kTransferLeader, .from = to});
}

bool Raft::HasReady() const {
  HardState hs{term_, vote_, log_.committed()};
  return !msgs_.empty() || !read_states_.empty() || hs != prev_hs_ ||
         log_.pending_snapshot().has_value() || log_.HasUnstable() ||
         log_.committed() > log_.applied();
}

Ready Raft::GetReady() {
  Ready rd;
  rd.snapshot = log_.pending_snapshot();
  rd.entries = log_.UnstableEntries();
  rd.committed = log_.NextCommitted(kMaxCommittedBytesPerReady);
  HardState hs{term_, vote_, log_.committed()};
  if (hs != prev_hs_) rd.hard_state = hs;
  rd.messages = std::move(msgs_);
  msgs_.clear();
  rd.read_states = std::move(read_states_);
  read_states_.clear();
  rd.must_sync = !rd.entries.empty() || rd.snapshot.has_value() ||
                 (rd.hard_state && (hs.term != prev_hs_.term || hs.vote != prev_hs_.vote));
  return rd;
}

void Raft::Advance(const Ready& rd) {
  if (rd.hard_state) prev_hs_ = *rd.hard_state;
  if (rd.snapshot) log_.StableSnapshot();
  if (!rd.entries.empty()) log_.StableTo(rd.entries.back().index);
  if (!rd.committed.empty()) log_.AppliedTo(rd.committed.back().index);
  if (role_ == Role::kLeader) {
    auto it = prs_.find(id_);
    if (it != prs_.end() && it->second.MaybeUpdate(log_.stable()) && MaybeCommit()) {
      BroadcastAppend();
    }
  }
}

ConfState Raft::ApplyConfChange(const ConfChange& cc) {
  ConfState cs = conf_;
  auto erase = [](std::vector<uint64_t>& v, uint64_t id) {
    v.erase(std::remove(v.begin(), v.end(), id), v.end());
  };
  erase(cs.voters, cc.node);
  erase(cs.learners, cc.node);
  if (cc.type == ConfChange::Type::kAddVoter) cs.voters.push_back(cc.node);
  if (cc.type == ConfChange::Type::kAddLearner) cs.learners.push_back(cc.node);
  std::sort(cs.voters.begin(), cs.voters.end());
  std::sort(cs.learners.begin(), cs.learners.end());
  ApplyConf(cs);
  if (role_ == Role::kLeader) {
    if (MaybeCommit()) BroadcastAppend();  // a smaller quorum may commit more now
    // A leader that removed itself keeps leading (the others may not know yet
    // that the removal committed, and could not elect anyone without its
    // vote) and hands over to the most up-to-date voter.
    if (!IsVoter(id_)) HandOver();
  }
  return conf_;
}

void Raft::HandOver() {
  uint64_t best = 0, best_match = 0;
  for (uint64_t v : conf_.voters) {
    auto it = prs_.find(v);
    if (it != prs_.end() && (best == 0 || it->second.match > best_match)) {
      best = v;
      best_match = it->second.match;
    }
  }
  if (best != 0) (void)Step(Message{.type = MsgType::kTransferLeader, .from = best});
}

void Raft::Compact(uint64_t index) {
  auto t = log_.Term(index);
  if (t) log_.Compact(index, *t);
}

// ----- messages ---------------------------------------------------------

void Raft::Send(Message m) {
  m.from = id_;
  // Forwarded proposals and reads carry no term: the leader treats them as
  // its own local requests.
  if (m.term == 0 && m.type != MsgType::kPropose && m.type != MsgType::kReadIndex) {
    m.term = term_;
  }
  msgs_.push_back(std::move(m));
}

void Raft::SendAppend(uint64_t to, bool send_empty) {
  Progress& pr = prs_[to];
  if (pr.Paused(cfg_.max_inflight)) return;
  uint64_t prev = pr.next - 1;
  auto prev_term = log_.Term(prev);
  if (!prev_term) {
    // What this follower needs next was compacted into a snapshot.
    Message m{.type = MsgType::kSnapshot, .to = to};
    m.snapshot = SnapshotMeta{log_.snapshot_index(), *log_.Term(log_.snapshot_index()), conf_};
    pr.BecomeSnapshot(log_.snapshot_index());
    Send(std::move(m));
    return;
  }
  std::vector<Entry> ents;
  if (pr.next <= log_.last_index()) {
    ents = log_.Slice(pr.next, log_.last_index() + 1, cfg_.max_bytes_per_append);
  }
  if (ents.empty() && !send_empty) return;
  Message m{.type = MsgType::kAppend, .to = to, .log_term = *prev_term, .index = prev};
  m.commit = log_.committed();
  if (!ents.empty()) {
    uint64_t last = ents.back().index;
    if (pr.state == Progress::State::kReplicate) {
      pr.next = last + 1;  // optimistic: keep streaming
      pr.inflight.push_back(last);
    } else {
      pr.probe_sent = true;
    }
  } else if (pr.state == Progress::State::kProbe) {
    pr.probe_sent = true;
  }
  m.entries = std::move(ents);
  Send(std::move(m));
}

void Raft::BroadcastAppend() {
  for (const auto& [id, pr] : prs_) {
    if (id != id_) SendAppend(id);
  }
}

void Raft::SendHeartbeat(uint64_t to, const std::string& ctx) {
  // Never tell a follower to commit past what it is known to hold.
  Message m{.type = MsgType::kHeartbeat, .to = to};
  m.commit = std::min(prs_[to].match, log_.committed());
  m.context = ctx;
  Send(std::move(m));
}

void Raft::BroadcastHeartbeat(const std::string& ctx) {
  for (const auto& [id, pr] : prs_) {
    if (id != id_) SendHeartbeat(id, ctx);
  }
}

void Raft::AppendEntries(std::vector<Entry> ents) {
  uint64_t index = log_.last_index();
  for (auto& e : ents) {
    e.index = ++index;
    e.term = term_;
  }
  log_.Append(std::move(ents));
  // Our own match moves when the entries are durable (Advance), so a single
  // member never commits what is not on its disk.
}

bool Raft::MaybeCommit() {
  std::vector<uint64_t> matches;
  for (uint64_t v : conf_.voters) {
    auto it = prs_.find(v);
    matches.push_back(it == prs_.end() ? 0 : it->second.match);
  }
  if (matches.empty()) return false;
  std::sort(matches.begin(), matches.end(), std::greater<>());
  uint64_t quorum_match = matches[Quorum() - 1];
  bool first_in_term = !CommittedEntryInCurrentTerm();
  if (!log_.MaybeCommit(quorum_match, term_)) return false;
  if (first_in_term) ReleasePendingReads();
  return true;
}

bool Raft::CommittedEntryInCurrentTerm() const { return log_.Term(log_.committed()) == term_; }

int Raft::TallyVotes(uint64_t from, bool granted) {
  votes_.emplace(from, granted);
  size_t yes = 0, no = 0;
  for (uint64_t v : conf_.voters) {
    auto it = votes_.find(v);
    if (it == votes_.end()) continue;
    (it->second ? yes : no)++;
  }
  if (yes >= Quorum()) return 1;
  if (conf_.voters.size() - no < Quorum()) return -1;
  return 0;
}

void Raft::StartElection(bool pre_vote, bool transfer) {
  MsgType type;
  uint64_t term;
  if (pre_vote) {
    BecomePreCandidate();
    type = MsgType::kPreVote;
    term = term_ + 1;  // the term we would campaign in
  } else {
    BecomeCandidate();
    type = MsgType::kVote;
    term = term_;
  }
  if (TallyVotes(id_, true) == 1) {
    // A cluster of one wins at once.
    if (pre_vote) {
      StartElection(false, transfer);
    } else {
      BecomeLeader();
    }
    return;
  }
  for (uint64_t v : conf_.voters) {
    if (v == id_) continue;
    Message m{.type = type,
              .to = v,
              .term = term,
              .log_term = log_.last_term(),
              .index = log_.last_index()};
    if (transfer) m.context = kTransferContext;
    Send(std::move(m));
  }
}

absl::Status Raft::Step(Message m) {
  if (m.term == 0 || IsLocal(m.type)) {
    // local request (or a forwarded proposal/read): no term checks
  } else if (m.term > term_) {
    if (m.type == MsgType::kVote || m.type == MsgType::kPreVote) {
      bool forced = m.context == kTransferContext;
      bool in_lease = cfg_.check_quorum && lead_ != 0 && election_elapsed_ < cfg_.election_tick;
      // With a live leader, a disruptive candidate (e.g. one that was just
      // partitioned away) is ignored rather than let to depose it.
      if (!forced && in_lease) return absl::OkStatus();
    }
    if (m.type == MsgType::kPreVote || (m.type == MsgType::kPreVoteResp && !m.reject)) {
      // Pre-votes never change our term.
    } else if (m.type == MsgType::kAppend || m.type == MsgType::kHeartbeat ||
               m.type == MsgType::kSnapshot) {
      BecomeFollower(m.term, m.from);
    } else {
      BecomeFollower(m.term, 0);
    }
  } else if (m.term < term_) {
    if ((cfg_.check_quorum || cfg_.pre_vote) &&
        (m.type == MsgType::kHeartbeat || m.type == MsgType::kAppend)) {
      // A stale leader learns our term and steps down.
      Send(Message{.type = MsgType::kAppendResp, .to = m.from});
    } else if (m.type == MsgType::kPreVote) {
      Send(Message{.type = MsgType::kPreVoteResp, .to = m.from, .reject = true});
    }
    return absl::OkStatus();
  }

  switch (m.type) {
    case MsgType::kHup: {
      if (role_ == Role::kLeader || !Promotable()) return absl::OkStatus();
      // Do not campaign with committed membership changes not yet applied: our
      // view of the voters may be out of date.
      for (const Entry& e : log_.NextCommitted(SIZE_MAX)) {
        if (e.type == EntryType::kConfChange) return absl::OkStatus();
      }
      StartElection(cfg_.pre_vote, false);
      return absl::OkStatus();
    }
    case MsgType::kVote:
    case MsgType::kPreVote: {
      bool can_vote = vote_ == m.from || (vote_ == 0 && lead_ == 0) ||
                      (m.type == MsgType::kPreVote && m.term > term_);
      bool up_to_date = bug_vote_without_log_check_ || log_.IsUpToDate(m.index, m.log_term);
      if (can_vote && up_to_date) {
        // A granted pre-vote answers in the term it was asked about.
        Send(Message{.type = ResponseTo(m.type), .to = m.from, .term = m.term});
        if (m.type == MsgType::kVote) {
          election_elapsed_ = 0;
          vote_ = m.from;
        }
      } else {
        Send(Message{.type = ResponseTo(m.type), .to = m.from, .reject = true});
      }
      return absl::OkStatus();
    }
    default:
      break;
  }
  switch (role_) {
    case Role::kLeader:
      return StepLeader(m);
    case Role::kCandidate:
    case Role::kPreCandidate:
      return StepCandidate(m);
    case Role::kFollower:
      return StepFollower(m);
  }
  return absl::OkStatus();
}

}  // namespace capstan::raft
