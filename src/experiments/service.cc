#include "experiments/service.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/logging.h"
#include "experiments/console_assets.h"
#include "experiments/model_service.h"
#include "experiments/results_history.h"
#include "experiments/system_status.h"

namespace capstan::experiments {
namespace {

std::string UserOf(const net::HttpRequest& request) {
  std::string_view user = request.Header("X-Capstan-User").value_or("");
  return user.empty() ? "anonymous" : std::string(user);
}

// The revision a write expects: ?revision=N or If-Match: N / "N" / W/"N".
// nullopt: none given; -1: given but not a number.
std::optional<int64_t> ExpectedRevision(const net::HttpRequest& request) {
  std::string text;
  for (absl::string_view pair :
       absl::StrSplit(absl::string_view(request.query.data(), request.query.size()), '&')) {
    if (pair.substr(0, 9) == "revision=") text = std::string(pair.substr(9));
  }
  if (text.empty()) {
    std::optional<std::string_view> if_match = request.Header("If-Match");
    if (!if_match.has_value()) return std::nullopt;
    std::string_view tag = *if_match;
    if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    if (tag.size() >= 2 && tag.front() == '"' && tag.back() == '"')
      tag = tag.substr(1, tag.size() - 2);
    text = std::string(tag);
  }
  int64_t revision = 0;
  if (!absl::SimpleAtoi(text, &revision) || revision < 0) return -1;
  return revision;
}

}  // namespace

net::HttpResponse ErrorResponse(const absl::Status& status) {
  Json error = {{"code", "internal"}, {"message", std::string(status.message())}};
  int http = 500;
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument: {
      http = 400;
      error["code"] = "invalid";
      std::string message(status.message());
      size_t colon = message.find(": ");
      if (colon != std::string::npos) error["field"] = message.substr(0, colon);
      break;
    }
    case absl::StatusCode::kNotFound:
      http = 404;
      error["code"] = "not_found";
      break;
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kAlreadyExists:
      http = 409;
      error["code"] = "conflict";
      if (std::optional<int64_t> current = CurrentRevisionOf(status); current.has_value()) {
        error["currentRevision"] = *current;
      }
      break;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      http = 503;
      error["code"] = "unavailable";
      break;
    default:
      break;
  }
  return net::JsonResponse(http, Json{{"error", error}}.dump());
}

