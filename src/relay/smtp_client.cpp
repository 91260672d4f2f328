#include "popgate/relay/smtp_client.hpp"

#include "popgate/log/log.hpp"
#include "popgate/metrics/catalog.hpp"
#include "popgate/proto/sasl.hpp"
#include "popgate/io/tls.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace popgate::relay {

using namespace boost::asio::experimental::awaitable_operators;
using tcp = asio::ip::tcp;

namespace {

std::string upper(std::string_view s)
{
    std::string out(s);
    for (auto& c : out)
        if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    return out;
}

std::string joined(proto::smtp_reply const& r)
{
    std::string t;
    for (auto const& l : r.lines) {
        if (!t.empty()) t += " / ";
        t += l;
    }
    return t;
}

// The upstream's words as quoted to our client: joined, and cut so that our
// reply line stays within RFC 5321's 512 octets whatever the upstream sent
// (format_reply replaces control characters).
constexpr std::size_t max_quoted = 200;
std::string quoted(proto::smtp_reply const& r)
{
    auto t = joined(r);
    if (t.size() > max_quoted) t.resize(max_quoted);
    return t;
}

// The upstream's enhanced code (RFC 3463), or the class's generic one when it
// sent none: "4.0.0", "5.0.0".
std::string enhanced_or_generic(proto::smtp_reply const& r)
{
    if (!r.enhanced.empty()) return r.enhanced;
    return std::to_string(proto::reply_class(r.code)) + ".0.0";
}

// Whether an EHLO keyword (upper case) is among the upstream's extensions.
bool offers(std::vector<std::string> const& ext, std::string_view kw)
{
    for (auto const& e : ext)
        if (e.compare(0, kw.size(), kw) == 0 && (e.size() == kw.size() || e[kw.size()] == ' ' || e[kw.size()] == '='))
            return true;
    return false;
}

// Where the upstream is. A literal address needs no lookup; a name is looked
// up once a minute, not once per message: Asio resolves on one background
// thread, with AI_ADDRCONFIG (a netlink query per call), and at a few hundred
// messages a second that thread became the relay's limit.
constexpr auto resolve_ttl = std::chrono::seconds(60);
std::mutex resolved_mutex;
std::map<std::pair<std::string, std::uint16_t>,
         std::pair<std::vector<tcp::endpoint>, std::chrono::steady_clock::time_point>>
    resolved;

std::vector<tcp::endpoint> cached_endpoints(std::string const& host, std::uint16_t port)
{
    boost::system::error_code ec;
    auto const addr = asio::ip::make_address(host, ec);
    if (!ec) return {tcp::endpoint(addr, port)};
    std::lock_guard lock(resolved_mutex);
    auto const it = resolved.find({host, port});
    if (it == resolved.end() || it->second.second < std::chrono::steady_clock::now()) return {};
    return it->second.first;
}

void remember_endpoints(std::string const& host, std::uint16_t port, std::vector<tcp::endpoint> const& eps)
{
    std::lock_guard lock(resolved_mutex);
    if (resolved.size() > 16) resolved.clear();  // one upstream, or a few across reloads
    resolved[{host, port}] = {eps, std::chrono::steady_clock::now() + resolve_ttl};
}

}  // namespace

// ------------------------------------------------------------------ pool

namespace {
// Best effort, never waits: the upstream learns we are gone either way.
// QUIT goes only in clear: a TLS link's stream belongs to its own I/O
// thread, so it is just closed (the upstream logs a lost connection).
void quit_and_close(upstream_link& l) noexcept
{
    if (!l.sock.is_open()) return;
    if (!l.tls) io::send_nowait(l.sock, "QUIT\r\n");
    io::close_now(l.sock);
}

// "host|port|..." (smtp_client::pool_key) as "host:port", for the log.
std::string host_port_of(std::string const& key)
{
    auto const a = key.find('|');
    if (a == std::string::npos) return key;
    auto const b = key.find('|', a + 1);
    return key.substr(0, a) + ":" + key.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
}

constexpr std::string_view unasked_reply = "the upstream sent a reply before it was asked";
constexpr std::string_view upstream_closed = "the upstream closed the connection";

// What the socket holds that no command asked for: bytes (a reply), or
// its end (0 from a peek, or an error such as a reset).
std::optional<std::string_view> unasked_in_socket(upstream_link& l) noexcept
{
    char c = 0;
    ssize_t const n = ::recv(l.sock.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) return unasked_reply;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return std::nullopt;
    return upstream_closed;
}

// Nothing has arrived on an idle connection: no reply nobody asked for (it
// would be read as the answer to our next MAIL, and every reply after it
// as the one before's), no 421 of an upstream timing us out, no close.
bool quiet(upstream_link& l) noexcept { return !unasked_in_socket(l); }
}  // namespace

upstream_pool::~upstream_pool() { close_all(); }

