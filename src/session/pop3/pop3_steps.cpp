// The POP3 command steps: one line in, the reply and the effect out. The
// command table (proto::spec_for: phases, junk, progress, secret) is enforced
// here, in one place, before a command's handler runs.
#include "popgate/log/log.hpp"
#include "popgate/proto/ascii.hpp"
#include "popgate/session/pop3/pop3_state.hpp"

#include <algorithm>
#include <array>

namespace popgate::session {
namespace {

using proto::pop3_verb;
using spdlog::level::debug;
using spdlog::level::warn;

pop3_step reply(std::string text)
{
    pop3_step s;
    s.reply = std::move(text);
    return s;
}

pop3_step effect(pop3_effect e, std::string text = {})
{
    pop3_step s;
    s.effect = e;
    s.reply = std::move(text);
    return s;
}

// A protocol error: counted, and past limits.max_bad_commands the session ends.
pop3_step bad(pop3_state& st, pop3_rules const& r, std::string_view text)
{
    ++st.bad;
    if (r.max_bad_commands > 0 && st.bad >= r.max_bad_commands) {
        auto s = effect(pop3_effect::close, "-ERR too many errors\r\n");
        s.end_reason = "too-many-errors";
        s.log.push_back({warn, "pop3 too-many-errors ip=" + r.ip + " count=" + std::to_string(st.bad)});
        return s;
    }
    return reply(std::string(text));
}

// RFC 1939 §3: a message number is a decimal number. One that is not ("RETR
// abc") is a malformed command and counts as an error; a number with no
// message behind it is a client's stale view of the maildrop, answered by the
// maildrop and not counted.
bool malformed_number(std::string_view args) noexcept
{
    return !args.empty() && !proto::parse_msg_number(args);
}
constexpr std::string_view invalid_number = "-ERR invalid message number\r\n";

// (Built in place: g++ 12 warns falsely on a braced log_line temporary.)
void prepend(std::vector<log_line>& log, spdlog::level::level_enum level, std::string text)
{
    log.emplace(log.begin(), log_line{level, std::move(text)});
}

// Past limits.max_junk_commands without progress the session ends.
pop3_step too_much_junk(pop3_state& st, pop3_rules const& r)
{
    auto s = effect(pop3_effect::close, "-ERR [SYS/TEMP] Too many commands without progress\r\n");
    s.end_reason = "too-many-junk-commands";
    s.log.push_back({warn, "pop3 too many commands without progress ip=" + r.ip + " count=" + std::to_string(st.junk)});
    return s;
}

using handler = pop3_step (*)(pop3_state&, proto::pop3_command const&, pop3_offer const&, pop3_rules const&);

pop3_step on_capa(pop3_state& st, proto::pop3_command const&, pop3_offer const& o, pop3_rules const&)
{
    return reply(pop3_capa(o, st.phase));
}

pop3_step on_quit(pop3_state& st, proto::pop3_command const&, pop3_offer const&, pop3_rules const&)
{
    if (st.phase == pop3_phase::transaction) return effect(pop3_effect::quit);
    auto s = effect(pop3_effect::close, "+OK popgate POP3 server signing off\r\n");
    s.end_reason = "quit";
    return s;
}

pop3_step on_user(pop3_state& st, proto::pop3_command const& c, pop3_offer const& o, pop3_rules const& r)
{
    // A mechanism this listener refuses is an error of the client's: counted,
    // so that a session cannot go on asking for ever (the same for PASS,
    // APOP and AUTH below).
    if (!o.plaintext) return bad(st, r, pop3_reply::plaintext_refused);
    if (c.args.empty()) return bad(st, r, "-ERR USER needs a user name\r\n");
    // No progress until a login succeeds (USER answers +OK to any name).
    if (++st.junk > r.max_junk_commands) return too_much_junk(st, r);
    return effect(pop3_effect::user);
}

pop3_step on_pass(pop3_state& st, proto::pop3_command const&, pop3_offer const& o, pop3_rules const& r)
{
    if (st.pending_user.empty()) return bad(st, r, "-ERR USER first\r\n");
    if (!o.plaintext) {
        st.pending_user.clear();
        return bad(st, r, pop3_reply::plaintext_refused);
    }
    auto s = effect(pop3_effect::pass);
    s.user = std::exchange(st.pending_user, {});
    return s;
}

pop3_step on_apop(pop3_state& st, proto::pop3_command const& c, pop3_offer const& o, pop3_rules const& r)
{
    if (!o.apop) return bad(st, r, "-ERR [AUTH] APOP is not available on this server\r\n");
    auto a = proto::parse_apop_args(c.args);
    if (!a) return bad(st, r, "-ERR APOP needs a user name and a 32-digit hex digest\r\n");
    auto s = effect(pop3_effect::apop);
    s.user.assign(a->first);
    s.digest.assign(a->second);
    return s;
}

pop3_step on_auth(pop3_state& st, proto::pop3_command const& c, pop3_offer const& o, pop3_rules const& r)
{
    if (c.args.empty()) {
        // The list of mechanisms, as CAPA's SASL line: no progress.
        if (++st.junk > r.max_junk_commands) return too_much_junk(st, r);
        return reply(pop3_auth_list(o));
    }
    auto const sp = c.args.find(' ');
    auto const m = proto::parse_sasl_mech(c.args.substr(0, sp));
    auto const offered = pop3_sasl_mechs(o);
    if (!m || std::find(offered.begin(), offered.end(), *m) == offered.end()) {
        if (m && proto::sasl_is_plaintext(*m) && !o.plaintext) return bad(st, r, pop3_reply::plaintext_refused);
        return bad(st, r, "-ERR Unsupported authentication mechanism\r\n");
    }
    // CRAM-MD5: the server speaks first; an initial response is the
    // client's syntax error, not a failed authentication.
    if (*m == proto::sasl_mech::cram_md5 && sp != std::string_view::npos)
        return bad(st, r, "-ERR CRAM-MD5 takes no initial response\r\n");
    // No progress until a login succeeds: AUTH followed by "*", over and
    // over, must not hold a session for ever.
    if (++st.junk > r.max_junk_commands) return too_much_junk(st, r);
    auto s = effect(pop3_effect::auth);
    s.mech = *m;
    if (sp != std::string_view::npos) s.initial = c.args.substr(sp + 1);
    return s;
}

pop3_step on_stls(pop3_state& st, proto::pop3_command const&, pop3_offer const& o, pop3_rules const& r)
{
    if (!o.stls_port) return bad(st, r, "-ERR STLS not offered on this port\r\n");
    if (o.tls_active) return bad(st, r, "-ERR Command not permitted when TLS active\r\n");
    // RFC 2595 §4: the session stays in AUTHORIZATION; a USER sent before
    // is forgotten with everything else from the clear-text part.
    st.pending_user.clear();
    return effect(pop3_effect::stls, "+OK Begin TLS negotiation\r\n");
}

pop3_step on_stat(pop3_state& st, proto::pop3_command const& c, pop3_offer const&, pop3_rules const& r)
{
    if (!c.args.empty()) return bad(st, r, "-ERR STAT takes no argument\r\n");
    return reply(st.box->stat());
}

pop3_step on_rset(pop3_state& st, proto::pop3_command const& c, pop3_offer const&, pop3_rules const& r)
{
    if (!c.args.empty()) return bad(st, r, "-ERR RSET takes no argument\r\n");
    return reply(st.box->rset());
}

pop3_step on_noop(pop3_state& st, proto::pop3_command const& c, pop3_offer const&, pop3_rules const& r)
{
    if (!c.args.empty()) return bad(st, r, "-ERR NOOP takes no argument\r\n");
    return reply("+OK\r\n");
}

pop3_step on_list(pop3_state& st, proto::pop3_command const& c, pop3_offer const&, pop3_rules const& r)
{
    if (malformed_number(c.args)) return bad(st, r, invalid_number);
    return reply(st.box->list(c.args));
}

pop3_step on_uidl(pop3_state& st, proto::pop3_command const& c, pop3_offer const&, pop3_rules const& r)
{
    if (malformed_number(c.args)) return bad(st, r, invalid_number);
    return reply(st.box->uidl(c.args));
}

pop3_step on_dele(pop3_state& st, proto::pop3_command const& c, pop3_offer const&, pop3_rules const& r)
{
    if (c.args.empty()) return bad(st, r, "-ERR DELE needs a message number\r\n");
    if (malformed_number(c.args)) return bad(st, r, invalid_number);
    return reply(st.box->dele(c.args));
}

pop3_step on_retr(pop3_state& st, proto::pop3_command const& c, pop3_offer const&, pop3_rules const& r)
{
    if (c.args.empty()) return bad(st, r, "-ERR RETR needs a message number\r\n");
    if (malformed_number(c.args)) return bad(st, r, invalid_number);
    auto const l = st.box->find(c.args);
    if (!l.msg) return reply(l.error);
    auto s = effect(pop3_effect::retr);
    s.msg = l.msg;
    return s;
}

pop3_step on_top(pop3_state& st, proto::pop3_command const& c, pop3_offer const&, pop3_rules const& r)
{
    auto const a = proto::parse_top_args(c.args);
    if (!a) return bad(st, r, "-ERR TOP needs a message number and a line count\r\n");
    auto const l = st.box->find(a->first);
    if (!l.msg) return reply(l.error);
    auto s = effect(pop3_effect::retr);
    s.msg = l.msg;
    s.top_lines = a->second;
    return s;
}

// The handlers beside proto's table of rules (proto::spec_for), row by row.
struct command_row {
    pop3_verb verb;
    handler run;
};
constexpr std::array<command_row, 15> handlers{{
    {pop3_verb::user, on_user},
    {pop3_verb::pass, on_pass},
    {pop3_verb::apop, on_apop},
    {pop3_verb::auth, on_auth},
    {pop3_verb::stat, on_stat},
    {pop3_verb::list, on_list},
    {pop3_verb::uidl, on_uidl},
    {pop3_verb::top, on_top},
    {pop3_verb::retr, on_retr},
    {pop3_verb::dele, on_dele},
    {pop3_verb::rset, on_rset},
    {pop3_verb::noop, on_noop},
    {pop3_verb::quit, on_quit},
    {pop3_verb::capa, on_capa},
    {pop3_verb::stls, on_stls},
}};
constexpr bool rows_in_verb_order()
{
    for (std::size_t i = 0; i < handlers.size(); ++i)
        if (static_cast<std::size_t>(handlers[i].verb) != i) return false;
    return true;
}
static_assert(rows_in_verb_order(), "one handler per command table row, in pop3_verb order");

std::string_view parse_error_reply(proto::errc e)
{
    switch (e) {
    case proto::errc::empty_line: return "-ERR Empty command\r\n";
    case proto::errc::line_too_long: return "-ERR line too long\r\n";
    case proto::errc::nul_byte: return "-ERR NUL byte in command\r\n";
    case proto::errc::bare_cr_or_lf: return "-ERR Bare CR in command\r\n";
    default: return "-ERR Unknown command\r\n";
    }
}

}  // namespace

pop3_step pop3_on_line(pop3_state& st, std::string_view line, pop3_offer const& o, pop3_rules const& r)
{
    // A bare LF ends a command too (lenient like Dovecot; POP3 has no
    // smuggling hazard in commands).
    if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
    auto const cmd = proto::parse_pop3(line, r.max_line);
    if (!cmd) {
        auto s = bad(st, r, parse_error_reply(static_cast<proto::errc>(cmd.error().value())));
        // Never the line itself: after a failed AUTH exchange it may be a password.
        prepend(s.log, debug,
                "pop3 bad line " + log::line_shape(proto::pop3_keyword_of(line), line.size()) +
                    " error=" + cmd.error().message());
        return s;
    }
    auto const& spec = proto::spec_for(cmd->verb);
    std::vector<log_line> logged;
    if (r.log_commands)
        logged.push_back({debug, spec.secret_args ? "pop3 cmd=" + std::string(spec.keyword)
                                                  : "pop3 cmd=" + std::string(spec.keyword) +
                                                        " args=" + log::field(cmd->args, 80)});
    pop3_step s;
    if (!spec.allowed_in(st.phase)) {
        s = bad(st, r, "-ERR Command not valid in this state\r\n");
    } else if (o.tls_required && !spec.pre_tls) {
        s = bad(st, r, std::string(pop3_reply::tls_required));
    } else if (spec.junk && ++st.junk > r.max_junk_commands) {
        s = too_much_junk(st, r);
    } else {
        if (spec.progress) st.junk = 0;
        s = handlers[static_cast<std::size_t>(cmd->verb)].run(st, *cmd, o, r);
    }
    s.cmd = *cmd;
    logged.insert(logged.end(), s.log.begin(), s.log.end());
    s.log = std::move(logged);
    return s;
}

pop3_step pop3_bad_command(pop3_state& st, pop3_rules const& r, std::string_view text)
{
    return bad(st, r, text);
}

pop3_step pop3_on_too_long(pop3_state& st, pop3_rules const& r)
{
    auto s = bad(st, r, "-ERR line too long\r\n");
    prepend(s.log, debug, "pop3 line too long");
    return s;
}

pop3_step pop3_user_checked(pop3_state& st, std::string name)
{
    st.pending_user = std::move(name);
    return reply("+OK\r\n");
}

std::string pop3_logged_in(pop3_state& st, std::vector<mail::message_entry> messages)
{
    st.box.emplace(std::move(messages));
    st.phase = pop3_phase::transaction;
    st.junk = 0;  // progress
    st.pending_user.clear();
    return proto::pop3_ok("Logged in, maildrop has " + std::to_string(st.box->live_count()) + " messages (" +
                          std::to_string(st.box->live_octets()) + " octets)");
}

std::string pop3_mech_name(proto::sasl_mech m)
{
    return "sasl-" + proto::ascii_lowered(proto::sasl_mech_name(m));
}

}  // namespace popgate::session