absl::StatusOr<std::unique_ptr<ExperimentsService>> ExperimentsService::Start(
    ServiceOptions options) {
  if (options.store_endpoints.empty()) {
    return absl::InvalidArgumentError("the store's endpoints are missing (--store host:port)");
  }
  if (options.prefix.empty() || options.prefix.back() != '/') {
    return absl::InvalidArgumentError(
        absl::StrCat("--prefix must end with '/' (got \"", options.prefix, "\")"));
  }
  if (options.gateway_admin_urls.size() > kMaxGatewayAdmins) {
    return absl::InvalidArgumentError(absl::StrCat("--gateway-admin: at most ", kMaxGatewayAdmins,
                                                   " gateways (got ",
                                                   options.gateway_admin_urls.size(), ")"));
  }
  if (options.streaming.max_subscribers > 0 &&
      options.streaming.max_subscribers >= options.max_connections) {
    return absl::InvalidArgumentError(
        absl::StrCat("--sse-max-subscribers (", options.streaming.max_subscribers,
                     ") must be below --max-connections (", options.max_connections,
                     "): each subscriber holds a connection, and the API needs some too"));
  }
  std::unique_ptr<ExperimentsService> svc(new ExperimentsService());
  svc->options_ = options;
  ASSIGN_OR_RETURN(std::unique_ptr<client::Client> client,
                   client::Client::Connect({.endpoints = options.store_endpoints}));
  svc->client_ = std::move(client);
  svc->repository_ = std::make_unique<ConfigStore>(svc->client_, options.prefix);
  RegisterGrowthBookKinds(svc->repository_.get());

  metrics::Registry& reg = svc->registry_;
  svc->requests_ = reg.AddCounter("capstan_experiments_http_requests_total",
                                  "HTTP requests answered by the API and SDK endpoints.");
  svc->writes_ = reg.AddCounter("capstan_experiments_config_writes_total",
                                "Configuration documents created, replaced or deleted.");
  svc->conflicts_ = reg.AddCounter("capstan_experiments_config_conflicts_total",
                                   "Writes refused because the document changed (409).");
  ExperimentsService* raw = svc.get();
  reg.AddGaugeFunc("capstan_experiments_config_generation",
                   "Configuration snapshots built from the store's watch.",
                   [raw] { return static_cast<double>(raw->watcher_->snapshot()->generation); });
  reg.AddGaugeFunc("capstan_experiments_config_documents",
                   "Configuration documents in the current snapshot.", [raw] {
                     size_t n = 0;
                     for (const auto& [kind, docs] : raw->watcher_->snapshot()->kinds)
                       n += docs.size();
                     return static_cast<double>(n);
                   });

  svc->streams_ = std::make_unique<GrowthBookStreams>(&svc->growthbook_, options.streaming);
  svc->growthbook_.set_streaming(svc->streams_->enabled());
  reg.AddGaugeFunc("capstan_experiments_sse_subscribers",
                   "GrowthBook streaming (GET /sub/{clientKey}) subscribers connected.",
                   [raw] { return static_cast<double>(raw->streams_->subscribers()); });
  svc->streams_->set_events_counter(
      reg.AddCounter("capstan_experiments_sse_events_total",
                     "GrowthBook streaming payload events sent (initial ones included)."));
  svc->AddRoutes();
  svc->watcher_ = ConfigWatcher::Start(svc->client_, options.prefix);
  svc->watcher_->Subscribe([raw](const std::shared_ptr<const DocumentSnapshot>& snapshot) {
    raw->growthbook_.OnSnapshot(snapshot);
    raw->streams_->OnSnapshot();  // after the swap: it sends what Features now serves
  });

  ServiceContext context{.store = svc->repository_.get(),
                         .watcher = svc->watcher_.get(),
                         .router = &svc->router_,
                         .registry = &svc->registry_};
  if (options.layered_model) {
    ASSIGN_OR_RETURN(svc->layered_model_,
                     LayeredModelService::Install(
                         context, LayeredModelOptions{.max_batch_units = options.max_batch_units}));
  }
  for (const ServiceExtension& extension : options.extensions) RETURN_IF_ERROR(extension(context));
  svc->results_history_ = InstallResultsHistory(&svc->router_, svc->watcher_.get());

  svc->server_ = std::make_unique<net::HttpServer>(net::HttpServerOptions{
      .name = "experiments",
      .group = options.group,
      .max_connections = options.max_connections,
      .max_body_bytes = options.max_body_bytes,
      .worker_threads = options.worker_threads,
      // GrowthBook's browser SDKs call from other origins,
      // and read x-sse-support before they subscribe.
      .default_headers = {{"Access-Control-Allow-Origin", "*"},
                          {"Access-Control-Expose-Headers", "ETag, x-sse-support"}}});
  svc->server_->Handle("/metrics", [raw] {
    return net::HttpResponse{.content_type = "text/plain; version=0.0.4; charset=utf-8",
                             .body = raw->registry_.RenderText()};
  });
  svc->server_->Handle("/health", [raw] {
    if (raw->watcher_->snapshot()->generation == 0) {
      return net::HttpResponse{
          .status = 503,
          .content_type = "application/json",
          .body = R"({"health":"false","reason":"configuration not listed from the store yet"})"};
    }
    return net::HttpResponse{.content_type = "application/json",
                             .body = R"({"health":"true","reason":""})"};
  });
  svc->server_->HandleAll([raw](const net::HttpRequest& request) {
    raw->requests_->Inc();
    return raw->router_.Dispatch(request);
  });
  RETURN_IF_ERROR(svc->server_->Start(options.listen_host, options.listen_port));
  CAPSTAN_LOG(info, "experiments: serving", "port", svc->server_->port(), "prefix", options.prefix);
  return svc;
}

ExperimentsService::~ExperimentsService() {
  results_history_.reset();                 // its sampler dispatches into router_
  if (server_ != nullptr) server_->Stop();  // no handler runs after this
  layered_model_.reset();                   // unsubscribes from the watcher
  watcher_.reset();
}

