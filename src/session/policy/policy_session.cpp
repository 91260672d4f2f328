// The policy session: reads one request (name=value lines up to an empty
// line), asks the relay decision, answers `action=...` and waits for the
// next request on the same connection, as Postfix's policy client expects.
// A request that breaks a bound (line length, attribute count, a line that
// is not name=value) gets a tempfail answer and the connection is closed.

// GCC 12 reports the coroutine frames' own operator new/delete pair as
// mismatched once inlining sees both (GCC bug 109224, a false positive).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include "popgate/session/policy/policy_protocol.hpp"

#include "popgate/io/blocking.hpp"
#include "popgate/log/log.hpp"
#include "popgate/net/ip.hpp"
#include "popgate/proto/smtpd_policy.hpp"
#include "popgate/session/channel.hpp"

#include <spdlog/spdlog.h>

#include <optional>
#include <string>

namespace popgate::session {
namespace {

// The first word of an action, for the log (the rest is text for the MTA).
std::string_view action_word(std::string_view action) { return action.substr(0, action.find(' ')); }

char const* end_reason_of(boost::system::error_code e)
{
    if (e == proto::errc::line_too_long) return "line-too-long";
    if (e == proto::errc::too_many_attributes) return "too-many-attributes";
    return "malformed-request";
}

class policy_session final : public server::session {
public:
    policy_session(policy_services& svc, server::connection& c)
        : svc_(svc), c_(c), s_(*c.settings), ch_(c, proto::policy_max_line, s_.policy_idle_timeout)
    {
    }

    asio::awaitable<void> run() override;
    std::string end_fields() const override { return "ip=" + c_.ip + " requests=" + std::to_string(requests_); }

private:
    std::string answer(proto::policy_request const& r);
    asio::awaitable<void> refuse(boost::system::error_code e, std::size_t attributes);

    policy_services& svc_;
    server::connection& c_;
    config::settings const& s_;  // c_.settings, for the whole session
    channel ch_;
    std::size_t requests_ = 0;
    std::string granted_instance_;  // of the last request relayed on a grant
};

asio::awaitable<void> policy_session::run()
{
    // Not the MTA: a stranger that could read which addresses hold grants,
    // use up their quotas, or hold the MTA's places. Closed unanswered:
    // an MTA on a host left out of trusted_networks defers (Postfix: 451
    // 4.3.5), it does not relay.
    if (!c_.listener.serves(c_.peer)) {
        spdlog::warn("sid={} policy peer not in trusted_networks ip={} listener={}", c_.sid, c_.ip,
                     c_.listener.name);
        c_.end_reason = "untrusted";
        co_return;
    }
    // The client speaks first: there is no greeting.
    proto::policy_request req;
    // Once a request has begun, all of it must arrive within limits.command_timeout.
    std::optional<io::clock::time_point> limit;
    for (;;) {
        std::string line;
        auto const rs = co_await ch_.read_line(line, limit);
        switch (rs) {
        case io::read_status::ok: break;
        case io::read_status::too_long: {
            co_await refuse(make_error_code(proto::errc::line_too_long), req.attributes);
            co_return;
        }
        case io::read_status::eof: c_.end_reason = req.attributes ? "eof-in-request" : "eof"; co_return;
        case io::read_status::timed_out: c_.end_reason = "timeout"; co_return;
        case io::read_status::too_slow: c_.end_reason = "timeout-command"; co_return;
        case io::read_status::error: c_.end_reason = "error"; co_return;
        }
        // Postfix ends its lines with a bare LF, which the reader leaves in place.
        if (!line.empty() && line.back() == '\n') line.pop_back();
        if (!limit) limit = io::clock::now() + s_.command_timeout;
        auto const added = proto::policy_add_line(req, line);
        if (!added) {
            co_await refuse(added.error(), req.attributes);
            co_return;
        }
        if (*added == proto::policy_line::attribute) continue;
        auto job = [&] { return answer(req); };
        auto const action = co_await io::run_here_or_blocking(svc_.relay.in_place(), svc_.blocking, job);
        ++requests_;
        bool const written = co_await ch_.send(proto::policy_answer(action));
        if (!written) {
            c_.end_reason = "error";
            co_return;
        }
        req = {};
        limit.reset();
    }
}

std::string policy_session::answer(proto::policy_request const& r)
{
    auto const dunno = std::string(proto::policy_dunno);
    auto const scope = proto::policy_scope_of(r);
    if (scope != proto::policy_scope::relay) {
        // Not the relay question (check_policy_service placed in another
        // restriction list, or another kind of request): no opinion.
        spdlog::info("sid={} policy skip request={} state={} action={}", c_.sid, log::field(r.request, 40),
                     log::field(r.protocol_state, 40), dunno);
        return dunno;
    }
    std::string const to = "to=" + log::field("<" + r.recipient + ">");
    auto const client = net::parse_ip(r.client_address);
    if (!client) {
        // Postfix always sends one; without it there is nobody to decide for.
        spdlog::warn("sid={} policy rcpt {} client_address={} decision=unusable action={}", c_.sid, to,
                     log::field(r.client_address, 64), dunno);
        return dunno;
    }
    std::string_view const rcpt = r.recipient;
    auto const at = rcpt.rfind('@');
    relay::request q{*client,
                     at == std::string_view::npos ? rcpt : rcpt.substr(0, at),
                     at == std::string_view::npos ? std::string_view{} : rcpt.substr(at + 1),
                     rcpt,
                     !r.sasl_username.empty(),  // the MTA authenticated the client
                     false,
                     false,
                     // A grant's message quota counts a message once: Postfix
                     // sends the same instance for every recipient of one.
                     r.instance.empty() || r.instance != granted_instance_,
                     relay::asker::mta};
    auto const v = svc_.relay.decide(q, s_);
    if (v.what == proto::relay_verdict::relay_grant) granted_instance_ = r.instance;
    auto const action = proto::policy_action(v.what, c_.listener.policy_action_ok);
    auto const level = v.what == proto::relay_verdict::tempfail ? spdlog::level::err : spdlog::level::info;
    auto const detail = v.what == proto::relay_verdict::tempfail ? log::field(v.detail) : v.detail;
    spdlog::log(level, "sid={} policy rcpt {} ip={} decision={} detail={}{} action={}", c_.sid, to,
                client->to_string(), proto::to_string(v.what), detail,
                r.sasl_username.empty() ? "" : " sasl_user=" + log::field(r.sasl_username, 64),
                action_word(action));
    return action;
}

asio::awaitable<void> policy_session::refuse(boost::system::error_code e, std::size_t attributes)
{
    auto const action = proto::policy_violation_action(e);
    spdlog::warn("sid={} policy request refused ip={} reason={} attributes={} action={}", c_.sid, c_.ip,
                 end_reason_of(e), attributes, action_word(action));
    c_.end_reason = end_reason_of(e);
    bool const written = co_await ch_.send(proto::policy_answer(action));
    (void)written;  // the session ends either way
}

}  // namespace

std::string policy_protocol::refusal(std::string_view, config::settings const&) const
{
    // Admission refused the connection: a tempfail the MTA understands, so
    // that a relay attempt is retried rather than refused for good.
    return proto::policy_answer("DEFER_IF_REJECT 4.3.2 Policy service busy, try again later");
}

std::unique_ptr<server::session> policy_protocol::open(server::connection& c)
{
    return std::make_unique<policy_session>(s_, c);
}

}  // namespace popgate::session
