#include "popgate/session/login_grant.hpp"

// GCC 12 reports the coroutine frames' own operator new/delete pair as
// mismatched once inlining sees both (GCC bug 109224, a false positive).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

#include <ctime>

namespace popgate::session {

std::string iso_utc(store::unix_time t)
{
    std::time_t const tt = static_cast<std::time_t>(t);
    std::tm tm{};
    ::gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

boost::asio::awaitable<store::grant> commit_login_grant(store::write_queue& writes, relay::decider const& grants,
                                                        login_event const& l, std::chrono::seconds ttl)
{
    store::grant g;
    g.address = grants.grant_keys(l.client).front();
    g.user = l.user;
    g.method = l.method;
    g.tls = l.tls;
    g.listener = l.listener;
    g.granted_at = store::now();
    g.expires_at = g.granted_at + ttl.count();
    std::vector<store::write_op> ops;
    ops.emplace_back(g);
    ops.emplace_back(store::audit_record{
        "grant", l.client_text, l.user,
        l.source + " mech=" + g.method + " listener=" + g.listener + " until=" + iso_utc(g.expires_at)});
    // Committed on return: an SMTP connection after the caller's answer sees it.
    co_await writes.commit(std::move(ops));
    co_return g;
}

}  // namespace popgate::session
