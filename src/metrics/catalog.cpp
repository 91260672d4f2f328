#include "popgate/metrics/catalog.hpp"

#include <array>
#include <chrono>

#ifndef POPGATE_COMMIT
#define POPGATE_COMMIT "unknown"
#endif

namespace popgate::metrics {
namespace {

// Defined before the families in this file, so constructed before them.
registry the_registry;

// Seconds: a commit waits for its batch's transaction (group commit).
constexpr std::array commit_bounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};
// Seconds: an upstream answer includes connect, EHLO and STARTTLS on a first RCPT.
constexpr std::array upstream_bounds{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0};

std::int64_t unix_now()
{
    using namespace std::chrono;
    return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

registry& process() { return the_registry; }

family<gauge> sessions_open{the_registry, "popgate_sessions_open", "Connections being served, by listener",
                            {"listener", "protocol"}};
family<counter> sessions_total{the_registry, "popgate_sessions_total", "Connections admitted, by listener",
                               {"listener", "protocol"}};
family<counter> logins{the_registry, "popgate_logins_total", "POP3 logins and SMTP AUTH attempts by result",
                       {"protocol", "mechanism", "result"}};
family<counter> relay_decisions{the_registry, "popgate_relay_decisions_total",
                                "Relay decisions (one per recipient) by verdict and by who asked",
                                {"asker", "verdict"}};
family<gauge> grants_active{the_registry, "popgate_grants_active",
                            "Unexpired relay grants, read from the database at scrape time", {}};
family<counter> grant_writes{the_registry, "popgate_grant_writes_total", "Grant rows written by the write queue",
                             {"result"}};
family<histogram> grant_commit_seconds{the_registry, "popgate_grant_commit_seconds",
                                       "Time from a login's grant being queued to its transaction committing",
                                       {}, commit_bounds};
family<counter> upstream_results{the_registry, "popgate_upstream_results_total",
                                 "Answers of the upstream MTA to relayed recipients and messages",
                                 {"step", "result"}};
family<histogram> upstream_seconds{the_registry, "popgate_upstream_seconds",
                                   "Time the upstream MTA took to answer a relayed recipient or message",
                                   {"step"}, upstream_bounds};
family<counter> database_errors{the_registry, "popgate_database_errors_total",
                                "Database operations that failed (locked past the timeout, or unavailable)",
                                {"kind"}};
family<counter> auth_blocks{the_registry, "popgate_auth_blocks_total",
                            "Brute-force blocks imposed, on a user at an address or on a whole address", {"scope"}};
family<counter> connections_refused{the_registry, "popgate_connections_refused_total",
                                    "Connections closed before a session began: by a limit, or a failed PROXY "
                                    "header",
                                    {"listener", "reason"}};
family<counter> tls_handshakes{the_registry, "popgate_tls_handshakes_total", "Server TLS handshakes by listener",
                               {"listener", "result"}};
family<counter> dovecot_reports{the_registry, "popgate_dovecot_reports_total",
                                "Dovecot auth-policy login reports by result", {"result"}};
family<counter> grants_withheld{the_registry, "popgate_grants_withheld_total",
                                "Successful logins that wrote no relay grant, by the guard rail that withheld it",
                                {"source", "reason"}};
family<counter> grants_replaced{the_registry, "popgate_grants_replaced_total",
                                "Grants revoked to make room for a new login (relay.max_grants_per_user, "
                                "replace-oldest)",
                                {"source"}};
family<gauge> tls_certificate_expiry{the_registry, "popgate_tls_certificate_expiry_seconds",
                                     "When the TLS certificate in service expires (notAfter), Unix seconds; 0: none",
                                     {"certificate"}};
family<gauge> build_info{the_registry, "popgate_build_info", "The popgate build that is running",
                         {"version", "commit"}};
family<gauge> process_start_time{the_registry, "popgate_process_start_time_seconds",
                                 "Start time of the process since the Unix epoch in seconds", {}};

namespace {
// Every fixed label value exists from the start and reads 0.
struct declare_fixed {
    declare_fixed()
    {
        build_info.with({POPGATE_VERSION, POPGATE_COMMIT}).set(1);
        process_start_time.get().set(unix_now());
        grants_active.get();
        grant_commit_seconds.get();
        for (auto r : {"ok", "fail", "blocked", "unavailable"}) {
            for (auto m : {"pass", "apop", "plain", "login", "cram-md5"}) logins.with({"pop3", m, r});
            for (auto m : {"plain", "login", "cram-md5"}) logins.with({"smtp", m, r});
        }
        logins.with({"smtp", "none", "blocked"});  // AUTH from a blocked address, refused before its mechanism
        for (auto a : {"smtp", "policy"})
            for (auto v : {"local", "auth", "grant", "network", "denied", "quota", "error"}) relay_decisions.with({a, v});
        for (auto r : {"committed", "failed"}) grant_writes.with({r});
        for (auto s : {"rcpt", "message"}) {
            upstream_seconds.with({s});
            for (auto r : {"ok", "temporary", "permanent"}) upstream_results.with({s, r});
        }
        for (auto k : {"busy", "unavailable", "lost"}) database_errors.with({k});
        for (auto s : {"user", "address"}) auth_blocks.with({s});
        for (auto r : {"granted", "no_grant", "refused", "unavailable"}) dovecot_reports.with({r});
        // A Dovecot report has no popgate listener whose grant = false
        // applies, and names its client itself.
        grants_withheld.with({"pop3", "listener"});
        grants_withheld.with({"pop3", "proxy_protocol"});
        for (auto src : {"pop3", "dovecot"}) {
            grants_replaced.with({src});
            for (auto r : {"no_grant_networks", "grant_requires_tls", "max_grants_per_user"})
                grants_withheld.with({src, r});
        }
    }
} const fixed;
}  // namespace

void declare_listener(std::string_view name, std::string_view protocol, bool tls)
{
    sessions_open.with({name, protocol});
    sessions_total.with({name, protocol});
    // Every reason on every listener: a SIGHUP may turn proxy_protocol on,
    // and an HTTP peer outside trusted_networks is held to a mail client's
    // limits.
    for (auto r : {"max_sessions", "max_sessions_per_ip", "max_connections_per_minute", "max_slow_sessions_per_ip",
                   "max_service_sessions", "proxy_untrusted_peer", "proxy_bad_header", "proxy_header_timeout"})
        connections_refused.with({name, r});
    if (tls)
        for (auto r : {"ok", "failed", "timeout"}) tls_handshakes.with({name, r});
}

}  // namespace popgate::metrics