void ExperimentsService::AddRoutes() {
  AddConsoleRoutes(&router_);  // the web console at /console (console_assets.h)
  AddSystemRoutes(&router_, options_.store_endpoints);  // its System page (system_status.h)
  gateways_->Set(options_.gateway_admin_urls);          // its Gateways page (gateway_status.h)
  AddGatewayRoutes(&router_, gateways_, options_.gateway_fetch);
  router_.Add("GET", "/api/features/{clientKey}",
              [this](const net::HttpRequest& r, const net::PathParams& p) {
                return growthbook_.Features(p.at("clientKey"),
                                            r.Header("If-None-Match").value_or(""));
              });
  router_.Add(
      "GET", "/sub/{clientKey}", [this](const net::HttpRequest& r, const net::PathParams& p) {
        return streams_->Subscribe(p.at("clientKey"), r.Header("Last-Event-ID").value_or(""));
      });
  router_.Add("POST", "/api/eval/{clientKey}",
              [this](const net::HttpRequest& r, const net::PathParams& p) {
                return growthbook_.RemoteEval(p.at("clientKey"), r.body);
              });
  router_.Add("GET", "/v1/{kind}", [this](const net::HttpRequest&, const net::PathParams& p) {
    absl::StatusOr<std::vector<ConfigDocument>> docs = repository_->List(p.at("kind"));
    if (!docs.ok()) return ErrorResponse(docs.status());
    Json items = Json::array();
    for (const ConfigDocument& doc : *docs) items.push_back(doc.ToApi());
    return net::JsonResponse(200, Json{{"items", std::move(items)}}.dump());
  });
  router_.Add("GET", "/v1/{kind}/{id}", [this](const net::HttpRequest&, const net::PathParams& p) {
    absl::StatusOr<ConfigDocument> doc = repository_->Get(p.at("kind"), p.at("id"));
    if (!doc.ok()) return ErrorResponse(doc.status());
    net::HttpResponse response = net::JsonResponse(200, doc->ToApi().dump());
    response.headers.emplace_back("ETag", absl::StrCat("\"", doc->revision, "\""));
    return response;
  });
  router_.Add(
      "POST", "/v1/experiments/{id}/{action}",
      [this](const net::HttpRequest& r, const net::PathParams& p) {
        std::optional<LifecycleAction> action = ParseLifecycleAction(p.at("action"));
        if (!action.has_value()) {
          return net::JsonError(404, "not_found",
                                "no such lifecycle action (start, stop, launch, ramp)");
        }
        Json body = r.body.empty() ? Json::object()
                                   : Json::parse(r.body, nullptr, /*allow_exceptions=*/false);
        if (!body.is_object()) {
          return ErrorResponse(absl::InvalidArgumentError("(body): must be a JSON object"));
        }
        std::optional<int64_t> expected = ExpectedRevision(r);
        LifecycleChange change{
            .action = *action, .expected_revision = expected.value_or(0), .user = UserOf(r)};
        if (auto coverage = body.find("coverage"); coverage != body.end()) {
          if (!coverage->is_number()) {
            return ErrorResponse(absl::InvalidArgumentError("coverage: must be a number"));
          }
          change.coverage = coverage->get<double>();
        }
        if (auto variant = body.find("launched_variant"); variant != body.end()) {
          if (!variant->is_string()) {
            return ErrorResponse(absl::InvalidArgumentError("launched_variant: must be a string"));
          }
          change.launched_variant = variant->get<std::string>();
        }
        absl::StatusOr<ConfigDocument> written = ChangeLifecycle(p.at("id"), change);
        if (!written.ok()) return ErrorResponse(written.status());
        net::HttpResponse response = net::JsonResponse(200, written->ToApi().dump());
        response.headers.emplace_back("ETag", absl::StrCat("\"", written->revision, "\""));
        return response;
      });
  router_.Add("PUT", "/v1/{kind}/{id}",
              [this](const net::HttpRequest& r, const net::PathParams& p) { return Put(r, p); });
  router_.Add("DELETE", "/v1/{kind}/{id}",
              [this](const net::HttpRequest& r, const net::PathParams& p) { return Delete(r, p); });
  router_.Add("GET", "/v1/{kind}/{id}/history",
              [this](const net::HttpRequest&, const net::PathParams& p) {
                auto history = repository_->History(p.at("kind"), p.at("id"));
                if (!history.ok()) return ErrorResponse(history.status());
                Json items = Json::array();
                for (HistoryRecord& entry : *history) {
                  entry.record["sequence"] = entry.sequence;
                  items.push_back(std::move(entry.record));
                }
                return net::JsonResponse(200, Json{{"items", std::move(items)}}.dump());
              });
}

