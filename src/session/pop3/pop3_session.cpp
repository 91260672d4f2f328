// The POP3 session coroutine: reads lines, lets pop3_on_line decide, writes
// the replies and runs the effects that touch the mailbox (RETR/TOP streamed
// from the file, UPDATE on QUIT) or the connection (STLS).
#include "pop3_session.hpp"

#include "popgate/auth/plaintext.hpp"
#include "popgate/io/blocking.hpp"
#include "popgate/log/log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace popgate::session {
namespace {

constexpr std::size_t retr_chunk = 64 * 1024;

struct fd_guard {
    int fd;
    ~fd_guard()
    {
        if (fd >= 0) ::close(fd);
    }
};

}  // namespace

char const* yes_no(bool b) noexcept { return b ? "yes" : "no"; }

std::string pop3_protocol::refusal(std::string_view why, config::settings const&) const
{
    return proto::pop3_err("[SYS/TEMP] " + std::string(why));
}

std::unique_ptr<server::session> pop3_protocol::open(server::connection& c)
{
    return std::make_unique<pop3_session>(s_, c);
}

pop3_session::pop3_session(pop3_services& svc, server::connection& c)
    : svc_(svc),
      c_(c),
      s_(*c.settings),
      ch_(c, s_.pop3_max_line, s_.pop3_idle_timeout),
      rules_{s_.max_bad_commands, s_.max_junk_commands, c.ip, spdlog::should_log(spdlog::level::debug),
             s_.pop3_max_line}
{
    // The APOP timestamp travels only in the greeting (RFC 1939 §7), and RFC
    // 2595 §4 gives no new greeting after STLS: on a tls = "required"
    // listener the clear greeting must not invite APOP, so APOP is not
    // offered there at all (APOP answers "not available", before TLS and after).
    if (s_.apop && !c.listener.tls_required()) timestamp_ = unique_challenge(s_.hostname);
}

std::string pop3_session::end_fields() const
{
    return "user=" + (user_.empty() ? std::string("-") : log::field(user_, 64)) + " ip=" + c_.ip;
}

pop3_offer pop3_session::offer() const
{
    pop3_offer o;
    bool const tls = c_.stream.tls_active();
    o.stls_port = c_.listener.starttls() && (tls || c_.stream.can_start_tls());
    o.stls = o.stls_port && !tls;
    o.tls_active = tls;
    o.plaintext = auth::plaintext_allowed(s_, c_.listener, tls, c_.peer);
    o.cram_md5 = s_.cram_md5;
    o.apop = !timestamp_.empty();
    if (c_.listener.tls_required() && !tls) {
        o.tls_required = true;
        o.plaintext = o.cram_md5 = false;  // nothing to log in with is advertised in clear
    }
    return o;
}

