#include "http/server.h"

#include <sys/socket.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <exception>
#include <filesystem>
#include <mutex>
#include <set>
#include <stop_token>
#include <string_view>
#include <thread>
#include <utility>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "http/status_mapping.h"

namespace kadr::http {
namespace {

// A route pattern compiled to the std::regex source httplib matches against the whole path.
struct CompiledPattern {
  std::string regex;
  std::vector<std::string> names;  // one per capture group, in order
};

bool IsIdentifier(std::string_view s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s.front()))) return false;
  for (char c : s) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

Result<CompiledPattern> CompilePattern(std::string_view pattern) {
  if (pattern.empty() || pattern.front() != '/') {
    return InvalidArgumentError("route pattern must start with '/': " + std::string(pattern));
  }
  CompiledPattern out;
  std::set<std::string, std::less<>> seen;
  std::size_t pos = 1;
  out.regex = "/";
  while (pos <= pattern.size()) {
    std::size_t end = pattern.find('/', pos);
    if (end == std::string_view::npos) end = pattern.size();
    std::string_view segment = pattern.substr(pos, end - pos);
    if (!segment.empty() && segment.front() == ':') {
      std::string_view name = segment.substr(1);
      if (!IsIdentifier(name)) {
        return InvalidArgumentError("bad path parameter name in route " + std::string(pattern));
      }
      if (!seen.emplace(name).second) {
        return InvalidArgumentError("repeated path parameter in route " + std::string(pattern));
      }
      out.names.emplace_back(name);
      out.regex += "([^/]+)";
    } else {
      for (char c : segment) {
        if (std::string_view(R"(\^$.|?*+()[]{})").find(c) != std::string_view::npos) {
          out.regex += '\\';
        }
        out.regex += c;
      }
    }
    if (end < pattern.size()) out.regex += '/';
    pos = end + 1;
  }
  return out;
}

bool MethodTakesBody(std::string_view method) {
  return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE";
}

std::string TooLargeMessage(std::size_t limit) {
  return "request body exceeds " + std::to_string(limit) + " bytes";
}

// Copies the parts of httplib's request that do not depend on the body.
HttpRequest Convert(const httplib::Request& req, const std::vector<std::string>& names) {
  HttpRequest out;
  out.method = req.method;
  out.path = req.path;
  for (std::size_t i = 0; i < names.size() && i + 1 < req.matches.size(); ++i) {
    out.path_params.emplace(names[i], req.matches[i + 1].str());
  }
  out.query_params.insert(req.params.begin(), req.params.end());
  out.headers.insert(req.headers.begin(), req.headers.end());
  out.remote_addr = req.remote_addr;
  return out;
}

// The StreamWriter over httplib's chunked-body sink.
class SinkWriter final : public StreamWriter {
 public:
  SinkWriter(httplib::DataSink& sink, std::stop_token stop) : sink_(sink), stop_(std::move(stop)) {}

  bool Write(std::string_view data) override {
    if (!ok_ || stop_.stop_requested()) return false;
    // httplib takes an empty write for the end of the body.
    if (data.empty()) return true;
    ok_ = sink_.write(data.data(), data.size());
    return ok_;
  }
  // httplib's is_writable polls the socket for room and for the peer's FIN, without waiting.
  bool Alive() const override { return ok_ && !stop_.stop_requested() && sink_.is_writable(); }
  std::stop_token StopToken() const override { return stop_; }

  bool ok() const { return ok_; }

 private:
  httplib::DataSink& sink_;
  std::stop_token stop_;
  bool ok_ = true;
};

void Write(HttpResponse response, httplib::Response& res, const std::stop_token& stop) {
  res.status = response.status;
  for (const auto& [name, value] : response.headers) res.set_header(name, value);
  if (response.stream) {
    res.set_chunked_content_provider(
        response.content_type,
        [body = std::move(response.stream), stop](std::size_t, httplib::DataSink& sink) {
          SinkWriter writer(sink, stop);
          try {
            body(writer);
          } catch (const std::exception& e) {
            spdlog::error("http stream threw error=\"{}\"", e.what());
          } catch (...) {
            spdlog::error("http stream threw error=unknown");
          }
          // A failed write leaves the connection unusable: returning false closes it.
          if (!writer.ok()) return false;
          sink.done();
          return true;
        });
    return;
  }
  // An empty error body is filled with the JSON error by the server's error handler.
  if (!response.body.empty()) res.set_content(response.body, response.content_type);
}

