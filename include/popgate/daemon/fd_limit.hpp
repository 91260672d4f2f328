#pragma once
// Open-file descriptors: the daemon raises its soft RLIMIT_NOFILE to the hard
// limit at start and admits no more sessions than the descriptors allow, so
// that a low limit means refused sessions (the protocol's own refusal), not an
// accept loop failing with EMFILE.
#include "popgate/config/config.hpp"

#include <cstddef>
#include <span>

namespace popgate::daemon {

// What each session may hold at once: its socket, and an upstream connection
// or a Maildir file, and for a POP3 session its maildrop lock (the lock file
// stays open while it is logged in). The daemon's own (listeners, database connections, log,
// epoll, idle upstream connections) come out first: fd_reserve_base plus
// fd_reserve_per_thread for every I/O and blocking thread.
inline constexpr std::size_t fds_per_session = 3;
// A service session (policy, HTTP) holds its socket only.
inline constexpr std::size_t fds_per_service_session = 1;
inline constexpr std::size_t fd_reserve_base = 64;
inline constexpr std::size_t fd_reserve_per_thread = 4;

// Sets the soft limit to the hard one (logs it when it changes) and returns
// the soft limit now in force.
std::size_t raise_nofile_limit();

// The descriptors `nofile` leaves for sessions with `threads` threads.
std::size_t session_fds(std::size_t nofile, std::size_t threads) noexcept;

// How many service protocols (policy, HTTP: 0, 1 or 2) `bound` serves:
// each has limits.max_service_sessions places of its own.
std::size_t service_protocols(std::span<config::listener const> bound) noexcept;

// Lowers s.max_sessions and s.max_service_sessions, with a warning each,
// when together they need more than session_fds(): the `services` service
// protocols bound keep at most half of those descriptors (shared equally),
// the mail clients the rest, and each at least one session. At start and
// after every reload (listeners stay as bound until a restart, so
// `services` counts the bound ones, not the file's).
void cap_sessions_to_fds(config::settings& s, std::size_t nofile, std::size_t threads, std::size_t services);

}  // namespace popgate::daemon
