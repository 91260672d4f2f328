// The SMTP command steps: one line in, the replies and the effect out.
#include "popgate/log/log.hpp"
#include "popgate/proto/ascii.hpp"
#include "popgate/session/smtp/smtp_state.hpp"

#include <algorithm>
#include <array>

namespace popgate::session {
namespace {

using proto::smtp_phase;
using proto::smtp_verb;
using spdlog::level::debug;
using spdlog::level::info;
using spdlog::level::warn;

smtp_step queue(int code, std::string_view enhanced, std::string_view text)
{
    smtp_step s;
    s.reply = proto::reply(code, enhanced, text);
    return s;
}

// Counts one more command against a per-session limit; past it, the 421
// follows whatever was queued and the session ends once it is written.
bool over_limit(smtp_step& s, smtp_offer const& o, std::size_t& counter, std::size_t limit, std::string_view what,
                char const* reason)
{
    if (++counter <= limit) return false;
    s.log.push_back({warn, "smtp " + std::string(what) + " ip=" + o.ip + " count=" + std::to_string(counter)});
    s.reply += proto::reply(421, "4.7.0", o.host + " Error: " + std::string(what));
    s.effect = smtp_effect::close;
    s.end_reason = reason;
    return true;
}

// What the log says of a line that did not parse (log::line_shape).
std::string line_shape(std::string_view line) { return log::line_shape(proto::smtp_keyword_of(line), line.size()); }

// An error of the client's: an unknown or out-of-sequence command, a syntax
// error, a sender or recipient we refuse (our 5xx, as Postfix's
// smtpd_hard_error_limit; a 4xx is not the client's fault, and the
// upstream's refusal of a recipient is the upstream's). Past
// limits.max_bad_commands without a delivered message the session ends: no
// harvesting of user names or flooding of the audit table with denied
// recipients on one connection. A delivered message starts the count again.
smtp_step bad(smtp_state& st, smtp_offer const& o, smtp_step s)
{
    over_limit(s, o, st.bad, o.max_bad_commands, "too many errors", "too-many-errors");
    return s;
}

// The reply `code enhanced text`, counted as an error.
smtp_step bad(smtp_state& st, smtp_offer const& o, int code, std::string_view enhanced, std::string_view text)
{
    return bad(st, o, queue(code, enhanced, text));
}

using handler = smtp_step (*)(smtp_state&, proto::smtp_command const&, smtp_offer const&);

smtp_step on_helo(smtp_state& st, proto::smtp_command const& cmd, smtp_offer const& o)
{
    auto const arg = cmd.args.substr(0, cmd.args.find(' '));
    if (arg.empty())
        return queue(501, "5.5.4", cmd.verb == smtp_verb::ehlo ? "Syntax: EHLO hostname" : "Syntax: HELO hostname");
    // RFC 5321 §4.1.4: HELO/EHLO resets the transaction.
    st.reset_transaction();
    st.phase = smtp_phase::greeted;
    st.helo.assign(arg);
    st.esmtp = cmd.verb == smtp_verb::ehlo;
    smtp_step s;
    if (!st.esmtp) {
        s.reply = "250 " + o.host + "\r\n";
        return s;
    }
    // EHLO keyword lines carry no enhanced code: clients parse them as keywords.
    proto::smtp_reply r{250, "", {o.host, "PIPELINING", "SIZE " + std::to_string(o.max_message_size), "8BITMIME",
                                  "ENHANCEDSTATUSCODES"}};
    if (o.can_start_tls) r.lines.emplace_back("STARTTLS");
    if (!st.authenticated) {
        auto const mechs = smtp_auth_mechs(o);
        if (!mechs.empty()) {
            std::string line = "AUTH";
            for (auto const& m : mechs) line += " " + m;
            r.lines.push_back(line);
        }
    }
    s.reply = proto::format_reply(r);
    return s;
}

smtp_step on_mail(smtp_state& st, proto::smtp_command const& cmd, smtp_offer const& o)
{
    if (o.mail_needs_auth && !st.authenticated) {
        // RFC 4954 §6 and RFC 6409 §4.3: this listener takes mail from
        // authenticated clients only, local recipients included.
        auto s = queue(530, "5.7.0", "Authentication required");
        s.log.push_back({info, "smtp mail refused ip=" + o.ip + " reason=auth-required"});
        return bad(st, o, std::move(s));
    }
    auto a = proto::parse_mail_from(cmd.args);
    if (!a) {
        if (a.error() == proto::errc::bad_parameter) return bad(st, o, 501, "5.5.4", "Syntax error in parameters");
        if (a.error() == proto::errc::too_long) return bad(st, o, 501, "5.1.7", "Path too long");  // §4.5.3.1.10
        return bad(st, o, 501, "5.1.7", "Bad sender address syntax");
    }
    std::optional<std::uint64_t> size;
    bool eight = false;
    for (auto const& p : a->params) {
        if (p.keyword == "SIZE") {
            auto n = proto::parse_size_param(p.value);
            if (!n) return bad(st, o, 501, "5.5.4", "Bad SIZE parameter");
            size = *n;
        } else if (p.keyword == "BODY") {
            auto b = proto::parse_body_param(p.value);
            // RFC 5321 §4.1.1.11: a value not implemented (BINARYMIME
            // without CHUNKING) is 555, as in Postfix.
            if (!b) return bad(st, o, 555, "5.5.4", "Unsupported option: BODY=" + p.value.substr(0, 64));
            eight = *b == proto::body_type::eight_bit_mime;
        } else if (p.keyword == "AUTH") {
            // RFC 4954 §5: accepted and not passed on (we do not trust it).
        } else {
            return bad(st, o, 555, "5.5.4", "Unsupported option: " + p.keyword);
        }
    }
    if (size && *size > o.max_message_size) {
        auto s = queue(552, "5.3.4", "Message size exceeds fixed limit");
        s.log.push_back({info, "smtp mail refused ip=" + o.ip + " size=" + std::to_string(*size) +
                                   " limit=" + std::to_string(o.max_message_size)});
        return bad(st, o, std::move(s));
    }
    st.mail_from = a->path.to_string();
    st.declared_size = size;
    st.eight_bit = eight;
    st.phase = smtp_phase::in_mail;
    auto s = queue(250, "2.1.0", "Ok");
    s.log.push_back({info, "smtp mail from=" + log::field("<" + st.mail_from + ">") + " ip=" + o.ip +
                               (size ? " size=" + std::to_string(*size) : std::string())});
    return s;
}

smtp_step on_rcpt(smtp_state& st, proto::smtp_command const& cmd, smtp_offer const& o)
{
    auto a = proto::parse_rcpt_to(cmd.args);
    if (!a) {
        if (a.error() == proto::errc::bad_parameter) return bad(st, o, 501, "5.5.4", "Syntax error in parameters");
        if (a.error() == proto::errc::too_long) return bad(st, o, 501, "5.1.3", "Path too long");
        return bad(st, o, 501, "5.1.3", "Bad recipient address syntax");
    }
    if (!a->params.empty()) return bad(st, o, 555, "5.5.4", "Unsupported option: " + a->params.front().keyword);
    // A recipient this transaction already took: its first decision stands,
    // and deciding again would charge the grant's hourly recipient quota for
    // a message that goes to it once.
    auto const addr = a->path.to_string();
    if (st.has_rcpt(addr)) {
        ++st.rcpt_attempts;
        auto s = queue(250, "2.1.5", "Ok");
        s.log.push_back({info, "smtp rcpt to=" + log::field("<" + addr + ">") + " ip=" + o.ip + " decision=repeat"});
        return s;
    }
    if (st.rcpts.size() >= o.max_recipients) {
        auto s = queue(452, "4.5.3", "Error: too many recipients");
        s.log.push_back({warn, "smtp too many recipients ip=" + o.ip + " limit=" + std::to_string(o.max_recipients)});
        return s;
    }
    ++st.rcpt_attempts;
    smtp_step s;
    s.effect = smtp_effect::rcpt;
    s.rcpt = std::move(*a);
    return s;
}

smtp_step on_data(smtp_state&, proto::smtp_command const& cmd, smtp_offer const&)
{
    if (!cmd.args.empty()) return queue(501, "5.5.4", "Syntax: DATA");
    smtp_step s;
    s.effect = smtp_effect::data;
    return s;
}

smtp_step on_rset(smtp_state& st, proto::smtp_command const& cmd, smtp_offer const&)
{
    if (!cmd.args.empty()) return queue(501, "5.5.4", "Syntax: RSET");
    st.reset_transaction();
    return queue(250, "2.0.0", "Ok");
}

smtp_step on_noop(smtp_state&, proto::smtp_command const&, smtp_offer const&) { return queue(250, "2.0.0", "Ok"); }

smtp_step on_quit(smtp_state&, proto::smtp_command const&, smtp_offer const&)
{
    auto s = queue(221, "2.0.0", "Bye");
    s.effect = smtp_effect::close;
    s.end_reason = "quit";
    return s;
}

smtp_step on_vrfy(smtp_state&, proto::smtp_command const& cmd, smtp_offer const&)
{
    if (cmd.args.empty()) return queue(501, "5.5.4", "Syntax: VRFY address");
    // RFC 5321 §3.5.3: no user enumeration, but do not discourage sending.
    return queue(252, "2.0.0", "Cannot VRFY user, but will accept message and attempt delivery");
}

smtp_step on_expn(smtp_state&, proto::smtp_command const&, smtp_offer const&)
{
    return queue(502, "5.5.1", "Error: EXPN not supported");
}

smtp_step on_help(smtp_state&, proto::smtp_command const&, smtp_offer const& o)
{
    std::string cmds = "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP";
    if (o.can_start_tls) cmds += " STARTTLS";
    cmds += " AUTH";
    smtp_step s;
    s.reply = proto::format_reply({214, "2.0.0", {cmds, "See RFC 5321"}});
    return s;
}

smtp_step on_starttls(smtp_state&, proto::smtp_command const& cmd, smtp_offer const& o)
{
    if (!cmd.args.empty()) return queue(501, "5.5.4", "Syntax: STARTTLS");
    if (o.tls_active) return queue(503, "5.5.1", "Error: TLS already active");
    if (!o.starttls_port) return queue(502, "5.5.1", "Error: command not implemented");
    if (!o.can_start_tls) return queue(454, "4.7.0", "TLS not available due to temporary reason");
    auto s = queue(220, "2.0.0", "Ready to start TLS");
    s.effect = smtp_effect::starttls;
    return s;
}

smtp_step on_auth(smtp_state& st, proto::smtp_command const&, smtp_offer const&)
{
    if (st.authenticated) return queue(503, "5.5.1", "Error: already authenticated");
    smtp_step s;
    s.effect = smtp_effect::auth;
    return s;
}

// The handlers beside proto's table of rules (proto::spec_for), row by row.
struct command_row {
    smtp_verb verb;
    handler run;
};
constexpr std::array<command_row, 13> handlers{{
    {smtp_verb::helo, on_helo},
    {smtp_verb::ehlo, on_helo},
    {smtp_verb::mail, on_mail},
    {smtp_verb::rcpt, on_rcpt},
    {smtp_verb::data, on_data},
    {smtp_verb::rset, on_rset},
    {smtp_verb::noop, on_noop},
    {smtp_verb::quit, on_quit},
    {smtp_verb::vrfy, on_vrfy},
    {smtp_verb::help, on_help},
    {smtp_verb::starttls, on_starttls},
    {smtp_verb::auth, on_auth},
    {smtp_verb::expn, on_expn},
}};
constexpr bool rows_in_verb_order()
{
    for (std::size_t i = 0; i < handlers.size(); ++i)
        if (static_cast<std::size_t>(handlers[i].verb) != i || proto::spec_for(handlers[i].verb).verb != handlers[i].verb)
            return false;
    return true;
}
static_assert(rows_in_verb_order(), "one handler per command table row, in smtp_verb order");

smtp_step sequence_error(smtp_state const& st, smtp_verb v)
{
    auto const connected = st.phase == smtp_phase::connected;
    switch (v) {
    case smtp_verb::mail:
        return queue(503, "5.5.1", connected ? "Error: send HELO/EHLO first" : "Error: nested MAIL command");
    case smtp_verb::rcpt: return queue(503, "5.5.1", "Error: need MAIL command");
    case smtp_verb::data:
        if (st.phase == smtp_phase::in_mail && st.rcpt_attempts > 0)
            return queue(554, "5.5.1", "Error: no valid recipients");
        if (st.phase == smtp_phase::in_mail) return queue(503, "5.5.1", "Error: need RCPT command");
        return queue(503, "5.5.1", "Error: need MAIL command");
    default:
        return queue(503, "5.5.1", connected ? "Error: send HELO/EHLO first" : "Error: MAIL transaction in progress");
    }
}

smtp_step parse_error(proto::errc e)
{
    switch (e) {
    // RFC 5321 §4.2.4: 500 is "not recognized"; 502 is a command known and
    // not implemented (EXPN, STARTTLS without TLS).
    case proto::errc::unknown_command: return queue(500, "5.5.2", "Error: command not recognized");
    case proto::errc::bad_arguments: return queue(501, "5.5.4", "Syntax error in parameters");
    case proto::errc::line_too_long: return queue(500, "5.5.2", "Error: line too long");
    case proto::errc::bare_cr_or_lf: return queue(500, "5.5.2", "Error: bare <CR> received");
    default: return queue(500, "5.5.2", "Error: bad syntax");
    }
}

}  // namespace

bool smtp_state::has_rcpt(std::string_view address) const noexcept
{
    // One recipient however its domain is cased (RFC 5321 §2.4); the local
    // part is the receiving host's to read, so it is compared as written. A
    // quoted local part may hold an '@': the domain follows the last one.
    auto const same = [&](std::string_view x) {
        auto const at = address.rfind('@');
        if (at == std::string_view::npos || x.rfind('@') != at) return x == address;
        return x.substr(0, at) == address.substr(0, at) && proto::iequals(x.substr(at), address.substr(at));
    };
    return std::any_of(rcpts.begin(), rcpts.end(), [&](smtp_recipient const& x) { return same(x.address); });
}

void smtp_state::reset_transaction()
{
    mail_from.clear();
    declared_size.reset();
    eight_bit = false;
    rcpts.clear();
    rcpt_attempts = 0;
    grant_message = false;
    ++transaction;
    if (phase != proto::smtp_phase::connected) phase = proto::smtp_phase::greeted;
}

void smtp_state::forget_all()
{
    reset_transaction();
    phase = proto::smtp_phase::connected;
    helo.clear();
    esmtp = false;
    authenticated = false;
    auth_user.clear();
}

std::vector<std::string> smtp_auth_mechs(smtp_offer const& o)
{
    std::vector<std::string> m;
    if (o.tls_required && !o.tls_active) return m;
    if (o.plaintext) {
        m.emplace_back("PLAIN");
        m.emplace_back("LOGIN");
    }
    if (o.cram_md5) m.emplace_back("CRAM-MD5");
    return m;
}

std::string smtp_greeting(smtp_offer const& o) { return "220 " + o.host + " ESMTP popgate\r\n"; }

smtp_step smtp_bad_command(smtp_state& st, smtp_offer const& o, std::string reply)
{
    smtp_step s;
    s.reply = std::move(reply);
    return bad(st, o, std::move(s));
}

smtp_step smtp_on_too_long(smtp_state& st, smtp_offer const& o)
{
    auto s = queue(500, "5.5.2", "Error: line too long");
    s.log.push_back({debug, "smtp line too long ip=" + o.ip + " limit=" + std::to_string(o.max_line)});
    return bad(st, o, std::move(s));
}

smtp_step smtp_on_line(smtp_state& st, std::string_view line, smtp_offer const& o)
{
    if (!line.empty() && line.back() == '\n') {
        // A bare LF ended this line: the smuggling class, refused.
        auto s = queue(500, "5.5.2", "Error: bare <LF> received");
        s.log.push_back({info, "smtp bare-lf ip=" + o.ip + " " + line_shape(line)});
        return bad(st, o, std::move(s));
    }
    auto cmd = proto::parse_smtp(line, o.max_line);
    if (!cmd) {
        auto s = parse_error(proto::errc(cmd.error().value()));
        s.log.push_back({debug, "smtp bad command ip=" + o.ip + " error=" + cmd.error().message() + " " +
                                    line_shape(line)});
        return bad(st, o, std::move(s));
    }
    auto const& spec = proto::spec_for(cmd->verb);
    std::vector<log_line> logged;
    if (o.log_commands)
        logged.push_back({debug, spec.secret_args ? "smtp cmd=" + std::string(proto::verb_name(cmd->verb))
                                                  : "smtp cmd=" + std::string(proto::verb_name(cmd->verb)) +
                                                        " args=" + log::field(cmd->args, 80)});
    smtp_step s;
    // TLS first, state second: on a tls = "required" listener every command
    // but EHLO/HELO, STARTTLS, NOOP, RSET and QUIT gets 530 in clear, whatever
    // the phase (a RCPT without MAIL is told to start TLS, not "need MAIL").
    if (o.tls_required && !o.tls_active && !spec.pre_tls) {
        s = bad(st, o, 530, "5.7.0", "Must issue a STARTTLS command first");
    } else if (!spec.allowed_in(st.phase)) {
        s = bad(st, o, sequence_error(st, cmd->verb));
    } else if (spec.junk && over_limit(s, o, st.junk, o.max_junk_commands, "too many commands without progress",
                                       "too-many-junk-commands")) {
        // s holds the 421.
    } else {
        s = handlers[static_cast<std::size_t>(cmd->verb)].run(st, *cmd, o);
    }
    s.cmd = *cmd;
    s.ends_group = spec.ends_group;
    logged.insert(logged.end(), s.log.begin(), s.log.end());
    s.log = std::move(logged);
    return s;
}

bool smtp_asks_upstream(smtp_state const& st, std::string_view address, relay::verdict const& v)
{
    using proto::relay_verdict;
    bool const relayed = v.what == relay_verdict::relay_auth || v.what == relay_verdict::relay_grant ||
                         v.what == relay_verdict::relay_network;
    return relayed && !st.has_rcpt(address);
}

smtp_step smtp_rcpt_decided(smtp_state& st, proto::mail_args const& rcpt, relay::verdict const& v, smtp_offer const& o,
                            relay::upstream_verdict const* upstream)
{
    auto const addr = rcpt.path.to_string();
    std::string const head = "smtp rcpt to=" + log::field("<" + addr + ">") + " ip=" + o.ip + " decision=";
    smtp_recipient r;
    r.address = addr;
    smtp_step s;
    switch (v.what) {
    case proto::relay_verdict::tempfail:
        // Never relay on a store failure; the client tries again later.
        s = queue(451, "4.3.0", "<" + addr + ">: Temporary lookup failure");
        s.log.push_back({spdlog::level::err, head + "error detail=" + log::field(v.detail)});
        return s;
    case proto::relay_verdict::local:
        if (!v.box) {
            s = queue(550, "5.1.1", "<" + addr + ">: Recipient address rejected: User unknown");
            s.log.push_back({info, head + "local detail=unknown-user result=rejected"});
            return bad(st, o, std::move(s));
        }
        s.log.push_back({info, head + "local detail=user=" + log::field(v.box->user, 64)});
        r.local = true;
        r.user = v.box->user;
        r.maildir = v.box->maildir;
        break;
    default:
        s.log.push_back({info, head + std::string(proto::to_string(v.what)) + " detail=" + v.detail +
                                   (st.authenticated ? " sasl_user=" + log::field(st.auth_user, 64) : "")});
        if (v.what == proto::relay_verdict::deny) {
            s.reply = proto::reply(554, "5.7.1", "<" + addr + ">: Relay access denied");
            return bad(st, o, std::move(s));
        }
        if (v.what == proto::relay_verdict::over_quota) {
            // Temporary: the hour passes, or the client uses SMTP AUTH.
            s.reply = proto::reply(452, "4.7.1", "<" + addr + ">: Relay quota exceeded for your address (" +
                                                     v.reason + "), try again later or use SMTP AUTH");
            return s;
        }
        // Counted at the decision, whatever the upstream says next.
        if (v.what == proto::relay_verdict::relay_grant) st.grant_message = true;
        if (upstream) {
            auto& line = s.log.back().text;
            if (upstream->what == relay::upstream_verdict::kind::ok) {
                line += " upstream_reply=" + std::to_string(upstream->code);
                break;
            }
            // The upstream's refusal of this recipient, as it said it (code
            // and enhanced code; its text quoted after ours).
            line += " " + upstream_fields(*upstream, "refused");
            s.log.back().level = upstream->what == relay::upstream_verdict::kind::permanent ? info : warn;
            // Not counted as the client's error: a stale address in a
            // large mailing, or a sender the upstream refuses (each RCPT
            // then gets its 5xx), must not cost a real client its session.
            s.reply = proto::reply(upstream->code, upstream->enhanced, upstream->text);
            return s;
        }
    }
    if (!st.has_rcpt(addr)) st.rcpts.push_back(std::move(r));
    st.junk = 0;  // progress
    st.phase = smtp_phase::in_rcpt;
    s.reply = proto::reply(250, "2.1.5", "Ok");
    return s;
}

smtp_auth_request smtp_auth_start(std::string_view args, smtp_offer const& o)
{
    smtp_auth_request r;
    auto const sp = args.find(' ');
    auto const name = args.substr(0, sp);
    if (sp != std::string_view::npos) r.initial = args.substr(sp + 1);
    if (name.empty()) {
        r.refusal = proto::reply(501, "5.5.4", "Syntax: AUTH mechanism");
        return r;
    }
    auto const m = proto::parse_sasl_mech(name);
    // PLAIN and LOGIN are recognised even where policy refuses them: 538
    // 5.7.11 where STARTTLS would allow them (RFC 4954 §6), 504 where
    // nothing would (auth.plaintext = "never", or TLS is already on).
    bool const refused_plaintext = m && proto::sasl_is_plaintext(*m) && !o.plaintext;
    if (!m || (*m == proto::sasl_mech::cram_md5 && !o.cram_md5) ||
        (refused_plaintext && !(o.can_start_tls && o.plaintext_with_tls))) {
        r.refusal = proto::reply(504, "5.5.4", "Unrecognized authentication type");
        return r;
    }
    if (refused_plaintext) {
        r.refusal = proto::reply(538, "5.7.11", "Encryption required for requested authentication mechanism");
        return r;
    }
    // CRAM-MD5: the server speaks first; an initial response is a syntax
    // error (RFC 4954 §4: 501), not a failed authentication to count.
    if (*m == proto::sasl_mech::cram_md5 && r.initial) {
        r.refusal = proto::reply(501, "5.5.2", "CRAM-MD5 takes no initial response");
        return r;
    }
    r.mech = m;
    return r;
}

std::string upstream_fields(relay::upstream_verdict const& v, std::string_view result)
{
    std::string out = "upstream_reply=" + std::to_string(v.code) +
                      " upstream_status=" + (v.enhanced.empty() ? std::string("-") : v.enhanced) +
                      " result=" + std::string(result);
    if (!v.tls.empty()) out += " tls=" + v.tls;
    out += " upstream_detail=" + log::field(v.said.empty() ? v.log : v.said, 200);
    return out;
}

}  // namespace popgate::session
