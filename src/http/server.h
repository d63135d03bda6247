// HttpServer: kadr's small HTTP/1.1 server adapter (over cpp-httplib, which only server.cc sees).
//
// Handlers receive an HttpRequest and return an HttpResponse; both are kadr's own value types.
// Errors produced by the server itself are JSON bodies in the protocol's error shape
// (`{"error":{"code":"not_found","message":"..."}}`, see http/status_mapping.h):
//   - no route for the method and path          -> 404 not_found
//   - request body over max_body_bytes          -> 413 too_large (Content-Length or chunked)
//   - malformed request                          -> 400 invalid_argument
//   - a handler throws                           -> 500 internal; the server keeps serving
// A handler response with status >= 400 and an empty body gets the same JSON body.
// Range: routed responses go out as the handler made them. A handler that honours a Range
// header answers 206 with the slice and its Content-Range; the others send the whole body
// with their own status (RFC 9110 lets a server ignore Range).
//
// Streaming responses (HttpResponse::Stream): the status and headers go out at once, then the
// body is whatever the stream callback writes, sent with chunked transfer encoding as it is
// written (MJPEG, Server-Sent Events). The callback runs on the connection's worker thread for
// as long as it likes, so each open stream holds one of the `threads`; it must return when its
// writer says the client has gone or the server is stopping (StreamWriter::Alive, StopToken).
//
// Lifecycle: Create() -> Route()/ServeStatic() -> Start() -> Stop(). Routes are fixed once
// started. Stop() is graceful: it stops accepting, requests the streams' stop token, lets
// requests in flight finish, and returns when the worker threads are joined (idle keep-alive
// connections are dropped within keep_alive_timeout). Stop() is idempotent and also runs in
// the destructor.
//
// Thread-safety: Start(), Stop() and port() may be called from any thread. Route() and
// ServeStatic() must happen before Start(). Handlers run concurrently on up to `threads`
// worker threads and must be thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace kadr::http {

// Who may call a route. The server's authorizer (HttpServerOptions::authorizer) decides what
// each level needs; without an authorizer every route is open.
enum class Access {
  kPublic,   // anyone: health checks, the web UI's files, the login route
  kRead,     // read results, jobs, models, live views (role viewer and above)
  kOperate,  // submit images and videos (role operator and above)
  kAdmin,    // streams, deletions, settings (role admin)
};

// The name of an access level ("public", "read", "operate", "admin").
std::string_view AccessName(Access access);

// Largest body of a route that takes JSON; the default body limit of every route.
inline constexpr std::size_t kMaxJsonBodyBytes = 64 * 1024;

struct RouteOptions {
  Access access = Access::kRead;
  // Largest request body this route accepts (for POST/PUT/PATCH/DELETE routes; other routes
  // accept none larger than kMaxJsonBodyBytes). A declared Content-Length over it is refused
  // with 413 before a byte of the body is read.
  std::size_t max_body_bytes = kMaxJsonBodyBytes;
  // Media types (without parameters, lowercase) the body may have, e.g. {"application/json"};
  // any other, or none, gets 415 unsupported. Empty: any type. A JSON route lists
  // "application/json" so that a cross-site HTML form (form-encoded, text/plain) cannot reach it.
  std::vector<std::string> content_types;
  // Served even when every worker thread is busy (health checks), by the server's small
  // shedding thread instead of being answered 503. Keep such handlers fast.
  bool served_when_busy = false;
  // When set, the body is written to an unnamed file in this folder as it arrives instead of
  // memory, and handed to the handler mapped read-only (HttpRequest::Body(), multipart parts'
  // Content()): large uploads cost page cache, not the process's memory. The file disappears
  // with the request. Unwritable: 503.
  std::string spool_dir;
};

// Orders strings ignoring ASCII case; HTTP header names compare this way.
struct CaseInsensitiveLess {
  using is_transparent = void;  // NOLINT(readability-identifier-naming): std's name
  bool operator()(std::string_view a, std::string_view b) const;
};

// The media type of a Content-Type value, lowercase, without parameters or spaces:
// "image/jpeg" from "Image/JPEG; q=1".
std::string MediaType(std::string_view content_type);

// Header name -> value; lookups ignore case; a name may repeat.
using HttpHeaders = std::multimap<std::string, std::string, CaseInsensitiveLess>;

