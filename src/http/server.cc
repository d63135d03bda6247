#include "http/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
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

#include "common/net.h"
#include "http/detail/connection.h"
#include "http/detail/tls.h"
#include "http/multipart.h"
#include "http/status_mapping.h"

namespace kadr::http {
namespace {

using detail::Clock;
using detail::Connection;

// The connection whose request this thread is serving (set by the server around each
// connection): handlers' wrappers reach its limits and TLS state through it.
thread_local Connection* t_connection = nullptr;

// httplib's server with its request parser reachable: kadr runs its own accept loop, worker
// pool and connections (ADR 0013) and calls process_request once per request.
class GuardedServer final : public httplib::Server {
 public:
  using httplib::Server::process_request;
  socket_t listen_socket() const { return svr_sock_; }
  std::size_t keep_alive_max_count() const { return keep_alive_max_count_; }

 private:
  // Unused: listen_after_bind() is never called.
  bool process_and_close_socket(socket_t sock) override {
    ::close(sock);
    return false;
  }
};

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// "host" of a Host header or an origin's authority, lowercase, without port or brackets.
std::string HostName(std::string_view authority) {
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    return Lower(authority.substr(1, close == std::string_view::npos ? close : close - 1));
  }
  const std::size_t colon = authority.find(':');
  if (colon != std::string_view::npos && authority.find(':', colon + 1) == std::string_view::npos) {
    authority = authority.substr(0, colon);
  }
  return Lower(authority);
}

// "host:port" of an authority with the scheme's default port made explicit, lowercase.
std::string Authority(std::string_view authority, bool https) {
  std::string out = Lower(authority);
  const std::size_t bracket = out.rfind(']');
  const std::size_t colon = out.rfind(':');
  const bool has_port = colon != std::string::npos &&
                        (bracket == std::string::npos ? out.find(':') == colon : colon > bracket);
  if (!has_port) out += https ? ":443" : ":80";
  return out;
}

bool HasBody(const httplib::Request& req) {
  if (req.has_header("Transfer-Encoding")) return true;
  return req.has_header("Content-Length") &&
         req.get_header_value("Content-Length") != std::string("0");
}

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

// The methods that take a body and change state (a CSRF check applies to them).
bool MethodTakesBody(std::string_view method) {
  return method == "POST" || method == "PUT" || method == "PATCH" || method == "DELETE";
}

std::string TooLargeMessage(std::size_t limit) {
  return "request body exceeds " + std::to_string(limit) + " bytes";
}

// The client behind a trusted proxy: the rightmost X-Forwarded-For address that is not a
// trusted proxy itself (the ones left of it could be anything the client wrote). The peer's
// address when the peer is not trusted or the header names no address.
std::string ClientAddress(const httplib::Request& req, const std::vector<net::IpNetwork>& trusted) {
  const auto trusted_ip = [&](std::string_view text) {
    const std::optional<net::IpAddress> ip = net::ParseIp(text);
    return ip && std::any_of(trusted.begin(), trusted.end(),
                             [&](const net::IpNetwork& n) { return n.Contains(*ip); });
  };
  if (trusted.empty() || !trusted_ip(req.remote_addr)) return req.remote_addr;
  std::vector<std::string_view> hops;
  const auto [first, last] = req.headers.equal_range("X-Forwarded-For");
  for (auto it = first; it != last; ++it) {
    std::string_view value = it->second;
    while (!value.empty()) {
      const std::size_t comma = value.find(',');
      std::string_view hop = value.substr(0, comma);
      while (!hop.empty() && hop.front() == ' ') hop.remove_prefix(1);
      while (!hop.empty() && hop.back() == ' ') hop.remove_suffix(1);
      hops.push_back(hop);
      value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
    }
  }
  for (auto hop = hops.rbegin(); hop != hops.rend(); ++hop) {
    if (!net::ParseIp(*hop)) break;  // not an address: nothing left of it can be trusted
    if (!trusted_ip(*hop)) return std::string(*hop);
  }
  return req.remote_addr;
}

// Copies the parts of httplib's request that do not depend on the body.
HttpRequest Convert(const httplib::Request& req, const std::vector<std::string>& names,
                    const std::vector<net::IpNetwork>& trusted_proxies) {
  HttpRequest out;
  out.method = req.method;
  out.path = req.path;
  for (std::size_t i = 0; i < names.size() && i + 1 < req.matches.size(); ++i) {
    out.path_params.emplace(names[i], req.matches[i + 1].str());
  }
  out.query_params.insert(req.params.begin(), req.params.end());
  out.headers.insert(req.headers.begin(), req.headers.end());
  out.peer_addr = req.remote_addr;
  out.remote_addr = ClientAddress(req, trusted_proxies);
  out.secure = t_connection != nullptr && t_connection->secure();
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

// A request body written to an unnamed file (O_TMPFILE: it never has a name, so it cannot
// be left behind) and then mapped read-only.
class Spool {
 public:
  Spool() = default;
  ~Spool() {
    if (fd_ >= 0) ::close(fd_);
  }
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  Status Open(const std::string& dir) {
    fd_ = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0) return UnavailableError(dir + ": " + std::strerror(errno));
    return Status::Ok();
  }
  bool open() const { return fd_ >= 0; }

  bool Append(const char* data, std::size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, data, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return false;
      data += w;
      n -= static_cast<std::size_t>(w);
      size_ += static_cast<std::size_t>(w);
    }
    return true;
  }

