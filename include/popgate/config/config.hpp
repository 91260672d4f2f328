#pragma once
// The daemon's configuration: one TOML file (config/popgate.toml documents every
// key). Unknown keys and wrong types are errors reported with their line.
#include "popgate/net/ip.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace popgate::config {

// The protocols a [[listener]] may name. Defined beside the protocol
// registry (daemon/protocols.cpp), so that adding a protocol is one line
// there and the configuration accepts it at once.
std::span<std::string_view const> listener_protocols() noexcept;

// required: STARTTLS, and nothing but the greeting commands, STARTTLS/STLS,
// NOOP, RSET and QUIT (CAPA, STLS and QUIT in POP3) is served before it; no
// authentication is advertised in clear.
enum class tls_mode { none, starttls, required, implicit };
enum class plaintext_policy { never, tls_only, always };
// verify: required, and the certificate must chain to relay.upstream_ca_file
// (or the system's CAs) and name relay.upstream_tls_name (or upstream_host).
enum class upstream_tls { none, opportunistic, required, verify };
enum class log_target { stderr_stream, file, syslog };
// relay.max_grants_per_user reached: the user's oldest grant goes, or the
// new login writes none (the login itself succeeds either way).
enum class grant_limit_action { replace_oldest, refuse };

struct listener {
    std::string name;
    std::string protocol = "pop3";  // a name from listener_protocols()
    std::string address = "127.0.0.1";
    std::uint16_t port = 0;  // 0: an ephemeral port (tests); the daemon reports what it bound
    tls_mode tls = tls_mode::none;
    std::optional<plaintext_policy> plaintext;  // unset: auth.plaintext
    bool auth_required = false;  // SMTP submission: relay only after AUTH
    // SMTP, with auth_required: local recipients accepted without AUTH
    // (RFC 6409 wants AUTH for every message on submission: false).
    bool local_delivery_without_auth = false;
    bool grant = true;  // POP3: a login here grants its address relay
    // Every connection starts with a PROXY header (v1 or v2) from one of
    // trusted_proxies, naming the client; anyone else is closed unheard.
    bool proxy_protocol = false;
    // The listener's own list, or [server] trusted_proxies when it has none.
    std::vector<net::cidr> trusted_proxies;
    // policy only: the action answered for a client that may relay.
    std::string policy_action_ok = "OK";
    // protocol "http" and "policy": the peers served (others get 403 from
    // HTTP, and a policy listener closes on them unanswered). "http" only:
    // the file holding the secret Dovecot sends in X-API-Key (empty: none
    // required).
    std::vector<net::cidr> trusted_networks = default_http_trusted();
    std::filesystem::path api_key_file;
    std::string api_key;  // read from api_key_file by load(); never logged
    // Where the file wrote it, for the errors found after parsing (0: not
    // from a file).
    std::size_t line = 0;
    std::size_t api_key_file_line = 0;

    static std::vector<net::cidr> default_http_trusted();

    // Whether `peer` is in trusted_networks.
    bool serves(net::ip_address const& peer) const noexcept;
    bool starttls() const noexcept { return tls == tls_mode::starttls || tls == tls_mode::required; }
    bool tls_required() const noexcept { return tls == tls_mode::required; }
    // What a SIGHUP cannot change on a bound socket: the listener of the
    // same name and binding in a reloaded configuration gives its policy
    // (tls none/starttls/required, plaintext, auth_required, grant ...) to
    // new sessions; a different binding waits for a restart.
    bool same_binding(listener const& o) const noexcept
    {
        return name == o.name && protocol == o.protocol && address == o.address && port == o.port &&
               (tls == tls_mode::implicit) == (o.tls == tls_mode::implicit);
    }
};

// TLS 1.2 suites offered unless tls.ciphers says otherwise: forward secrecy
// (ECDHE) and AEAD only (AES-GCM, ChaCha20-Poly1305), as Mozilla's
// "intermediate" profile without DHE; no CBC, no SHA-1 MAC. TLS 1.3 suites
// are AEAD by definition.
inline constexpr char const default_tls12_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

struct tls_settings {
    std::filesystem::path cert_file = "var/tls/cert.pem";
    std::filesystem::path key_file = "var/tls/key.pem";
    bool self_signed = true;  // make a certificate on first start when the files are missing
    std::string min_version = "1.2";
    std::string ciphers = default_tls12_ciphers;  // TLS 1.2 cipher list (OpenSSL syntax); empty: the default too
    std::string ciphersuites;  // TLS 1.3 suites; empty: OpenSSL's default
    // A second certificate of the other key type (RSA beside ECDSA): OpenSSL
    // picks per handshake from the client's signature algorithms and ciphers.
    std::filesystem::path second_cert_file;  // empty: none
    std::filesystem::path second_key_file;
    bool session_tickets = true;  // TLS 1.2 and 1.3 session tickets (resumption)
    // Ticket keys live in memory only; a new one every interval (at multiples
    // of it on the wall clock), the previous one still decrypts.
    std::chrono::seconds ticket_key_rotation{3600};
};