namespace {
// An idle connection in clear from another I/O thread moves to `home`: used
// where it is, each of its steps (a write, the reply) would pass through its
// own thread, a post and a wake-up there and back per step; moving it takes
// an epoll_ctl(2) out of that thread's epoll set and one into this one's.
// Under TLS it stays where it is: Asio's SSL stream keeps timers of its own
// thread. false: the socket is gone (closed here).
bool rehome(upstream_link& l, asio::any_io_executor const& home)
{
    if (l.tls) return true;
    boost::system::error_code ec;
    tcp::socket moved(home);  // before release(): nothing can throw once the fd is out
    auto const fd = l.sock.release(ec);
    if (ec) return l.sock.is_open();  // still usable where it is
    moved.assign(l.protocol, fd, ec);
    if (ec) {
        ::close(fd);
        return false;
    }
    l.sock = std::move(moved);
    return true;
}
}  // namespace

std::unique_ptr<upstream_link> upstream_pool::take(std::string const& key,
                                                   std::chrono::steady_clock::duration max_idle_time,
                                                   asio::any_io_executor const& home)
{
    auto const* home_context = &asio::query(home, asio::execution::context);
    bool foreign = false;
    std::vector<std::unique_ptr<upstream_link>> stale;
    std::unique_ptr<upstream_link> found;
    {
        std::lock_guard lock(mutex_);
        stale = take_stale_locked(max_idle_time);
        // The most recent one on the caller's own I/O thread, else the most
        // recent one (moved to this thread below).
        auto pick = idle_.rend();
        for (auto it = idle_.rbegin(); it != idle_.rend(); ++it) {
            if ((*it)->key != key) continue;
            if (pick == idle_.rend()) pick = it;
            if (&asio::query((*it)->sock.get_executor(), asio::execution::context) == home_context) {
                pick = it;
                break;
            }
        }
        if (pick != idle_.rend()) {
            found = std::move(*pick);
            idle_.erase(std::next(pick).base());
            foreign = &asio::query(found->sock.get_executor(), asio::execution::context) != home_context;
        }
    }
    for (auto& l : stale) quit_and_close(*l);
    if (found && !quiet(*found)) {
        spdlog::info("upstream idle connection closed: the upstream sent something or closed it meanwhile "
                     "upstream={}",
                     log::field(host_port_of(found->key)));
        io::close_now(found->sock);  // out of step: no QUIT either
        found.reset();
    }
    if (found) found->moved = foreign && !found->tls;
    if (found && foreign && !rehome(*found, home)) found.reset();
    return found;
}

std::vector<std::unique_ptr<upstream_link>>
upstream_pool::take_stale_locked(std::chrono::steady_clock::duration max_idle_time)
{
    auto const now = std::chrono::steady_clock::now();
    std::vector<std::unique_ptr<upstream_link>> stale, keep;
    for (auto& l : idle_) {
        if (now - l->idle_since >= max_idle_time || !l->sock.is_open())
            stale.push_back(std::move(l));
        else
            keep.push_back(std::move(l));
    }
    idle_ = std::move(keep);
    return stale;
}

void upstream_pool::expire(std::chrono::steady_clock::duration max_idle_time)
{
    std::vector<std::unique_ptr<upstream_link>> stale;
    {
        std::lock_guard lock(mutex_);
        stale = take_stale_locked(max_idle_time);
    }
    for (auto& l : stale) quit_and_close(*l);
}

void upstream_pool::put(std::unique_ptr<upstream_link> link)
{
    std::unique_ptr<upstream_link> oldest;
    {
        std::lock_guard lock(mutex_);
        if (idle_.size() >= max_idle) {
            oldest = std::move(idle_.front());
            idle_.erase(idle_.begin());
        }
        idle_.push_back(std::move(link));
    }
    if (oldest) quit_and_close(*oldest);
}

namespace {

// What verification trusts: the mode, and with "verify" the CA file as it
// is now (a new CRL or CA in place counts at once).
std::string trust_key(config::settings const& s)
{
    std::string key = std::to_string(static_cast<int>(s.upstream_starttls));
    if (s.upstream_starttls == config::upstream_tls::verify) {
        key += "|" + s.upstream_ca_file.string();
        struct stat st {};
        if (!s.upstream_ca_file.empty() && ::stat(s.upstream_ca_file.c_str(), &st) == 0)
            key += "|" + std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec) + "|" +
                   std::to_string(st.st_size);
    }
    return key;
}

}  // namespace

std::shared_ptr<asio::ssl::context> upstream_pool::client_tls(config::settings const& s)
{
    std::string key = trust_key(s);
    std::unique_lock lock(mutex_);
    if (client_tls_ && key == client_tls_key_) return client_tls_;
    client_tls_ = io::make_client_tls(s);  // throws: nothing cached, the next connection tries again
    client_tls_key_ = std::move(key);
    auto ctx = client_tls_;
    lock.unlock();
    // The file changed: say so once if it holds a CRL that refuses
    // everything it covers (read again outside the pool's lock).
    for (auto const& why : io::expired_crls(s)) spdlog::error("upstream tls: {}", why);
    return ctx;
}