  // The file mapped read-only as `view`; the returned owner unmaps it.
  Result<std::shared_ptr<const void>> Map(std::string_view& view) {
    if (size_ == 0) {
      view = std::string_view();
      return std::shared_ptr<const void>(std::make_shared<int>(0));
    }
    void* data = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (data == MAP_FAILED) return UnavailableError(std::string("mmap: ") + std::strerror(errno));
    view = std::string_view(static_cast<const char*>(data), size_);
    const std::size_t size = size_;
    return std::shared_ptr<const void>(
        data, [size](const void* p) { ::munmap(const_cast<void*>(p), size); });
  }

 private:
  int fd_ = -1;
  std::size_t size_ = 0;
};

}  // namespace

std::string_view AccessName(Access access) {
  switch (access) {
    case Access::kPublic:
      return "public";
    case Access::kRead:
      return "read";
    case Access::kOperate:
      return "operate";
    case Access::kAdmin:
      return "admin";
  }
  return "admin";
}

std::string MediaType(std::string_view content_type) {
  std::string_view t = content_type.substr(0, content_type.find(';'));
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.remove_suffix(1);
  while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
  return Lower(t);
}

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
  Impl(const HttpServerOptions& options, std::unique_ptr<detail::TlsContext> tls,
       std::vector<net::IpNetwork> trusted_proxies)
      : options_(options), tls_(std::move(tls)), trusted_proxies_(std::move(trusted_proxies)) {
    limits_.max_request_line_bytes = options.max_request_line_bytes;
    limits_.max_header_bytes = options.max_header_bytes;
    limits_.max_headers = options.max_headers;
    limits_.header_timeout = options.header_timeout;
    limits_.min_body_bytes_per_second = options.min_body_bytes_per_second;
    limits_.read_timeout = options.read_timeout;
    limits_.default_body_bytes = std::min(kMaxJsonBodyBytes, options.max_body_bytes);
    for (const auto& host : options.allowed_hosts) allowed_hosts_.insert(HostName(host));
  }

  Status Route(std::string_view method, std::string_view pattern, Handler handler,
               RouteOptions route) {
    std::lock_guard lock(mu_);
    if (started_) return FailedPreconditionError("routes must be added before Start()");
    ASSIGN_OR_RETURN(CompiledPattern compiled, CompilePattern(pattern));
    if (route.served_when_busy) {
      if (method != "GET" || !compiled.names.empty()) {
        return InvalidArgumentError("only GET routes without parameters can be served when busy");
      }
      busy_paths_.emplace(pattern);
    }
    route.max_body_bytes = std::min(route.max_body_bytes, options_.max_body_bytes);
    auto names = std::move(compiled.names);
    if (MethodTakesBody(method)) {
      httplib::Server::HandlerWithContentReader h =
          [this, names, route, handler = std::move(handler)](const httplib::Request& req,
                                                             httplib::Response& res,
                                                             const httplib::ContentReader& reader) {
            HandleWithBody(req, res, reader, names, handler, route);
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
    httplib::Server::Handler h = [this, names, route, handler = std::move(handler)](
                                     const httplib::Request& req, httplib::Response& res) {
      HttpRequest request = Convert(req, names, trusted_proxies_);
      // httplib cuts every routed response body to the request's single Range after the
      // handler, so a handler's 206 slice was cut again (bytes=100-199 -> 416, a second
      // Content-Range). Handlers own Range: one that honours it answers 206 with the slice,
      // the others the whole body (RFC 9110 lets a server ignore Range). The Request is
      // httplib's own non-const object, handed to handlers as const.
      const_cast<httplib::Request&>(req).ranges.clear();
      if (std::optional<HttpResponse> denied = Authorize(request, route.access)) {
        Write(std::move(*denied), res, {});
        return;
      }
      request.body = req.body;
      Write(Invoke(handler, request), res, stopping_.get_token());
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
    // httplib listens with a backlog of 5; a burst of clients needs more.
    ::listen(server_.listen_socket(), SOMAXCONN);
    port_.store(port);
    for (int i = 0; i < options_.threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
    shed_thread_ = std::thread([this] { ShedLoop(); });
    accept_thread_ = std::thread([this] { AcceptLoop(); });
    spdlog::info("http server listening host={} port={} threads={} tls={}", host, port,
                 options_.threads, tls_ != nullptr);
    return Status::Ok();
  }

  void Stop() {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopped_ = true;
    // First: streaming responses end their waits and return, so that the pool can be joined.
    stopping_.request_stop();
    if (!accept_thread_.joinable()) return;
    {
      std::lock_guard q(queue_mu_);
      stopping_flag_.store(true);
    }
    queue_cv_.notify_all();
    accept_thread_.join();
    shed_thread_.join();
    for (auto& w : workers_) w.join();
    for (Pending& p : queue_) ::close(p.fd);
    queue_.clear();
    ::close(server_.listen_socket());
    spdlog::info("http server stopped port={}", port_.load());
  }

  int port() const { return port_.load(); }

 private:
  // An accepted connection not yet served, with the bytes the shedding thread read from it.
  struct Pending {
    int fd = -1;
    std::string prefix;
    Clock::time_point accepted;
    bool lingering = false;  // answered 503: draining until it closes
  };

  bool stopping() const { return stopping_flag_.load(); }

  void AcceptLoop() {
    const int listen_fd = server_.listen_socket();
    while (!stopping()) {
      pollfd p{listen_fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      const int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE) {
          spdlog::warn("http accept failed: out of file descriptors");
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        continue;
      }
      int yes = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof(yes));
      Dispatch(Pending{fd, {}, Clock::now()});
    }
  }

  // A free worker takes the connection; else the shedding thread holds it (it waits there
  // for a worker, or gets 503); with that full too, it is closed at once.
  void Dispatch(Pending p) {
    std::unique_lock lock(queue_mu_);
    if (idle_workers_ > queue_.size()) {
      queue_.push_back(std::move(p));
      queue_cv_.notify_one();
      return;
    }
    if (shed_count_.load() + shed_new_.size() >= options_.max_shed_connections) {
      lock.unlock();
      ::close(p.fd);
      NoteShed("closed");
      return;
    }
    shed_new_.push_back(std::move(p));
  }

  void WorkerLoop() {
    while (true) {
      Pending p;
      {
        std::unique_lock lock(queue_mu_);
        ++idle_workers_;
        queue_cv_.wait(lock, [&] { return stopping() || !queue_.empty(); });
        --idle_workers_;
        if (stopping()) return;
        p = std::move(queue_.front());
        queue_.pop_front();
      }
      Serve(std::move(p), false);
    }
  }

  // Serves the requests of one connection (one only when `shedding`). Keep-alive: an idle
  // connection is dropped at once when others wait for a worker.
  void Serve(Pending p, bool shedding) {
    SSL* ssl = nullptr;
    if (tls_) {
      ssl = tls_->Accept(p.fd, Clock::now() + options_.header_timeout);
      if (ssl == nullptr) {
        ::close(p.fd);
        return;
      }
    }
    Connection conn(p.fd, ssl, limits_, std::move(p.prefix));
    t_connection = &conn;
    std::size_t left = shedding ? 1 : server_.keep_alive_max_count();
    const auto first_wait =
        shedding ? std::chrono::milliseconds(options_.shed_timeout)
                 : std::chrono::duration_cast<std::chrono::milliseconds>(options_.header_timeout);
    const auto connected = Clock::now();
    bool first = true;
    while (left-- > 0 && !stopping()) {
      const bool waiting =
          first ? conn.WaitForRequest(first_wait,
                                      [&] {
                                        // A silent new connection yields after
                                        // a second when others wait.
                                        return stopping() ||
                                               (shed_count_.load() > 0 &&
                                                Clock::now() - connected > std::chrono::seconds(1));
                                      })
                : conn.WaitForRequest(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          options_.keep_alive_timeout),
                                      [&] { return stopping() || shed_count_.load() > 0; });
      if (!waiting) break;
      first = false;
      conn.BeginRequest();
      bool connection_closed = false;
      const bool ok =
          server_.process_request(conn, left == 0 || conn.closing(), connection_closed, nullptr);
      if (!ok || connection_closed || conn.closing()) break;
    }
    t_connection = nullptr;
  }

  // The shedding thread: holds connections accepted while every worker was busy, hands them
  // to a worker that frees up within shed_timeout, serves their request itself when its
  // route is served_when_busy (health checks), and answers the others 503 after shed_timeout.
  void ShedLoop() {
    std::vector<Pending> pending;
    std::vector<pollfd> polls;
    while (!stopping()) {
      {
        std::lock_guard lock(queue_mu_);
        for (Pending& p : shed_new_) pending.push_back(std::move(p));
        shed_new_.clear();
        // Oldest first to any worker that is idle now.
        for (auto it = pending.begin(); it != pending.end() && idle_workers_ > queue_.size();) {
          if (it->lingering) {
            ++it;
            continue;
          }
          queue_.push_back(std::move(*it));
          it = pending.erase(it);
          queue_cv_.notify_one();
        }
        shed_count_.store(static_cast<std::size_t>(std::count_if(
            pending.begin(), pending.end(), [](const Pending& p) { return !p.lingering; })));
      }
      polls.clear();
      for (const Pending& p : pending) polls.push_back({p.fd, POLLIN, 0});
      if (polls.empty()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      ::poll(polls.data(), polls.size(), 20);
      const auto now = Clock::now();
      std::vector<Pending> keep;
      for (std::size_t i = 0; i < pending.size(); ++i) {
        Pending& p = pending[i];
        bool closed = false;
        if ((polls[i].revents & (POLLIN | POLLHUP | POLLERR)) != 0 && (!tls_ || p.lingering)) {
          char buf[4096];
          const ssize_t n = ::recv(p.fd, buf, sizeof(buf), 0);
          if (n <= 0 && !(n < 0 && (errno == EAGAIN || errno == EINTR))) {
            closed = true;
          } else if (n > 0 && !p.lingering &&
                     p.prefix.size() < options_.max_request_line_bytes + 2) {
            p.prefix.append(buf, static_cast<std::size_t>(n));
          }
        }
        if (closed) {
          ::close(p.fd);
          continue;
        }
        if (p.lingering) {
          if (now - p.accepted > std::chrono::seconds(1)) {
            ::close(p.fd);
          } else {
            keep.push_back(std::move(p));
          }
          continue;
        }
        if (!tls_ && ServedWhenBusy(p.prefix)) {
          Serve(std::move(p), true);
          continue;
        }
        if (now - p.accepted < options_.shed_timeout) {
          keep.push_back(std::move(p));
          continue;
        }
        NoteShed("answered 503");
        if (tls_) {
          ::close(p.fd);  // no handshake here: a TLS client sees the connection close
          continue;
        }
        const std::string text = detail::ErrorResponseText(
            503,
            UnavailableError("the server is busy: all " + std::to_string(options_.threads) +
                             " of its connection threads are serving requests; retry shortly"),
            "Retry-After: 1\r\n");
        (void)::send(p.fd, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        ::shutdown(p.fd, SHUT_WR);
        p.lingering = true;
        p.accepted = now;
        keep.push_back(std::move(p));
      }
      pending = std::move(keep);
    }
    for (Pending& p : pending) ::close(p.fd);
    std::lock_guard lock(queue_mu_);
    for (Pending& p : shed_new_) ::close(p.fd);
    shed_new_.clear();
    shed_count_.store(0);
  }

  // Whether `prefix` holds a complete request line for a served_when_busy route.
  bool ServedWhenBusy(const std::string& prefix) const {
    const std::size_t eol = prefix.find('\n');
    if (eol == std::string::npos || busy_paths_.empty()) return false;
    const std::string_view line(prefix.data(), eol);
    if (!line.starts_with("GET ") && !line.starts_with("HEAD ")) return false;
    const std::size_t start = line.find(' ') + 1;
    const std::size_t end = line.find_first_of(" ?", start);
    if (end == std::string_view::npos) return false;
    return busy_paths_.contains(std::string(line.substr(start, end - start)));
  }

  void NoteShed(const char* what) {
    const std::uint64_t n = ++shed_total_;
    const auto now = Clock::now();
    std::lock_guard lock(shed_log_mu_);
    if (now - last_shed_log_ > std::chrono::seconds(5)) {
      last_shed_log_ = now;
      spdlog::warn(
          "http server busy: a connection was {} (connections shed so far: {}, threads={})", what,
          n, options_.threads);
    }
  }

  // Host (DNS rebinding) and Origin (CSRF) checks before any route or file is reached.
  std::optional<HttpResponse> CheckSite(const httplib::Request& req) const {
    if (!allowed_hosts_.empty() && req.has_header("Host")) {
      const std::string host = HostName(req.get_header_value("Host"));
      if (!allowed_hosts_.contains(host)) {
        HttpResponse r = HttpResponse::Error(
            PermissionDeniedError("host '" + host.substr(0, 256) +
                                  "' is not served here (the operator allows hosts with "
                                  "--allowed-host)"));
        r.status = 421;
        return r;
      }
    }
    if (options_.same_origin_writes && MethodTakesBody(req.method)) {
      const bool https = t_connection != nullptr && t_connection->secure();
      if (req.has_header("Origin")) {
        const std::string origin = req.get_header_value("Origin");
        const std::size_t scheme_end = origin.find("://");
        const std::string authority = Authority(req.get_header_value("Host"), https);
        if (scheme_end == std::string::npos ||
            Authority(std::string_view(origin).substr(scheme_end + 3),
                      origin.starts_with("https")) != authority) {
          return HttpResponse::Error(PermissionDeniedError("cross-site request refused: Origin '" +
                                                           origin.substr(0, 256) +
                                                           "' is not this server"));
        }
      } else if (req.has_header("Sec-Fetch-Site")) {
        const std::string site = req.get_header_value("Sec-Fetch-Site");
        if (site != "same-origin" && site != "none") {
          return HttpResponse::Error(
              PermissionDeniedError("cross-site request refused: Sec-Fetch-Site " + site));
        }
      }
    }
    return std::nullopt;
  }

  std::optional<HttpResponse> Authorize(HttpRequest& request, Access access) const {
    if (!options_.authorizer) return std::nullopt;
    try {
      return options_.authorizer(request, access);
    } catch (const std::exception& e) {
      spdlog::error("http authorizer threw error=\"{}\"", e.what());
      return HttpResponse::Error(InternalError("internal error"));
    }
  }

  void Configure() {
    const std::size_t max_body = options_.max_body_bytes;
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
    // Accepted sockets get TCP_NODELAY in AcceptLoop.
    server_.set_tcp_nodelay(true);
    // On every response (docs/security.md): browsers neither guess content types nor let
    // another site frame a page (clickjacking), and no URL leaks in a Referer.
    httplib::Headers headers = {{"X-Content-Type-Options", "nosniff"},
                                {"X-Frame-Options", "DENY"},
                                {"Content-Security-Policy", "frame-ancestors 'none'"},
                                {"Referrer-Policy", "no-referrer"}};
    if (tls_) headers.emplace("Strict-Transport-Security", "max-age=31536000");
    server_.set_default_headers(std::move(headers));
    server_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      // httplib slices static files by Range itself: one range at most, or the whole file
      // (a Range of thousands of ranges would make as many copies).
      if (req.ranges.size() > 1) {
        auto& mutable_req = const_cast<httplib::Request&>(req);
        mutable_req.ranges.clear();
        mutable_req.headers.erase("Range");
      }
      // httplib never reads the body of a GET: the connection cannot carry another request.
      if (!MethodTakesBody(req.method) && HasBody(req)) LeaveBodyUnread(res);
      std::optional<HttpResponse> refused = CheckSite(req);
      if (!refused) return httplib::Server::HandlerResponse::Unhandled;
      const_cast<httplib::Request&>(req).ranges.clear();
      if (HasBody(req)) LeaveBodyUnread(res);
      Write(std::move(*refused), res, {});
      return httplib::Server::HandlerResponse::Handled;
    });
    // Refuse an announced oversized upload before the client sends it.
    server_.set_expect_100_continue_handler(
        [max_body](const httplib::Request& req, httplib::Response&) {
          if (req.has_header("Content-Length") &&
              req.get_header_value<std::uint64_t>("Content-Length") > max_body) {
            return 413;
          }
          return 100;
        });
    // Unknown routes taking a body: read it under the default limit, then answer 404.
    auto not_found = [this](const httplib::Request& req, httplib::Response& res,
                            const httplib::ContentReader& reader) {
      HandleWithBody(req, res, reader, {}, nullptr, RouteOptions{});
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

  // The request's body stays unread: the connection cannot carry another request.
  static void LeaveBodyUnread(httplib::Response& res) {
    res.set_header("Connection", "close");
    if (t_connection != nullptr) t_connection->MarkClosing();
  }

  // Checks access, body type and size, reads the body (raw, or multipart parsed by
  // ParseMultipart) under the route's limit, then runs `handler`; a null handler answers 404.
  void HandleWithBody(const httplib::Request& req, httplib::Response& res,
                      const httplib::ContentReader& reader, const std::vector<std::string>& names,
                      const Handler& handler, const RouteOptions& route) {
    // Range is for GET (handlers own it there, see Route). Left on a POST, httplib would cut
    // the answer to it, building one copy per range: `Range: bytes=0-,0-,...` on an upload
    // made thousands of copies of the annotated JPEG (docs/security.md).
    const_cast<httplib::Request&>(req).ranges.clear();
    HttpRequest request = Convert(req, names, trusted_proxies_);
    const std::string content_type = req.get_header_value("Content-Type");
    const std::string media = MediaType(content_type);
    const bool has_body = HasBody(req);
    auto refuse = [&](const Status& status) {
      if (has_body) LeaveBodyUnread(res);
      Write(HttpResponse::Error(status), res, {});
    };
    if (handler) {
      if (std::optional<HttpResponse> denied = Authorize(request, route.access)) {
        if (has_body) LeaveBodyUnread(res);
        Write(std::move(*denied), res, {});
        return;
      }
      if (has_body && !route.content_types.empty() &&
          std::find(route.content_types.begin(), route.content_types.end(), media) ==
              route.content_types.end()) {
        std::string wanted;
        for (const auto& t : route.content_types) wanted += (wanted.empty() ? "" : ", ") + t;
        refuse(UnsupportedError("the body of " + req.method + " " + req.path + " must be " +
                                wanted + ", not '" + media.substr(0, 128) + "'"));
        return;
      }
    }
    const std::size_t limit = handler ? route.max_body_bytes : limits_.default_body_bytes;
    if (req.has_header("Content-Length") &&
        req.get_header_value<std::uint64_t>("Content-Length") > limit) {
      refuse(TooLargeError(TooLargeMessage(limit)));
      return;
    }
    // The connection counts raw bytes: a chunked body's framing gets room too (as much again
    // as the body: one-byte chunks from a hostile client are cut off earlier).
    if (t_connection != nullptr) {
      t_connection->SetBodyLimit(req.has_header("Content-Length") ? limit : 2 * limit + 4096);
    }
    const bool multipart = media == "multipart/form-data";
    // httplib's own multipart parser is unbounded (ADR 0013): it gets no multipart type.
    if (multipart) const_cast<httplib::Request&>(req).headers.erase("Content-Type");
    // The body goes to memory, or to an unnamed file in the route's spool folder.
    Spool spool;
    if (handler && !route.spool_dir.empty()) {
      Status opened = spool.Open(route.spool_dir);
      if (!opened.ok()) {
        spdlog::warn("http upload not spooled path={} error=\"{}\"", req.path, opened.ToString());
        refuse(UnavailableError("cannot store the upload on the server's disk"));
        return;
      }
    }
    std::size_t received = 0;
    bool stored = true;
    const bool ok = reader([&](const char* data, std::size_t n) {
      if (received + n > limit) return false;
      received += n;
      if (spool.open()) {
        stored = spool.Append(data, n);
        return stored;
      }
      request.body.append(data, n);
      return true;
    });
    if (t_connection != nullptr && t_connection->refused()) return;  // 408 or 413 sent
    if (!stored) {
      spdlog::warn("http upload not spooled path={} error=\"write failed\"", req.path);
      refuse(UnavailableError("cannot store the upload on the server's disk"));
      return;
    }
    if (!ok || res.status == 413) {
      if (received >= limit || res.status == 413) {
        refuse(TooLargeError(TooLargeMessage(limit)));
      } else {
        refuse(InvalidArgumentError("malformed or incomplete request body"));
      }
      return;
    }
    if (!handler) {
      Write(HttpResponse::Error(NotFoundError("no route for " + req.method + " " + req.path)), res,
            {});
      return;
    }
    if (spool.open()) {
      Result<std::shared_ptr<const void>> mapped = spool.Map(request.spooled_body);
      if (!mapped) {
        spdlog::warn("http upload not mapped path={} error=\"{}\"", req.path,
                     mapped.error().ToString());
        Write(HttpResponse::Error(UnavailableError("cannot read the stored upload")), res, {});
        return;
      }
      request.spool = std::move(*mapped);
    }
    if (multipart) {
      Result<std::vector<MultipartFile>> parts =
          request.spool ? ParseMultipartViews(content_type, request.Body())
                        : ParseMultipart(content_type, request.body);
      if (!parts) {
        Write(HttpResponse::Error(parts.status()), res, {});
        return;
      }
      request.files = std::move(*parts);
      request.body.clear();
    }
    Write(Invoke(handler, request), res, stopping_.get_token());
  }

  const HttpServerOptions options_;
  const std::unique_ptr<detail::TlsContext> tls_;
  const std::vector<net::IpNetwork> trusted_proxies_;
  detail::ConnectionLimits limits_;
  std::set<std::string, std::less<>> allowed_hosts_;
  std::set<std::string, std::less<>> busy_paths_;
  GuardedServer server_;
  std::mutex mu_;  // guards started_, stopped_, the threads and route registration
  bool started_ = false;
  bool stopped_ = false;
  std::thread accept_thread_;
  std::thread shed_thread_;
  std::vector<std::thread> workers_;
  std::atomic<int> port_{0};
  std::atomic<bool> stopping_flag_{false};
  // Requested by Stop(); streaming responses watch its tokens.
  std::stop_source stopping_;

  std::mutex queue_mu_;  // guards queue_, shed_new_, idle_workers_
  std::condition_variable queue_cv_;
  std::deque<Pending> queue_;
  std::vector<Pending> shed_new_;
  std::size_t idle_workers_ = 0;
  std::atomic<std::size_t> shed_count_{0};  // connections the shedding thread holds
  std::atomic<std::uint64_t> shed_total_{0};
  std::mutex shed_log_mu_;
  Clock::time_point last_shed_log_{};
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
  if (options.read_timeout.count() <= 0 || options.keep_alive_timeout.count() <= 0 ||
      options.header_timeout.count() <= 0 || options.shed_timeout.count() <= 0) {
    return InvalidArgumentError("http timeouts must be positive");
  }
  if (options.max_request_line_bytes == 0 || options.max_header_bytes == 0 ||
      options.max_headers == 0) {
    return InvalidArgumentError("http request head limits must be positive");
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return InvalidArgumentError("TLS needs both a certificate and a key file");
  }
  std::unique_ptr<detail::TlsContext> tls;
  if (!options.tls_cert_file.empty()) {
    ASSIGN_OR_RETURN(tls, detail::TlsContext::Create(options.tls_cert_file, options.tls_key_file));
  }
  std::vector<net::IpNetwork> trusted;
  for (const std::string& proxy : options.trusted_proxies) {
    Result<net::IpNetwork> network = net::ParseNetwork(proxy);
    if (!network) {
      return InvalidArgumentError("trusted proxy '" + proxy + "': " + network.error().message());
    }
    trusted.push_back(*network);
  }
  return std::unique_ptr<HttpServer>(
      new HttpServer(std::make_unique<Impl>(options, std::move(tls), std::move(trusted))));
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
HttpServer::~HttpServer() { Stop(); }

Status HttpServer::Route(std::string_view method, std::string_view pattern, Handler handler,
                         RouteOptions options) {
  if (!handler) return InvalidArgumentError("null handler");
  return impl_->Route(method, pattern, std::move(handler), std::move(options));
}
Status HttpServer::ServeStatic(std::string_view mount, const std::string& dir) {
  return impl_->ServeStatic(mount, dir);
}
Status HttpServer::Start() { return impl_->Start(); }
void HttpServer::Stop() { impl_->Stop(); }
int HttpServer::port() const { return impl_->port(); }

}  // namespace kadr::http
