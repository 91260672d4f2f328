#pragma once
// The SMTP client side of synchronous relay (DESIGN decision 7): one
// transaction to the configured upstream MTA, opened at the client's first
// relayed RCPT (MAIL FROM, then that RCPT), one upstream RCPT per relayed
// recipient whose verdict is that recipient's reply, DATA when the client's
// DATA comes, fed the dot-stuffed message while it arrives, and finished only
// when the client's message ended cleanly. Its verdict becomes the client's
// reply. Every network step is bounded by relay.upstream_timeout.
#include "popgate/config/config.hpp"
#include "popgate/proto/smtp.hpp"
#include "popgate/io/line_io.hpp"
#include "popgate/relay/upstream_verdict.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace popgate::relay {

namespace asio = boost::asio;

struct upstream_envelope {
    std::string mail_from;                  // without brackets; "" = null sender
    std::optional<std::uint64_t> size;      // the client's SIZE=, passed on when offered
    bool eight_bit = false;                 // BODY=8BITMIME
};

// One connection to the upstream, kept between messages by upstream_pool.
struct upstream_link {
    explicit upstream_link(asio::any_io_executor ex) : sock(std::move(ex)) {}
    asio::ip::tcp::socket sock;
    std::shared_ptr<asio::ssl::context> tls_ctx;
    std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket&>> tls;  // refers to sock
    std::vector<std::string> extensions;  // EHLO keywords, upper case
    std::string buf;                      // read but not yet parsed
    unsigned messages = 0;
    asio::ip::tcp protocol = asio::ip::tcp::v4();  // of the address it connected to
    bool moved = false;  // taken from another I/O thread's idle set by the last take()
    std::string key;                      // which upstream, as configured
    std::string tls_note = "no";          // for the log: TLS yes, verified, no, or fallback (clear after a failure)
    std::chrono::steady_clock::time_point idle_since;
};

// Idle upstream connections (relay.upstream_reuse_time), as Postfix's
// connection cache: the next message skips connect, greeting, EHLO, STARTTLS
// and AUTH. Thread-safe; bounded.
//
// It also remembers, per upstream (host:port), that opportunistic STARTTLS
// failed there: for tls_fallback_time the next connections go in clear
// without trying, instead of each message paying a failed handshake first.
class upstream_pool {
public:
    static constexpr std::size_t max_idle = 32;
    static constexpr unsigned max_messages = 100;  // per connection, then QUIT
    static constexpr std::chrono::seconds tls_fallback_time{600};

    ~upstream_pool();
    // The most recently used live connection to `key` idle for less than
    // `max_idle_time`, one on `home` (the caller's I/O thread) first; older
    // ones are closed on the way. A connection in clear from another I/O
    // thread is moved onto `home` first.
    std::unique_ptr<upstream_link> take(std::string const& key, std::chrono::steady_clock::duration max_idle_time,
                                        boost::asio::any_io_executor const& home);
    void put(std::unique_ptr<upstream_link> link);
    // QUIT (in clear; a TLS one is only closed) and close the connections
    // idle for `max_idle_time` or more (the daemon calls it every second, so
    // that none outstays relay.upstream_reuse_time by more, holding an smtpd
    // of the upstream).
    void expire(std::chrono::steady_clock::duration max_idle_time);
    // QUIT and close every idle connection (shutdown; before the io_context goes).
    void close_all();

    // The client TLS context for the upstream (io::make_client_tls), made
    // once and again only when the settings or relay.upstream_ca_file (its
    // modification time or size) change: a CA bundle is read once, not per
    // connection. Throws std::runtime_error as make_client_tls does.
    std::shared_ptr<asio::ssl::context> client_tls(config::settings const& s);

    // STARTTLS with `upstream` failed now: clear only, for tls_fallback_time.
    void tls_failed(std::string const& upstream);
    // Whether STARTTLS with `upstream` failed less than tls_fallback_time ago.
    bool tls_recently_failed(std::string const& upstream) const;

private:
    // Takes out of idle_ (under mutex_) those idle for max_idle_time or more, or closed.
    std::vector<std::unique_ptr<upstream_link>> take_stale_locked(std::chrono::steady_clock::duration max_idle_time);

    mutable std::mutex mutex_;
    std::vector<std::unique_ptr<upstream_link>> idle_;  // oldest first
    std::map<std::string, std::chrono::steady_clock::time_point> tls_failed_until_;  // under mutex_
    std::string client_tls_key_;                                                       // under mutex_
    std::shared_ptr<asio::ssl::context> client_tls_;                                   // under mutex_
};

class smtp_client {
public:
    smtp_client(asio::any_io_executor ex, config::settings const& s, std::string sid, upstream_pool& pool);
    ~smtp_client();
    smtp_client(smtp_client const&) = delete;
    smtp_client& operator=(smtp_client const&) = delete;

    // One relayed recipient. The first one opens the transaction: connect
    // (a kept connection from the pool when there is one), greeting, EHLO,
    // STARTTLS per relay.upstream_starttls, AUTH PLAIN when
    // relay.upstream_user is set, MAIL FROM with `env`. Then RCPT TO.
    // ok: the upstream took the recipient. A 4xx or 5xx to that RCPT refuses
    // this recipient only (its code and enhanced code passed on, the text
    // quoted) and the transaction goes on. An upstream that is down, breaks
    // off, says 421, or refuses MAIL fails the transaction: this and every
    // later recipient of it get the same verdict without another attempt
    // (451 4.4.1, or the upstream's own 4xx or 5xx to MAIL).
    // With "opportunistic", an upstream that offers STARTTLS and then fails
    // it (refused, handshake, EHLO after it) is used in clear on a new
    // connection, and in clear without trying for
    // upstream_pool::tls_fallback_time; "required" gives 451 instead.
    asio::awaitable<upstream_verdict> recipient(upstream_envelope const& env, std::string const& rcpt);

