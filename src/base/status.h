// Capstan's one error vocabulary: absl::Status / absl::StatusOr<T> with the
// gRPC-aligned codes, plus the two macros that keep error plumbing short.
//
//   absl::StatusOr<Segment> OpenSegment(...);
//   absl::Status Replay() {
//     RETURN_IF_ERROR(CheckHeader());
//     ASSIGN_OR_RETURN(Segment seg, OpenSegment(path));
//     ...
//   }
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CAPSTAN_CONCAT_INNER(a, b) a##b
#define CAPSTAN_CONCAT(a, b) CAPSTAN_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status capstan_status_ = (expr);           \
    if (!capstan_status_.ok()) return capstan_status_; \
  } while (0)

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(CAPSTAN_CONCAT(capstan_statusor_, __LINE__), lhs, expr)

#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)    \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()