void upstream_pool::tls_failed(std::string const& upstream)
{
    std::lock_guard lock(mutex_);
    if (tls_failed_until_.size() > 16) tls_failed_until_.clear();  // one upstream, or a few across reloads
    tls_failed_until_[upstream] = std::chrono::steady_clock::now() + tls_fallback_time;
}

bool upstream_pool::tls_recently_failed(std::string const& upstream) const
{
    std::lock_guard lock(mutex_);
    auto const it = tls_failed_until_.find(upstream);
    return it != tls_failed_until_.end() && std::chrono::steady_clock::now() < it->second;
}

void upstream_pool::close_all()
{
    std::vector<std::unique_ptr<upstream_link>> all;
    {
        std::lock_guard lock(mutex_);
        all.swap(idle_);
    }
    for (auto& l : all) quit_and_close(*l);
}

// ------------------------------------------------------------------ client

smtp_client::smtp_client(asio::any_io_executor ex, config::settings const& s, std::string sid, upstream_pool& pool)
    : ex_(ex), s_(s), sid_(std::move(sid)), pool_(pool), deadline_(ex)
{
}

smtp_client::~smtp_client() { abort(); }

void smtp_client::abort() noexcept
{
    if (link_ && link_->sock.is_open()) io::close_now(link_->sock);
}

bool smtp_client::takes_8bit() const noexcept { return link_ && offers(link_->extensions, "8BITMIME"); }

std::string smtp_client::pool_key() const
{
    // Everything a kept connection was opened (and verified) under: a reload
    // that changes any of it, or a CA file rewritten in place (a new CRL),
    // does not reuse connections made before.
    return s_.upstream_host + "|" + std::to_string(s_.upstream_port) + "|" + trust_key(s_) + "|" +
           s_.upstream_tls_name + "|" + s_.upstream_user + "|" + s_.hostname;
}

// One operation on the link's socket (connect, TLS handshake, write, read),
// bounded by relay.upstream_timeout (the reply to the final dot by
// relay.upstream_data_done_timeout): deadline_ closes the socket when it runs
// over, which ends the operation whatever stream (TLS or not) runs it.
template <class T>
asio::awaitable<std::optional<T>> smtp_client::timed(asio::awaitable<T> op)
{
    struct stop_on_exit {  // also when op throws: the link may be pooled or freed next
        io::op_deadline& d;
        ~stop_on_exit() { d.stop(); }
    };
    deadline_.start(link_->sock, awaiting_dot_ ? s_.upstream_data_done_timeout : s_.upstream_timeout);
    stop_on_exit guard{deadline_};
    auto result = co_await std::move(op);
    if (deadline_.stop()) co_return std::nullopt;
    co_return result;
}

upstream_verdict smtp_client::broken(std::string why)
{
    abort();
    return upstream_unavailable(std::move(why));
}

asio::awaitable<bool> smtp_client::write(std::string_view data)
{
    if (!link_ || !link_->sock.is_open()) co_return false;
    std::optional<std::tuple<boost::system::error_code, std::size_t>> r;
    if (link_->tls) {
        r = co_await timed(asio::async_write(*link_->tls, asio::buffer(data), asio::as_tuple(asio::use_awaitable)));
        co_return r && !std::get<0>(*r);
    }
    // In clear, what fits in the socket's send buffer (nearly always all of
    // it) goes at once: the deadline and an asynchronous write are needed
    // only for what has to wait for the upstream to read.
    boost::system::error_code ec;
    auto const sent = io::write_nowait(link_->sock, asio::buffer(data), ec);
    if (ec) co_return false;
    if (sent == data.size()) co_return true;
    data.remove_prefix(sent);
    r = co_await timed(asio::async_write(link_->sock, asio::buffer(data), asio::as_tuple(asio::use_awaitable)));
    co_return r && !std::get<0>(*r);
}

asio::awaitable<std::optional<std::string>> smtp_client::read_line()
{
    // A line longer than we keep is cut, not a broken upstream: Postfix
    // echoes a refused address in its reply, and an address may be as long
    // as a command line (RFC 5321 4.5.3.1 asks for no limit). Its first
    // `keep` octets are the line; the rest is read and dropped, up to
    // `most` octets in all.
    constexpr std::size_t keep = proto::smtp_max_reply_line * 4 - 2;  // the reply parser's bound, less CRLF
    constexpr std::size_t most = 1 << 20;
    auto& buf = link_->buf;
    std::optional<std::string> head;  // once cut
    std::size_t dropped = 0;
    for (;;) {
        auto const lf = buf.find("\r\n");
        if (lf != std::string::npos) {
            std::string line = head ? std::move(*head) : buf.substr(0, std::min(lf, keep));
            buf.erase(0, lf + 2);
            co_return line;
        }
        if (buf.size() > keep) {
            if (!head) head = buf.substr(0, keep);
            dropped += buf.size() - 1;
            buf.erase(0, buf.size() - 1);  // a last '\r' may begin the CRLF
            if (dropped > most) co_return std::nullopt;
        }
        if (!link_->sock.is_open()) co_return std::nullopt;
        char chunk[4096];
        std::optional<std::tuple<boost::system::error_code, std::size_t>> r;
        if (link_->tls)
            r = co_await timed(link_->tls->async_read_some(asio::buffer(chunk), asio::as_tuple(asio::use_awaitable)));
        else
            r = co_await timed(link_->sock.async_read_some(asio::buffer(chunk), asio::as_tuple(asio::use_awaitable)));
        if (!r || std::get<0>(*r)) co_return std::nullopt;
        buf.append(chunk, std::get<1>(*r));
    }
}