struct settings {
    std::filesystem::path source;  // the file this came from ("" = built-in default)

    // [server]
    std::string hostname = "localhost";
    unsigned threads = 0;  // 0: one per core
    std::string run_as_user;
    std::string run_as_group;
    // Load balancers whose PROXY header is believed, for every listener with
    // proxy_protocol that names no list of its own.
    std::vector<net::cidr> trusted_proxies;

    std::vector<listener> listeners;
    tls_settings tls;
    bool uses_tls() const;  // a listener with implicit TLS or STARTTLS: [tls] is read

    // [storage]
    // A SQLite file, or a postgresql:// URI (libpq; never with a password).
    std::filesystem::path database = "var/popgate.db";
    bool database_is_postgresql() const;
    std::chrono::milliseconds busy_timeout{5000};
    // The MTA's group (Postfix's sqlite: table): it may read the database,
    // its -wal/-shm files and its directory; "" = nobody but the daemon.
    std::string database_group;
    std::size_t audit_max_rows = 100000;
    unsigned audit_max_age_days = 90;

    // [mail]
    std::string maildir = "var/mail/%u";  // %u user, %n local part, %d domain
    std::vector<std::string> local_domains{"localhost"};
    std::filesystem::path relay_drop = "var/relay-drop";

    // [relay]
    std::chrono::seconds grant_ttl{1800};
    unsigned ipv6_prefix = 64;
    std::chrono::seconds purge_interval{300};
    std::string upstream_host;  // empty: relayed mail goes to relay_drop
    std::uint16_t upstream_port = 25;
    upstream_tls upstream_starttls = upstream_tls::opportunistic;
    std::filesystem::path upstream_ca_file;  // verify: trusted CAs (PEM); empty = the system's
    std::string upstream_tls_name;           // verify: the name to match; empty = upstream_host
    std::string upstream_user;
    std::filesystem::path upstream_password_file;
    bool upstream_auth_in_clear = false;  // AUTH to the upstream without TLS
    std::chrono::seconds upstream_timeout{60};
    std::chrono::seconds upstream_data_done_timeout{600};  // the reply to the final dot (RFC 5321 §4.5.3.2.6)
    std::chrono::seconds upstream_reuse_time{5};  // 0: one upstream connection per message
    // Guard rails on grants (relay/grant_issuer.hpp, relay/quota.hpp).
    std::vector<net::cidr> no_grant_networks;  // logins from there never grant
    bool grant_requires_tls = false;           // only logins over TLS grant
    std::size_t grant_max_messages_per_hour = 0;    // per grant, per clock hour; 0: off
    std::size_t grant_max_recipients_per_hour = 0;  // likewise
    std::size_t max_grants_per_user = 0;            // unexpired grants of one user at once; 0: off
    grant_limit_action grant_limit = grant_limit_action::replace_oldest;

    // [auth]
    plaintext_policy plaintext = plaintext_policy::tls_only;
    bool loopback_is_secure = false;
    bool apop = true;
    bool cram_md5 = false;  // advertised to all; clients pick it first (see popgate.toml)
    std::chrono::milliseconds failure_delay{2000};       // first failure; doubles per failure in the window
    std::chrono::milliseconds failure_delay_max{15000};
    std::chrono::seconds failure_window{900};
    std::size_t max_failures_per_user = 5;   // one name at one address, then that name is refused there
    std::size_t max_failures_per_ip = 100;   // all names at one address, then the address is refused
    std::size_t max_users_per_ip = 10;       // different unknown names failing at one address, then the address is refused
    std::chrono::seconds block_time{900};
    std::chrono::seconds credential_cache_ttl{0};  // 0: off

