#include "popgate/server/frame.hpp"

// GCC 12 reports the coroutine frames' own operator new/delete pair as
// mismatched once inlining sees both (GCC bug 109224, a false positive).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include "popgate/io/tls_socket.hpp"
#include "popgate/log/log.hpp"
#include "popgate/metrics/catalog.hpp"
#include "popgate/net/proxy_header.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <optional>
#include <variant>

namespace popgate::server {
namespace {

namespace asio = boost::asio;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

// A TCP connection, in clear until start_tls() and through OpenSSL after.
class tcp_stream final : public io::stream {
public:
    tcp_stream(tcp::socket& sock, std::shared_ptr<ssl::context> tls_ctx, std::string_view proto, std::string_view alpn)
        : sock_(sock), tls_ctx_(std::move(tls_ctx)), proto_(proto), alpn_(alpn)
    {
    }
    void attach(connection& c) noexcept { conn_ = &c; }

    asio::awaitable<std::pair<boost::system::error_code, std::size_t>> read_some(asio::mutable_buffer into) override
    {
        // (No co_await inside ?: or &&: g++ 12 miscompiles some of those.)
        if (tls_) {
            auto r = co_await tls_->read_some(into);
            co_return r;
        }
        auto [ec, n] = co_await sock_.async_read_some(into, asio::as_tuple(asio::use_awaitable));
        co_return std::pair{ec, n};
    }

    asio::awaitable<boost::system::error_code> write(asio::const_buffer data) override
    {
        if (tls_) {
            auto ec = co_await tls_->write(data);
            co_return ec;
        }
        // What the send buffer takes (nearly always a whole reply) goes at
        // once, as OpenSSL's writes do: an asynchronous write would cost a
        // posted completion and a turn of the reactor per reply. Only the
        // rest, for a client that does not read, waits (bounded by the
        // watchdog, which closes the socket).
        boost::system::error_code ec;
        auto const sent = io::write_nowait(sock_, data, ec);
        if (ec || sent == data.size()) co_return ec;
        auto [wec, n] = co_await asio::async_write(sock_, data + sent, asio::as_tuple(asio::use_awaitable));
        co_return wec;
    }

    bool can_start_tls() const noexcept override
    {
        return conn_->listener.starttls() && tls_ctx_ && !tls_;
    }

    asio::awaitable<bool> start_tls() override
    {
        if (!can_start_tls()) co_return false;
        co_return co_await handshake();
    }

    bool tls_active() const noexcept override { return tls_.has_value(); }
    void close_notify() noexcept
    {
        if (tls_) tls_->close_notify();
    }
    // A line before the watchdog's close, through TLS when it is active.
    void send_nowait(std::string_view bytes) noexcept
    {
        if (bytes.empty()) return;
        if (tls_) {
            tls_->send_nowait(bytes);
        } else {
            io::send_nowait(sock_, bytes);
        }
    }