asio::awaitable<std::optional<proto::smtp_reply>> smtp_client::read_reply()
{
    // Lenient about the upstream's line length (some MTAs send long EHLO
    // lines); strict about everything else.
    proto::reply_parser p(proto::smtp_max_reply_line * 4);
    for (;;) {
        auto line = co_await read_line();
        if (!line) co_return std::nullopt;
        switch (p.feed(*line)) {
        case proto::reply_parser::status::more: continue;
        case proto::reply_parser::status::done: co_return p.reply();
        case proto::reply_parser::status::error: co_return std::nullopt;
        }
    }
}

// One command and its reply. 2xx/3xx as expected: ok. A 4xx other than 421:
// temporary, passed on as a 5xx is. A 421, a broken reply or a lost
// connection: temporary (451 4.4.1). A 5xx: permanent, passed on. Any
// refusal closes the connection.
asio::awaitable<upstream_verdict> smtp_client::command(std::string const& line, int expect_class,
                                                       std::string_view what, std::string_view client_prefix)
{
    if (auto const why = out_of_step()) co_return broken(std::string(what) + ": " + std::string(*why));
    if (!co_await write(line)) co_return broken(std::string(what) + ": write failed");
    auto r = co_await read_reply();
    co_return judge(r, expect_class, what, client_prefix);
}

std::optional<std::string_view> smtp_client::out_of_step()
{
    if (!is_open()) return std::nullopt;  // the write fails and says so
    if (!link_->buf.empty()) return unasked_reply;
    if (!link_->tls) return unasked_in_socket(*link_);
    // Under TLS not every byte is a reply: a session ticket (right after the
    // handshake, or later), a KeyUpdate (RFC 8446 §4.6.3). What has come,
    // in the socket, in the TLS stream's BIO (two records in one segment)
    // or in a record being read, is given to OpenSSL without waiting; only
    // application data is out of step.
    SSL* ssl = link_->tls->native_handle();
    if (SSL_pending(ssl) == 0 && BIO_ctrl_pending(SSL_get_rbio(ssl)) == 0 && quiet(*link_)) return std::nullopt;
    boost::system::error_code ec;
    link_->sock.non_blocking(true, ec);
    char chunk[4096];
    std::size_t const n = ec ? 0 : link_->tls->read_some(asio::buffer(chunk), ec);
    boost::system::error_code restored;
    link_->sock.non_blocking(false, restored);
    if (n > 0) {
        link_->buf.append(chunk, n);
        return unasked_reply;
    }
    // would_block with nothing left over: only TLS's own records had come.
    // A record begun and not complete may be a reply: out of step (a
    // KeyUpdate cut in two costs a 451 now and then; a reply taken for the
    // next command's would cost a message). Anything else (a close_notify,
    // a FIN, an alert) ends the connection: not a reply to wait for either.
    if (ec != asio::error::would_block) return upstream_closed;
    if (SSL_has_pending(ssl) == 1 || BIO_ctrl_pending(SSL_get_rbio(ssl)) > 0) return unasked_reply;
    return std::nullopt;
}

upstream_verdict smtp_client::judge(std::optional<proto::smtp_reply> const& r, int expect_class,
                                    std::string_view what, std::string_view client_prefix)
{
    if (!r) return broken(std::string(what) + ": no valid reply");
    upstream_verdict v;
    // Logged as the value of one field: no " key=" of its own.
    v.log = std::string(what) + ": " + std::to_string(r->code) + " " + joined(*r);
    v.said = joined(*r);
    int const cls = proto::reply_class(r->code);
    if (cls == expect_class) {
        v.what = upstream_verdict::kind::ok;
        v.code = r->code;
        v.enhanced = r->enhanced;
        v.text = quoted(*r);
        return v;
    }
    // The upstream's own temporary refusal (452 storage, 451 a milter, 450
    // greylisting at MAIL) is its verdict, as a 5xx is: the client reads
    // the upstream's reason, not "unavailable".
    if (cls == 5 || (cls == 4 && r->code != 421)) {
        abort();
        v.what = cls == 5 ? upstream_verdict::kind::permanent : upstream_verdict::kind::temporary;
        v.code = r->code;
        v.enhanced = enhanced_or_generic(*r);
        v.text = std::string(client_prefix) + "Error: upstream refused: " + quoted(*r);
        return v;
    }
    return broken(v.log);  // its log names the step and the upstream's code
}

