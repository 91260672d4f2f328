#include "popgate/daemon/fd_limit.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace popgate::daemon {

std::size_t raise_nofile_limit()
{
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        spdlog::warn("limits cannot read RLIMIT_NOFILE: {}", std::strerror(errno));
        return 1024;
    }
    if (rl.rlim_cur != rl.rlim_max) {
        rlim_t const was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &rl) == 0) {
            spdlog::info("limits nofile raised from={} to={}", was, rl.rlim_cur);
        } else {
            spdlog::warn("limits cannot raise nofile from={} to={}: {}", was, rl.rlim_max, std::strerror(errno));
            rl.rlim_cur = was;
        }
    }
    // RLIM_INFINITY is not a descriptor count anyone can reach.
    return rl.rlim_cur == RLIM_INFINITY ? std::size_t{1} << 30 : static_cast<std::size_t>(rl.rlim_cur);
}

std::size_t session_fds(std::size_t nofile, std::size_t threads) noexcept
{
    std::size_t const reserve = fd_reserve_base + fd_reserve_per_thread * threads;
    return nofile > reserve ? nofile - reserve : 0;
}

std::size_t service_protocols(std::span<config::listener const> bound) noexcept
{
    auto const serves = [&](std::string_view p) {
        return std::any_of(bound.begin(), bound.end(), [&](config::listener const& l) { return l.protocol == p; });
    };
    return (serves("policy") ? 1u : 0u) + (serves("http") ? 1u : 0u);
}

void cap_sessions_to_fds(config::settings& s, std::size_t nofile, std::size_t threads, std::size_t services)
{
    auto const fds = session_fds(nofile, threads);
    // The services' places are set aside only where a listener serves them.
    auto const wanted = services * s.max_service_sessions;
    if (s.max_sessions * fds_per_session + wanted * fds_per_service_session <= fds) return;
    // Always at least one of each: a daemon that admits nobody helps no one.
    auto const service =
        services ? std::clamp(fds / 2 / services / fds_per_service_session, std::size_t{1}, s.max_service_sessions)
                 : 0;
    auto const set_aside = services * service * fds_per_service_session;
    auto const left = fds > set_aside ? fds - set_aside : 0;
    auto const mail = std::clamp(left / fds_per_session, std::size_t{1}, s.max_sessions);
    if (mail < s.max_sessions)
        spdlog::warn("limits max_sessions={} needs more descriptors than nofile={} allows: at most {} sessions "
                     "(raise LimitNOFILE= or ulimit -n, or lower limits.max_sessions)",
                     s.max_sessions, nofile, mail);
    if (services && service < s.max_service_sessions)
        spdlog::warn("limits max_service_sessions={} needs more descriptors than nofile={} allows: at most {} "
                     "sessions (raise LimitNOFILE= or ulimit -n, or lower limits.max_service_sessions)",
                     s.max_service_sessions, nofile, service);
    s.max_sessions = mail;
    if (services) s.max_service_sessions = service;
}

}  // namespace popgate::daemon