    // [limits]
    std::size_t max_sessions = 1000;          // mail clients (POP3, SMTP)
    std::size_t max_service_sessions = 256;   // policy and HTTP clients
    std::size_t max_sessions_per_ip = 20;
    std::size_t max_connections_per_minute = 300;  // new connections per address per minute; 0: off
    std::size_t max_junk_commands = 100;           // NOOP/RSET/... in a row without progress
    std::chrono::seconds pop3_idle_timeout{600};
    std::chrono::seconds smtp_idle_timeout{300};
    // Longer than Postfix's smtpd_policy_service_max_idle (300 s): Postfix closes first.
    std::chrono::seconds policy_idle_timeout{600};
    std::chrono::seconds http_idle_timeout{60};  // between requests on a kept-alive HTTP connection
    std::chrono::seconds data_timeout{600};
    std::chrono::seconds tls_handshake_timeout{30};
    // A command line, a SASL exchange, or USER to PASS, once begun, must be
    // complete within this, however the bytes trickle in.
    std::chrono::seconds command_timeout{60};
    // Sessions of one address cut by command_timeout in 10 minutes before its
    // new connections are refused for the rest of that window; 0: off.
    std::size_t max_slow_sessions_per_ip = 5;
    std::size_t pop3_max_line = 255;
    std::size_t smtp_max_line = 2048;
    std::size_t max_message_size = 26214400;
    // Octets of all messages being received at once (their tmp/ files and
    // upstream transactions); past it DATA answers 451 4.3.1.
    std::uint64_t max_data_in_flight = std::uint64_t{2} << 30;
    std::size_t max_recipients = 100;
    std::size_t max_bad_commands = 20;

    // [log]
    std::string log_level = "info";
    // Unset in the file: file when log.file is set, else stderr.
    log_target log_to = log_target::stderr_stream;
    std::string log_file;  // log_target::file only
};

struct error {
    std::size_t line = 0;  // 0: the file as a whole
    std::size_t column = 0;
    std::string message;
};

struct load_result {
    std::optional<settings> value;  // set iff errors is empty
    std::vector<error> errors;
};

// Parses and validates. Relative paths in the file are taken relative to the
// current directory (the README starts the daemon from the checkout).
load_result parse(std::string_view toml_text, std::filesystem::path const& source = {});
load_result load(std::filesystem::path const& file);

// The shipped default (config/popgate.toml), compiled in.
std::string_view embedded_default() noexcept;

// postgresql:// or postgres:// (libpq's URI forms): the storage.database
// values that select PostgreSQL; anything else is a SQLite file.
bool is_postgresql_uri(std::string_view database) noexcept;

// A libpq key=value connection string (Dovecot's `connect =` form: host=...
// dbname=..., spaces around '=' allowed), which popgate does not read: taken
// as a file name it would make a SQLite database of that name. libpq's own
// parser (PQconninfoParse) decides, and any of its keywords before a '='.
bool looks_like_conninfo(std::string_view database);

// "postgresql:user:pw@host/db", the '//' left out (any case): a file name
// to SQLite, which every message would echo, password and all. Refused,
// and not shown.
bool looks_like_uri_without_slashes(std::string_view database);

// What precedes the first "://" when that is a scheme's word (letters,
// digits, + - .); empty otherwise ("u:pw@h://x" has none to show).
std::string_view uri_scheme(std::string_view database) noexcept;

// The user[:password] part of a URI, where libpq looks for it: after the
// first "://", before the last '@' that comes before the first '/' or the
// query, whichever comes later (a password may hold a '/', "gw:Zm9v/YmFy@db",
// as it may hold a '?'). A view into the argument; empty when there is none.
// Both the refusal of a password (database_problem) and the redaction of
// libpq's messages read it here, so the two cannot drift apart.
std::string_view uri_userinfo(std::string_view uri) noexcept;

// Why a storage.database value cannot be used ("" when it can): an unknown
// scheme, or a postgresql:// URI that carries a password. Also what the
// --db option is checked with.
std::string database_problem(std::string const& database);

// Why storage.busy_timeout_ms cannot go with the database ("" when it can):
// 0 with PostgreSQL. Checked again when --db replaces the database.
std::string busy_timeout_problem(settings const& s);

// Whether a URI query parameter's name, as written, is libpq's "password"
// or "sslpassword" (the client key's passphrase): libpq percent-decodes
// names, so "pass%77ord" is one too.
bool is_password_parameter(std::string_view written_name);

std::string to_string(tls_mode m);

}  // namespace popgate::config

namespace popgate::config {
// The configuration file read when none is given (README "Configuration
// file"): a binary run from its build tree reads config/popgate.toml in the
// current directory when it exists, else the embedded default ("" here); an
// installed binary reads system_config_file() (/etc/popgate/popgate.toml).
std::filesystem::path default_config_file();
std::filesystem::path system_config_file();
// `file` if given, else default_config_file(); a missing system file is an
// error that names it (never a silent fallback to relative paths).
load_result load_effective(std::string const& file);
// One line per error: "FILE:LINE:COL: message".
std::string format_errors(load_result const& r, std::string const& file);
}  // namespace popgate::config
