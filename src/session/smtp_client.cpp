#include "popgate/session/smtp_client.hpp"

#include "popgate/log/log.hpp"
#include "popgate/proto/sasl.hpp"
#include "popgate/session/tls.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>

#include <fstream>
#include <sstream>

namespace popgate::session {

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

}  // namespace

smtp_client::smtp_client(asio::any_io_executor ex, config::settings const& s, std::string sid)
    : ex_(ex), s_(s), sid_(std::move(sid)), sock_(ex)
{
}

smtp_client::~smtp_client() { abort(); }

void smtp_client::abort() noexcept
{
    boost::system::error_code ignored;
    if (sock_.is_open()) {
        sock_.shutdown(tcp::socket::shutdown_both, ignored);
        sock_.close(ignored);
    }
}

// Races one operation against the deadline; the watchdog closes the socket when
// it passes, which ends the operation whatever stream (TLS or not) runs it.
template <class T>
asio::awaitable<std::optional<T>> smtp_client::timed(asio::awaitable<T> op)
{
    clock_.expired = false;
    clock_.arm(s_.upstream_timeout);
    auto r = co_await (std::move(op) || watchdog(sock_, clock_));
    if (r.index() != 0 || clock_.expired) co_return std::nullopt;
    co_return std::get<0>(std::move(r));
}

upstream_verdict smtp_client::broken(std::string why)
{
    abort();
    upstream_verdict v;
    v.what = upstream_verdict::kind::temporary;
    v.code = 451;
    v.enhanced = "4.4.1";
    v.text = "Error: upstream mail server unavailable, try again later";
    v.log = std::move(why);
    return v;
}

asio::awaitable<bool> smtp_client::write(std::string_view data)
{
    if (!sock_.is_open()) co_return false;
    std::optional<std::tuple<boost::system::error_code, std::size_t>> r;
    if (tls_)
        r = co_await timed(asio::async_write(*tls_, asio::buffer(data), asio::as_tuple(asio::use_awaitable)));
    else
        r = co_await timed(asio::async_write(sock_, asio::buffer(data), asio::as_tuple(asio::use_awaitable)));
    co_return r && !std::get<0>(*r);
}