asio::awaitable<bool> smtp_client::ehlo(std::vector<std::string>& ext)
{
    std::string const line = "EHLO " + s_.hostname + "\r\n";
    if (out_of_step() || !co_await write(line)) co_return false;
    auto r = co_await read_reply();
    if (!r) co_return false;
    ext.clear();
    if (proto::reply_class(r->code) == 5) {
        // RFC 5321 §3.2: an old server that does not know EHLO is greeted
        // with HELO, and offers no extension.
        if (out_of_step() || !co_await write("HELO " + s_.hostname + "\r\n")) co_return false;
        r = co_await read_reply();
        co_return r && proto::reply_class(r->code) == 2;
    }
    if (proto::reply_class(r->code) != 2) co_return false;
    for (std::size_t i = 1; i < r->lines.size(); ++i) ext.push_back(upper(r->lines[i]));
    co_return true;
}

// A fresh connection: connect, greeting, EHLO, STARTTLS, EHLO again, AUTH.
// ok: ready for MAIL. `use` skip: no STARTTLS even if offered (the clear
// fallback of opportunistic TLS).
asio::awaitable<smtp_client::connected> smtp_client::connect(std::string key, starttls_use use)
{
    link_ = std::make_unique<upstream_link>(ex_);
    link_->key = std::move(key);
    auto endpoints = cached_endpoints(s_.upstream_host, s_.upstream_port);
    if (endpoints.empty()) {
        // Not an operation on the socket, so closing it would not end the
        // lookup: raced against its own timer instead, which turns a slow
        // answer into "resolve failed". It does not bound a lookup that
        // hangs: Asio runs getaddrinfo() on a thread nothing can cancel, and
        // the race ends only when both have. That wait is the system
        // resolver's own timeout (resolv.conf); an address as
        // relay.upstream_host needs no lookup, and names are cached a minute.
        tcp::resolver resolver(ex_);
        asio::steady_timer timer(ex_, s_.upstream_timeout);
        auto res = co_await (resolver.async_resolve(s_.upstream_host, std::to_string(s_.upstream_port),
                                                    tcp::resolver::numeric_service, asio::as_tuple(asio::use_awaitable)) ||
                             timer.async_wait(asio::as_tuple(asio::use_awaitable)));
        if (res.index() != 0 || std::get<0>(std::get<0>(res)) || std::get<1>(std::get<0>(res)).empty())
            co_return connected{broken("resolve " + s_.upstream_host + " failed")};
        auto const& found = std::get<1>(std::get<0>(res));
        for (auto const& e : found) endpoints.push_back(e.endpoint());
        remember_endpoints(s_.upstream_host, s_.upstream_port, endpoints);
    }
    auto& sock = link_->sock;
    // Each address in turn, each with its own upstream_timeout (Postfix's
    // smtp_connect_timeout is per address too): a name whose first address
    // is unreachable (a broken IPv6 route) still reaches the second. One
    // deadline over the range ended it at the first, which closed the socket.
    std::string connect_error = "no address";
    bool up = false;
    for (auto const& ep : endpoints) {
        boost::system::error_code ignored;
        sock.close(ignored);
        auto const conn = co_await timed(sock.async_connect(ep, asio::as_tuple(asio::use_awaitable)));
        if (conn && !std::get<0>(*conn)) {
            link_->protocol = ep.protocol();
            up = true;
            break;
        }
        connect_error =
            ep.address().to_string() + ": " + (conn ? std::get<0>(*conn).message() : std::string("timeout"));
        spdlog::debug("sid={} upstream connect failed upstream={} detail={}", sid_,
                      log::field(s_.upstream_host + ":" + std::to_string(s_.upstream_port)), log::field(connect_error));
    }
    if (!up)
        co_return connected{broken("connect " + s_.upstream_host + ":" + std::to_string(s_.upstream_port) +
                                   " failed: " + connect_error)};
    boost::system::error_code ignored;
    sock.set_option(tcp::no_delay(true), ignored);

    auto greet = co_await read_reply();
    if (!greet) co_return connected{broken("greeting: none")};
    if (proto::reply_class(greet->code) != 2)
        co_return connected{broken("greeting " + std::to_string(greet->code))};

    // --- EHLO (and again after STARTTLS)
    auto& ext = link_->extensions;
    if (!co_await ehlo(ext)) co_return connected{broken("EHLO refused")};

    if (s_.upstream_starttls != config::upstream_tls::none && use == starttls_use::as_configured) {
        if (offers(ext, "STARTTLS")) {
            // From here on a failure is a failure of TLS with this upstream:
            // begin() falls back to clear for "opportunistic".
            std::string const line = "STARTTLS\r\n";
            auto v = co_await command(line, 2, "STARTTLS");
            if (v.what != upstream_verdict::kind::ok) co_return connected{broken(v.log), true};
            if (!link_->buf.empty()) co_return connected{broken("STARTTLS: bytes pipelined after the 220"), true};
            try {
                link_->tls_ctx = pool_.client_tls(s_);
            } catch (std::exception const& e) {
                co_return connected{broken(e.what()), true};
            }
            link_->tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(sock, *link_->tls_ctx);
            if (!io::set_upstream_name(link_->tls->native_handle(), s_))
                co_return connected{broken("relay.upstream_tls_name: OpenSSL refused the name"), true};
            auto hs = co_await timed(
                link_->tls->async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable)));
            if (!hs || std::get<0>(*hs)) {
                auto why = hs ? std::get<0>(*hs).message() : std::string("timeout");
                // Why the certificate was refused, in OpenSSL's words
                // ("unable to get local issuer certificate", "hostname mismatch").
                long const verified = SSL_get_verify_result(link_->tls->native_handle());
                if (hs && verified != X509_V_OK)
                    why = std::string("certificate not verified: ") + X509_verify_cert_error_string(verified);
                co_return connected{broken("TLS handshake with upstream failed: " + why), true};
            }
            if (!co_await ehlo(ext)) co_return connected{broken("EHLO after STARTTLS refused"), true};
            link_->tls_note = s_.upstream_starttls == config::upstream_tls::verify ? "verified" : "yes";
        } else if (s_.upstream_starttls != config::upstream_tls::opportunistic) {
            co_return connected{broken("upstream does not offer STARTTLS and relay.upstream_starttls = " +
                                       std::string(s_.upstream_starttls == config::upstream_tls::verify ? "verify"
                                                                                                        : "required"))};
        }
    }

    if (!s_.upstream_user.empty()) {
        // The password never crosses the network in clear unless the
        // administrator said so: not when STARTTLS was not offered (an
        // attacker on the path can strip it), nor after it failed.
        if (!link_->tls && auth_needs_tls())
            co_return connected{broken("upstream connection not encrypted: AUTH as relay.upstream_user refused "
                                       "in clear (relay.upstream_auth_in_clear = false)")};
        std::ifstream f(s_.upstream_password_file);
        std::string password;
        if (!f || !std::getline(f, password))
            co_return connected{broken("cannot read relay.upstream_password_file")};
        if (!password.empty() && password.back() == '\r') password.pop_back();
        std::string plain;
        plain.push_back('\0');
        plain += s_.upstream_user;
        plain.push_back('\0');
        plain += password;
        // Never logged: command() logs only the reply.
        std::string const line = "AUTH PLAIN " + proto::base64_encode(plain) + "\r\n";
        auto v = co_await command(line, 2, "AUTH");
        if (v.what != upstream_verdict::kind::ok) co_return connected{broken("upstream AUTH failed: " + v.log)};
    }
    upstream_verdict ok;
    ok.what = upstream_verdict::kind::ok;
    co_return connected{ok};
}

