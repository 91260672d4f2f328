// The SMTP listener (RFC 5321) of the gateway: one coroutine per connection.
// Relay decision at each RCPT (local domain, SMTP AUTH, POP-before-SMTP grant,
// allowed network, else 554), local delivery into Maildirs, and synchronous
// relay to the upstream MTA (DESIGN decision 7): the client's end of DATA is
// answered with the upstream's verdict, so nothing acknowledged can be lost.
//
// Decisions written down here (see also docs):
// - The upstream transaction is opened when the client sends DATA, before the
//   354. An upstream refusal of MAIL or of any relay recipient then fails the
//   whole message at DATA (upstream's 5xx passed on, 4xx/unreachable -> 451
//   4.4.1): the client has not sent the message yet, so nothing is lost and a
//   retry cannot duplicate a copy.
// - Mixed local + relay recipients: local copies (and the relay-drop copy) are
//   written only after the relay part succeeded, all to tmp/ first and then
//   committed (fsync, rename to new/). A 451 therefore leaves nothing behind.
//   A local write failing after the upstream's 250 answers 451 (logged): the
//   retry may duplicate the relayed copy, which beats losing the local one.
// - Message bodies are kept in memory only when a local or relay-drop copy is
//   needed (bounded by limits.max_message_size); relay-only mail is streamed.
#include "popgate/session/sessions.hpp"

#include "popgate/daemon/blocking.hpp"
#include "popgate/log/log.hpp"
#include "popgate/mail/maildir.hpp"
#include "popgate/mail/received.hpp"
#include "popgate/proto/sasl.hpp"
#include "popgate/proto/smtp.hpp"
#include "popgate/session/line_io.hpp"
#include "popgate/session/smtp_client.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <random>

namespace popgate::session {
namespace {

namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using proto::smtp_phase;
using proto::smtp_verb;

enum class loop_end { quit, closed, starttls };

bool iequals(std::string_view a, std::string_view b)
{
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

std::string make_queue_id()
{
    // 12 upper-case hex digits: unique enough to grep one message across logs
    // and the Received header.
    std::string id = log::new_session_id() + log::new_session_id().substr(0, 4);
    for (auto& c : id) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return id;
}

std::string cram_challenge(std::string const& host)
{
    // RFC 2195: "<random.timestamp@host>", unique per attempt.
    std::random_device rd;
    auto const t = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch()).count();
    return "<" + std::to_string((std::uint64_t{rd()} << 32) | rd()) + "." + std::to_string(t) + "@" + host + ">";
}

// Dot-stuffing for the upstream (RFC 5321 §4.5.2); `in` has CRLF line ends only.
void stuff(std::string_view in, bool& at_line_start, std::string& out)
{
    for (char c : in) {
        if (at_line_start && c == '.') out.push_back('.');
        out.push_back(c);
        at_line_start = c == '\n';
    }
}

struct recipient {
    std::string address;           // without brackets
    bool local = false;
    std::string user;              // local: the mailbox owner
    std::filesystem::path maildir; // local: where the copy goes
};

struct smtp_session {
    smtp_session(daemon::context& c, daemon::listener_info const& li, tcp::socket& so, net::ip_address p)
        : ctx(c), l(li), s(c.settings()), sock(so), peer(p), ip(p.to_string()), sid(log::new_session_id()),
          reader(std::max<std::size_t>(s->smtp_max_line, proto::smtp_max_command_line))
    {}

    daemon::context& ctx;
    daemon::listener_info const& l;
    std::shared_ptr<config::settings const> s;
    tcp::socket& sock;
    net::ip_address peer;
    std::string ip;
    std::string sid;
    session_clock clock;
    line_reader reader;
    std::shared_ptr<ssl::context> tls_ctx;
    std::string end_reason = "eof";

    // connection state
    bool tls = false;
    bool waiting_for_command = false;  // the watchdog may say 421 only then
    smtp_phase phase = smtp_phase::connected;
    std::string helo;
    bool esmtp = false;
    bool authenticated = false;
    std::string auth_user;
    std::size_t bad_commands = 0;
    std::size_t junk_commands = 0;  // NOOP/RSET/VRFY/HELP since the last accepted recipient
    bool close_after_reply = false;  // a limit was hit: write the queued 421 (or refusal), then close
    std::size_t messages = 0;
    std::string out;  // replies not yet written (PIPELINING, RFC 2920 §3.1)

    // transaction
    std::string mail_from;
    std::optional<std::uint64_t> declared_size;
    bool eight_bit = false;
    std::vector<recipient> rcpts;
    std::size_t rcpt_attempts = 0;

    void reset_transaction()
    {
        mail_from.clear();
        declared_size.reset();
        eight_bit = false;
        rcpts.clear();
        rcpt_attempts = 0;
        if (phase != smtp_phase::connected) phase = smtp_phase::greeted;
    }

    // After STARTTLS the session starts over (RFC 3207 §4.2).
    void forget_all()
    {
        reset_transaction();
        phase = smtp_phase::connected;
        helo.clear();
        esmtp = false;
        authenticated = false;
        auth_user.clear();
    }

    void queue(int code, std::string_view enhanced, std::string_view text)
    {
        out += proto::reply(code, enhanced, text);
    }