net::HttpResponse ExperimentsService::Put(const net::HttpRequest& request,
                                          const net::PathParams& params) {
  std::optional<int64_t> expected = ExpectedRevision(request);
  if (expected == -1) {
    return ErrorResponse(absl::InvalidArgumentError("revision: must be a non-negative integer"));
  }
  Json spec = Json::parse(request.body, nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded()) {
    return ErrorResponse(absl::InvalidArgumentError("(body): is not valid JSON"));
  }
  absl::StatusOr<ConfigDocument> written = PutDocument(
      params.at("kind"), params.at("id"), std::move(spec), expected.value_or(0), UserOf(request));
  if (!written.ok()) return ErrorResponse(written.status());
  net::HttpResponse response =
      net::JsonResponse(written->version == 1 ? 201 : 200, written->ToApi().dump());
  response.headers.emplace_back("ETag", absl::StrCat("\"", written->revision, "\""));
  return response;
}

net::HttpResponse ExperimentsService::Delete(const net::HttpRequest& request,
                                             const net::PathParams& params) {
  std::optional<int64_t> expected = ExpectedRevision(request);
  if (expected == -1) {
    return ErrorResponse(absl::InvalidArgumentError("revision: must be a non-negative integer"));
  }
  absl::Status st = DeleteDocument(params.at("kind"), params.at("id"), expected, UserOf(request));
  if (!st.ok()) return ErrorResponse(st);
  return net::JsonResponse(
      200, Json{{"deleted", true}, {"kind", params.at("kind")}, {"id", params.at("id")}}.dump());
}

std::optional<LifecycleAction> ParseLifecycleAction(std::string_view name) {
  if (name == "start") return LifecycleAction::kStart;
  if (name == "stop") return LifecycleAction::kStop;
  if (name == "launch") return LifecycleAction::kLaunch;
  if (name == "ramp") return LifecycleAction::kRamp;
  return std::nullopt;
}

absl::StatusOr<ConfigDocument> ExperimentsService::ChangeLifecycle(const std::string& id,
                                                                   const LifecycleChange& change) {
  if (change.expected_revision < 0) {
    return absl::InvalidArgumentError("revision: must be a non-negative integer");
  }
  if (change.action == LifecycleAction::kRamp && !(change.coverage > 0 && change.coverage <= 1)) {
    return absl::InvalidArgumentError("coverage: a ramp needs a number in (0, 1]");
  }
  if (change.action == LifecycleAction::kLaunch && change.launched_variant.empty()) {
    return absl::InvalidArgumentError("launched_variant: a launch names the variant it ships");
  }
  ASSIGN_OR_RETURN(ConfigDocument current, repository_->Get("experiments", id));
  Json spec = current.spec;
  if (!spec.is_object()) return absl::InvalidArgumentError("(document): is not a JSON object");
  switch (change.action) {
    case LifecycleAction::kStart:
      spec["state"] = "running";
      break;
    case LifecycleAction::kStop:
      spec["state"] = "stopped";
      break;
    case LifecycleAction::kLaunch:
      spec["state"] = "launched";
      spec["launched_variant"] = change.launched_variant;
      break;
    case LifecycleAction::kRamp:
      spec["coverage"] = change.coverage;
      break;
  }
  int64_t revision = change.expected_revision > 0 ? change.expected_revision : current.revision;
  return PutDocument("experiments", id, std::move(spec), revision, change.user);
}

absl::StatusOr<ConfigDocument> ExperimentsService::PutDocument(const std::string& kind,
                                                               const std::string& id, Json spec,
                                                               int64_t expected_revision,
                                                               const std::string& user) {
  absl::StatusOr<ConfigDocument> written = repository_->Put(
      kind, id, std::move(spec), expected_revision, user.empty() ? "anonymous" : user);
  if (!written.ok()) {
    if (CurrentRevisionOf(written.status()).has_value()) conflicts_->Inc();
    return written.status();
  }
  writes_->Inc();
  return written;
}

absl::Status ExperimentsService::DeleteDocument(const std::string& kind, const std::string& id,
                                                std::optional<int64_t> expected_revision,
                                                const std::string& user) {
  absl::Status st =
      repository_->Delete(kind, id, expected_revision, user.empty() ? "anonymous" : user);
  if (!st.ok()) {
    if (CurrentRevisionOf(st).has_value()) conflicts_->Inc();
    return st;
  }
  writes_->Inc();
  return absl::OkStatus();
}

}  // namespace capstan::experiments