// RETR / TOP: the first line, then the stuffed message read in chunks, never
// held whole in memory. false: the session must end (peer gone or a read
// error after +OK, which no reply could correct).
asio::awaitable<bool> pop3_session::send_message(mail::message_entry const& m, std::optional<std::uint32_t> top)
{
    fd_guard f{::open(m.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW)};
    // Renamed meanwhile by another agent (an IMAP server setting a flag):
    // the same message, as DELE finds it too; looked for afresh when it was
    // renamed again before the open.
    for (int tries = 0; f.fd < 0 && errno == ENOENT && md_ && tries < mail::maildir::renamed_tries; ++tries) {
        if (auto const now = md_->renamed(m, tries > 0))
            f.fd = ::open(now->c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        else {
            errno = ENOENT;  // gone
            break;
        }
    }
    if (f.fd < 0) {
        int const err = errno;
        spdlog::warn("sid={} pop3 open message user={} path={} error={}", c_.sid, log::field(user_, 64),
                     log::field(m.path.string()), std::strerror(err));
        co_return co_await ch_.send(err == ENOENT ? "-ERR [SYS/TEMP] Message is no longer available\r\n"
                                              : "-ERR [SYS/TEMP] Unable to read the message\r\n");
    }
    std::string out = top ? "+OK top of message follows\r\n" : "+OK " + std::to_string(m.size) + " octets\r\n";
    proto::pop3_stuffer stuffer(top);
    std::string buf(retr_chunk, '\0');
    while (!stuffer.done()) {
        auto const n = ::read(f.fd, buf.data(), buf.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            spdlog::error("sid={} pop3 read message path={} error={}", c_.sid, log::field(m.path.string()),
                          std::strerror(errno));
            c_.end_reason = "read-error";
            co_return false;
        }
        if (n == 0) break;
        stuffer.feed({buf.data(), static_cast<std::size_t>(n)}, out);
        if (out.size() >= retr_chunk) {
            if (!co_await ch_.send(out)) co_return false;
            out.clear();
        }
    }
    stuffer.finish(out);
    co_return co_await ch_.send(out);
}

// UPDATE (RFC 1939 §6): remove the marked messages, then answer.
asio::awaitable<bool> pop3_session::do_quit()
{
    c_.end_reason = "quit";
    auto const marked = st_.box->marked();
    std::size_t failed = 0;
    if (!marked.empty()) {
        auto job = [this, &marked] {
            std::size_t f = 0;
            for (auto const& m : marked) {
                try {
                    md_->remove(m);
                } catch (std::exception const& e) {
                    spdlog::error("sid={} pop3 delete failed user={} error={}", c_.sid, log::field(user_, 64),
                                  log::field(e.what()));
                    ++f;
                }
            }
            return f;
        };
        failed = co_await io::run_blocking(svc_.blocking, job);
    }
    // The messages still in the maildrop: those not marked, and those marked
    // that could not be removed.
    auto const left = st_.box->live_count() + failed;
    spdlog::info("sid={} pop3 update user={} deleted={} failed={} left={}", c_.sid, log::field(user_, 64),
                 marked.size() - failed, failed, left);
    lock_.release();
    std::string const bye = failed      ? "-ERR [SYS/TEMP] Some deleted messages not removed\r\n"
                            : left == 0 ? "+OK popgate POP3 server signing off (maildrop empty)\r\n"
                                        : "+OK popgate POP3 server signing off (" + std::to_string(left) +
                                              " messages left)\r\n";
    bool const sent = co_await ch_.send(bye);
    (void)sent;  // the session ends either way
    co_return false;
}

// Runs one step's effect; false: the session ends.
asio::awaitable<bool> pop3_session::run_step(pop3_step& step)
{
    ch_.write_log(step.log);
    switch (step.effect) {
    case pop3_effect::reply: co_return co_await ch_.send(step.reply);
    case pop3_effect::close:
    {
        c_.end_reason = step.end_reason;
        bool const sent = co_await ch_.send(step.reply);
        (void)sent;  // the session ends either way
        co_return false;
    }
    case pop3_effect::user: co_return co_await do_user(std::string(step.cmd.args));
    case pop3_effect::pass: co_return co_await do_pass(step.user, std::string(step.cmd.args));
    case pop3_effect::apop: co_return co_await do_apop(step.user, step.digest);
    case pop3_effect::auth: co_return co_await do_auth(step.mech, step.initial);
    case pop3_effect::retr: co_return co_await send_message(*step.msg, step.top_lines);
    case pop3_effect::quit: co_return co_await do_quit();
    case pop3_effect::stls: {
        if (!co_await ch_.send(step.reply)) co_return false;
        // CVE-2011-0411: bytes the client sent after STLS in clear must never
        // be executed under TLS. Drop them and anything half-entered.
        if (ch_.reader().has_pending())
            spdlog::warn("sid={} pop3 stls discarded_bytes={} ip={}", c_.sid, ch_.reader().pending().size(), c_.ip);
        ch_.reader().clear();
        // RFC 2595 §4: no new greeting; the session stays in AUTHORIZATION.
        co_return co_await c_.stream.start_tls();
    }
    }
    co_return false;
}

// POP3 has no unsolicited replies, but a client at its prompt when the
// daemon stops is told why its connection goes (RFC 3206 [SYS/TEMP]: try
// again later), as Dovecot does; an idle timeout closes silently, as RFC
// 1939 §3 has the autologout timer do ("without ... sending any response").
std::string pop3_session::last_words() const
{
    if (!waiting_for_command_ || ch_.has_output() || !c_.clock.shutdown) return {};
    return "-ERR [SYS/TEMP] Server shutting down, try again later\r\n";
}

asio::awaitable<void> pop3_session::run()
{
    std::string greeting = "+OK popgate POP3 server ready";
    if (!timestamp_.empty()) greeting += " " + timestamp_;
    if (!co_await ch_.send(greeting + "\r\n")) co_return;
    for (;;) {
        std::string line;
        // After USER, PASS must follow within limits.command_timeout.
        std::optional<io::clock::time_point> limit;
        if (!st_.pending_user.empty()) limit = user_at_ + s_.command_timeout;
        waiting_for_command_ = true;
        auto const rs = co_await ch_.read_line(line, limit);
        waiting_for_command_ = false;
        pop3_step step;
        switch (rs) {
        case io::read_status::ok: step = pop3_on_line(st_, line, offer(), rules_); break;
        case io::read_status::too_long: step = pop3_on_too_long(st_, rules_); break;
        case io::read_status::eof: c_.end_reason = "eof"; co_return;
        case io::read_status::timed_out: c_.end_reason = "timeout"; co_return;
        case io::read_status::too_slow: c_.end_reason = "timeout-command"; co_return;
        case io::read_status::error: c_.end_reason = "error"; co_return;
        }
        if (!co_await run_step(step)) co_return;
    }
}

}  // namespace popgate::session
