#pragma once
// The SMTP client side of synchronous relay (DESIGN decision 7): one
// transaction to the configured upstream MTA, opened when the client's DATA
// starts, fed the dot-stuffed message while it arrives, and finished only when
// the client's message ended cleanly. Its verdict becomes the client's reply.
// Every network step is bounded by relay.upstream_timeout.
#include "popgate/config/config.hpp"
#include "popgate/proto/smtp.hpp"
#include "popgate/session/line_io.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace popgate::session {

// What the upstream said, already mapped to what the gateway tells its client.
struct upstream_verdict {
    enum class kind { ok, temporary, permanent } what = kind::temporary;
    int code = 451;           // the reply for the client
    std::string enhanced = "4.4.1";
    std::string text;         // reply text for the client
    std::string log;          // what happened, for the log line
};

struct upstream_envelope {
    std::string mail_from;                  // without brackets; "" = null sender
    std::optional<std::uint64_t> size;      // the client's SIZE=, passed on when offered
    bool eight_bit = false;                 // BODY=8BITMIME
    std::vector<std::string> recipients;    // relay recipients only
};

class smtp_client {
public:
    smtp_client(asio::any_io_executor ex, config::settings const& s, std::string sid);
    ~smtp_client();
    smtp_client(smtp_client const&) = delete;
    smtp_client& operator=(smtp_client const&) = delete;

    // Connect, greeting, EHLO, STARTTLS per relay.upstream_starttls, AUTH PLAIN
    // when relay.upstream_user is set, MAIL, RCPT for each recipient, DATA.
    // ok: the upstream answered 354 and waits for the message. Otherwise the
    // connection is closed and the verdict says what to tell the client (an
    // upstream refusal of any recipient fails the whole message: the client
    // has not sent it yet, so nothing is lost and nothing is duplicated).
    asio::awaitable<upstream_verdict> open(upstream_envelope const& env);

    // Message bytes, already dot-stuffed with CRLF line ends. false if the
    // upstream is gone (the verdict is then temporary).
    asio::awaitable<bool> send(std::string_view stuffed);

    // Sends the terminator, reads the upstream's verdict, then QUIT.
    asio::awaitable<upstream_verdict> finish();

    // Drops the connection without the terminator: the upstream discards the
    // partial message (RFC 5321 §4.1.1.4: no data without the final dot).
    void abort() noexcept;

    bool is_open() const noexcept { return sock_.is_open(); }

private:
    template <class T>
    asio::awaitable<std::optional<T>> timed(asio::awaitable<T> op);
    asio::awaitable<bool> write(std::string_view data);
    asio::awaitable<std::optional<proto::smtp_reply>> read_reply();
    asio::awaitable<std::optional<std::string>> read_line();
    asio::awaitable<upstream_verdict> command(std::string const& line, int expect_class, std::string_view what,
                                              std::string_view client_prefix = {});
    asio::awaitable<bool> ehlo(std::vector<std::string>& extensions);
    upstream_verdict broken(std::string why);

    asio::any_io_executor ex_;
    config::settings const& s_;
    std::string sid_;
    asio::ip::tcp::socket sock_;
    std::shared_ptr<asio::ssl::context> tls_ctx_;
    std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;
    session_clock clock_;
    std::string buf_;
};

}  // namespace popgate::session