    std::string const& host() const { return s->hostname; }
};

template <class Stream>
asio::awaitable<bool> flush(Stream& st, smtp_session& ss)
{
    if (ss.out.empty()) co_return true;
    std::string data = std::move(ss.out);
    ss.out.clear();
    co_return co_await write_all(st, data, ss.clock, ss.s->smtp_idle_timeout);
}

// Counts one more command against a per-session limit; past it, queues the
// 421 and marks the session to close once that reply is written.
bool over_limit(smtp_session& ss, std::size_t& counter, std::size_t limit, std::string_view what,
                char const* reason)
{
    if (++counter <= limit) return false;
    spdlog::warn("sid={} smtp {} ip={} count={}", ss.sid, what, ss.ip, counter);
    ss.queue(421, "4.7.0", ss.host() + " Error: " + std::string(what));
    ss.end_reason = reason;
    ss.close_after_reply = true;
    return true;
}

// A bad command (limits.max_bad_commands); true when the session must end.
bool bad_command(smtp_session& ss)
{
    return over_limit(ss, ss.bad_commands, ss.s->max_bad_commands, "too many errors", "too-many-errors");
}

// A command that makes no progress: NOOP, RSET, VRFY, HELP (limits.max_junk_commands).
bool junk_command(smtp_session& ss)
{
    return over_limit(ss, ss.junk_commands, ss.s->max_junk_commands, "too many commands without progress",
                      "too-many-junk-commands");
}

// Same watchdog as line_io's, but an idle client waiting at the command prompt
// on a clear-text connection is told why it is cut off (best effort).
asio::awaitable<void> smtp_watchdog(smtp_session& ss)
{
    asio::steady_timer timer(co_await asio::this_coro::executor);
    auto& c = ss.clock;
    alarm_guard const registered(c, timer);
    while (!c.finished) {
        if (c.deadline <= clock::now()) {
            c.expired = true;
            boost::system::error_code ignored;
            if (!ss.tls && ss.waiting_for_command && ss.out.empty()) {
                auto const msg = proto::reply(421, "4.4.2", ss.host() + " Error: timeout exceeded");
                ss.sock.non_blocking(true, ignored);
                ss.sock.send(asio::buffer(msg), 0, ignored);
            }
            ss.sock.shutdown(tcp::socket::shutdown_both, ignored);
            ss.sock.close(ignored);
            co_return;
        }
        timer.expires_at(c.deadline);
        auto [ec] = co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        if (ec && !co_await woken_early(c)) co_return;
    }
}

// ------------------------------------------------------------------ EHLO

std::vector<std::string> auth_mechs(smtp_session const& ss)
{
    std::vector<std::string> m;
    bool const plain_ok = ss.ctx.secure_for_plaintext(ss.tls, ss.peer);
    if (plain_ok) {
        m.emplace_back("PLAIN");
        m.emplace_back("LOGIN");
    }
    if (ss.s->cram_md5) m.emplace_back("CRAM-MD5");
    return m;
}

bool mech_offered(smtp_session const& ss, proto::sasl_mech m)
{
    if (m == proto::sasl_mech::cram_md5) return ss.s->cram_md5;
    return true;  // PLAIN/LOGIN: refused by policy later with 530, as RFC 4954 §4 asks
}

bool starttls_offered(smtp_session const& ss)
{
    return ss.l.cfg.tls == config::tls_mode::starttls && !ss.tls && ss.ctx.tls() != nullptr;
}

void on_helo(smtp_session& ss, proto::smtp_command const& cmd)
{
    auto const arg = cmd.args.substr(0, cmd.args.find(' '));
    if (arg.empty()) {
        ss.queue(501, "5.5.4", cmd.verb == smtp_verb::ehlo ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
        return;
    }
    // RFC 5321 §4.1.4: HELO/EHLO resets the transaction.
    ss.reset_transaction();
    ss.phase = smtp_phase::greeted;
    ss.helo.assign(arg);
    ss.esmtp = cmd.verb == smtp_verb::ehlo;
    if (!ss.esmtp) {
        ss.out += "250 " + ss.host() + "\r\n";
        return;
    }
    // EHLO keyword lines carry no enhanced code: clients parse them as keywords.
    proto::smtp_reply r{250, "", {ss.host(), "PIPELINING", "SIZE " + std::to_string(ss.s->max_message_size),
                                  "8BITMIME", "ENHANCEDSTATUSCODES"}};
    if (starttls_offered(ss)) r.lines.emplace_back("STARTTLS");
    if (!ss.authenticated) {
        auto const mechs = auth_mechs(ss);
        if (!mechs.empty()) {
            std::string line = "AUTH";
            for (auto const& m : mechs) line += " " + m;
            r.lines.push_back(line);
        }
    }
    ss.out += proto::format_reply(r);
}

// ------------------------------------------------------------------ MAIL / RCPT

void on_mail(smtp_session& ss, proto::smtp_command const& cmd)
{
    auto a = proto::parse_mail_from(cmd.args);
    if (!a) {
        if (a.error() == proto::errc::bad_parameter) ss.queue(501, "5.5.4", "Syntax error in parameters");
        else ss.queue(501, "5.1.7", "Bad sender address syntax");
        return;
    }
    std::optional<std::uint64_t> size;
    bool eight = false;
    for (auto const& p : a->params) {
        if (p.keyword == "SIZE") {
            auto n = proto::parse_size_param(p.value);
            if (!n) {
                ss.queue(501, "5.5.4", "Bad SIZE parameter");
                return;
            }
            size = *n;
        } else if (p.keyword == "BODY") {
            auto b = proto::parse_body_param(p.value);
            if (!b) {
                ss.queue(501, "5.5.4", "Bad BODY parameter");
                return;
            }
            eight = *b == proto::body_type::eight_bit_mime;
        } else if (p.keyword == "AUTH") {
            // RFC 4954 §5: accepted and not passed on (we do not trust it).
        } else {
            ss.queue(555, "5.5.4", "Unsupported option: " + p.keyword);
            return;
        }
    }
    if (size && *size > ss.s->max_message_size) {
        spdlog::info("sid={} smtp mail refused ip={} size={} limit={}", ss.sid, ss.ip, *size, ss.s->max_message_size);
        ss.queue(552, "5.3.4", "Message size exceeds fixed limit");
        return;
    }
    ss.mail_from = a->path.to_string();
    ss.declared_size = size;
    ss.eight_bit = eight;
    ss.phase = smtp_phase::in_mail;
    spdlog::info("sid={} smtp mail from=<{}> ip={}{}", ss.sid, log::escape(ss.mail_from), ss.ip,
                 size ? " size=" + std::to_string(*size) : std::string());
    ss.queue(250, "2.1.0", "Ok");
}

bool local_domain(smtp_session const& ss, std::string_view domain)
{
    if (domain.empty()) return true;  // <postmaster>
    return std::any_of(ss.s->local_domains.begin(), ss.s->local_domains.end(),
                       [&](std::string const& d) { return iequals(d, domain); });
}

void on_rcpt(smtp_session& ss, proto::smtp_command const& cmd)
{
    auto a = proto::parse_rcpt_to(cmd.args);
    if (!a) {
        if (a.error() == proto::errc::bad_parameter) ss.queue(501, "5.5.4", "Syntax error in parameters");
        else ss.queue(501, "5.1.3", "Bad recipient address syntax");
        return;
    }
    if (!a->params.empty()) {
        ss.queue(555, "5.5.4", "Unsupported option: " + a->params.front().keyword);
        return;
    }
    if (ss.rcpts.size() >= ss.s->max_recipients) {
        spdlog::warn("sid={} smtp too many recipients ip={} limit={}", ss.sid, ss.ip, ss.s->max_recipients);
        ss.queue(452, "4.5.3", "Error: too many recipients");
        return;
    }
    ++ss.rcpt_attempts;
    auto const addr = a->path.to_string();
    auto const shown = log::escape(addr);
    recipient r;
    r.address = addr;
    try {
        if (local_domain(ss, a->path.domain)) {
            // The mailbox is the user named by the full address, else by the local part.
            std::optional<store::user_record> u;
            if (!a->path.domain.empty()) u = ss.ctx.db().find_user(addr);
            if (!u) u = ss.ctx.db().find_user(a->path.local);
            // RFC 5321 §4.5.1: mail to postmaster is never refused. With no
            // user of that name it still goes to the Maildir a "postmaster"
            // user would have; adding that user makes it readable over POP3.
            if (!u && iequals(a->path.local, "postmaster")) {
                u.emplace();
                u->name = "postmaster";
            }
            std::filesystem::path dir;
            if (u) {
                try {
                    dir = mail::user_maildir(ss.s->maildir, u->name);
                } catch (std::invalid_argument const&) {
                    u.reset();
                }
            }
            if (!u) {
                spdlog::info("sid={} smtp rcpt to=<{}> ip={} decision=local detail=unknown-user result=rejected",
                             ss.sid, shown, ss.ip);
                ss.queue(550, "5.1.1", "<" + addr + ">: Recipient address rejected: User unknown");
                return;
            }
            spdlog::info("sid={} smtp rcpt to=<{}> ip={} decision=local detail=user={}", ss.sid, shown, ss.ip,
                         log::escape(u->name, 64));
            r.local = true;
            r.user = u->name;
            r.maildir = std::move(dir);
        } else {
            auto const d = ss.ctx.relay().decide(ss.peer, ss.authenticated, ss.l.cfg.auth_required);
            auto const verdict = proto::to_string(d.verdict);
            spdlog::info("sid={} smtp rcpt to=<{}> ip={} decision={} detail={}{}", ss.sid, shown, ss.ip, verdict,
                         d.detail, ss.authenticated ? " sasl_user=" + log::escape(ss.auth_user, 64) : std::string());
            if (d.verdict == proto::relay_verdict::deny) {
                ss.ctx.writes().post(store::audit_record{"deny", ss.ip, "", addr});
                ss.queue(554, "5.7.1", "<" + addr + ">: Relay access denied");
                return;
            }
            if (d.verdict == proto::relay_verdict::relay_grant && !d.grant_address.empty()) {
                ss.ctx.writes().post(store::grant_touch{d.grant_address, store::now()});
            }
        }
    } catch (store::store_error const& e) {
        // Never relay on a store failure; the client tries again later.
        spdlog::error("sid={} smtp rcpt to=<{}> ip={} decision=error detail={}", ss.sid, shown, ss.ip,
                      log::escape(e.what()));
        ss.queue(451, "4.3.0", "<" + addr + ">: Temporary lookup failure");
        return;
    }
    bool const dup = std::any_of(ss.rcpts.begin(), ss.rcpts.end(), [&](recipient const& x) { return x.address == addr; });
    if (!dup) ss.rcpts.push_back(std::move(r));
    ss.junk_commands = 0;  // progress
    ss.phase = smtp_phase::in_rcpt;
    ss.queue(250, "2.1.5", "Ok");
}

// ------------------------------------------------------------------ DATA

// Writes every copy that is kept here (local mailboxes, relay drop) to tmp/
// first and commits them only when all writes succeeded: all or nothing
// as far as the filesystem allows. Runs on the blocking pool.
void deliver_copies(std::vector<std::pair<std::filesystem::path, std::string>> const& copies, std::string const& host)
{
    std::vector<mail::delivery> ds;
    ds.reserve(copies.size());
    for (auto const& [dir, bytes] : copies) {
        mail::maildir(dir).ensure();
        ds.emplace_back(dir, host);
        ds.back().write(bytes);
    }
    for (auto& d : ds) d.commit();
}

template <class Stream>
asio::awaitable<bool> on_data(Stream& st, smtp_session& ss, proto::smtp_command const& cmd)
{
    if (!cmd.args.empty()) {
        ss.queue(501, "5.5.4", "Syntax: DATA");
        co_return true;
    }
    auto const qid = make_queue_id();
    auto const& s = *ss.s;
    std::vector<std::string> relay_rcpts;
    std::vector<recipient const*> locals;
    for (auto const& r : ss.rcpts) {
        if (r.local) locals.push_back(&r);
        else relay_rcpts.push_back(r.address);
    }
    bool const use_upstream = !relay_rcpts.empty() && !s.upstream_host.empty();
    bool const keep_copy = !locals.empty() || (!relay_rcpts.empty() && !use_upstream);

    std::unique_ptr<smtp_client> up;
    if (use_upstream) {
        if (!co_await flush(st, ss)) co_return false;
        auto ex = co_await asio::this_coro::executor;
        up = std::make_unique<smtp_client>(ex, s, ss.sid, ss.ctx.upstreams());
        // The client waits for us meanwhile; the upstream's own timeouts bound this.
        ss.clock.arm(s.smtp_idle_timeout + 8 * s.upstream_timeout);
        upstream_envelope env{ss.mail_from, ss.declared_size, ss.eight_bit, relay_rcpts};
        auto v = co_await up->open(env);
        if (v.what != upstream_verdict::kind::ok) {
            spdlog::warn("sid={} smtp upstream refused id={} ip={} reply={} {} detail={}", ss.sid, qid, ss.ip, v.code,
                         v.enhanced, v.log);
            ss.queue(v.code, v.enhanced, v.text);
            ss.reset_transaction();
            co_return true;
        }
        spdlog::debug("sid={} smtp upstream open id={} {}", ss.sid, qid, v.log);
    }

    ss.out += "354 End data with <CR><LF>.<CR><LF>\r\n";
    if (!co_await flush(st, ss)) co_return false;

    std::string const header = mail::received_header(
        {ss.helo, ss.ip, ss.host(), mail::received_protocol(ss.esmtp, ss.tls, ss.authenticated), qid,
         std::time(nullptr)});
    std::string message;  // unstuffed, CRLF; only when a copy is kept here
    if (keep_copy) message = header;
    bool upstream_ok = up != nullptr;
    bool at_line_start = true;
    std::string stuffed;
    if (up) {
        stuff(header, at_line_start, stuffed);
        upstream_ok = co_await up->send(stuffed);
    }

    proto::data_reader dr(s.max_message_size, proto::smtp_max_text_line);
    std::string chunk_out;
    std::string& pending = ss.reader.pending();
    std::string input = std::move(pending);  // pipelined bytes read with the DATA line come first
    pending.clear();
    // Fix (issue 5): limits.data_timeout bounds the WHOLE message. It used to
    // be re-armed before every read, so a slow-loris writer sending a byte now
    // and then could hold the session (and its admission slot) forever.
    auto const data_deadline = clock::now() + s.data_timeout;
    char buf[16384];
    for (;;) {
        std::size_t consumed = 0;
        chunk_out.clear();
        auto const status = dr.feed(input, consumed, chunk_out);
        if (!chunk_out.empty()) {
            if (keep_copy) message += chunk_out;
            if (up && upstream_ok) {
                stuffed.clear();
                stuff(chunk_out, at_line_start, stuffed);
                ss.clock.arm(s.data_timeout + s.upstream_timeout);
                upstream_ok = co_await up->send(stuffed);
            }
        }
        if (status == proto::data_reader::status::done) {
            // Whatever follows the terminator is the next pipelined command.
            pending.assign(input, consumed, std::string::npos);
            break;
        }
        ss.clock.set(data_deadline);
        // Nothing is queued for the client here (the 354 went out), so the
        // watchdog may tell it why it is cut off (421 4.4.2), as at a prompt.
        ss.waiting_for_command = true;
        auto [ec, n] = co_await st.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
        ss.waiting_for_command = false;
        if (ec) {
            // Client gone mid-DATA: nothing is delivered anywhere.
            if (up) up->abort();
            ss.end_reason = ss.clock.expired ? "timeout-in-data" : "eof-in-data";
            spdlog::warn("sid={} smtp data aborted id={} ip={} reason={} received={}", ss.sid, qid, ss.ip,
                         ss.end_reason, dr.size());
            co_return false;
        }
        input.assign(buf, n);
    }

    std::size_t const nrcpt = ss.rcpts.size();
    auto const done = [&](int code, std::string_view enh, std::string const& text, std::string_view result) {
        spdlog::info("sid={} smtp message id={} ip={} from=<{}> rcpts={} local={} relay={} size={} result={} reply={}",
                     ss.sid, qid, ss.ip, log::escape(ss.mail_from), nrcpt, locals.size(), relay_rcpts.size(),
                     dr.size(), result, code);
        ss.queue(code, enh, text);
        ss.reset_transaction();
    };

    if (auto const e = dr.error()) {
        if (up) up->abort();
        switch (*e) {
        case proto::errc::too_long: done(552, "5.3.4", "Message size exceeds fixed limit", "too-big"); break;
        case proto::errc::line_too_long:
            done(550, "5.5.2", "Error: message line longer than 998 octets", "line-too-long");
            break;
        default: done(550, "5.5.2", "Error: bare <CR> or <LF> in message data", "bare-cr-lf"); break;
        }
        co_return true;
    }
    if (up && !upstream_ok) {
        up->abort();
        done(451, "4.4.1", "Error: upstream mail server unavailable, try again later", "upstream-lost");
        co_return true;
    }

    // Relay part first: its verdict decides whether local copies are kept.
    std::string upstream_note;
    if (up) {
        ss.clock.arm(s.smtp_idle_timeout + 2 * s.upstream_timeout);
        auto v = co_await up->finish();
        if (v.what != upstream_verdict::kind::ok) {
            spdlog::warn("sid={} smtp upstream refused id={} detail={}", ss.sid, qid, v.log);
            done(v.code, v.enhanced, v.text, v.what == upstream_verdict::kind::permanent ? "upstream-rejected"
                                                                                          : "upstream-tempfail");
            co_return true;
        }
        upstream_note = " (" + v.text + ")";
        spdlog::info("sid={} smtp relayed id={} upstream={}:{} {}", ss.sid, qid, s.upstream_host, s.upstream_port,
                     v.log);
    }

    if (keep_copy) {
        std::vector<std::pair<std::filesystem::path, std::string>> copies;
        if (!relay_rcpts.empty() && !use_upstream) {
            // The drop folder stands in for the upstream: keep the envelope visible.
            std::string env = "X-Envelope-From: <" + ss.mail_from + ">\r\nX-Envelope-To: ";
            for (std::size_t i = 0; i < relay_rcpts.size(); ++i) env += (i ? ", <" : "<") + relay_rcpts[i] + ">";
            copies.emplace_back(s.relay_drop, env + "\r\n" + message);
        }
        std::vector<std::string> users;
        for (auto const* r : locals) {
            if (std::find(users.begin(), users.end(), r->user) != users.end()) continue;  // one copy per mailbox
            users.push_back(r->user);
            copies.emplace_back(r->maildir, message);
        }
        try {
            ss.clock.arm(s.smtp_idle_timeout + s.data_timeout);
            // Named first: g++ 12 mishandles closures owning strings as temporaries in co_await.
            auto job = [&copies, &s] { deliver_copies(copies, s.hostname); };
            co_await daemon::run_blocking(ss.ctx.blocking(), job);
        } catch (std::exception const& e) {
            spdlog::error("sid={} smtp delivery failed id={} error={}{}", ss.sid, qid, log::escape(e.what()),
                          up ? " note=relayed copy already accepted upstream" : "");
            done(451, "4.3.0", "Error: local delivery failed, try again later", "delivery-failed");
            co_return true;
        }
    }
    ++ss.messages;
    done(250, "2.0.0", "Ok: queued as " + qid + upstream_note, "ok");
    co_return true;
}

// ------------------------------------------------------------------ AUTH

template <class Stream>
asio::awaitable<bool> on_auth(Stream& st, smtp_session& ss, proto::smtp_command const& cmd)
{
    if (ss.authenticated) {
        ss.queue(503, "5.5.1", "Error: already authenticated");
        co_return true;
    }
    auto const sp = cmd.args.find(' ');
    auto const mech_name = cmd.args.substr(0, sp);
    std::optional<std::string_view> initial;
    if (sp != std::string_view::npos) initial = cmd.args.substr(sp + 1);
    auto const mech = proto::parse_sasl_mech(mech_name);
    if (auto const left = ss.ctx.failures().blocked(ss.peer, std::chrono::steady_clock::now())) {
        ss.queue(421, "4.7.0", ss.host() + " Error: too many failed authentications from your address, try again in " +
                                   std::to_string(left->count()) + " seconds");
        spdlog::info("sid={} smtp auth refused ip={} reason=address-blocked seconds_left={}", ss.sid, ss.ip, left->count());
        ss.end_reason = "auth-blocked";
        ss.close_after_reply = true;
        co_return true;
    }
    if (mech_name.empty()) {
        ss.queue(501, "5.5.4", "Syntax: AUTH mechanism");
        co_return true;
    }
    if (!mech || !mech_offered(ss, *mech)) {
        ss.queue(504, "5.5.4", "Unrecognized authentication type");
        co_return true;
    }
    if (proto::sasl_is_plaintext(*mech) && !ss.ctx.secure_for_plaintext(ss.tls, ss.peer)) {
        ss.queue(530, "5.7.0", "Must issue a STARTTLS command first");
        co_return true;
    }
    auto const challenge = *mech == proto::sasl_mech::cram_md5 ? cram_challenge(ss.host()) : std::string();
    proto::sasl_server sasl(*mech, challenge);
    auto step = sasl.start(initial);
    std::string line;
    while (step.what == proto::sasl_step::kind::challenge) {
        ss.out += "334 " + proto::base64_encode(step.challenge) + "\r\n";
        if (!co_await flush(st, ss)) co_return false;
        auto const rs = co_await ss.reader.read(st, line, ss.clock, ss.s->smtp_idle_timeout);
        if (rs == read_status::too_long) {
            ss.queue(500, "5.5.6", "Authentication Exchange line is too long");
            co_return !bad_command(ss);
        }
        if (rs != read_status::ok) {
            ss.end_reason = rs == read_status::timed_out ? "timeout" : "eof-in-auth";
            co_return false;
        }
        if (!line.empty() && line.back() == '\n') line.pop_back();
        step = sasl.next(line);
    }
    auto const mname = proto::sasl_mech_name(*mech);
    switch (step.what) {
    case proto::sasl_step::kind::cancelled:
        spdlog::info("sid={} smtp auth mech={} ip={} result=cancelled", ss.sid, mname, ss.ip);
        ss.queue(501, "5.7.0", "Authentication cancelled");
        co_return true;
    case proto::sasl_step::kind::failed:
        if (step.error == proto::errc::bad_base64) {
            spdlog::info("sid={} smtp auth mech={} ip={} result=bad-base64", ss.sid, mname, ss.ip);
            ss.queue(501, "5.5.2", "Cannot decode response");
            co_return !bad_command(ss);
        }
        break;
    default: break;
    }

    auth::result res;
    if (step.what == proto::sasl_step::kind::check_password) {
        ss.clock.arm(ss.s->smtp_idle_timeout);
        auto job = [&ctx = ss.ctx, &step] { return ctx.auth().check_password(step.authcid, step.password); };
        res = co_await daemon::run_blocking(ss.ctx.blocking(), job);
    } else if (step.what == proto::sasl_step::kind::check_cram) {
        // An indexed read and one HMAC-MD5: checked in place (no crypt(3)).
        res = ss.ctx.auth().check_cram_md5(step.authcid, challenge, step.digest);
    } else {
        res.what = auth::outcome::failed;
        res.reason = "malformed response";
    }
    auto const who = log::escape(step.authcid.empty() ? std::string("-") : step.authcid, 64);
    if (res.what == auth::outcome::ok) {
        ss.authenticated = true;
        ss.auth_user = res.user;
        spdlog::info("sid={} smtp auth user={} mech={} ip={} tls={} result=ok", ss.sid, log::escape(res.user, 64), mname,
                     ss.ip, ss.tls ? "yes" : "no");
        ss.queue(235, "2.7.0", "Authentication successful");
        co_return true;
    }
    if (res.what == auth::outcome::unavailable) {
        spdlog::error("sid={} smtp auth user={} mech={} ip={} result=unavailable reason={}", ss.sid, who, mname, ss.ip,
                      res.reason);
        ss.queue(454, "4.7.0", "Temporary authentication failure");
        co_return true;
    }
    spdlog::info("sid={} smtp auth user={} mech={} ip={} result=failed reason={}", ss.sid, who, mname, ss.ip,
                 res.reason);
    ss.ctx.writes().post(store::audit_record{"auth-fail", ss.ip, step.authcid, "smtp mech=" + std::string(mname)});
    // Brute-force defence shared with POP3: a delay that grows with the
    // failures of this address or this name, and a cool-down for the address.
    auto const verdict = ss.ctx.failures().record_failure(ss.peer, step.authcid, std::chrono::steady_clock::now());
    if (verdict.now_blocked)
        spdlog::warn("sid={} smtp auth-block ip={} failures_ip={} failures_user={} user={} block_time={}s", ss.sid,
                     ss.ip, verdict.ip_count, verdict.user_count, who, ss.s->block_time.count());
    if (verdict.delay.count() > 0) {
        auto ex = co_await asio::this_coro::executor;
        asio::steady_timer t(ex, verdict.delay);
        ss.clock.arm(ss.s->smtp_idle_timeout + verdict.delay);
        co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    ss.queue(535, "5.7.8", "Error: authentication failed");
    co_return !bad_command(ss);
}

// ------------------------------------------------------------------ loop

void sequence_error(smtp_session& ss, smtp_verb v)
{
    auto const connected = ss.phase == smtp_phase::connected;
    switch (v) {
    case smtp_verb::mail:
        ss.queue(503, "5.5.1", connected ? "Error: send HELO/EHLO first" : "Error: nested MAIL command");
        return;
    case smtp_verb::rcpt: ss.queue(503, "5.5.1", "Error: need MAIL command"); return;
    case smtp_verb::data:
        if (ss.phase == smtp_phase::in_mail && ss.rcpt_attempts > 0)
            ss.queue(554, "5.5.1", "Error: no valid recipients");
        else if (ss.phase == smtp_phase::in_mail)
            ss.queue(503, "5.5.1", "Error: need RCPT command");
        else
            ss.queue(503, "5.5.1", "Error: need MAIL command");
        return;
    default:
        ss.queue(503, "5.5.1", connected ? "Error: send HELO/EHLO first" : "Error: MAIL transaction in progress");
        return;
    }
}

template <class Stream>
asio::awaitable<loop_end> command_loop(Stream& st, smtp_session& ss)
{
    std::string line;
    auto const max_line = std::max<std::size_t>(ss.s->smtp_max_line, proto::smtp_max_command_line);
    for (;;) {
        // RFC 2920 §3.1: replies go out when the client will wait for them,
        // i.e. when no complete command is left in what it sent.
        if (ss.reader.pending().find('\n') == std::string::npos)
            if (!co_await flush(st, ss)) co_return loop_end::closed;
        ss.waiting_for_command = true;
        auto const rs = co_await ss.reader.read(st, line, ss.clock, ss.s->smtp_idle_timeout);
        ss.waiting_for_command = false;
        switch (rs) {
        case read_status::ok: break;
        case read_status::eof: ss.end_reason = "eof"; co_return loop_end::closed;
        case read_status::timed_out: ss.end_reason = "timeout"; co_return loop_end::closed;
        case read_status::error: ss.end_reason = "error"; co_return loop_end::closed;
        case read_status::too_long:
            // A limit hit leaves a trace (issue 5), like POP3's "line too long".
            spdlog::debug("sid={} smtp line too long ip={} limit={}", ss.sid, ss.ip, max_line);
            ss.queue(500, "5.5.2", "Error: line too long");
            if (bad_command(ss)) break;
            continue;
        }
        if (ss.close_after_reply) {
            co_await flush(st, ss);
            co_return loop_end::closed;
        }
        if (!line.empty() && line.back() == '\n') {
            // A bare LF ended this line: the smuggling class, refused.
            spdlog::info("sid={} smtp bare-lf ip={} line={}", ss.sid, ss.ip, log::escape(line, 80));
            ss.queue(500, "5.5.2", "Error: bare <LF> received");
            if (bad_command(ss)) {
                co_await flush(st, ss);
                co_return loop_end::closed;
            }
            continue;
        }
        auto cmd = proto::parse_smtp(line, max_line);
        if (!cmd) {
            spdlog::debug("sid={} smtp bad command ip={} error={} line={}", ss.sid, ss.ip, cmd.error().message(),
                          log::escape(line, 80));
            switch (proto::errc(cmd.error().value())) {
            case proto::errc::unknown_command: ss.queue(502, "5.5.2", "Error: command not recognized"); break;
            case proto::errc::bad_arguments: ss.queue(501, "5.5.4", "Syntax error in parameters"); break;
            case proto::errc::line_too_long: ss.queue(500, "5.5.2", "Error: line too long"); break;
            case proto::errc::bare_cr_or_lf: ss.queue(500, "5.5.2", "Error: bare <CR> received"); break;
            default: ss.queue(500, "5.5.2", "Error: bad syntax"); break;
            }
            if (bad_command(ss)) {
                co_await flush(st, ss);
                co_return loop_end::closed;
            }
            continue;
        }
        auto const& spec = proto::spec_for(cmd->verb);
        if (spec.secret_args)
            spdlog::debug("sid={} smtp cmd={}", ss.sid, proto::verb_name(cmd->verb));
        else
            spdlog::debug("sid={} smtp cmd={} args={}", ss.sid, proto::verb_name(cmd->verb), log::escape(cmd->args, 80));
        if (!spec.allowed_in(ss.phase)) {
            sequence_error(ss, cmd->verb);
            if (bad_command(ss)) {
                co_await flush(st, ss);
                co_return loop_end::closed;
            }
            continue;
        }
        switch (cmd->verb) {
        case smtp_verb::helo:
        case smtp_verb::ehlo: on_helo(ss, *cmd); break;
        case smtp_verb::mail: on_mail(ss, *cmd); break;
        case smtp_verb::rcpt: on_rcpt(ss, *cmd); break;
        case smtp_verb::data:
            if (!co_await on_data(st, ss, *cmd)) co_return loop_end::closed;
            break;
        case smtp_verb::rset:
            if (junk_command(ss)) break;
            if (!cmd->args.empty()) {
                ss.queue(501, "5.5.4", "Syntax: RSET");
                break;
            }
            ss.reset_transaction();
            ss.queue(250, "2.0.0", "Ok");
            break;
        case smtp_verb::noop:
            if (!junk_command(ss)) ss.queue(250, "2.0.0", "Ok");
            break;
        case smtp_verb::quit:
            ss.queue(221, "2.0.0", "Bye");
            co_await flush(st, ss);
            ss.end_reason = "quit";
            co_return loop_end::quit;
        case smtp_verb::vrfy:
            if (junk_command(ss)) break;
            if (cmd->args.empty()) ss.queue(501, "5.5.4", "Syntax: VRFY address");
            // RFC 5321 §3.5.3: no user enumeration, but do not discourage sending.
            else ss.queue(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery");
            break;
        case smtp_verb::expn: ss.queue(502, "5.5.1", "Error: EXPN not supported"); break;
        case smtp_verb::help: {
            if (junk_command(ss)) break;
            std::string cmds = "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP";
            if (starttls_offered(ss)) cmds += " STARTTLS";
            cmds += " AUTH";
            ss.out += proto::format_reply({214, "2.0.0", {cmds, "See RFC 5321"}});
            break;
        }
        case smtp_verb::starttls: {
            if (!cmd->args.empty()) {
                ss.queue(501, "5.5.4", "Syntax: STARTTLS");
                break;
            }
            if (ss.tls) {
                ss.queue(503, "5.5.1", "Error: TLS already active");
                break;
            }
            if (ss.l.cfg.tls != config::tls_mode::starttls) {
                ss.queue(502, "5.5.1", "Error: command not implemented");
                break;
            }
            ss.tls_ctx = ss.ctx.tls();
            if (!ss.tls_ctx) {
                ss.queue(454, "4.7.0", "TLS not available due to temporary reason");
                break;
            }
            ss.queue(220, "2.0.0", "Ready to start TLS");
            if (ss.reader.has_pending()) {
                // RFC 3207 §5 / CVE-2011-0411: commands sent before the
                // handshake must never run after it.
                spdlog::warn("sid={} smtp starttls discarded pipelined bytes ip={} count={} data={}", ss.sid, ss.ip,
                             ss.reader.pending().size(), log::escape(ss.reader.pending(), 60));
                ss.reader.clear();
            }
            if (!co_await flush(st, ss)) co_return loop_end::closed;
            co_return loop_end::starttls;
        }
        case smtp_verb::auth:
            if (!co_await on_auth(st, ss, *cmd)) co_return loop_end::closed;
            break;
        }
        if (ss.close_after_reply) {
            co_await flush(st, ss);
            co_return loop_end::closed;
        }
    }
}

asio::awaitable<bool> handshake(ssl::stream<tcp::socket&>& st, smtp_session& ss)
{
    ss.clock.arm(ss.s->tls_handshake_timeout);
    auto [ec] = co_await st.async_handshake(ssl::stream_base::server, asio::as_tuple(asio::use_awaitable));
    if (ec) {
        ss.end_reason = ss.clock.expired ? "tls-timeout" : "tls-failed";
        spdlog::info("sid={} smtp tls handshake failed ip={} error={}", ss.sid, ss.ip,
                     ss.clock.expired ? std::string("timeout") : log::escape(ec.message()));
        co_return false;
    }
    ss.tls = true;
    spdlog::info("sid={} smtp tls ip={} version={} cipher={}", ss.sid, ss.ip, SSL_get_version(st.native_handle()),
                 SSL_get_cipher_name(st.native_handle()));
    co_return true;
}

template <class Stream>
asio::awaitable<bool> greet(Stream& st, smtp_session& ss)
{
    ss.out += "220 " + ss.host() + " ESMTP popgate\r\n";
    co_return co_await flush(st, ss);
}

asio::awaitable<void> run_session(smtp_session& ss)
{
    // When the watchdog wins the race it closes the socket and the || cancels
    // this branch. Without this, the next co_await would throw before its
    // operation started, skipping the session's own handling of the failed
    // read (a DATA abort went unlogged, the end reason lost its detail).
    // Every operation here fails on the closed socket instead and is handled
    // through its error code.
    co_await asio::this_coro::throw_if_cancelled(false);
    if (ss.l.cfg.tls == config::tls_mode::implicit) {
        ss.tls_ctx = ss.ctx.tls();
        if (!ss.tls_ctx) {
            spdlog::error("sid={} smtp no TLS context for implicit-TLS listener={}", ss.sid, ss.l.cfg.name);
            ss.end_reason = "no-tls";
            co_return;
        }
        ssl::stream<tcp::socket&> st(ss.sock, *ss.tls_ctx);
        if (!co_await handshake(st, ss)) co_return;
        if (!co_await greet(st, ss)) co_return;
        co_await command_loop(st, ss);
        co_return;
    }
    if (!co_await greet(ss.sock, ss)) co_return;
    if (co_await command_loop(ss.sock, ss) != loop_end::starttls) co_return;
    ssl::stream<tcp::socket&> st(ss.sock, *ss.tls_ctx);
    if (!co_await handshake(st, ss)) co_return;
    ss.forget_all();
    co_await command_loop(st, ss);
}

}  // namespace

asio::awaitable<void> serve_smtp(tcp::socket sock, daemon::listener_info const& l, daemon::context& ctx)
{
    using namespace asio::experimental::awaitable_operators;
    boost::system::error_code ec;
    auto const ep = sock.remote_endpoint(ec);
    if (ec) co_return;
    auto const peer = net::parse_ip(ep.address().to_string());
    if (!peer) co_return;

    std::string why;
    if (!ctx.admit(*peer, why)) {
        spdlog::warn("smtp refused ip={} listener={} reason={}", peer->to_string(), l.cfg.name, why);
        if (l.cfg.tls != config::tls_mode::implicit) {
            auto const msg = proto::reply(421, "4.7.0", ctx.settings()->hostname + " Error: too many connections");
            sock.non_blocking(true, ec);
            sock.send(asio::buffer(msg), 0, ec);
        }
        sock.close(ec);
        co_return;
    }
    daemon::admission const admitted{ctx, *peer};

    std::optional<smtp_session> session;
    try {
        session.emplace(ctx, l, sock, *peer);
    } catch (std::exception const& e) {
        spdlog::error("smtp session setup failed ip={} error={}", peer->to_string(), log::escape(e.what()));
        co_return;
    }
    auto& ss = *session;
    spdlog::info("sid={} smtp connect ip={} port={} listener={} tls={}", ss.sid, ss.ip, ep.port(), l.cfg.name,
                 config::to_string(l.cfg.tls));
    try {
        co_await (run_session(ss) || smtp_watchdog(ss));
    } catch (boost::system::system_error const& e) {
        if (ss.clock.expired) {
            ss.end_reason = "timeout";
        } else {
            ss.end_reason = "error";
            spdlog::warn("sid={} smtp i/o error={}", ss.sid, log::escape(e.what()));
        }
    } catch (std::exception const& e) {
        ss.end_reason = "error";
        spdlog::error("sid={} smtp error={}", ss.sid, log::escape(e.what()));
    }
    ss.clock.finished = true;
    if (ss.clock.expired && ss.end_reason.rfind("timeout", 0) != 0) ss.end_reason = "timeout";
    spdlog::info("sid={} smtp end reason={} ip={} messages={} user={}", ss.sid, ss.end_reason, ss.ip, ss.messages,
                 ss.auth_user.empty() ? std::string("-") : log::escape(ss.auth_user, 64));
    boost::system::error_code ignored;
    sock.shutdown(tcp::socket::shutdown_both, ignored);
    sock.close(ignored);
}

}  // namespace popgate::session