// MAIL FROM on the connection in link_. Any failure closes the connection
// (command()), and the pipelined RCPT's reply with it.
asio::awaitable<upstream_verdict> smtp_client::mail(upstream_envelope const& env, std::string const& first_rcpt)
{
    auto const& ext = link_->extensions;
    std::string line = "MAIL FROM:<" + env.mail_from + ">";
    if (env.size && offers(ext, "SIZE")) line += " SIZE=" + std::to_string(*env.size);
    if (env.eight_bit && offers(ext, "8BITMIME")) line += " BODY=8BITMIME";
    line += "\r\n";
    rcpt_sent_ = offers(ext, "PIPELINING");
    if (rcpt_sent_) line += "RCPT TO:<" + first_rcpt + ">\r\n";
    auto v = co_await command(line, 2, "MAIL");
    co_return v;
}

// A connection ready for RCPT: a kept one or a fresh one, MAIL taken.
asio::awaitable<upstream_verdict> smtp_client::begin(upstream_envelope const& env, std::string const& first_rcpt,
                                                     bool may_reuse)
{
    auto key = pool_key();
    kept_ = false;
    if (may_reuse && s_.upstream_reuse_time.count() > 0) link_ = pool_.take(key, s_.upstream_reuse_time, ex_);
    if (link_) {
        auto v = co_await mail(env, first_rcpt);
        // A kept connection that is gone (the upstream timed it out, closed
        // it, says 421) costs nothing: MAIL is the first thing it carries for
        // this transaction, so it goes on a fresh connection, which gives the
        // verdict on any temporary failure. A 5xx is the upstream's verdict
        // on this sender.
        bool const dead = v.what == upstream_verdict::kind::temporary;
        if (!dead) {
            kept_ = true;
            co_return v;
        }
        spdlog::debug("sid={} upstream kept connection unusable, reconnecting detail={}", sid_, log::field(v.log, 200));
        link_.reset();  // broken() closed it already
    }
    // Opportunistic TLS as an opportunistic client does it (Postfix's "may"):
    // a STARTTLS that fails costs this transaction a second connection in
    // clear, not a 451 that would come back for every message until the
    // upstream is fixed; the failure is remembered so that the next ones do
    // not pay for a doomed handshake first. "required" never falls back.
    // With AUTH that may not go in clear there is nothing to fall back to.
    bool const opportunistic = s_.upstream_starttls == config::upstream_tls::opportunistic && !auth_needs_tls();
    auto const upstream = s_.upstream_host + ":" + std::to_string(s_.upstream_port);
    bool const skip_tls = opportunistic && pool_.tls_recently_failed(upstream);
    auto const first_use = skip_tls ? starttls_use::skip : starttls_use::as_configured;
    auto c = co_await connect(key, first_use);
    bool const fell_back = c.starttls_failed && opportunistic;
    if (fell_back) {
        pool_.tls_failed(upstream);
        spdlog::warn("sid={} upstream STARTTLS failed, relaying in clear on a new connection and without TLS "
                     "for {} s upstream={} detail={}",
                     sid_, upstream_pool::tls_fallback_time.count(), log::field(upstream),
                     log::field(c.verdict.log, 200));
        link_.reset();  // broken() closed it already
        c = co_await connect(key, starttls_use::skip);
    }
    if (c.verdict.what != upstream_verdict::kind::ok) co_return c.verdict;
    if (skip_tls || fell_back) link_->tls_note = "fallback";
    auto v = co_await mail(env, first_rcpt);
    co_return v;
}