    // DATA, once at least one recipient was taken. ok: the upstream answered
    // 354 and waits for the message. Otherwise the connection is closed and
    // the verdict says what to tell the client (nothing was sent yet, so
    // nothing is lost and a retry cannot duplicate a copy).
    asio::awaitable<upstream_verdict> data();

    // Message bytes, already dot-stuffed with CRLF line ends. false if the
    // upstream is gone (the verdict is then temporary).
    asio::awaitable<bool> send(std::string_view stuffed);

    // Sends the terminator, reads the upstream's verdict (waiting up to
    // relay.upstream_data_done_timeout), then keeps the connection for the
    // next message (relay.upstream_reuse_time) or sends QUIT and closes it
    // without waiting for the 221. The verdict's text is the upstream's,
    // cut to 200 octets.
    asio::awaitable<upstream_verdict> finish();

    // The client's transaction ended without a message (RSET, HELO/EHLO,
    // STARTTLS, a DATA that went nowhere upstream, QUIT or a client gone
    // before DATA): RSET upstream and keep the connection as finish() does,
    // or close it when the RSET fails. Once the upstream took DATA, only
    // closing the connection stops the message: it is closed.
    asio::awaitable<void> release();

    // Drops the connection without the terminator: the upstream discards the
    // partial message (RFC 5321 §4.1.1.4: no data without the final dot).
    void abort() noexcept;

    bool is_open() const noexcept { return link_ && link_->sock.is_open(); }
    // Whether the open connection's EHLO offered 8BITMIME (RFC 6152): when
    // it did not, 8-bit message data may not go to it.
    bool takes_8bit() const noexcept;

private:
    template <class T>
    asio::awaitable<std::optional<T>> timed(asio::awaitable<T> op);
    asio::awaitable<bool> write(std::string_view data);
    asio::awaitable<std::optional<proto::smtp_reply>> read_reply();
    asio::awaitable<std::optional<std::string>> read_line();
    asio::awaitable<upstream_verdict> command(std::string const& line, int expect_class, std::string_view what,
                                              std::string_view client_prefix = {});
    // What a reply means for the client: ok when of `expect_class`, the
    // upstream's refusal passed on (closing), or broken.
    upstream_verdict judge(std::optional<proto::smtp_reply> const& r, int expect_class, std::string_view what,
                           std::string_view client_prefix);
    // Bytes from the upstream that no command of ours has asked for yet:
    // SMTP is lockstep (RFC 5321 §4.1.1, RFC 2920 §3), so they would be
    // read as the answer to the next command, and every reply after as the
    // one before's. Or the upstream has closed the connection (a FIN, a
    // TLS close_notify) since its last reply. nullopt: in step; otherwise
    // what happened, for the log.
    std::optional<std::string_view> out_of_step();
    asio::awaitable<bool> ehlo(std::vector<std::string>& extensions);
    // AUTH as relay.upstream_user, which may go only over TLS unless
    // relay.upstream_auth_in_clear allows it.
    bool auth_needs_tls() const noexcept { return !s_.upstream_user.empty() && !s_.upstream_auth_in_clear; }
    enum class starttls_use { as_configured, skip };
    struct connected {
        upstream_verdict verdict;
        bool starttls_failed = false;  // the upstream offered STARTTLS and it failed
    };
    asio::awaitable<connected> connect(std::string key, starttls_use use);
    // MAIL FROM, and with it the first RCPT when the upstream offers
    // PIPELINING (RFC 2920): one round trip instead of two. `rcpt_sent`
    // then says that RCPT's reply is still to be read.
    asio::awaitable<upstream_verdict> mail(upstream_envelope const& env, std::string const& first_rcpt);
    // `may_reuse`: a kept connection may carry it (kept_ then says whether
    // one did).
    asio::awaitable<upstream_verdict> begin(upstream_envelope const& env, std::string const& first_rcpt,
                                            bool may_reuse = true);
    bool rcpt_sent_ = false;
    bool kept_ = false;
    asio::awaitable<upstream_verdict> ask_recipient(upstream_envelope const& env, std::string const& rcpt,
                                                    bool fresh_only = false);
    asio::awaitable<void> keep_or_quit();
    upstream_verdict broken(std::string why);
    bool awaiting_dot_ = false;  // the final dot's reply: upstream_data_done_timeout bounds it
    std::string pool_key() const;

    // none: no transaction yet; open: MAIL taken, RCPTs go; data: the
    // upstream took DATA; failed: the transaction cannot carry a message
    // (failure_ says why).
    enum class txn { none, open, data, failed };
    txn txn_ = txn::none;
    upstream_verdict failure_;
    std::size_t accepted_ = 0;  // recipients the upstream took

    asio::any_io_executor ex_;
    config::settings const& s_;
    std::string sid_;
    upstream_pool& pool_;
    std::unique_ptr<upstream_link> link_;
    io::op_deadline deadline_;
};

}  // namespace popgate::relay
