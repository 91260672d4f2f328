// One HTTP connection: requests read with Boost.Beast's parser from the
// frame's io::stream, each answered by its route, until the client closes,
// asks to close, sends something malformed, or stays idle too long.
#include "popgate/session/http/http_protocol.hpp"

// GCC 12 reports the coroutine frames' own operator new/delete pair as
// mismatched once inlining sees both (GCC bug 109224, a false positive).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include "popgate/log/log.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/core/string.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

namespace popgate::session {
namespace {

namespace asio = boost::asio;
using parser_t = beast_http::request_parser<beast_http::string_body>;

class http_session final : public server::session {
public:
    http_session(http_services s, server::connection& c)
        : svc_(s), c_(c), s_(*c.settings), l_(c.listener), trusted_(l_.serves(c.peer))
    {
    }

    asio::awaitable<void> run() override;
    std::string end_fields() const override
    {
        return "ip=" + c_.ip + " requests=" + std::to_string(requests_);
    }

private:
    enum class got { request, eof, malformed, refused, gone };
    asio::awaitable<got> read_request(parser_t& p);
    asio::awaitable<bool> send(std::string const& bytes);
    asio::awaitable<http_reply> answer(http_request const& req, bool chunked);

    http_services svc_;
    server::connection& c_;
    config::settings const& s_;
    config::listener const& l_;
    bool trusted_ = false;
    std::string buf_;  // received, not yet parsed (a pipelined request)
    std::size_t requests_ = 0;
    boost::system::error_code parse_error_;
    std::optional<http_reply> refused_;  // got::refused: what the header alone was refused with
};

// RFC 9110 §10.1.1 and §15.2: an HTTP/1.0 client's Expect is ignored, and
// it is never sent a 1xx.
bool expects_continue(http_request const& req)
{
    if (req.version() < 11) return false;
    auto const it = req.find(beast_http::field::expect);
    return it != req.end() && boost::beast::iequals(it->value(), "100-continue");
}

// Reads one request into `p`. Waiting for its first byte is bounded by
// limits.http_idle_timeout; once it has begun it must be complete within
// limits.command_timeout, however slowly it trickles in.
asio::awaitable<http_session::got> http_session::read_request(parser_t& p)
{
    // RFC 9112 §2.2: empty lines before a request line are ignored (a client
    // that ends its POST body with an extra CRLF), and do not begin it: they
    // never hold the connection past limits.http_idle_timeout.
    auto const skip_empty_lines = [&] {
        if (p.got_some()) return;
        while (buf_.starts_with("\r\n") || buf_.starts_with('\n')) buf_.erase(0, buf_[0] == '\r' ? 2 : 1);
    };
    // Whether buf_ holds a byte of the request itself ("\r" alone may be
    // the first half of an empty line).
    auto const request_begun = [&] { return p.got_some() || (!buf_.empty() && buf_ != "\r"); };
    skip_empty_lines();
    bool begun = request_begun();
    c_.clock.arm(begun ? s_.command_timeout : s_.http_idle_timeout);
    bool continued = false;
    // Beast applies header_limit to what one put() sees, and consumes the
    // fields of an unfinished header as it goes: fed in parts, a header
    // reached twice the limit. What it has taken of this one so far is
    // subtracted from the limit of the next put().
    std::size_t header_taken = 0;
    char chunk[4096];
    for (;;) {
        if (request_begun()) {
            boost::system::error_code ec;
            bool const in_header = !p.is_header_done();
            if (in_header) p.header_limit(static_cast<std::uint32_t>(http_max_header - header_taken));
            auto const used = p.put(asio::buffer(buf_), ec);
            if (in_header && !p.is_header_done()) header_taken += used;
            if (!ec && in_header && !p.is_header_done() && header_taken >= http_max_header)
                ec = beast_http::error::header_limit;
            buf_.erase(0, used);
            if (ec == beast_http::error::need_more) ec = {};
            if (ec) {
                parse_error_ = ec;
                co_return got::malformed;
            }
            // A client that waits for 100 Continue before its body, with a
            // header that decides the refusal (Host, Transfer-Encoding), is
            // answered at once. One that sends its body anyway has it read
            // first (bounded by http_max_body): closing with it unread could
            // reset the connection before the client reads the refusal.
            if (in_header && p.is_header_done() && !p.is_done() && expects_continue(p.get())) {
                refused_ = http_request_refusal(p.get(), p.chunked());
                if (refused_) co_return got::refused;
            }
            if (p.is_done()) co_return got::request;
            // Unparsed and waiting for more: a peer, trusted or not (that is
            // decided once the request is whole), must not fill memory with
            // one endless chunk line or trailer.
            if (buf_.size() > http_max_unparsed) {
                parse_error_ = beast_http::error::bad_chunk;
                co_return got::malformed;
            }
            // RFC 9110 §10.1.1: a client that waits for 100 before its body.
            if (p.is_header_done() && !continued && expects_continue(p.get())) {
                continued = true;
                if (!co_await send("HTTP/1.1 100 Continue\r\n\r\n")) co_return got::gone;
                c_.clock.arm(s_.command_timeout);
            }
        }
        auto [ec, n] = co_await c_.stream.read_some(asio::buffer(chunk));
        if (ec) {
            if (ec == asio::error::eof && !begun) co_return got::eof;
            // Cut by the watchdog once the request had begun: too slow, which
            // counts toward limits.max_slow_sessions_per_ip as in POP3 and SMTP.
            if (c_.clock.expired && begun) {
                c_.end_reason = "timeout-command";
            } else {
                c_.end_reason = ec == asio::error::eof ? "eof-in-request" : "eof";
            }
            co_return got::gone;
        }
        buf_.append(chunk, n);
        skip_empty_lines();
        if (!begun && request_begun()) {
            begun = true;
            c_.clock.arm(s_.command_timeout);
        }
    }
}

asio::awaitable<bool> http_session::send(std::string const& bytes)
{
    c_.clock.arm(s_.http_idle_timeout);  // a client that never reads is cut off
    auto const ec = co_await c_.stream.write(asio::buffer(bytes));
    co_return !ec;
}

asio::awaitable<http_reply> http_session::answer(http_request const& req, bool chunked)
{
    if (auto r = http_request_refusal(req, chunked)) co_return std::move(*r);
    auto d = http_dispatch_of(svc_.routes, req.method(), req.target());
    if (!trusted_) {
        if (d.route) d.route->refused_untrusted(d.query);
        auto r = http_text(403, "forbidden: this address is not in the listener's trusted_networks\n");
        r.close = true;
        co_return r;
    }
    if (d.refusal) co_return std::move(*d.refusal);
    http_exchange x{req, d.path, d.query, c_, l_};
    co_return co_await d.route->serve(x);
}

asio::awaitable<void> http_session::run()
{
    if (!trusted_)
        spdlog::warn("sid={} http peer not in trusted_networks ip={} listener={}", c_.sid, c_.ip, c_.listener.name);
    for (;;) {
        parser_t p;  // read_request sets its header limit
        p.body_limit(http_max_body);
        p.eager(true);
        auto const what = co_await read_request(p);
        if (what == got::eof || what == got::gone) co_return;
        if (what == got::malformed) {
            auto const r = http_refusal_of(parse_error_, buf_);
            spdlog::info("sid={} http refused ip={} status={} error={}", c_.sid, c_.ip, r.status,
                         log::field(parse_error_.message()));
            c_.end_reason = "malformed";
            bool const sent = co_await send(http_serialize(r, 11, false, false));
            (void)sent;  // closing either way
            co_return;
        }
        if (what == got::refused) {
            spdlog::info("sid={} http refused ip={} status={} error=header", c_.sid, c_.ip, refused_->status);
            c_.end_reason = "refused";
            bool const sent = co_await send(http_serialize(*refused_, p.get().version() == 10 ? 10 : 11, false, false));
            (void)sent;  // closing either way
            co_return;
        }
        ++requests_;
        auto const& req = p.get();
        auto r = co_await answer(req, p.chunked());
        bool const keep = req.keep_alive() && !r.close && requests_ < http_max_requests;
        spdlog::debug("sid={} http request method={} path={} status={} bytes={}", c_.sid,
                      log::field(req.method_string()), log::field(req.target(), 200), r.status, r.body.size());
        bool const sent = co_await send(
            http_serialize(r, req.version() == 10 ? 10 : 11, keep, req.method() == beast_http::verb::head));
        if (!sent) co_return;
        if (!keep) {
            c_.end_reason = r.close ? "refused" : "close";
            co_return;
        }
    }
}

}  // namespace

server::address_limits http_protocol::limits_for(net::ip_address const& peer, config::listener const& l) const noexcept
{
    return l.serves(peer) ? server::address_limits::exempt : server::address_limits::apply;
}

std::string http_protocol::refusal(std::string_view why, config::settings const&) const
{
    auto r = http_text(503, "service unavailable: " + std::string(why) + "\n");
    return http_serialize(r, 11, false, false);
}

std::unique_ptr<server::session> http_protocol::open(server::connection& c)
{
    return std::make_unique<http_session>(s_, c);
}

}  // namespace popgate::session
