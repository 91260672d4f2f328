#pragma once
// popgate's own metrics: one process-wide registry and the families every
// room counts into. GET /metrics (session/http/metrics_route.hpp) writes
// process().render(). Label values are fixed words (listed beside each
// family) or listener names from the configuration, never a client's bytes.
#include "popgate/metrics/registry.hpp"

#include <string_view>

namespace popgate::metrics {

registry& process();

// {listener, protocol}: connections admitted and being served (the frame).
extern family<gauge> sessions_open;
extern family<counter> sessions_total;
// {protocol: pop3 smtp, mechanism: pass apop plain login cram-md5 (none when
// refused before the mechanism is known), result: ok fail blocked unavailable}.
extern family<counter> logins;
// {asker: smtp policy, verdict: local auth grant network denied quota error}.
extern family<counter> relay_decisions;
// Unexpired grants, read from the store when /metrics is scraped.
extern family<gauge> grants_active;
// {result: committed failed}: grant rows written by the write queue.
extern family<counter> grant_writes;
// A commit() unit (a login's grant, a Dovecot report's) from queued to committed or failed.
extern family<histogram> grant_commit_seconds;
// {step: rcpt message, result: ok temporary permanent}: upstream MTA answers.
extern family<counter> upstream_results;
extern family<histogram> upstream_seconds;  // {step}
// {kind: busy unavailable}: the store could not read or write.
extern family<counter> database_errors;
// {scope: user address}: brute-force blocks imposed.
extern family<counter> auth_blocks;
// {listener, reason}: connections closed before a session began. reason: the
// limit that refused it (max_sessions max_sessions_per_ip
// max_connections_per_minute max_slow_sessions_per_ip max_service_sessions),
// or a PROXY header that failed (proxy_untrusted_peer proxy_bad_header
// proxy_header_timeout).
extern family<counter> connections_refused;
// {listener, result: ok failed timeout}: implicit TLS and STARTTLS handshakes.
extern family<counter> tls_handshakes;
// {result: granted no_grant refused unavailable}: Dovecot auth-policy reports.
extern family<counter> dovecot_reports;
// {source: pop3 dovecot, reason: listener no_grant_networks grant_requires_tls
// max_grants_per_user}: logins that succeeded and wrote no grant, counted
// once the no-grant audit row committed (relay::count_grant_plan).
extern family<counter> grants_withheld;
// {source: pop3 dovecot}: grants revoked by replace-oldest, as read before
// the commit that revoked them.
extern family<counter> grants_replaced;
// {certificate: tls.cert_file tls.second_cert_file}: the notAfter of the
// certificate in service, Unix seconds; 0 while none is configured.
extern family<gauge> tls_certificate_expiry;
extern family<gauge> build_info;               // {version, commit} 1
extern family<gauge> process_start_time;      // unix seconds

// Creates a listener's children at start so that they read 0 before the
// first connection (rate() needs the first sample). Again at a reload,
// which may turn TLS on: what exists is left as it is.
void declare_listener(std::string_view name, std::string_view protocol, bool tls);

}  // namespace popgate::metrics