    // Implicit TLS (before the greeting) and STARTTLS alike.
    asio::awaitable<bool> handshake()
    {
        auto& c = *conn_;
        if (!tls_ctx_) {
            spdlog::error("sid={} {} no TLS context for implicit-TLS listener={}", c.sid, proto_, c.listener.name);
            c.end_reason = "no-tls";
            co_return false;
        }
        c.clock.arm(c.settings->tls_handshake_timeout);
        tls_.emplace(sock_, *tls_ctx_, alpn_);
        auto ec = co_await tls_->handshake();
        // A peer that closed before sending a byte attempted no TLS: a load
        // balancer's health check (HAProxy's, after its PROXY LOCAL header),
        // a port probe. Counted as failed handshakes they fired the shipped
        // alert on every site behind one; logged as the plain close it is.
        if (ec && !c.clock.expired && BIO_number_read(SSL_get_rbio(tls_->native_handle())) == 0) {
            c.end_reason = "eof";
            spdlog::debug("sid={} {} closed before its TLS hello ip={} error={}", c.sid, proto_, c.ip,
                          log::field(ec.message()));
            co_return false;
        }
        metrics::tls_handshakes.with({c.listener.name, ec ? (c.clock.expired ? "timeout" : "failed") : "ok"}).inc();
        if (ec) {
            c.end_reason = c.clock.expired ? "tls-timeout" : "tls-failed";
            c.tls_stalled = c.clock.expired && BIO_number_read(SSL_get_rbio(tls_->native_handle())) > 0;
            spdlog::info("sid={} {} tls handshake failed ip={} error={}", c.sid, proto_, c.ip,
                         c.clock.expired ? std::string("timeout") : log::field(ec.message()));
            co_return false;
        }
        spdlog::info("sid={} {} tls ip={} version={} cipher={}", c.sid, proto_, c.ip,
                     SSL_get_version(tls_->native_handle()), SSL_get_cipher_name(tls_->native_handle()));
        co_return true;
    }

private:
    tcp::socket& sock_;
    std::shared_ptr<ssl::context> tls_ctx_;  // kept for the session (a reload swaps the daemon's)
    std::string_view proto_;
    std::string_view alpn_;  // the protocol's ALPN ids
    connection* conn_ = nullptr;
    std::optional<io::tls_socket> tls_;  // OpenSSL on the socket itself: no per-session buffers of Asio's
};

// Implicit TLS first, then the session: built on the transport it will
// speak over, it offers from its constructor on what that transport allows
// (AUTH PLAIN under auth.plaintext = "tls-only", no STARTTLS or STLS).
asio::awaitable<void> converse(tcp_stream& st, connection& c, protocol& p, std::unique_ptr<session>& s)
{
    // When the watchdog wins the race it closes the socket and the || cancels
    // this branch. Without this, the next co_await would throw before its
    // operation started, skipping the session's own handling of the failed
    // read. Every operation fails on the closed socket instead and is
    // handled through its error code.
    co_await asio::this_coro::throw_if_cancelled(false);
    if (c.listener.tls == config::tls_mode::implicit) {
        bool const shaken = co_await st.handshake();
        if (!shaken) co_return;
    }
    try {
        s = p.open(c);
    } catch (std::exception const& e) {
        c.end_reason = "error";
        spdlog::error("sid={} {} session setup failed ip={} error={}", c.sid, c.listener.protocol, c.ip,
                      log::field(e.what()));
        co_return;
    }
    co_await s->run();
}

// Reads a PROXY header without taking a byte beyond it: what has arrived is
// peeked at, and only the header's own octets leave the socket, so that the
// client's first command (or its TLS ClientHello) stays there for the session.
asio::awaitable<net::proxy_parse> read_proxy_header(tcp::socket& sock)
{
    std::string taken;  // off the socket already; all of it header
    std::array<char, net::proxy_header_max> buf;
    for (;;) {
        // `incomplete` means fewer octets than the longest header, so there is room.
        auto [ec, n] = co_await sock.async_receive(asio::buffer(buf.data(), buf.size() - taken.size()),
                                                   tcp::socket::message_peek, asio::as_tuple(asio::use_awaitable));
        if (ec) co_return net::proxy_parse{net::proxy_status::invalid, {}, "connection closed before a whole header"};
        std::string seen = taken;
        seen.append(buf.data(), n);
        auto const r = net::parse_proxy_header(seen);
        if (r.status == net::proxy_status::invalid) co_return r;
        bool const done = r.status == net::proxy_status::complete;
        std::size_t const take = done ? r.header.length - taken.size() : n;
        auto [rec, m] = co_await asio::async_read(sock, asio::buffer(buf.data(), take),
                                                  asio::as_tuple(asio::use_awaitable));
        if (rec) co_return net::proxy_parse{net::proxy_status::invalid, {}, "connection closed before a whole header"};
        if (done) co_return r;
        taken.append(buf.data(), m);
    }
}

// Where a connection comes from: the client, and the proxy it came through.
struct origin {
    net::ip_address ip;
    std::uint16_t port = 0;
    std::optional<net::ip_address> proxy;
    bool named = true;  // false: a proxy's header that named no client
};

// On a proxy_protocol listener: the client that a trusted proxy's header
// names (the proxy itself for v1 UNKNOWN and v2 LOCAL), or nothing when the
// connection must be closed; the reason is logged here. No byte is written:
// whatever the peer is, it gets nothing to read before a valid header.
asio::awaitable<std::optional<origin>> through_proxy(tcp::socket& sock, config::listener const& l, origin direct,
                                                     config::settings const& s, std::string_view proto)
{
    using namespace asio::experimental::awaitable_operators;
    auto const peer = direct.ip.to_string();
    auto const& trusted = l.trusted_proxies;
    if (std::none_of(trusted.begin(), trusted.end(), [&](net::cidr const& c) { return c.contains(direct.ip); })) {
        spdlog::warn("{} proxy refused ip={} listener={} reason=untrusted-peer", proto, peer, l.name);
        metrics::connections_refused.with({l.name, "proxy_untrusted_peer"}).inc();
        co_return std::nullopt;
    }
    // The header comes at once with the connection (proxy-protocol.txt §2);
    // a peer that sends none is cut at the TLS handshake's bound.
    asio::steady_timer timer(sock.get_executor(), s.tls_handshake_timeout);
    auto const got = co_await (read_proxy_header(sock) || timer.async_wait(asio::use_awaitable));
    if (got.index() == 1) {
        spdlog::warn("{} proxy refused ip={} listener={} reason=header-timeout limit={}s", proto, peer, l.name,
                     s.tls_handshake_timeout.count());
        metrics::connections_refused.with({l.name, "proxy_header_timeout"}).inc();
        co_return std::nullopt;
    }
    auto const& r = std::get<0>(got);
    if (r.status != net::proxy_status::complete) {
        spdlog::warn("{} proxy refused ip={} listener={} reason=bad-header error={}", proto, peer, l.name,
                     log::field(r.why));
        metrics::connections_refused.with({l.name, "proxy_bad_header"}).inc();
        co_return std::nullopt;
    }
    origin o{direct.ip, direct.port, direct.ip, r.header.source.has_value()};
    if (r.header.source) {
        o.ip = *r.header.source;
        o.port = r.header.port;
    }
    co_return o;
}

}  // namespace

std::shared_ptr<config::settings const> live_config::settings() const
{
    std::lock_guard lock(mutex_);
    return settings_;
}

void live_config::set_settings(std::shared_ptr<config::settings const> s)
{
    std::lock_guard lock(mutex_);
    settings_ = std::move(s);
}

std::shared_ptr<ssl::context> live_config::tls() const
{
    std::lock_guard lock(mutex_);
    return tls_;
}

void live_config::set_tls(std::shared_ptr<ssl::context> t)
{
    std::lock_guard lock(mutex_);
    tls_ = std::move(t);
}

namespace {

// From the socket's bytes, not its text: a link-local IPv6 peer's text
// carries its zone ("fe80::1%eth0"), which no address parser here takes,
// and such a client used to be dropped without a word.
net::ip_address peer_address(asio::ip::address const& a)
{
    if (a.is_v4()) return net::ip_address::from_v4(a.to_v4().to_uint());
    return net::ip_address::from_v6(a.to_v6().to_bytes());
}

// The listener as the running configuration has it: a SIGHUP changes the
// policy keys of a listener (tls none, starttls or required, plaintext,
// auth_required, grant, proxy_protocol, trusted_proxies) for new
// connections; what it is bound to stays until a restart.
config::listener const& current_policy(config::listener const& bound, config::settings const& now)
{
    for (auto const& l : now.listeners)
        if (l.same_binding(bound)) return l;
    return bound;
}

}  // namespace

asio::awaitable<void> serve_connection(tcp::socket sock, tcp::endpoint ep, config::listener const& l, protocol& p,
                                       frame_env env)
{
    using namespace asio::experimental::awaitable_operators;
    auto const proto = p.name();
    boost::system::error_code ec;
    auto settings = env.live.settings();
    // The policy as the running configuration has it, from the first byte:
    // a SIGHUP that turns proxy_protocol on or off, or drops a proxy from
    // trusted_proxies, applies to the next connection.
    auto const& policy = current_policy(l, *settings);
    origin from{peer_address(ep.address()), ep.port(), std::nullopt, true};
    if (policy.proxy_protocol) {
        auto const via = co_await through_proxy(sock, policy, from, *settings, proto);
        if (!via) {
            sock.close(ec);
            co_return;
        }
        from = *via;
    }
    // From here on the client is the one the header named: it is admitted,
    // rate-limited, granted, decided on and logged.
    net::ip_address const peer = from.ip;
    // Per-address limits count an IPv6 client by its relay.ipv6_prefix, as
    // its grant: a host with a /64 cannot dodge them by changing address.
    net::ip_address const counted = net::limit_key(peer, settings->ipv6_prefix);
    refusal why;
    auto limits = p.limits_for(peer, policy);
    // The balancer's own connections: a header that names no client (v2
    // LOCAL, v1 UNKNOWN), or names the proxy itself, as HAProxy's v1 health
    // checks do.
    if (limits == address_limits::apply && from.proxy && (!from.named || from.ip == *from.proxy))
        limits = address_limits::balancer;
    if (!env.admission.admit(counted, *settings, why, limits, p.name())) {
        // A session id of its own, first as on every client's line, so that
        // a filter (fail2ban's _pre) reads this line as it reads the others.
        // The reason is popgate's own words (no client's bytes), quoted as
        // one value: it has spaces and '='.
        spdlog::warn("sid={} {} refused ip={} listener={} reason=\"{}\"", log::new_session_id(), proto,
                     peer.to_string(), l.name, why.why);
        metrics::connections_refused.with({l.name, why.limit}).inc();
        // Under implicit TLS a clear-text line would be noise to the client.
        if (l.tls != config::tls_mode::implicit) io::send_nowait(sock, p.refusal(why.why, *settings));
        sock.close(ec);
        co_return;
    }
    admission_slot const admitted{env.admission, counted, limits, p.name()};

    io::session_clock clock;
    open_session const registered{env.sessions, sock.get_executor(), clock};
    tcp_stream st(sock, env.live.tls(), proto, p.alpn());
    connection c{log::new_session_id(), peer, peer.to_string(), policy, std::move(settings), st, clock};
    c.client_named = from.named;
    st.attach(c);
    std::unique_ptr<session> s;  // made by converse(), after any implicit handshake
    spdlog::info("sid={} {} connect ip={} port={} listener={} tls={}{}{}", c.sid, proto, c.ip, from.port, l.name,
                 config::to_string(l.tls), from.proxy ? " proxy=" + from.proxy->to_string() : std::string(),
                 from.named ? "" : " client=unnamed");
    metrics::sessions_total.with({l.name, proto}).inc();
    metrics::gauge_hold const open{metrics::sessions_open.with({l.name, proto})};
    auto last_words = [&] {
        if (s) st.send_nowait(s->last_words());
    };
    try {
        co_await (converse(st, c, p, s) || io::watchdog(sock, clock, last_words));
    } catch (boost::system::system_error const& e) {
        if (clock.expired) {
            c.end_reason = "timeout";
        } else {
            c.end_reason = "error";
            spdlog::warn("sid={} {} i/o error={}", c.sid, proto, log::field(e.what()));
        }
    } catch (std::exception const& e) {
        c.end_reason = "error";
        spdlog::error("sid={} {} error={}", c.sid, proto, log::field(e.what()));
    }
    clock.finished = true;
    // A timeout the session already named more closely ("timeout-in-data",
    // "tls-timeout") stays.
    if (clock.shutdown) {
        if (c.end_reason.rfind("shutdown", 0) != 0) c.end_reason = "shutdown";
    } else if (clock.expired && c.end_reason.find("timeout") == std::string::npos) {
        c.end_reason = "timeout";
    }
    // A TLS handshake begun and left unfinished is the half-typed command of
    // TLS: it held a place of max_sessions for tls_handshake_timeout, and
    // stalls from a few addresses shut every client out. One that never
    // began (a plain-text client at POP3S, silent after STLS) is an idle
    // client, as on a plain port: counting it shut a NAT's users out.
    bool const slow_tls = c.end_reason == "tls-timeout" && c.tls_stalled;
    if ((c.end_reason == "timeout-command" || slow_tls) && limits != address_limits::exempt) {
        // A balancer's own connection is logged, not counted: its address
        // stands for more than one client.
        auto const n = limits == address_limits::apply ? std::to_string(env.admission.note_slow(counted))
                                                       : std::string("uncounted");
        spdlog::warn("sid={} {} {} too slow ip={} limit={}s slow_sessions={}", c.sid, proto,
                     slow_tls ? "tls handshake" : "command", c.ip,
                     (slow_tls ? c.settings->tls_handshake_timeout : c.settings->command_timeout).count(), n);
    }
    // A connection that never got its session (a failed handshake) still
    // names its client.
    spdlog::info("sid={} {} end reason={} {}", c.sid, proto, c.end_reason, s ? s->end_fields() : "ip=" + c.ip);
    st.close_notify();
    io::close_now(sock);
    if (!s) co_return;
    try {
        co_await s->after_close();
    } catch (std::exception const& e) {
        spdlog::warn("sid={} {} after close error={}", c.sid, proto, log::field(e.what()));
    }
}

asio::awaitable<void> accept_loop(tcp::acceptor& acc, config::listener const& l, protocol& p, frame_env env,
                                  io::io_threads& threads)
{
    for (;;) {
        // The peer's address comes with accept(2) itself: no getpeername(2).
        tcp::endpoint peer;
        auto [ec, sock] = co_await acc.async_accept(threads.next(), peer, asio::as_tuple(asio::use_awaitable));
        if (ec) {
            if (ec == asio::error::operation_aborted || !acc.is_open()) co_return;
            // EMFILE and friends: log, breathe, go on; the daemon must not die.
            spdlog::warn("accept listener={} error={}", l.name, ec.message());
            asio::steady_timer t(acc.get_executor(), std::chrono::milliseconds(100));
            co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
            continue;
        }
        sock.set_option(tcp::no_delay(true), ec);
        auto ex = sock.get_executor();
        auto done = [name = l.name](std::exception_ptr ep) {
            if (!ep) return;
            try {
                std::rethrow_exception(ep);
            } catch (std::exception const& e) {
                spdlog::error("session listener={} ended by exception: {}", name, e.what());
            }
        };
        asio::co_spawn(ex, serve_connection(std::move(sock), peer, l, p, env), done);
    }
}

}  // namespace popgate::server
