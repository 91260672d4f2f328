#include "popgate/session/login_grant.hpp"

#include "popgate/io/blocking.hpp"

// GCC 12 reports the coroutine frames' own operator new/delete pair as
// mismatched once inlining sees both (GCC bug 109224, a false positive).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace popgate::session {

boost::asio::awaitable<relay::grant_plan> commit_login_grant(boost::asio::thread_pool& blocking,
                                                             store::write_queue& writes,
                                                             relay::grant_issuer const& issuer, login_event const& l,
                                                             config::settings const& s)
{
    relay::login_facts const facts{l.client,          l.user, l.method,       l.tls, l.listener,
                                   l.listener_grants, l.via,  l.client_named, l.checked};
    auto job = [&] { return issuer.plan(facts, s); };
    auto plan = co_await io::run_here_or_blocking(issuer.in_place(s), blocking, job);
    // Committed on return: an SMTP connection after the caller's answer sees it.
    co_await writes.commit(std::move(plan.ops));
    relay::count_grant_plan(plan, l.via);  // counted once written, not when planned
    co_return plan;
}

}  // namespace popgate::session
