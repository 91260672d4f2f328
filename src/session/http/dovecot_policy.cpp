#include "popgate/session/http/dovecot_policy.hpp"

// GCC 12 reports the coroutine frames' own operator new/delete pair as
// mismatched once inlining sees both (GCC bug 109224, a false positive).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include "popgate/log/log.hpp"
#include "popgate/metrics/catalog.hpp"
#include "popgate/proto/ascii.hpp"
#include "popgate/session/login_grant.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <openssl/crypto.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>

namespace popgate::session {
namespace {

constexpr std::array post_only{beast_http::verb::post};
constexpr std::size_t max_login = 255;

// Dovecot reads "status" (0: continue; <0 refuse; >0 delay the client that
// many seconds) and "msg" from the answer to "allow"; the answer to
// "report" only needs a 2xx status. Every answer here has both fields, with
// status 0, so that no answer of popgate's ever holds up a login.
http_reply policy_json(unsigned status, std::string_view msg)
{
    http_reply r;
    r.status = status;
    r.content_type = "application/json";
    r.body = "{\"status\":0,\"msg\":\"" + std::string(msg) + "\"}";  // msg: fixed ASCII texts only
    return r;
}

std::optional<std::string> string_field(boost::json::object const& o, std::string_view key)
{
    auto const* v = o.if_contains(key);
    if (!v || !v->is_string()) return std::nullopt;
    return std::string(v->get_string());
}

bool same_secret(std::string_view given, std::string const& expected)
{
    // Compared in constant time for a given length.
    return given.size() == expected.size() && CRYPTO_memcmp(given.data(), expected.data(), given.size()) == 0;
}

std::string_view trimmed(std::string_view v)
{
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
}

}  // namespace

std::optional<dovecot_policy_request> parse_dovecot_policy(std::string_view body, std::string& why)
{
    boost::json::parse_options opts;
    opts.max_depth = 8;  // Dovecot nests one level per '/' in an attribute name
    boost::system::error_code ec;
    auto const v = boost::json::parse(body, ec, {}, opts);
    if (ec || !v.is_object()) {
        why = "body is not a JSON object";
        return std::nullopt;
    }
    auto const& o = v.get_object();
    dovecot_policy_request r;
    auto login = string_field(o, "login");
    auto remote = string_field(o, "remote");
    auto protocol = string_field(o, "protocol");
    if (!login || !remote || !protocol) {
        why = "login, remote and protocol must be strings (auth_policy_request_attributes)";
        return std::nullopt;
    }
    bool const bad_char = std::any_of(login->begin(), login->end(), [](unsigned char c) {
        return c < 0x20 || c == 0x7f;
    });
    if (login->empty() || login->size() > max_login || bad_char) {
        why = "login must be 1 to 255 octets without control characters";
        return std::nullopt;
    }
    r.login = std::move(*login);
    r.remote = std::move(*remote);
    r.protocol = std::move(*protocol);
    if (auto const* s = o.if_contains("success")) {
        if (!s->is_bool()) {
            why = "success must be true or false";
            return std::nullopt;
        }
        r.success = s->get_bool();
    }
    if (auto const* t = o.if_contains("tls"); t && t->is_bool()) r.tls = t->get_bool();
    r.nologin = string_field(o, "nologin");
    r.proxy = string_field(o, "proxy");
    r.proxy_maybe = string_field(o, "proxy_maybe");
    r.mech = string_field(o, "mech");
    if (auto const* pr = o.if_contains("policy_reject")) {
        if (!pr->is_bool()) {
            why = "policy_reject must be true or false";
            return std::nullopt;
        }
        r.policy_reject = pr->get_bool();
    }
    return r;
}

std::string_view dovecot_report_refusal(dovecot_policy_request const& r) noexcept
{
    if (!r.nologin || !r.proxy || !r.proxy_maybe || !r.mech) return "attributes";
    if (*r.nologin != "no") return "nologin";
    if (*r.proxy != "no" || *r.proxy_maybe != "no") return "proxy";
    if (proto::iequals(*r.mech, "ANONYMOUS")) return "anonymous";
    return {};
}

std::string_view dovecot_grant_method(std::string_view protocol) noexcept
{
    if (protocol == "pop3") return "dovecot-pop3";
    if (protocol == "imap") return "dovecot-imap";
    return {};
}

std::span<beast_http::verb const> dovecot_policy_route::methods() const noexcept { return post_only; }

boost::asio::awaitable<http_reply> dovecot_policy_route::serve(http_exchange& x)
{
    auto const command = http_query_value(x.query, "command");
    if (command == std::optional<std::string_view>("allow")) co_return policy_json(200, "");
    if (command != std::optional<std::string_view>("report")) {
        spdlog::info("sid={} http dovecot request refused ip={} reason=unknown-command command={}", x.conn.sid,
                     x.conn.ip, log::field(command.value_or(""), 32));
        co_return policy_json(400, "command must be allow or report");
    }
    co_return co_await report(x);
}

void dovecot_policy_route::refused_untrusted(std::string_view query) const noexcept
{
    if (http_query_value(query, "command") == std::optional<std::string_view>("report"))
        metrics::dovecot_reports.with({"refused"}).inc();
}

boost::asio::awaitable<http_reply> dovecot_policy_route::report(http_exchange& x)
{
    auto const& c = x.conn;
    auto const& key = x.listener.api_key;
    if (key.empty()) {
        // A report grants relaying to any address it names: without a shared
        // secret any local user could grant himself. Closed until configured.
        metrics::dovecot_reports.with({"refused"}).inc();
        spdlog::warn("sid={} http dovecot report refused ip={} reason=no-api-key-file listener={}", c.sid, c.ip,
                     log::field(c.listener.name, 64));
        co_return policy_json(403, "reports need api_key_file on this listener");
    }
    auto const it = x.request.find("X-API-Key");
    std::string_view const given = it == x.request.end() ? std::string_view{} : trimmed(it->value());
    if (!same_secret(given, key)) {
        metrics::dovecot_reports.with({"refused"}).inc();
        spdlog::warn("sid={} http dovecot report refused ip={} reason={}", c.sid, c.ip,
                     given.empty() ? "api-key-missing" : "api-key-wrong");
        co_return policy_json(403, "X-API-Key missing or wrong");
    }
    std::string why;
    auto const r = parse_dovecot_policy(x.request.body(), why);
    if (!r || !r->success) {
        metrics::dovecot_reports.with({"refused"}).inc();
        if (r) why = "success missing: is auth_policy_report_after_auth on?";
        spdlog::info("sid={} http dovecot report refused ip={} reason=malformed error={}", c.sid, c.ip,
                     log::field(why));
        co_return policy_json(400, "malformed report");
    }
    auto const user = log::field(r->login, 64);
    auto const method = dovecot_grant_method(r->protocol);
    auto const remote = net::parse_ip(r->remote);
    // The remote as every report line has it: canonical when it is an
    // address, else as given (a report that grants nothing needs none).
    auto const shown_remote = remote ? remote->to_string() : log::field(r->remote, 64);
    auto const fields = [&] {
        return "ip=" + c.ip + " user=" + user + " remote=" + shown_remote +
               " protocol=" + log::field(r->protocol, 32) + " tls=" + (r->tls ? "yes" : "no");
    };
    if (method.empty() || !*r->success) {
        // A failed login, or not a POP3 or IMAP one: nothing to grant,
        // whatever its remote. `doveadm auth test` reports protocol=doveadm
        // (or the -x service=) with remote="", and a 400 there made Dovecot
        // log an error at every test.
        metrics::dovecot_reports.with({"no_grant"}).inc();
        spdlog::info("sid={} http dovecot report {} success={} result=no-grant{}", c.sid, fields(),
                     *r->success ? "yes" : "no", method.empty() ? " reason=protocol" : "");
        co_return policy_json(200, method.empty() ? "no grant: only pop3 and imap logins grant relaying"
                                                  : "no grant: authentication failed");
    }
    if (!remote) {
        metrics::dovecot_reports.with({"refused"}).inc();
        spdlog::info("sid={} http dovecot report refused ip={} user={} reason=bad-remote remote={}", c.sid, c.ip,
                     user, shown_remote);
        co_return policy_json(400, "remote is not an IP address");
    }
    if (r->policy_reject) {
        // The password was right, but a policy refused the login: the user
        // is not logged in, so the address gets nothing.
        metrics::dovecot_reports.with({"no_grant"}).inc();
        spdlog::info("sid={} http dovecot report {} success=yes policy_reject=yes result=no-grant", c.sid, fields());
        co_return policy_json(200, "no grant: the login was refused by policy");
    }
    if (auto const refusal = dovecot_report_refusal(*r); refusal == "attributes") {
        // The shipped file's template before these fields: Dovecot logs the
        // 400, so the administrator learns that nothing is granted.
        metrics::dovecot_reports.with({"refused"}).inc();
        spdlog::warn("sid={} http dovecot report {} success=yes result=no-grant reason=attributes "
                     "missing=nologin,proxy,proxy_maybe,mech",
                     c.sid, fields());
        co_return policy_json(400, "report lacks nologin, proxy, proxy_maybe or mech: install the current "
                                   "95-popgate-auth-policy.conf");
    } else if (!refusal.empty()) {
        metrics::dovecot_reports.with({"no_grant"}).inc();
        spdlog::info("sid={} http dovecot report {} success=yes result=no-grant reason={} mech={}", c.sid, fields(),
                     refusal, log::field(*r->mech, 32));
        co_return policy_json(200, refusal == "nologin" ? "no grant: the passdb disables this login (nologin)"
                                   : refusal == "proxy" ? "no grant: a proxied login is proven at its backend"
                                                        : "no grant: an anonymous login");
    }
    relay::grant_plan plan;
    try {
        login_event const l{*remote, r->login, std::string(method), r->tls, c.listener.name, true, "dovecot"};
        plan = co_await commit_login_grant(blocking_, writes_, issuer_, l, *c.settings);
    } catch (std::exception const& e) {
        metrics::dovecot_reports.with({"unavailable"}).inc();
        spdlog::error("sid={} http dovecot grant failed {} error={}", c.sid, fields(), log::field(e.what()));
        co_return policy_json(503, "grant not recorded: database unavailable");
    }
    if (plan.refused != relay::no_grant_reason::none) {
        // A guard rail ([relay] no_grant_networks, grant_requires_tls, ...).
        metrics::dovecot_reports.with({"no_grant"}).inc();
        spdlog::info("sid={} http dovecot report {} success=yes result=no-grant mech={} {}", c.sid, fields(), method,
                     plan.log_fields);
        co_return policy_json(200, "no grant: " + std::string(relay::to_string(plan.refused)));
    }
    metrics::dovecot_reports.with({"granted"}).inc();
    spdlog::info("sid={} http dovecot report {} success=yes result=granted mech={} {}", c.sid, fields(), method,
                 plan.log_fields);
    co_return policy_json(200, "granted");
}

}  // namespace popgate::session