HttpResponse Invoke(const Handler& handler, const HttpRequest& request) {
  try {
    return handler(request);
  } catch (const std::exception& e) {
    spdlog::error("http handler threw method={} path={} error=\"{}\"", request.method, request.path,
                  e.what());
  } catch (...) {
    spdlog::error("http handler threw method={} path={} error=unknown", request.method,
                  request.path);
  }
  return HttpResponse::Error(InternalError("internal error"));
}

}  // namespace

bool CaseInsensitiveLess::operator()(std::string_view a, std::string_view b) const {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) <
           std::tolower(static_cast<unsigned char>(y));
  });
}

std::optional<std::string> HttpRequest::Query(std::string_view key) const {
  auto it = query_params.find(std::string(key));
  if (it == query_params.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> HttpRequest::Header(std::string_view name) const {
  auto it = headers.find(name);
  if (it == headers.end()) return std::nullopt;
  return it->second;
}

const MultipartFile* HttpRequest::File(std::string_view name) const {
  for (const auto& file : files) {
    if (file.name == name) return &file;
  }
  return nullptr;
}

HttpResponse HttpResponse::Json(std::string body, int status) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse HttpResponse::Error(const Status& status) {
  return Json(ErrorBody(status), HttpStatusFor(status.code()));
}

HttpResponse HttpResponse::Stream(std::string content_type, StreamBody body) {
  HttpResponse r;
  r.content_type = std::move(content_type);
  r.stream = std::move(body);
  return r;
}

class HttpServer::Impl {
 public:
  explicit Impl(const HttpServerOptions& options) : options_(options) {}

  Status Route(std::string_view method, std::string_view pattern, Handler handler) {
    std::lock_guard lock(mu_);
    if (started_) return FailedPreconditionError("routes must be added before Start()");
    ASSIGN_OR_RETURN(CompiledPattern compiled, CompilePattern(pattern));
    auto names = std::move(compiled.names);
    if (MethodTakesBody(method)) {
      httplib::Server::HandlerWithContentReader h = [this, names, handler = std::move(handler)](
                                                        const httplib::Request& req,
                                                        httplib::Response& res,
                                                        const httplib::ContentReader& reader) {
        HandleWithBody(req, res, reader, names, handler);
      };
      if (method == "POST") {
        server_.Post(compiled.regex, std::move(h));
      } else if (method == "PUT") {
        server_.Put(compiled.regex, std::move(h));
      } else if (method == "PATCH") {
        server_.Patch(compiled.regex, std::move(h));
      } else {
        server_.Delete(compiled.regex, std::move(h));
      }
      return Status::Ok();
    }
    httplib::Server::Handler h = [names, handler = std::move(handler),
                                  stop = stopping_.get_token()](const httplib::Request& req,
                                                                httplib::Response& res) {
      HttpRequest request = Convert(req, names);
      request.body = req.body;
      // httplib cuts every routed response body to the request's single Range after the
      // handler, so a handler's 206 slice was cut again (bytes=100-199 -> 416, a second
      // Content-Range). Handlers own Range: one that honours it answers 206 with the slice,
      // the others the whole body (RFC 9110 lets a server ignore Range). The Request is
      // httplib's own non-const object, handed to handlers as const.
      const_cast<httplib::Request&>(req).ranges.clear();
      Write(Invoke(handler, request), res, stop);
    };
    if (method == "GET") {
      server_.Get(compiled.regex, std::move(h));
    } else if (method == "OPTIONS") {
      server_.Options(compiled.regex, std::move(h));
    } else {
      return InvalidArgumentError("unsupported HTTP method: " + std::string(method));
    }
    return Status::Ok();
  }

  Status ServeStatic(std::string_view mount, const std::string& dir) {
    std::lock_guard lock(mu_);
    if (started_) return FailedPreconditionError("static mounts must be added before Start()");
    if (mount.empty() || mount.front() != '/') {
      return InvalidArgumentError("mount point must start with '/': " + std::string(mount));
    }
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec) ||
        !server_.set_mount_point(std::string(mount), dir)) {
      return NotFoundError("not a directory: " + dir);
    }
    return Status::Ok();
  }

  Status Start() {
    std::lock_guard lock(mu_);
    if (started_ || stopped_) return FailedPreconditionError("server already started");
    started_ = true;
    Configure();
    const std::string& host = options_.host;
    int port = options_.port == 0
                   ? server_.bind_to_any_port(host)
                   : (server_.bind_to_port(host, options_.port) ? options_.port : -1);
    if (port <= 0) {
      stopped_ = true;
      return UnavailableError("cannot listen on " + host + ":" + std::to_string(options_.port));
    }
    port_.store(port);
    thread_ = std::thread([this] {
      server_.listen_after_bind();
      listen_returned_.store(true);
    });
    // httplib's stop() is a no-op until the accept loop runs; wait for it so that a Stop()
    // right after Start() cannot leave the thread blocked in accept().
    while (!server_.is_running() && !listen_returned_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!server_.is_running()) {
      thread_.join();
      stopped_ = true;
      return UnavailableError("accept loop failed on " + host + ":" + std::to_string(port));
    }
    spdlog::info("http server listening host={} port={} threads={}", host, port, options_.threads);
    return Status::Ok();
  }

  void Stop() {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    // First: streaming responses end their waits and return, so that the pool can be joined.
    stopping_.request_stop();
    if (!thread_.joinable()) return;
    server_.stop();
    thread_.join();
    spdlog::info("http server stopped port={}", port_.load());
  }

  int port() const { return port_.load(); }

 private:
  void Configure() {
    const std::size_t max_body = options_.max_body_bytes;
    const int threads = options_.threads;
    server_.new_task_queue = [threads] {
      return new httplib::ThreadPool(static_cast<std::size_t>(threads));
    };
    server_.set_payload_max_length(max_body);
    server_.set_read_timeout(options_.read_timeout);
    server_.set_keep_alive_timeout(options_.keep_alive_timeout.count());
    // httplib's default also sets SO_REUSEPORT, which would let a second server bind the
    // same port and silently split the traffic; a busy port must be an error instead.
    server_.set_socket_options([](socket_t sock) {
      int yes = 1;
      setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    });
    // Responses go out as several writes (headers, body): with Nagle's algorithm the second
    // waits for the client's delayed ACK, ~40 ms per request (measured with
    // bench/gateway_bench.cc: client latency minus server time, p50 43 ms -> 0.7 ms).
    // Accepted sockets inherit TCP_NODELAY from the listening socket on Linux.
    server_.set_tcp_nodelay(true);
    // On every response (docs/security.md): browsers neither guess content types nor let
    // another site frame a page (clickjacking), and no URL leaks in a Referer.
    server_.set_default_headers({{"X-Content-Type-Options", "nosniff"},
                                 {"X-Frame-Options", "DENY"},
                                 {"Content-Security-Policy", "frame-ancestors 'none'"},
                                 {"Referrer-Policy", "no-referrer"}});
    // Refuse an announced oversized upload before the client sends it.
    server_.set_expect_100_continue_handler(
        [max_body](const httplib::Request& req, httplib::Response&) {
          if (req.has_header("Content-Length") &&
              req.get_header_value<std::uint64_t>("Content-Length") > max_body) {
            return 413;
          }
          return 100;
        });
    // Unknown routes taking a body: read it under the size limit (httplib does not bound
    // chunked bodies itself), then answer 404.
    auto not_found = [this](const httplib::Request& req, httplib::Response& res,
                            const httplib::ContentReader& reader) {
      HandleWithBody(req, res, reader, {}, nullptr);
    };
    server_.Post(".*", not_found);
    server_.Put(".*", not_found);
    server_.Patch(".*", not_found);
    server_.Delete(".*", not_found);
    // Any error response without a body gets the protocol's JSON error body.
    httplib::Server::HandlerWithResponse error_handler = [max_body](const httplib::Request& req,
                                                                    httplib::Response& res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string message;
      switch (res.status) {
        case 404:
          message = "no route for " + req.method + " " + req.path;
          break;
        case 413:
          message = TooLargeMessage(max_body);
          break;
        case 400:
          message = "malformed request";
          break;
        default:
          message = "http status " + std::to_string(res.status);
      }
      res.set_content(ErrorBody(Status(StatusCodeForHttp(res.status), message)),
                      "application/json");
      return httplib::Server::HandlerResponse::Handled;
    };
    server_.set_error_handler(std::move(error_handler));
    server_.set_exception_handler(
        [](const httplib::Request& req, httplib::Response& res, const std::exception_ptr&) {
          spdlog::error("http request failed inside the server method={} path={}", req.method,
                        req.path);
          res.status = 500;
          res.set_content(ErrorBody(InternalError("internal error")), "application/json");
        });
  }

  // Reads the body (raw or multipart) under max_body_bytes, then runs `handler`; a null
  // handler answers 404.
  void HandleWithBody(const httplib::Request& req, httplib::Response& res,
                      const httplib::ContentReader& reader, const std::vector<std::string>& names,
                      const Handler& handler) {
    // Range is for GET (handlers own it there, see Route). Left on a POST, httplib would cut
    // the answer to it, building one copy per range: `Range: bytes=0-,0-,...` on an upload
    // made thousands of copies of the annotated JPEG (docs/security.md).
    const_cast<httplib::Request&>(req).ranges.clear();
    HttpRequest request = Convert(req, names);
    const std::size_t limit = options_.max_body_bytes;
    std::size_t total = 0;
    bool too_large = false;
    // Past the limit the body is still read, and dropped, for up to another `limit` bytes so
    // that a client that is still sending can read the 413; beyond that the read is aborted.
    auto admit = [&](std::size_t n) {
      total += n;
      too_large = too_large || total > limit;
      return total <= limit || total - limit <= limit;
    };
    bool ok = false;
    if (req.is_multipart_form_data()) {
      ok = reader(
          [&](const httplib::MultipartFormData& part) {
            if (!too_large) {
              request.files.push_back({part.name, part.filename, part.content_type, {}});
            }
            return true;
          },
          [&](const char* data, std::size_t n) {
            if (!admit(n)) return false;
            if (!too_large && !request.files.empty()) {
              request.files.back().content.append(data, n);
            }
            return true;
          });
    } else {
      ok = reader([&](const char* data, std::size_t n) {
        if (!admit(n)) return false;
        if (!too_large) request.body.append(data, n);
        return true;
      });
    }
    if (!ok) {
      // The rest of the body is unread; the connection cannot be reused.
      res.set_header("Connection", "close");
    }
    if (too_large || res.status == 413) {
      Write(HttpResponse::Error(TooLargeError(TooLargeMessage(limit))), res, {});
      return;
    }
    if (!ok) {
      Write(HttpResponse::Error(InvalidArgumentError("malformed or incomplete request body")), res,
            {});
      return;
    }
    if (!handler) {
      Write(HttpResponse::Error(NotFoundError("no route for " + req.method + " " + req.path)), res,
            {});
      return;
    }
    Write(Invoke(handler, request), res, stopping_.get_token());
  }

  const HttpServerOptions options_;
  httplib::Server server_;
  std::mutex mu_;  // guards started_, stopped_, thread_ and route registration
  bool started_ = false;
  bool stopped_ = false;
  std::thread thread_;
  std::atomic<int> port_{0};
  std::atomic<bool> listen_returned_{false};
  // Requested by Stop(); streaming responses watch its tokens.
  std::stop_source stopping_;
};

