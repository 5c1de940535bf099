#include "rpc/grpc_services.h"

#include <chrono>
#include <deque>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/health/v1/health.pb.h"
#include "grpc/reflection/v1/reflection.pb.h"
#include "grpc/reflection/v1alpha/reflection.pb.h"

namespace capstan::rpc::internal {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

// How often a Watch looks at the server's state: status changes are rare
// (the server begins to drain) and a few hundred milliseconds late is soon
// enough for a load balancer.
constexpr auto kWatchPoll = std::chrono::milliseconds(100);

// The status of `service` on `server`, or SERVICE_UNKNOWN.
HealthCheckResponse::ServingStatus StatusOf(const Server* server, const std::string& service) {
  bool known = service.empty();
  for (const std::string& name : server->service_names()) known = known || name == service;
  if (!known) return HealthCheckResponse::SERVICE_UNKNOWN;
  return server->draining() ? HealthCheckResponse::NOT_SERVING : HealthCheckResponse::SERVING;
}

class HealthService final : public Service {
 public:
  explicit HealthService(const Server* server) : Service(std::string(kHealthServiceName)) {
    AddUnary<HealthCheckRequest, HealthCheckResponse>(
        "Check",
        [server](ServerContext&, const HealthCheckRequest& request,
                 HealthCheckResponse* response) -> net::Task<absl::Status> {
          HealthCheckResponse::ServingStatus status = StatusOf(server, request.service());
          if (status == HealthCheckResponse::SERVICE_UNKNOWN) {
            co_return absl::NotFoundError(absl::StrCat("unknown service ", request.service()));
          }
          response->set_status(status);
          co_return absl::OkStatus();
        });
    AddServerStreaming<HealthCheckRequest, HealthCheckResponse>(
        "Watch",
        [server](ServerContext& ctx, const HealthCheckRequest& request,
                 ServerWriter<HealthCheckResponse>& out) -> net::Task<absl::Status> {
          int last = -1;
          while (!ctx.cancelled()) {
            HealthCheckResponse::ServingStatus status = StatusOf(server, request.service());
            if (status != last) {
              HealthCheckResponse response;
              response.set_status(status);
              if (!co_await out.Write(response)) break;
              last = status;
            }
            if (server->draining()) {
              co_return absl::UnavailableError("server is shutting down");
            }
            co_await ctx.loop()->Sleep(kWatchPoll);
          }
          co_return absl::CancelledError("the watcher went away");
        });
  }
};

template <typename Request, typename Response>
class ReflectionService final : public Service {
 public:
  ReflectionService(std::string name, const Server* server) : Service(std::move(name)) {
    AddBidiStreaming<Request, Response>(
        "ServerReflectionInfo",
        [server](ServerContext& ctx,
                 ServerReaderWriter<Request, Response>& stream) -> net::Task<absl::Status> {
          Request request;
          while (co_await stream.Read(&request)) {
            Response response;
            Answer(server, request, &response);
            if (!co_await stream.Write(response)) {
              co_return absl::CancelledError("the client went away");
            }
          }
          co_return ctx.cancelled() ? absl::CancelledError("the client went away")
                                    : absl::OkStatus();
        });
  }

 private:
  static void Fail(Response* response, absl::StatusCode code, std::string message) {
    response->mutable_error_response()->set_error_code(static_cast<int>(code));
    response->mutable_error_response()->set_error_message(std::move(message));
  }

  // `file` and every file it imports, each once, the file first.
  static void AddFiles(const google::protobuf::FileDescriptor* file, Response* response) {
    auto* files = response->mutable_file_descriptor_response();
    absl::flat_hash_set<const google::protobuf::FileDescriptor*> seen{file};
    std::deque<const google::protobuf::FileDescriptor*> queue{file};
    while (!queue.empty()) {
      const google::protobuf::FileDescriptor* next = queue.front();
      queue.pop_front();
      google::protobuf::FileDescriptorProto proto;
      next->CopyTo(&proto);
      files->add_file_descriptor_proto(proto.SerializeAsString());
      for (int i = 0; i < next->dependency_count(); ++i) {
        if (seen.insert(next->dependency(i)).second) queue.push_back(next->dependency(i));
      }
    }
  }

  static void Answer(const Server* server, const Request& request, Response* response) {
    const google::protobuf::DescriptorPool* pool =
        google::protobuf::DescriptorPool::generated_pool();
    response->set_valid_host(request.host());
    *response->mutable_original_request() = request;
    switch (request.message_request_case()) {
      case Request::kListServices:
        for (const std::string& name : server->service_names()) {
          response->mutable_list_services_response()->add_service()->set_name(name);
        }
        return;
      case Request::kFileByFilename:
        if (const auto* file = pool->FindFileByName(request.file_by_filename())) {
          AddFiles(file, response);
        } else {
          Fail(response, absl::StatusCode::kNotFound,
               absl::StrCat("no file ", request.file_by_filename()));
        }
        return;
      case Request::kFileContainingSymbol:
        if (const auto* file = pool->FindFileContainingSymbol(request.file_containing_symbol())) {
          AddFiles(file, response);
        } else {
          Fail(response, absl::StatusCode::kNotFound,
               absl::StrCat("no symbol ", request.file_containing_symbol()));
        }
        return;
      case Request::kFileContainingExtension: {
        const auto& ask = request.file_containing_extension();
        const auto* type = pool->FindMessageTypeByName(ask.containing_type());
        const auto* extension =
            type == nullptr ? nullptr : pool->FindExtensionByNumber(type, ask.extension_number());
        if (extension != nullptr) {
          AddFiles(extension->file(), response);
        } else {
          Fail(
              response, absl::StatusCode::kNotFound,
              absl::StrCat("no extension ", ask.extension_number(), " of ", ask.containing_type()));
        }
        return;
      }
      case Request::kAllExtensionNumbersOfType: {
        const auto* type = pool->FindMessageTypeByName(request.all_extension_numbers_of_type());
        if (type == nullptr) {
          Fail(response, absl::StatusCode::kNotFound,
               absl::StrCat("no type ", request.all_extension_numbers_of_type()));
          return;
        }
        std::vector<const google::protobuf::FieldDescriptor*> extensions;
        pool->FindAllExtensions(type, &extensions);
        auto* numbers = response->mutable_all_extension_numbers_response();
        numbers->set_base_type_name(type->full_name());
        for (const auto* extension : extensions) numbers->add_extension_number(extension->number());
        return;
      }
      default:
        Fail(response, absl::StatusCode::kUnimplemented, "no request in the message");
        return;
    }
  }
};

}  // namespace

std::unique_ptr<Service> NewHealthService(const Server* server) {
  return std::make_unique<HealthService>(server);
}

std::vector<std::unique_ptr<Service>> NewReflectionServices(const Server* server) {
  namespace v1alpha = ::grpc::reflection::v1alpha;
  namespace v1 = ::grpc::reflection::v1;
  std::vector<std::unique_ptr<Service>> services;
  services.push_back(
      std::make_unique<
          ReflectionService<v1alpha::ServerReflectionRequest, v1alpha::ServerReflectionResponse>>(
          "grpc.reflection.v1alpha.ServerReflection", server));
  services.push_back(std::make_unique<
                     ReflectionService<v1::ServerReflectionRequest, v1::ServerReflectionResponse>>(
      "grpc.reflection.v1.ServerReflection", server));
  return services;
}

}  // namespace capstan::rpc::internal
