#pragma once
// The HTTP listener's routes. A route is one path with the methods it
// answers; the listener finds it by exact path (the query string aside),
// answers 404 for an unknown path and 405 (with Allow) for a method the
// route does not take. HEAD is answered wherever GET is, without the body.
// /healthz, /readyz, Dovecot's auth-policy endpoint and /metrics are routes
// (daemon/context.cpp lists them).
//
// The functions here are pure (no I/O): the session (http_session.cpp)
// reads a request with Boost.Beast's parser, asks http_dispatch which route
// serves it, awaits the route, and writes http_serialize's bytes.
#include "popgate/server/protocol.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace popgate::session {

namespace beast_http = boost::beast::http;
using http_request = beast_http::request<beast_http::string_body>;

// Bounds of one request (RFC 9110 leaves them to the server): the request
// line and header fields together, and the body. Larger ones get 431 / 413.
inline constexpr std::size_t http_max_header = 8192;
inline constexpr std::size_t http_max_body = 65536;
// Requests on one kept-alive connection; the last answer says Connection: close.
inline constexpr std::size_t http_max_requests = 1000;

struct http_reply {
    unsigned status = 200;
    std::string body;
    std::string content_type = "text/plain; charset=utf-8";
    std::vector<std::pair<std::string, std::string>> headers;  // extra fields (Allow, ...)
    bool close = false;  // end the connection after this reply
};

// A text/plain reply (a short reason, one line).
http_reply http_text(unsigned status, std::string body);

// What a route sees of one request.
struct http_exchange {
    http_request const& request;
    std::string_view path;   // the target up to '?'
    std::string_view query;  // after '?', "" when none
    server::connection& conn;
    // The listener's settings as of the connection's snapshot: a SIGHUP
    // reloads trusted_networks and the api key for new connections.
    config::listener const& listener;
};

class http_route {
public:
    virtual ~http_route() = default;
    virtual std::string_view path() const noexcept = 0;
    // The methods it answers (HEAD too wherever GET is listed).
    virtual std::span<beast_http::verb const> methods() const noexcept = 0;
    virtual boost::asio::awaitable<http_reply> serve(http_exchange& x) = 0;
    // A request for it from a peer outside the listener's trusted_networks,
    // answered 403 without serve(): for the route's own counters.
    virtual void refused_untrusted(std::string_view query) const noexcept { (void)query; }
};

// The route for a request, or the reply that refuses it: 400 for a target
// that names no path here (authority-form, "*", another scheme), 404 for an
// unknown path, 405 with Allow for a method the route does not take.
struct http_dispatch {
    http_route* route = nullptr;
    std::optional<http_reply> refusal;
    std::string_view path;
    std::string_view query;
};
http_dispatch http_dispatch_of(std::span<http_route* const> routes, beast_http::verb method, std::string_view target);

// The value of `name` in an application/x-www-form-urlencoded query
// ("a=1&command=report"); nullopt when absent. Values are compared as sent
// (Dovecot sends no escapes in the command).
std::optional<std::string_view> http_query_value(std::string_view query, std::string_view name);

// The bytes of a reply: status line in `version` (10 or 11), Content-Type,
// Content-Length, Connection: close when the connection ends after it (or
// keep-alive for an HTTP/1.0 client that asked for it), the extra headers,
// then the body unless `head`.
std::string http_serialize(http_reply const& r, unsigned version, bool keep_alive, bool head);

// The refusal of a request the parser took whose framing or Host cannot be
// trusted, or nullopt. `chunked`: the parser read its body as chunked. Each
// closes the connection, because the next request cannot be found reliably
// after it: a version other than HTTP/1.x (505), no Host in HTTP/1.1 or more
// than one Host line (RFC 9112 §3.2), a Transfer-Encoding whose last coding
// is not chunked or in an HTTP/1.0 request (§6.1, §6.3: Beast would read
// its body as the next request), all 400.
std::optional<http_reply> http_request_refusal(http_request const& req, bool chunked);

// What of a request may wait unparsed for more bytes: Beast takes a
// chunk-size line, its extensions and a trailer section only whole, and
// bounds none of them (the header it bounds by http_max_header).
inline constexpr std::size_t http_max_unparsed = http_max_header;

// The reply to a request the parser refused (Beast's error): 431 for a
// header section over http_max_header, 413 for a body over http_max_body,
// 505 for a version other than HTTP/1.x, 400 otherwise. Always closes the connection: after a malformed request
// the next one cannot be found reliably.
http_reply http_refusal_of(boost::system::error_code parse_error, std::string_view unparsed = {});

}  // namespace popgate::session