// One part of a multipart/form-data body. Plain form fields have an empty filename.
struct MultipartFile {
  std::string name;          // the form field name
  std::string filename;      // as sent by the client; never trust it as a path
  std::string content_type;  // as sent, may be empty
  std::string content;       // the part's bytes, unless `view` holds them
  // The part's bytes inside a spooled body (RouteOptions::spool_dir); valid while the request
  // lives. Read parts through Content().
  std::string_view view;

  std::string_view Content() const { return view.data() != nullptr ? view : content; }
};

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // percent-decoded, without the query string: "/api/v1/jobs/42"
  // Values of the route's ":name" segments: pattern "/jobs/:id" + path "/jobs/42" -> {id: 42}.
  std::map<std::string, std::string> path_params;
  // Decoded query parameters; a key may repeat ("?tag=a&tag=b").
  std::multimap<std::string, std::string> query_params;
  HttpHeaders headers;
  // The raw body; empty for multipart/form-data requests, whose parts are in `files`, and for
  // a spooled body. Read it through Body().
  std::string body;
  // A body the server spooled to disk (RouteOptions::spool_dir), mapped read-only; kept alive
  // by `spool` for as long as the request (or a copy of the pointer) lives.
  std::shared_ptr<const void> spool;
  std::string_view spooled_body;
  std::vector<MultipartFile> files;
  // The client's address: the peer's, or the one a trusted proxy forwarded
  // (HttpServerOptions::trusted_proxies).
  std::string remote_addr;
  // The address of the connection's other end (the proxy, when one forwarded the request).
  std::string peer_addr;
  // Who made the request, as the authorizer named them ("" without an authorizer).
  std::string principal;
  // Whether the request came over TLS.
  bool secure = false;

  // First value of query parameter `key`, if present.
  std::optional<std::string> Query(std::string_view key) const;
  // First value of header `name` (any case), if present.
  std::optional<std::string> Header(std::string_view name) const;
  // First multipart part named `name`, or nullptr.
  const MultipartFile* File(std::string_view name) const;
  // The raw body, in memory or spooled.
  std::string_view Body() const { return spool ? spooled_body : std::string_view(body); }
};

// Where a streaming response writes its body. Lent to the stream callback for the duration
// of the call, on the connection's thread; not thread-safe, not to be kept.
class StreamWriter {
 public:
  virtual ~StreamWriter() = default;
  // Sends `data` to the client now, as one chunk. False once the client has gone, a write
  // failed (or the client did not read for the server's write timeout), or the server is
  // stopping: the callback should then return.
  virtual bool Write(std::string_view data) = 0;
  // Whether the client is still connected and the server not stopping. Cheap (a zero-timeout
  // poll of the socket): a callback that waits for data checks it every second or so, so that
  // a client that left frees its thread without waiting for the next write.
  virtual bool Alive() const = 0;
  // Requested when the server starts to stop; waits inside the callback should watch it
  // (std::condition_variable_any takes it) so that HttpServer::Stop() does not hang.
  virtual std::stop_token StopToken() const = 0;
};

// The body of a streaming response: writes until it is done or the writer is not alive.
// Exceptions are caught, logged and end the response.
using StreamBody = std::function<void(StreamWriter&)>;

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  HttpHeaders headers;  // extra headers; Content-Type and Content-Length are set from the above
  // When set, the response is streamed: `body` is ignored and this callback writes the body
  // (chunked transfer encoding, no Content-Length). Destroyed without a call for HEAD
  // requests, so resources it holds are released either way.
  StreamBody stream;

  // A 200 (or `status`) response with a JSON body.
  static HttpResponse Json(std::string body, int status = 200);
  // The protocol's error response for a non-OK status: HttpStatusFor(code) and ErrorBody().
  static HttpResponse Error(const Status& status);
  // A 200 streaming response of `content_type` written by `body`.
  static HttpResponse Stream(std::string content_type, StreamBody body);
};

// Decides whether `request` may reach a route of `access`. nullopt lets it through (the
// authorizer may set request.principal); a response (401, 403, 429 ...) is sent instead.
// Called on the connection's thread for every routed request, before its body is read.
using Authorizer = std::function<std::optional<HttpResponse>(HttpRequest& request, Access access)>;