namespace {
// popgate_upstream_results_total, and popgate_upstream_seconds when the
// upstream was asked (not a recipient of a transaction that failed before).
void count_upstream(std::string_view step, upstream_verdict const& v, std::chrono::steady_clock::time_point asked)
{
    static constexpr std::string_view kinds[] = {"ok", "temporary", "permanent"};
    metrics::upstream_results.with({step, kinds[static_cast<int>(v.what)]}).inc();
    if (asked != std::chrono::steady_clock::time_point{})
        metrics::upstream_seconds.with({step}).observe(
            std::chrono::duration<double>(std::chrono::steady_clock::now() - asked).count());
}
}  // namespace

asio::awaitable<upstream_verdict> smtp_client::recipient(upstream_envelope const& env, std::string const& rcpt)
{
    auto const asked = txn_ == txn::failed ? std::chrono::steady_clock::time_point{} : std::chrono::steady_clock::now();
    auto v = co_await ask_recipient(env, rcpt);
    count_upstream("rcpt", v, asked);
    co_return v;
}

asio::awaitable<upstream_verdict> smtp_client::ask_recipient(upstream_envelope const& env, std::string const& rcpt,
                                                             bool fresh_only)
{
    std::string const prefix = "<" + rcpt + ">: ";
    bool sent = false;  // this RCPT went with MAIL
    bool const opened_here = txn_ == txn::none;
    if (opened_here) {
        auto v = co_await begin(env, rcpt, !fresh_only);
        sent = rcpt_sent_;
        if (v.what == upstream_verdict::kind::ok) {
            txn_ = txn::open;
            spdlog::debug("sid={} upstream transaction open detail={}{}", sid_, log::field(v.log, 200),
                          !kept_ ? "" : link_->moved ? " reused=yes moved=yes" : " reused=yes");
        } else {
            txn_ = txn::failed;
            failure_ = std::move(v);
        }
    }
    if (txn_ == txn::open) {
        std::string const line = "RCPT TO:<" + rcpt + ">\r\n";
        std::optional<proto::smtp_reply> r;
        bool written = sent;
        auto const early = sent ? std::nullopt : out_of_step();
        if (!sent && !early) written = co_await write(line);
        if (written) r = co_await read_reply();
        int const code = r ? r->code : 0;
        int const cls = proto::reply_class(code);
        if (cls == 2) {
            ++accepted_;
            upstream_verdict v;
            v.what = upstream_verdict::kind::ok;
            v.code = code;
            v.enhanced = r->enhanced;
            v.log = joined(*r);  // the caller logs it as a field
            co_return v;
        }
        if ((cls == 4 || cls == 5) && code != 421) {
            // This recipient only: the transaction goes on (RFC 5321 §3.3:
            // a refused RCPT leaves the others and the transaction as they are).
            upstream_verdict v;
            v.what = cls == 5 ? upstream_verdict::kind::permanent : upstream_verdict::kind::temporary;
            v.code = code;
            v.enhanced = enhanced_or_generic(*r);
            v.text = prefix + "Error: upstream refused: " + quoted(*r);
            v.log = joined(*r);  // the caller logs it as a field
            co_return v;
        }
        // Gone, 421 (closing), a 3xx or a reply that does not parse: the
        // transaction cannot be trusted any more. On a kept connection
        // whose MAIL went with this first RCPT (PIPELINING), that is the
        // kept connection dying, as a 421 to MAIL is: nothing was taken,
        // so the transaction starts again on a fresh one.
        if (opened_here && kept_ && accepted_ == 0) {
            spdlog::debug("sid={} upstream kept connection lost at the first RCPT, reconnecting detail={}", sid_,
                          log::field(r ? joined(*r) : std::string("no reply")));
            abort();
            link_.reset();
            txn_ = txn::none;
            co_return co_await ask_recipient(env, rcpt, true);
        }
        txn_ = txn::failed;
        failure_ = broken(r       ? "RCPT: " + std::to_string(code) + " " + joined(*r)
                          : early ? "RCPT: " + std::string(*early)
                                  : std::string(written ? "RCPT: no valid reply" : "RCPT: write failed"));
    }
    auto v = failure_;
    v.text = prefix + v.text;
    co_return v;
}