Result<std::unique_ptr<HttpServer>> HttpServer::Create(const HttpServerOptions& options) {
  if (options.host.empty()) return InvalidArgumentError("http host is empty");
  if (options.port < 0 || options.port > 65535) {
    return InvalidArgumentError("http port out of range: " + std::to_string(options.port));
  }
  if (options.threads < 1) {
    return InvalidArgumentError("http threads must be >= 1: " + std::to_string(options.threads));
  }
  if (options.max_body_bytes == 0) return InvalidArgumentError("http max_body_bytes is 0");
  if (options.read_timeout.count() <= 0 || options.keep_alive_timeout.count() <= 0) {
    return InvalidArgumentError("http timeouts must be positive");
  }
  return std::unique_ptr<HttpServer>(new HttpServer(std::make_unique<Impl>(options)));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { Stop(); }

Status HttpServer::Route(std::string_view method, std::string_view pattern, Handler handler) {
  if (!handler) return InvalidArgumentError("null handler");
  return impl_->Route(method, pattern, std::move(handler));
}
Status HttpServer::ServeStatic(std::string_view mount, const std::string& dir) {
  return impl_->ServeStatic(mount, dir);
}
Status HttpServer::Start() { return impl_->Start(); }
void HttpServer::Stop() { impl_->Stop(); }
int HttpServer::port() const { return impl_->port(); }

}  // namespace kadr::http
