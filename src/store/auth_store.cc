#include "store/auth_store.h"

#include <crypt.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/coding.h"
#include "base/logging.h"
#include "store/backend.h"
#include "store/jwt.h"

namespace capstan::store {
namespace {

constexpr char kAuthEnabledKey[] = "auth/enabled";
constexpr char kAuthRevisionKey[] = "auth/revision";
constexpr char kAuthUserPrefix[] = "auth/user/";
constexpr char kAuthRolePrefix[] = "auth/role/";

bool HasRootRole(const authpb::User& u) {
  return std::find(u.roles().begin(), u.roles().end(), kRootRole) != u.roles().end();
}

// Debian's abseil has its own string_view for heterogeneous lookups.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// A single key is the interval [key, key + "\0").
std::string PointEnd(std::string_view key) {
  std::string end(key);
  end.push_back('\0');
  return end;
}

}  // namespace

thread_local const AuthInfo* CallAuthScope::current_ = nullptr;

// ---- KeyIntervalSet

void KeyIntervalSet::Add(std::string_view key, std::string_view range_end) {
  if (range_end.empty()) {
    intervals_.push_back({std::string(key), PointEnd(key)});
  } else if (range_end == std::string_view("\0", 1)) {
    intervals_.push_back({std::string(key), ""});
  } else if (range_end > key) {
    intervals_.push_back({std::string(key), std::string(range_end)});
  }
  // An empty interval (range_end <= key) grants nothing.
}

void KeyIntervalSet::Merge() {
  std::sort(intervals_.begin(), intervals_.end(),
            [](const Interval& a, const Interval& b) { return a.begin < b.begin; });
  std::vector<Interval> merged;
  for (auto& iv : intervals_) {
    if (!merged.empty()) {
      Interval& last = merged.back();
      // Overlapping or touching: one interval (coverage is what counts).
      if (last.end.empty() || iv.begin <= last.end) {
        if (!last.end.empty() && (iv.end.empty() || iv.end > last.end)) last.end = iv.end;
        continue;
      }
    }
    merged.push_back(std::move(iv));
  }
  intervals_ = std::move(merged);
}

bool KeyIntervalSet::Covers(std::string_view key, std::string_view range_end) const {
  std::string point_end;
  bool unbounded = false;
  if (range_end.empty()) {
    point_end = PointEnd(key);
    range_end = point_end;
  } else if (range_end == std::string_view("\0", 1)) {
    unbounded = true;
  }
  // The last interval that starts at or before key.
  auto it = std::upper_bound(intervals_.begin(), intervals_.end(), key,
                             [](std::string_view k, const Interval& iv) { return k < iv.begin; });
  if (it == intervals_.begin()) return false;
  --it;
  if (it->end.empty()) return true;
  if (unbounded) return false;
  // A request range that ends at or before its start is empty: covered
  // when its start is.
  if (range_end <= key) return key < it->end;
  return range_end <= it->end;
}

// ---- AuthStore

AuthStore::AuthStore(Backend* backend, Options options) : backend_(backend), options_(options) {}

absl::Status AuthStore::Load() {
  bool enabled = false;
  {
    MutexLock lock(&mu_);
    users_.clear();
    roles_.clear();
    revision_ = 1;
    auto v = backend_->Get(MetaKey(kAuthEnabledKey));
    if (v.ok()) enabled = *v == "1";
    auto rev = backend_->Get(MetaKey(kAuthRevisionKey));
    if (rev.ok() && rev->size() == 8) revision_ = DecodeFixed64BE(rev->data());
    auto it = backend_->NewIterator();
    std::string users = MetaKey(kAuthUserPrefix);
    for (it->Seek(users); it->Valid() && it->key().starts_with(users); it->Next()) {
      authpb::User u;
      if (!u.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return absl::DataLossError("undecodable auth user record");
      }
      users_[u.name()] = std::move(u);
    }
    std::string roles = MetaKey(kAuthRolePrefix);
    for (it->Seek(roles); it->Valid() && it->key().starts_with(roles); it->Next()) {
      authpb::Role r;
      if (!r.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return absl::DataLossError("undecodable auth role record");
      }
      roles_[r.name()] = std::move(r);
    }
    RebuildPerms();
    enabled_.store(enabled, std::memory_order_release);
  }
  ClearTokens();
  return absl::OkStatus();
}

uint64_t AuthStore::revision() const {
  MutexLock lock(&mu_);
  return revision_;
}

void AuthStore::PutUser(const authpb::User& u, rocksdb::WriteBatch* batch) {
  batch->Put(MetaKey(absl::StrCat(kAuthUserPrefix, u.name())), u.SerializeAsString());
  users_[u.name()] = u;
}

void AuthStore::PutRole(const authpb::Role& r, rocksdb::WriteBatch* batch) {
  batch->Put(MetaKey(absl::StrCat(kAuthRolePrefix, r.name())), r.SerializeAsString());
  roles_[r.name()] = r;
}

void AuthStore::CommitRevision(rocksdb::WriteBatch* batch) {
  ++revision_;
  std::string v;
  PutFixed64BE(&v, revision_);
  batch->Put(MetaKey(kAuthRevisionKey), v);
  RebuildPerms();
}

void AuthStore::RebuildPerms() {
  perms_.clear();
  for (const auto& [name, user] : users_) {
    UserPerms& p = perms_[name];
    p.admin = HasRootRole(user);
    for (const auto& role_name : user.roles()) {
      auto it = roles_.find(role_name);
      if (it == roles_.end()) continue;
      for (const auto& perm : it->second.keypermission()) {
        if (perm.permtype() != authpb::Permission::WRITE) p.read.Add(perm.key(), perm.range_end());
        if (perm.permtype() != authpb::Permission::READ) p.write.Add(perm.key(), perm.range_end());
      }
    }
    p.read.Merge();
    p.write.Merge();
  }
}

void AuthStore::InvalidateUserTokens(std::string_view user) {
  MutexLock lock(&tokens_mu_);
  for (auto it = tokens_.begin(); it != tokens_.end();) {
    if (it->second.user == user) {
      tokens_.erase(it++);
    } else {
      ++it;
    }
  }
}

void AuthStore::ClearTokens() {
  MutexLock lock(&tokens_mu_);
  tokens_.clear();
  tokens_at_last_purge_ = 0;
}

void AuthStore::PurgeExpiredTokens() {
  // Amortized: a sweep once the map has doubled since the last one.
  if (tokens_.size() < 2 * tokens_at_last_purge_ + 64) return;
  auto now = std::chrono::steady_clock::now();
  for (auto it = tokens_.begin(); it != tokens_.end();) {
    if (it->second.expires <= now) {
      tokens_.erase(it++);
    } else {
      ++it;
    }
  }
  tokens_at_last_purge_ = tokens_.size();
}

size_t AuthStore::token_count() const {
  MutexLock lock(&tokens_mu_);
  return tokens_.size();
}

absl::StatusOr<std::unique_ptr<google::protobuf::Message>> AuthStore::Apply(
    const AuthRequest& req, uint64_t index, const AuthHeader* header, rocksdb::WriteBatch* batch) {
  using namespace etcdserverpb;
  // Admin requests are checked again where they take effect (etcd's
  // needAdminPermission), against the state every member has here.
  if (header != nullptr && enabled() && !req.has_authenticate()) {
    RETURN_IF_ERROR(CheckAdmin(AuthInfo{header->username(), header->revision()}));
  }
  std::string invalidate;  // a user whose tokens die with this change
  std::unique_ptr<google::protobuf::Message> out;
  {
    MutexLock lock(&mu_);
    switch (req.op_case()) {
      case AuthRequest::kEnable: {
        out = std::make_unique<AuthEnableResponse>();
        if (enabled()) break;
        auto root = users_.find(kRootUser);
        if (root == users_.end()) return ErrRootUserNotExist();
        if (!HasRootRole(root->second)) return ErrRootRoleNotExist();
        batch->Put(MetaKey(kAuthEnabledKey), "1");
        enabled_.store(true, std::memory_order_release);
        CAPSTAN_LOG(info, "enabled authentication");
        break;
      }
      case AuthRequest::kDisable: {
        out = std::make_unique<AuthDisableResponse>();
        if (!enabled()) break;
        batch->Put(MetaKey(kAuthEnabledKey), "0");
        CommitRevision(batch);
        enabled_.store(false, std::memory_order_release);
        ClearTokens();
        CAPSTAN_LOG(info, "disabled authentication");
        break;
      }
      case AuthRequest::kAuthenticate: {
        const auto& a = req.authenticate();
        if (!enabled()) return ErrAuthNotEnabled();
        auto it = users_.find(a.name());
        if (it == users_.end()) return ErrAuthFailed();
        if (it->second.options().no_password()) return ErrAuthFailed();
        // The password was checked at an older revision (changed since?).
        if (a.checked_revision() != revision_) return ErrAuthOldRevision();
        auto resp = std::make_unique<AuthenticateResponse>();
        // A JWT is signed by the member that answers the call, at the
        // revision checked here (auth_service.cc): no member keeps it.
        if (options_.jwt != nullptr) {
          out = std::move(resp);
          break;
        }
        resp->set_token(absl::StrCat(a.token_prefix(), ".", index));
        {
          MutexLock tokens(&tokens_mu_);
          PurgeExpiredTokens();
          tokens_[resp->token()] =
              Token{a.name(), std::chrono::steady_clock::now() + options_.token_ttl};
        }
        out = std::move(resp);
        break;
      }
      case AuthRequest::kUserAdd: {
        const auto& r = req.user_add();
        if (r.name().empty()) return ErrUserEmpty();
        if (users_.contains(r.name())) return ErrUserAlreadyExist();
        authpb::User u;
        u.set_name(r.name());
        if (!r.options().no_password()) u.set_password(r.hashedpassword());
        *u.mutable_options() = r.options();
        PutUser(u, batch);
        CommitRevision(batch);
        out = std::make_unique<AuthUserAddResponse>();
        break;
      }
      case AuthRequest::kUserDelete: {
        const auto& r = req.user_delete();
        if (enabled() && r.name() == kRootUser) return ErrInvalidAuthMgmt();
        if (!users_.contains(r.name())) return ErrUserNotFound();
        batch->Delete(MetaKey(absl::StrCat(kAuthUserPrefix, r.name())));
        users_.erase(r.name());
        CommitRevision(batch);
        invalidate = r.name();
        out = std::make_unique<AuthUserDeleteResponse>();
        break;
      }
      case AuthRequest::kUserChangePassword: {
        const auto& r = req.user_change_password();
        auto it = users_.find(r.name());
        if (it == users_.end()) return ErrUserNotFound();
        authpb::User u = it->second;
        u.set_password(r.hashedpassword());
        PutUser(u, batch);
        CommitRevision(batch);
        invalidate = r.name();
        out = std::make_unique<AuthUserChangePasswordResponse>();
        break;
      }
      case AuthRequest::kUserGrantRole: {
        const auto& r = req.user_grant_role();
        auto it = users_.find(r.user());
        if (it == users_.end()) return ErrUserNotFound();
        // The root role need not exist as a role: it is implied.
        if (r.role() != kRootRole && !roles_.contains(r.role())) return ErrRoleNotFound();
        out = std::make_unique<AuthUserGrantRoleResponse>();
        authpb::User u = it->second;
        std::vector<std::string> roles(u.roles().begin(), u.roles().end());
        if (std::find(roles.begin(), roles.end(), r.role()) != roles.end()) break;
        roles.push_back(r.role());
        std::sort(roles.begin(), roles.end());
        u.clear_roles();
        for (auto& role : roles) u.add_roles(std::move(role));
        PutUser(u, batch);
        CommitRevision(batch);
        break;
      }
      case AuthRequest::kUserRevokeRole: {
        const auto& r = req.user_revoke_role();
        if (enabled() && r.name() == kRootUser && r.role() == kRootRole) {
          return ErrInvalidAuthMgmt();
        }
        auto it = users_.find(r.name());
        if (it == users_.end()) return ErrUserNotFound();
        authpb::User u = it->second;
        u.clear_roles();
        for (const auto& role : it->second.roles()) {
          if (role != r.role()) u.add_roles(role);
        }
        if (u.roles_size() == it->second.roles_size()) return ErrRoleNotGranted();
        PutUser(u, batch);
        CommitRevision(batch);
        out = std::make_unique<AuthUserRevokeRoleResponse>();
        break;
      }
      case AuthRequest::kRoleAdd: {
        const auto& r = req.role_add();
        if (r.name().empty()) return ErrRoleEmpty();
        if (roles_.contains(r.name())) return ErrRoleAlreadyExist();
        authpb::Role role;
        role.set_name(r.name());
        PutRole(role, batch);
        CommitRevision(batch);
        out = std::make_unique<AuthRoleAddResponse>();
        break;
      }
      case AuthRequest::kRoleDelete: {
        const auto& r = req.role_delete();
        if (enabled() && r.role() == kRootRole) return ErrInvalidAuthMgmt();
        if (!roles_.contains(r.role())) return ErrRoleNotFound();
        batch->Delete(MetaKey(absl::StrCat(kAuthRolePrefix, r.role())));
        roles_.erase(r.role());
        // Users lose the role with it.
        for (auto& [name, user] : users_) {
          if (std::find(user.roles().begin(), user.roles().end(), r.role()) == user.roles().end()) {
            continue;
          }
          authpb::User u = user;
          u.clear_roles();
          for (const auto& role : user.roles()) {
            if (role != r.role()) u.add_roles(role);
          }
          PutUser(u, batch);
        }
        CommitRevision(batch);
        out = std::make_unique<AuthRoleDeleteResponse>();
        break;
      }
      case AuthRequest::kRoleGrantPermission: {
        const auto& r = req.role_grant_permission();
        auto it = roles_.find(r.name());
        if (it == roles_.end()) return ErrRoleNotFound();
        if (!r.has_perm()) return ErrPermissionNotGiven();
        authpb::Role role = it->second;
        bool updated = false;
        for (auto& p : *role.mutable_keypermission()) {
          if (p.key() == r.perm().key() && p.range_end() == r.perm().range_end()) {
            p.set_permtype(r.perm().permtype());  // same range: the type changes
            updated = true;
            break;
          }
        }
        if (!updated) {
          *role.add_keypermission() = r.perm();
          std::stable_sort(role.mutable_keypermission()->begin(),
                           role.mutable_keypermission()->end(),
                           [](const authpb::Permission& a, const authpb::Permission& b) {
                             return a.key() < b.key();
                           });
        }
        PutRole(role, batch);
        CommitRevision(batch);
        out = std::make_unique<AuthRoleGrantPermissionResponse>();
        break;
      }
      case AuthRequest::kRoleRevokePermission: {
        const auto& r = req.role_revoke_permission();
        auto it = roles_.find(r.role());
        if (it == roles_.end()) return ErrRoleNotFound();
        authpb::Role role;
        role.set_name(it->second.name());
        for (const auto& p : it->second.keypermission()) {
          if (p.key() != r.key() || p.range_end() != r.range_end()) *role.add_keypermission() = p;
        }
        if (role.keypermission_size() == it->second.keypermission_size()) {
          return ErrPermissionNotGranted();
        }
        PutRole(role, batch);
        CommitRevision(batch);
        out = std::make_unique<AuthRoleRevokePermissionResponse>();
        break;
      }
      default:
        return absl::InvalidArgumentError("unknown auth request");
    }
  }
  if (!invalidate.empty()) InvalidateUserTokens(invalidate);
  return out;
}

// ---- reads

absl::Status AuthStore::Status(etcdserverpb::AuthStatusResponse* resp) const {
  resp->set_enabled(enabled());
  resp->set_authrevision(revision());
  return absl::OkStatus();
}

absl::Status AuthStore::UserGet(const etcdserverpb::AuthUserGetRequest& req,
                                etcdserverpb::AuthUserGetResponse* resp) const {
  MutexLock lock(&mu_);
  auto it = users_.find(req.name());
  if (it == users_.end()) return ErrUserNotFound();
  for (const auto& r : it->second.roles()) resp->add_roles(r);
  return absl::OkStatus();
}

absl::Status AuthStore::UserList(etcdserverpb::AuthUserListResponse* resp) const {
  MutexLock lock(&mu_);
  for (const auto& [name, u] : users_) resp->add_users(name);
  return absl::OkStatus();
}

absl::Status AuthStore::RoleGet(const etcdserverpb::AuthRoleGetRequest& req,
                                etcdserverpb::AuthRoleGetResponse* resp) const {
  MutexLock lock(&mu_);
  auto it = roles_.find(req.role());
  if (it == roles_.end()) return ErrRoleNotFound();
  for (const auto& p : it->second.keypermission()) *resp->add_perm() = p;
  return absl::OkStatus();
}

absl::Status AuthStore::RoleList(etcdserverpb::AuthRoleListResponse* resp) const {
  MutexLock lock(&mu_);
  for (const auto& [name, r] : roles_) resp->add_roles(name);
  return absl::OkStatus();
}

// ---- checks

absl::Status AuthStore::CheckOp(const AuthInfo& who, std::string_view key,
                                std::string_view range_end, bool write) const {
  if (!enabled()) return absl::OkStatus();
  if (who.user.empty()) return ErrUserEmpty();
  MutexLock lock(&mu_);
  if (who.revision < revision_) return ErrAuthOldRevision();
  auto it = perms_.find(who.user);
  if (it == perms_.end()) return ErrPermissionDenied();
  if (it->second.admin) return absl::OkStatus();
  const KeyIntervalSet& set = write ? it->second.write : it->second.read;
  if (set.Covers(key, range_end)) return absl::OkStatus();
  return ErrPermissionDenied();
}

absl::Status AuthStore::CheckRead(const AuthInfo& who, std::string_view key,
                                  std::string_view range_end) const {
  return CheckOp(who, key, range_end, false);
}

absl::Status AuthStore::CheckWrite(const AuthInfo& who, std::string_view key,
                                   std::string_view range_end) const {
  return CheckOp(who, key, range_end, true);
}

absl::Status AuthStore::CheckAdmin(const AuthInfo& who) const {
  if (!enabled()) return absl::OkStatus();
  if (who.user.empty()) return ErrUserEmpty();
  MutexLock lock(&mu_);
  auto it = perms_.find(who.user);
  if (it == perms_.end()) return ErrUserNotFound();
  if (!it->second.admin) return ErrPermissionDenied();
  return absl::OkStatus();
}

bool AuthStore::IsAdmin(std::string_view user) const {
  MutexLock lock(&mu_);
  auto it = perms_.find(Av(user));
  return it != perms_.end() && it->second.admin;
}

bool AuthStore::HasRole(std::string_view user, std::string_view role) const {
  MutexLock lock(&mu_);
  auto it = users_.find(user);
  if (it == users_.end()) return false;
  return std::find(it->second.roles().begin(), it->second.roles().end(), role) !=
         it->second.roles().end();
}

absl::Status AuthStore::CheckIdentified(const AuthInfo& who) const {
  if (!enabled()) return absl::OkStatus();
  if (who.user.empty()) return ErrUserEmpty();
  return absl::OkStatus();
}

// ---- authentication

absl::StatusOr<AuthInfo> AuthStore::InfoFromToken(std::string_view token) {
  if (options_.jwt != nullptr) {
    absl::StatusOr<JwtClaims> claims = options_.jwt->Verify(token);
    if (!claims.ok()) {
      // Debug only: anyone can send garbage, the log must not be theirs.
      CAPSTAN_LOG(debug, "refused a JWT", "reason", claims.status().message());
      return ErrInvalidAuthToken();
    }
    return AuthInfo{std::move(claims->username), claims->revision};
  }
  AuthInfo info;
  {
    MutexLock lock(&tokens_mu_);
    auto it = tokens_.find(Av(token));
    if (it == tokens_.end()) return ErrInvalidAuthToken();
    auto now = std::chrono::steady_clock::now();
    if (it->second.expires <= now) {
      tokens_.erase(it);
      return ErrInvalidAuthToken();
    }
    it->second.expires = now + options_.token_ttl;  // a used token lives on
    info.user = it->second.user;
  }
  info.revision = revision();
  return info;
}

AuthInfo AuthStore::InfoFromName(std::string_view user) const {
  return AuthInfo{std::string(user), revision()};
}

absl::StatusOr<uint64_t> AuthStore::CheckPassword(std::string_view user,
                                                  std::string_view password) const {
  if (!enabled()) return ErrAuthNotEnabled();
  std::string hash;
  uint64_t rev;
  {
    MutexLock lock(&mu_);
    auto it = users_.find(user);
    if (it == users_.end()) return ErrAuthFailed();
    if (it->second.options().no_password()) return ErrNoPasswordUser();
    hash = it->second.password();
    rev = revision_;
  }
  if (hash.empty() || password.find('\0') != std::string_view::npos) return ErrAuthFailed();
  auto data = std::make_unique<crypt_data>();
  std::string pw(password);
  const char* out = crypt_rn(pw.c_str(), hash.c_str(), data.get(), sizeof(crypt_data));
  if (out == nullptr || out[0] == '*' || std::string_view(out).size() != hash.size() ||
      CRYPTO_memcmp(out, hash.data(), hash.size()) != 0) {
    return ErrAuthFailed();
  }
  return rev;
}

absl::StatusOr<std::string> AuthStore::HashPassword(std::string_view password, int cost) {
  if (password.find('\0') != std::string_view::npos) {
    return absl::InvalidArgumentError("password: contains a NUL byte");
  }
  char salt[CRYPT_GENSALT_OUTPUT_SIZE];
  if (crypt_gensalt_rn("$2b$", cost, nullptr, 0, salt, sizeof(salt)) == nullptr) {
    return absl::InternalError(absl::StrCat("bcrypt: cannot make a salt at cost ", cost));
  }
  auto data = std::make_unique<crypt_data>();
  std::string pw(password);
  const char* out = crypt_rn(pw.c_str(), salt, data.get(), sizeof(crypt_data));
  if (out == nullptr || out[0] == '*') return absl::InternalError("bcrypt: hashing failed");
  return std::string(out);
}

std::string AuthStore::NewTokenPrefix() {
  static constexpr char kLetters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
  std::string out;
  while (out.size() < 16) {
    unsigned char bytes[32];
    if (RAND_bytes(bytes, sizeof(bytes)) != 1) {
      CAPSTAN_LOG(critical, "RAND_bytes failed: cannot make a token");
      std::abort();
    }
    for (unsigned char b : bytes) {
      // Only bytes below 4 * 52, so that every letter is equally likely.
      if (b < 208 && out.size() < 16) out.push_back(kLetters[b % 52]);
    }
  }
  return out;
}

}  // namespace capstan::store