asio::awaitable<upstream_verdict> smtp_client::data()
{
    if (txn_ != txn::open || accepted_ == 0) {
        // Not reached from the session (a relayed recipient in the client's
        // transaction was taken here); a failed transaction says why.
        auto v = txn_ == txn::failed ? failure_ : broken("DATA without an upstream recipient");
        co_return v;
    }
    std::string const line = "DATA\r\n";
    auto v = co_await command(line, 3, "DATA");
    if (v.what != upstream_verdict::kind::ok) {
        txn_ = txn::failed;
        failure_ = v;
    } else {
        txn_ = txn::data;  // from here only the end of data or a closed connection ends it
    }
    co_return v;
}

// After a message or a RSET: kept idle for the next transaction unless reuse
// is off, the connection has carried its share, or the upstream sent more
// than we asked for; otherwise a polite QUIT.
asio::awaitable<void> smtp_client::keep_or_quit()
{
    txn_ = txn::none;
    accepted_ = 0;
    if (!is_open()) co_return;
    if (s_.upstream_reuse_time.count() > 0 && link_->messages < upstream_pool::max_messages &&
        link_->buf.empty()) {
        link_->idle_since = std::chrono::steady_clock::now();
        pool_.put(std::move(link_));
        co_return;
    }
    // The verdict is already in hand, so a failure here changes nothing, and
    // the client's reply does not wait for the upstream's 221: QUIT goes out
    // and the connection is closed.
    std::string const quit = "QUIT\r\n";
    co_await write(quit);
    abort();
}

asio::awaitable<void> smtp_client::release()
{
    if (txn_ != txn::open || !is_open()) {
        txn_ = txn::none;
        accepted_ = 0;
        abort();
        co_return;
    }
    std::string const rset = "RSET\r\n";
    auto const v = co_await command(rset, 2, "RSET");
    if (v.what != upstream_verdict::kind::ok) {
        // command() closed the connection: the upstream drops the transaction.
        spdlog::debug("sid={} upstream transaction dropped detail={}", sid_, log::field(v.log, 200));
        txn_ = txn::none;
        accepted_ = 0;
        co_return;
    }
    spdlog::debug("sid={} upstream transaction reset ({} recipients taken)", sid_, accepted_);
    co_await keep_or_quit();
}

asio::awaitable<bool> smtp_client::send(std::string_view stuffed)
{
    if (stuffed.empty()) co_return is_open();
    co_return co_await write(stuffed);
}

asio::awaitable<upstream_verdict> smtp_client::finish()
{
    std::string const dot = ".\r\n";
    auto const tls_note = link_ ? link_->tls_note : std::string("no");
    auto const asked = std::chrono::steady_clock::now();
    // RFC 5321 §4.5.3.2.6: the reply to the dot may take minutes (a
    // before-queue filter); giving up sooner, after the upstream may have
    // queued the message, makes the client send it again.
    awaiting_dot_ = true;
    upstream_verdict v;
    if (auto const why = out_of_step(); why == upstream_closed) {
        v = broken("end of data: " + std::string(*why));
        abort();
    } else if (why) {
        // A reply before the dot: an upstream that refuses in the middle of
        // the body (552, too big) is passed on; a 2xx answers nothing sent
        // yet, and is never taken for the verdict on this message.
        auto r = co_await read_reply();
        v = r && proto::reply_class(r->code) == 2
                ? broken("end of data: a " + std::to_string(r->code) + " reply before it was sent")
                : judge(r, 2, "before the end of data", {});
        abort();
    } else {
        v = co_await command(dot, 2, "end of data");
    }
    awaiting_dot_ = false;
    count_upstream("message", v, asked);
    v.tls = tls_note;
    if (v.what == upstream_verdict::kind::ok) {
        ++link_->messages;
        co_await keep_or_quit();
    }
    txn_ = txn::none;
    accepted_ = 0;
    co_return v;
}

}  // namespace popgate::relay