struct HttpServerOptions {
  // Address to bind; "0.0.0.0" for all IPv4 interfaces.
  std::string host = "127.0.0.1";
  // TCP port; 0 picks a free port (read it back with HttpServer::port()).
  int port = 8080;
  // Largest request body of any route, in bytes: a route's own max_body_bytes is capped by it.
  std::size_t max_body_bytes = 32 * 1024 * 1024;
  // Worker threads handling connections (one connection per thread at a time). At least 1.
  int threads = 8;
  // Longest wait for the next bytes of a request before the connection is dropped.
  std::chrono::seconds read_timeout{30};
  // How long an idle keep-alive connection is kept open; also bounds how long Stop() waits
  // for idle connections. An idle connection is closed at once when others wait for a thread.
  std::chrono::seconds keep_alive_timeout{5};
  // The request line and headers must arrive within this time of their first byte (408).
  std::chrono::seconds header_timeout{10};
  // A body must arrive at this average rate at least, after header_timeout of grace (408):
  // a client trickling a body cannot hold a thread for long.
  std::size_t min_body_bytes_per_second = 64 * 1024;
  // Request line (method, target, version) longer than this: 414.
  std::size_t max_request_line_bytes = 8192;
  // Request line and headers together longer than this, or more header lines than
  // max_headers: 431.
  std::size_t max_header_bytes = 32 * 1024;
  std::size_t max_headers = 64;
  // Connections accepted while every worker thread is busy wait in the shedding thread for at
  // most this long for their request line; then they get 503 (or their served_when_busy route).
  // At most max_shed_connections wait at once; more are closed at once.
  std::chrono::milliseconds shed_timeout{2000};
  std::size_t max_shed_connections = 256;
  // TLS: a PEM certificate (chain) and its private key. Both empty: plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
  // Host header names (without the port, lowercase) a request may carry; others get 421
  // (DNS rebinding). Empty: any Host.
  std::vector<std::string> allowed_hosts;
  // Requests that change state (POST, PUT, PATCH, DELETE) from a browser must come from this
  // server's own origin: a foreign Origin, or Sec-Fetch-Site cross-site, gets 403 (CSRF).
  bool same_origin_writes = true;
  // Called before every routed request (see Authorizer); null: every route open.
  Authorizer authorizer;
  // Reverse proxies (addresses or networks: "10.0.0.0/8") whose X-Forwarded-For names the
  // client: a request from one gets as remote_addr the rightmost address of that header that
  // is not a trusted proxy itself, so that per-client limits and rate limits see clients, not
  // the proxy. Empty: remote_addr is always the peer. Create() refuses a malformed entry.
  std::vector<std::string> trusted_proxies;
};

using Handler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
 public:
  // Validates the options and binds nothing yet.
  // kInvalidArgument: port outside 0..65535, threads < 1, max_body_bytes == 0, empty host.
  static Result<std::unique_ptr<HttpServer>> Create(const HttpServerOptions& options);

  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Registers `handler` for `method` (GET, POST, PUT, PATCH, DELETE, OPTIONS; GET also answers
  // HEAD) and `pattern`, a path whose segments are literal or ":name" (one non-empty segment,
  // captured into path_params): "/api/v1/jobs/:id". The first matching route wins.
  // kInvalidArgument: unknown method, pattern not starting with '/', bad or repeated ":name".
  // `options` set the route's access level, body limit and body types (RouteOptions).
  // kFailedPrecondition: the server was already started.
  Status Route(std::string_view method, std::string_view pattern, Handler handler,
               RouteOptions options = {});

  // Serves the files under `dir` at `mount` ("/" or "/static") for GET and HEAD, with a
  // Content-Type guessed from the extension. Paths escaping `dir` ("..") are rejected.
  // Files shadow routes that share their path.
  // kNotFound: `dir` is not a directory. kInvalidArgument: `mount` does not start with '/'.
  // kFailedPrecondition: the server was already started.
  Status ServeStatic(std::string_view mount, const std::string& dir);

  // Binds and starts serving on a background thread; returns once connections are accepted.
  // kUnavailable: the address cannot be bound (port in use, bad host).
  // kFailedPrecondition: already started (a stopped server cannot be restarted).
  Status Start();

  // Requests the streams' stop token, stops accepting, finishes requests in flight, joins the
  // threads. Idempotent.
  void Stop();

  // The bound port once started (the real one when options.port was 0); 0 before Start().
  int port() const;

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kadr::http