asio::awaitable<std::optional<std::string>> smtp_client::read_line()
{
    for (;;) {
        auto const lf = buf_.find("\r\n");
        if (lf != std::string::npos) {
            std::string line = buf_.substr(0, lf);
            buf_.erase(0, lf + 2);
            co_return line;
        }
        if (buf_.size() > proto::smtp_max_reply_line * 4 || !sock_.is_open()) co_return std::nullopt;
        char chunk[4096];
        std::optional<std::tuple<boost::system::error_code, std::size_t>> r;
        if (tls_)
            r = co_await timed(tls_->async_read_some(asio::buffer(chunk), asio::as_tuple(asio::use_awaitable)));
        else
            r = co_await timed(sock_.async_read_some(asio::buffer(chunk), asio::as_tuple(asio::use_awaitable)));
        if (!r || std::get<0>(*r)) co_return std::nullopt;
        buf_.append(chunk, std::get<1>(*r));
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

// One command and its reply. 2xx/3xx as expected: ok. A 4xx, a broken reply or
// a lost connection: temporary (451 4.4.1). A 5xx: permanent, passed on.
asio::awaitable<upstream_verdict> smtp_client::command(std::string const& line, int expect_class,
                                                       std::string_view what, std::string_view client_prefix)
{
    if (!co_await write(line)) co_return broken(std::string(what) + ": write failed");
    auto r = co_await read_reply();
    if (!r) co_return broken(std::string(what) + ": no valid reply");
    upstream_verdict v;
    v.log = std::string(what) + " reply=" + std::to_string(r->code) + " " + log::escape(joined(*r));
    int const cls = proto::reply_class(r->code);
    if (cls == expect_class) {
        v.what = upstream_verdict::kind::ok;
        v.code = r->code;
        v.enhanced = r->enhanced;
        v.text = joined(*r);
        co_return v;
    }
    if (cls == 5) {
        abort();
        v.what = upstream_verdict::kind::permanent;
        v.code = r->code;
        v.enhanced = r->enhanced.empty() ? "5.0.0" : r->enhanced;
        v.text = std::string(client_prefix) + "Error: upstream refused: " + joined(*r);
        co_return v;
    }
    auto b = broken(v.log);
    co_return b;
}

asio::awaitable<bool> smtp_client::ehlo(std::vector<std::string>& ext)
{
    std::string const line = "EHLO " + s_.hostname + "\r\n";
    if (!co_await write(line)) co_return false;
    auto r = co_await read_reply();
    if (!r || proto::reply_class(r->code) != 2) co_return false;
    ext.clear();
    for (std::size_t i = 1; i < r->lines.size(); ++i) ext.push_back(upper(r->lines[i]));
    co_return true;
}

asio::awaitable<upstream_verdict> smtp_client::open(upstream_envelope const& env)
{
    // --- connect
    tcp::resolver resolver(ex_);
    std::string const port = std::to_string(s_.upstream_port);
    auto res = co_await timed(resolver.async_resolve(s_.upstream_host, port, asio::as_tuple(asio::use_awaitable)));
    if (!res || std::get<0>(*res)) co_return broken("resolve " + s_.upstream_host + " failed");
    sock_ = tcp::socket(ex_);
    sock_.open(std::get<1>(*res).begin()->endpoint().protocol());
    auto conn = co_await timed(asio::async_connect(sock_, std::get<1>(*res), asio::as_tuple(asio::use_awaitable)));
    if (!conn || std::get<0>(*conn)) {
        auto const why = conn ? std::get<0>(*conn).message() : std::string("timeout");
        co_return broken("connect " + s_.upstream_host + ":" + std::to_string(s_.upstream_port) + " failed: " + why);
    }
    boost::system::error_code ignored;
    sock_.set_option(tcp::no_delay(true), ignored);

    auto greet = co_await read_reply();
    if (!greet) co_return broken("greeting: none");
    if (proto::reply_class(greet->code) != 2) co_return broken("greeting " + std::to_string(greet->code));

    // --- EHLO (and again after STARTTLS)
    std::vector<std::string> ext;
    auto has = [&](std::string_view kw) -> std::string const* {
        for (auto const& e : ext)
            if (e.compare(0, kw.size(), kw) == 0 && (e.size() == kw.size() || e[kw.size()] == ' ' || e[kw.size()] == '='))
                return &e;
        return nullptr;
    };
    if (!co_await ehlo(ext)) co_return broken("EHLO refused");

    if (s_.upstream_starttls != config::upstream_tls::none) {
        if (has("STARTTLS")) {
            std::string const line = "STARTTLS\r\n";
            auto v = co_await command(line, 2, "STARTTLS");
            if (v.what != upstream_verdict::kind::ok) co_return broken(v.log);
            if (!buf_.empty()) co_return broken("STARTTLS: bytes pipelined after the 220");
            tls_ctx_ = make_client_tls();
            tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(sock_, *tls_ctx_);
            SSL_set_tlsext_host_name(tls_->native_handle(), s_.upstream_host.c_str());
            auto hs = co_await timed(tls_->async_handshake(asio::ssl::stream_base::client, asio::as_tuple(asio::use_awaitable)));
            if (!hs || std::get<0>(*hs)) co_return broken("TLS handshake with upstream failed");
            if (!co_await ehlo(ext)) co_return broken("EHLO after STARTTLS refused");
        } else if (s_.upstream_starttls == config::upstream_tls::required) {
            co_return broken("upstream does not offer STARTTLS and relay.upstream_starttls = required");
        }
    }

    if (!s_.upstream_user.empty()) {
        std::ifstream f(s_.upstream_password_file);
        std::string password;
        if (!f || !std::getline(f, password)) co_return broken("cannot read relay.upstream_password_file");
        if (!password.empty() && password.back() == '\r') password.pop_back();
        std::string plain;
        plain.push_back('\0');
        plain += s_.upstream_user;
        plain.push_back('\0');
        plain += password;
        // Never logged: command() logs only the reply.
        std::string const line = "AUTH PLAIN " + proto::base64_encode(plain) + "\r\n";
        auto v = co_await command(line, 2, "AUTH");
        if (v.what != upstream_verdict::kind::ok) co_return broken("upstream AUTH failed: " + v.log);
    }

    std::string mail = "MAIL FROM:<" + env.mail_from + ">";
    if (env.size && has("SIZE")) mail += " SIZE=" + std::to_string(*env.size);
    if (env.eight_bit && has("8BITMIME")) mail += " BODY=8BITMIME";
    mail += "\r\n";
    auto v = co_await command(mail, 2, "MAIL");
    if (v.what != upstream_verdict::kind::ok) co_return v;
    for (auto const& rcpt : env.recipients) {
        std::string const line = "RCPT TO:<" + rcpt + ">\r\n";
        std::string const what = "RCPT to=<" + log::escape(rcpt) + ">";
        std::string const prefix = "<" + rcpt + ">: ";
        v = co_await command(line, 2, what, prefix);
        if (v.what != upstream_verdict::kind::ok) co_return v;
    }
    std::string const data = "DATA\r\n";
    v = co_await command(data, 3, "DATA");
    co_return v;
}

asio::awaitable<bool> smtp_client::send(std::string_view stuffed)
{
    if (stuffed.empty()) co_return sock_.is_open();
    co_return co_await write(stuffed);
}

asio::awaitable<upstream_verdict> smtp_client::finish()
{
    std::string const dot = ".\r\n";
    auto v = co_await command(dot, 2, "end of data");
    if (v.what == upstream_verdict::kind::ok) {
        // Polite end; the verdict is already in hand, so a failure here changes nothing.
        std::string const quit = "QUIT\r\n";
        if (co_await write(quit)) co_await read_reply();
        abort();
    }
    co_return v;
}

}  // namespace popgate::session
