#include "popgate/config/config.hpp"

#include "popgate/default_config.hpp"
#include "popgate/net/ip.hpp"
#include "popgate/proto/ascii.hpp"
#include "popgate/proto/smtpd_policy.hpp"

#include <libpq-fe.h>
#include <openssl/ssl.h>
#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <tuple>

namespace popgate::config {
namespace {

// Whether OpenSSL finds at least one usable entry in a TLS 1.2 cipher list
// (tls.ciphers) or a TLS 1.3 suite list (tls.ciphersuites); "" is the default.
// A host or domain name as popgate writes and compares it: labels of
// letters, digits and '-' (not at either end of a label; `extra` allows
// more, '_' for a name the resolver takes) joined by single dots, 1 to 253
// characters, no dot at either end ("gw.test." would never equal the
// "gw.test" of an address).
bool is_domain_name(std::string const& v, std::string_view extra = {})
{
    if (v.empty() || v.size() > 253) return false;
    std::size_t start = 0;
    for (;;) {
        auto const end = std::min(v.find('.', start), v.size());
        auto const label = std::string_view(v).substr(start, end - start);
        if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
        for (char const c : label)
            if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && extra.find(c) == std::string_view::npos)
                return false;
        if (end == v.size()) return true;
        start = end + 1;
    }
}

bool openssl_accepts(std::string const& list, bool tls13)
{
    if (list.empty()) return true;
    std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> c(SSL_CTX_new(TLS_server_method()), &SSL_CTX_free);
    if (!c) return true;  // out of memory: make_server_tls will say so
    return (tls13 ? SSL_CTX_set_ciphersuites(c.get(), list.c_str()) : SSL_CTX_set_cipher_list(c.get(), list.c_str())) ==
           1;
}

// Reads one TOML table into a struct, remembering which keys it knew so that
// every other key is reported as unknown, with its line.
class section {
public:
    section(toml::table const& t, std::string name, std::vector<error>& errors)
        : t_(t), name_(std::move(name)), errors_(errors)
    {
    }
    ~section()
    {
        for (auto const& [k, v] : t_) {
            if (known_.count(std::string(k.str()))) continue;
            errors_.push_back({k.source().begin.line, k.source().begin.column,
                               "unknown key '" + std::string(k.str()) + "' in [" + name_ + "]"});
        }
    }
    section(section const&) = delete;
    section& operator=(section const&) = delete;

    toml::node const* get(std::string_view key)
    {
        known_.insert(std::string(key));
        return t_.get(key);
    }

    void fail(toml::node const& n, std::string msg)
    {
        errors_.push_back({n.source().begin.line, n.source().begin.column, name_ + "." + msg});
    }

    void str(std::string_view key, std::string& out, std::function<bool(std::string const&)> ok = {},
             std::string_view expect = {})
    {
        auto const* n = get(key);
        if (!n) return;
        auto const v = n->value<std::string>();
        if (!n->is_string() || !v) return fail(*n, std::string(key) + ": expected a string");
        if (ok && !ok(*v)) return fail(*n, std::string(key) + ": " + std::string(expect));
        out = *v;
    }

    void path(std::string_view key, std::filesystem::path& out)
    {
        std::string s;
        bool seen = false;
        str(key, s, [&](std::string const&) { seen = true; return true; });
        if (seen) out = s;
    }

    // A path that may not be "" (the daemon would fail to make or open it
    // at start, after check-config said the file was fine).
    void required_path(std::string_view key, std::filesystem::path& out)
    {
        std::string s;
        bool seen = false;
        str(key, s, [&](std::string const& v) { seen = !v.empty(); return seen; }, "expected a path, not \"\"");
        if (seen) out = s;
    }

    void boolean(std::string_view key, bool& out)
    {
        auto const* n = get(key);
        if (!n) return;
        if (!n->is_boolean()) return fail(*n, std::string(key) + ": expected true or false");
        out = *n->value<bool>();
    }

    template <class Int>
    void integer(std::string_view key, Int& out, std::int64_t min, std::int64_t max)
    {
        auto const* n = get(key);
        if (!n) return;
        if (!n->is_integer()) return fail(*n, std::string(key) + ": expected an integer");
        auto const v = *n->value<std::int64_t>();
        if (v < min || v > max)
            return fail(*n, std::string(key) + ": " + std::to_string(v) + " is out of range " +
                                std::to_string(min) + ".." + std::to_string(max));
        out = static_cast<Int>(v);
    }

    template <class Dur>
    void duration(std::string_view key, Dur& out, std::int64_t min, std::int64_t max)
    {
        std::int64_t v = out.count();
        integer(key, v, min, max);
        out = Dur{v};
    }

    template <class Enum>
    void choice(std::string_view key, Enum& out, std::initializer_list<std::pair<std::string_view, Enum>> opts)
    {
        auto const* n = get(key);
        if (!n) return;
        auto const v = n->value<std::string>();
        std::string names;
        for (auto const& [name, e] : opts) {
            if (v && *v == name) {
                out = e;
                return;
            }
            names += (names.empty() ? "\"" : ", \"") + std::string(name) + "\"";
        }
        fail(*n, std::string(key) + ": expected one of " + names);
    }

    // A name from a list known elsewhere (the protocol registry).
    void choice(std::string_view key, std::string& out, std::span<std::string_view const> opts)
    {
        auto const* n = get(key);
        if (!n) return;
        auto const v = n->value<std::string>();
        std::string names;
        for (auto const name : opts) {
            if (v && *v == name) {
                out = *v;
                return;
            }
            names += (names.empty() ? "\"" : ", \"") + std::string(name) + "\"";
        }
        fail(*n, std::string(key) + ": expected one of " + names);
    }

    void strings(std::string_view key, std::vector<std::string>& out)
    {
        auto const* n = get(key);
        if (!n) return;
        auto const* arr = n->as_array();
        if (!arr) return fail(*n, std::string(key) + ": expected an array of strings");
        std::vector<std::string> v;
        for (auto const& e : *arr) {
            if (!e.is_string()) return fail(e, std::string(key) + ": expected an array of strings");
            v.push_back(*e.value<std::string>());
        }
        out = std::move(v);
    }

    // Networks ("192.0.2.0/24", "2001:db8::/32", or a bare address).
    void networks(std::string_view key, std::vector<net::cidr>& out)
    {
        auto const* n = get(key);
        if (!n) return;
        auto const* arr = n->as_array();
        if (!arr)
            return fail(*n, std::string(key) + ": expected an array of strings (networks such as \"192.0.2.0/24\")");
        std::vector<net::cidr> v;
        for (auto const& e : *arr) {
            std::string why = "expected a network such as \"192.0.2.0/24\"";
            std::optional<net::cidr> c;
            if (auto const text = e.value<std::string>(); e.is_string() && text) {
                c = net::parse_cidr(*text, &why);
                if (!c) why = "'" + *text + "': " + why;
            }
            if (!c) return fail(e, std::string(key) + ": " + why);
            v.push_back(*c);
        }
        out = std::move(v);
    }

private:
    toml::table const& t_;
    std::string name_;
    std::vector<error>& errors_;
    std::set<std::string, std::less<>> known_;
};

constexpr std::int64_t max_i32 = 2147483647;

toml::table const* sub_table(toml::table const& root, std::string_view key, std::vector<error>& errors)
{
    auto const* n = root.get(key);
    if (!n) return nullptr;
    if (!n->is_table()) {
        errors.push_back({n->source().begin.line, n->source().begin.column,
                          "'" + std::string(key) + "' must be a table: [" + std::string(key) + "]"});
        return nullptr;
    }
    return n->as_table();
}

// A POP3 listener, or an SMTP listener that needs AUTH, on which no
// mechanism could ever be used: a contradiction in the file, not a policy.
std::string nobody_can_log_in(settings const& s, listener const& l)
{
    if (l.protocol != "pop3" && !(l.protocol == "smtp" && l.auth_required)) return {};
    // APOP is offered nowhere on a tls = "required" POP3 listener: its
    // timestamp would travel in the clear greeting (pop3_session).
    if (s.cram_md5 || (s.apop && l.protocol == "pop3" && !l.tls_required())) return {};
    auto const addr = net::parse_ip(l.address);
    switch (l.plaintext.value_or(s.plaintext)) {
    case plaintext_policy::always: return {};
    case plaintext_policy::never:
        return "plaintext = \"never\" and neither CRAM-MD5 nor (on a POP3 listener without tls = \"required\") "
               "APOP is enabled";
    case plaintext_policy::tls_only:
        if (l.tls != tls_mode::none || (s.loopback_is_secure && addr && addr->is_loopback())) return {};
        return "tls = \"none\" with plaintext = \"tls-only\", and neither CRAM-MD5 nor APOP is enabled";
    }
    return {};
}

void read_plaintext(section& sec, plaintext_policy& out)
{
    sec.choice("plaintext", out,
               {{"never", plaintext_policy::never}, {"tls-only", plaintext_policy::tls_only},
                {"always", plaintext_policy::always}});
}

// The keys only the service listeners take: the trusted peers (HTTP and
// policy), the Dovecot secret (HTTP).
void read_service_keys(section& sec, toml::table const& t, listener& l, std::vector<error>& errors)
{
    auto const protocol = t["protocol"].value<std::string>();
    bool const http = protocol == "http";
    if (!http && protocol != "policy" && t.contains("trusted_networks"))
        errors.push_back({t.source().begin.line, 0,
                          "listener: trusted_networks is for protocol \"http\" or \"policy\""});
    if (!http && t.contains("api_key_file"))
        errors.push_back({t.source().begin.line, 0, "listener: api_key_file is for protocol \"http\""});
    sec.networks("trusted_networks", l.trusted_networks);  // [] : nobody
    sec.path("api_key_file", l.api_key_file);
    if (auto const* k = t.get("api_key_file")) l.api_key_file_line = k->source().begin.line;
}

void read_listeners(toml::table const& root, settings& s, std::vector<error>& errors)
{
    auto const* n = root.get("listener");
    if (!n) return;
    auto const* arr = n->as_array();
    if (!arr) {
        errors.push_back({n->source().begin.line, n->source().begin.column,
                          "'listener' must be an array of tables: [[listener]]"});
        return;
    }
    std::set<std::string> names;
    // Bound endpoints by parsed address: "::1" and "0::1" are one, and a
    // wildcard (0.0.0.0, ::) takes its port on every address of its family
    // (IPv6 listeners are v6-only), so serve could not bind both.
    std::vector<std::tuple<net::ip_address, int, std::string>> endpoints;
    for (auto const& e : *arr) {
        auto const* t = e.as_table();
        if (!t) {
            errors.push_back({e.source().begin.line, e.source().begin.column, "listener: expected a table"});
            continue;
        }
        listener l;
        l.line = t->source().begin.line;
        std::size_t const before = errors.size();
        {
            section sec(*t, "listener", errors);
            // It goes into every log line of the listener, unquoted, and
            // into metrics labels and the grants' listener column: a quote,
            // a space, '=' or a line break there would forge fields.
            sec.str("name", l.name,
                    [](auto const& v) {
                        return !v.empty() && v.size() <= 32 && std::all_of(v.begin(), v.end(), [](char c) {
                            return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                                   c == '.' || c == '_' || c == '-';
                        });
                    },
                    "1 to 32 letters, digits, '.', '_' or '-'");
            sec.choice("protocol", l.protocol, listener_protocols());
            // An IPv4-mapped address (::ffff:127.0.0.1) parses, but bind(2)
            // refuses it on the IPv6-only socket we listen on.
            sec.str("address", l.address,
                    [](auto const& v) {
                        auto const a = net::parse_ip(v);
                        return a && !(a->v4 && v.find(':') != std::string::npos);
                    },
                    "expected an IP address such as 127.0.0.1, 0.0.0.0 or :: (an IPv4-mapped one as its IPv4 "
                    "address)");
            sec.integer("port", l.port, 0, 65535);
            sec.choice("tls", l.tls,
                       {{"none", tls_mode::none},
                        {"starttls", tls_mode::starttls},
                        {"required", tls_mode::required},
                        {"implicit", tls_mode::implicit}});
            plaintext_policy p{};
            bool const has_plaintext = t->contains("plaintext");
            read_plaintext(sec, p);
            if (has_plaintext) l.plaintext = p;
            sec.boolean("auth_required", l.auth_required);
            sec.boolean("local_delivery_without_auth", l.local_delivery_without_auth);
            sec.boolean("grant", l.grant);
            sec.boolean("proxy_protocol", l.proxy_protocol);
            sec.networks("trusted_proxies", l.trusted_proxies);
            sec.str("policy_action_ok", l.policy_action_ok,
                    [](auto const& v) { return popgate::proto::policy_action_valid(v); },
                    "expected a Postfix action that accepts: OK, PERMIT or a number (PREPEND, FILTER and "
                    "the like fall through to reject_unauth_destination), 1 to 200 printable ASCII characters");
            read_service_keys(sec, *t, l, errors);
            if (!t->contains("protocol"))
                errors.push_back({t->source().begin.line, 0, "listener: 'protocol' is required"});
        }
        if (errors.size() != before) continue;
        if (l.name.empty()) l.name = l.protocol + std::to_string(s.listeners.size());
        if (!names.insert(l.name).second)
            errors.push_back({t->source().begin.line, 0, "listener: duplicate name '" + l.name + "'"});
        if (auto const addr = net::parse_ip(l.address); addr && l.port != 0) {
            auto const any = [](net::ip_address const& a) { return a == net::mask(a, 0); };
            for (auto const& [other, port, name] : endpoints)
                if (port == l.port && other.v4 == addr->v4 && (other == *addr || any(other) || any(*addr))) {
                    errors.push_back({t->source().begin.line, 0,
                                      "listener '" + l.name + "': " + l.address + ":" + std::to_string(l.port) +
                                          " is already used by listener '" + name + "'"});
                    break;
                }
            endpoints.emplace_back(*addr, l.port, l.name);
        }
        auto const refuse = [&](std::string const& why) {
            errors.push_back({t->source().begin.line, 0, "listener '" + l.name + "': " + why});
        };
        bool const mail_protocol = l.protocol == "pop3" || l.protocol == "smtp";
        if (l.auth_required && l.protocol != "smtp") refuse("auth_required is for smtp");
        if (l.local_delivery_without_auth && !l.auth_required)
            refuse("local_delivery_without_auth only means something with auth_required = true");
        if (t->contains("grant") && l.protocol != "pop3") refuse("grant is for pop3 (logins there grant relay)");
        if (l.plaintext && !mail_protocol) refuse("plaintext is for pop3 and smtp");
        if (l.tls_required() && !mail_protocol) refuse("tls = \"required\" is for pop3 and smtp (STLS/STARTTLS)");
        if (l.tls == tls_mode::starttls && l.protocol == "http")
            refuse("tls = \"starttls\" is for pop3 and smtp (STLS/STARTTLS); HTTP takes \"implicit\" or \"none\"");
        if (t->contains("trusted_proxies") && !l.proxy_protocol)
            refuse("trusted_proxies is for a listener with proxy_protocol = true");
        if (!t->contains("trusted_proxies")) l.trusted_proxies = s.trusted_proxies;
        if (l.proxy_protocol && l.trusted_proxies.empty())
            refuse("proxy_protocol = true needs trusted_proxies, on the listener or in [server]: no one could connect");
        if (t->contains("policy_action_ok") && l.protocol != "policy") refuse("policy_action_ok is for policy");
        // Postfix's and Exim's policy clients speak clear text (keep the port on loopback or a private network).
        if (l.protocol == "policy" && l.tls != tls_mode::none) refuse("a policy listener has no TLS (tls = \"none\")");
        s.listeners.push_back(std::move(l));
    }
}

}  // namespace

std::string to_string(tls_mode m)
{
    switch (m) {
    case tls_mode::none: return "none";
    case tls_mode::starttls: return "starttls";
    case tls_mode::required: return "required";
    case tls_mode::implicit: return "implicit";
    }
    return "?";
}

std::string_view embedded_default() noexcept { return generated::default_config; }

load_result parse(std::string_view text, std::filesystem::path const& source)
{
    load_result r;
    toml::table root;
    try {
        root = toml::parse(text, source.string());
    } catch (toml::parse_error const& e) {
        r.errors.push_back({e.source().begin.line, e.source().begin.column, std::string(e.description())});
        return r;
    }
    settings s;
    s.source = source;
    auto& errs = r.errors;
    for (auto const& [k, v] : root) {
        static std::set<std::string, std::less<>> const sections{"server", "listener", "tls", "storage", "mail",
                                                                  "relay",  "auth",     "limits", "log"};
        if (!sections.count(k.str()))
            errs.push_back({k.source().begin.line, k.source().begin.column,
                            "unknown section or key '" + std::string(k.str()) + "'"});
    }
    if (auto const* t = sub_table(root, "server", errs)) {
        section sec(*t, "server", errs);
        sec.str("hostname", s.hostname, [](auto const& v) { return is_domain_name(v); },
                "expected a host name (labels of letters, digits and '-' joined by dots)");
        sec.integer("threads", s.threads, 0, 256);
        sec.str("user", s.run_as_user);
        sec.str("group", s.run_as_group);
        if (auto const* n = t->get("group"); n && !s.run_as_group.empty() && s.run_as_user.empty())
            sec.fail(*n, "group: used only with server.user, which it switches to; set user, or remove this key");
        sec.networks("trusted_proxies", s.trusted_proxies);
    }
    read_listeners(root, s, errs);
    if (auto const* t = sub_table(root, "tls", errs)) {
        section sec(*t, "tls", errs);
        sec.required_path("cert_file", s.tls.cert_file);
        sec.required_path("key_file", s.tls.key_file);
        sec.boolean("self_signed", s.tls.self_signed);
        sec.str("min_version", s.tls.min_version, [](auto const& v) { return v == "1.2" || v == "1.3"; },
                "expected \"1.2\" or \"1.3\"");
        // OpenSSL's own reading of the lists, here where the error has its
        // line, and where a reload with a bad list is refused as a whole.
        sec.str("ciphers", s.tls.ciphers, [](auto const& v) { return openssl_accepts(v, false); },
                "no cipher OpenSSL knows in this list");
        sec.str("ciphersuites", s.tls.ciphersuites, [](auto const& v) { return openssl_accepts(v, true); },
                "no TLS 1.3 suite OpenSSL knows in this list");
        sec.path("second_cert_file", s.tls.second_cert_file);
        sec.path("second_key_file", s.tls.second_key_file);
        sec.boolean("session_tickets", s.tls.session_tickets);
        sec.duration("ticket_key_rotation", s.tls.ticket_key_rotation, 1, 86400);
        if (s.tls.second_cert_file.empty() != s.tls.second_key_file.empty()) {
            auto const* n = t->get(s.tls.second_cert_file.empty() ? "second_key_file" : "second_cert_file");
            sec.fail(*n, "second_cert_file and second_key_file: set both or neither");
        }
    }
    if (auto const* t = sub_table(root, "storage", errs)) {
        section sec(*t, "storage", errs);
        sec.path("database", s.database);
        sec.duration("busy_timeout_ms", s.busy_timeout, 0, 600000);
        sec.str("group", s.database_group);
        if (auto const* n = t->get("database"); n && n->is_string()) {
            if (auto const why = database_problem(s.database.string()); !why.empty()) sec.fail(*n, "database: " + why);
            else if (s.database_is_postgresql() && !s.database_group.empty())
                sec.fail(*n, "database: storage.group shares a SQLite file with an MTA; with PostgreSQL give the "
                             "MTA a read-only role instead (sql/postgresql/roles.sql)");
            else if (auto const timeout_why = busy_timeout_problem(s); !timeout_why.empty())
                sec.fail(*t->get("busy_timeout_ms"), timeout_why);  // 0 is never the default: the key is there
        }
        sec.integer("audit_max_rows", s.audit_max_rows, 0, max_i32);
        sec.integer("audit_max_age_days", s.audit_max_age_days, 1, 36500);
    }
    if (auto const* t = sub_table(root, "mail", errs)) {
        section sec(*t, "mail", errs);
        sec.str("maildir", s.maildir, [](auto const& v) { return v.find("%u") != std::string::npos ||
                                                                 v.find("%n") != std::string::npos; },
                "must contain %u or %n so that every user has a Maildir of their own");
        sec.strings("local_domains", s.local_domains);
        // A domain, or an address literal as RCPT TO writes it ([192.0.2.1],
        // [IPv6:2001:db8::1]).
        auto const literal = [](std::string const& d) {
            if (d.size() < 3 || d.front() != '[' || d.back() != ']') return false;
            auto inner = std::string_view(d).substr(1, d.size() - 2);
            if (inner.size() > 5 && proto::ascii_lowered(inner.substr(0, 5)) == "ipv6:") inner.remove_prefix(5);
            return net::parse_ip(inner).has_value();
        };
        for (auto const& d : s.local_domains)
            if (!is_domain_name(d) && !literal(d)) {
                sec.fail(*t->get("local_domains"),
                         "local_domains: \"" + d + "\" is not a domain (labels of letters, digits and '-' joined by "
                         "dots) or an address literal ([192.0.2.1])");
                break;
            }
        sec.required_path("relay_drop", s.relay_drop);
    }
    if (auto const* t = sub_table(root, "relay", errs)) {
        section sec(*t, "relay", errs);
        sec.duration("grant_ttl", s.grant_ttl, 1, 31 * 86400);
        sec.integer("ipv6_prefix", s.ipv6_prefix, 1, 128);
        sec.duration("purge_interval", s.purge_interval, 1, 86400);
        // '_' too: names in /etc/hosts and container networks have it, and
        // the resolver takes them.
        // An absolute name (one final dot) is the resolver's too.
        sec.str("upstream_host", s.upstream_host, [](auto const& v) {
            return v.empty() || net::parse_ip(v).has_value() ||
                   is_domain_name(v.ends_with('.') ? v.substr(0, v.size() - 1) : v, "_");
        }, "expected a host name (labels of letters, digits, '-' and '_' joined by dots) or an IP address");
        sec.integer("upstream_port", s.upstream_port, 1, 65535);
        sec.choice("upstream_starttls", s.upstream_starttls,
                   {{"none", upstream_tls::none}, {"opportunistic", upstream_tls::opportunistic},
                    {"required", upstream_tls::required}, {"verify", upstream_tls::verify}});
        sec.path("upstream_ca_file", s.upstream_ca_file);
        sec.str("upstream_tls_name", s.upstream_tls_name);
        // A CA file or a name without "verify" would verify nothing: an
        // administrator who set one expects the check.
        for (auto const& [key, empty] : {std::pair{"upstream_ca_file", s.upstream_ca_file.empty()},
                                         std::pair{"upstream_tls_name", s.upstream_tls_name.empty()}})
            if (auto const* n = t->get(key); n && !empty && s.upstream_starttls != upstream_tls::verify)
                sec.fail(*n, std::string(key) + ": used only with upstream_starttls = \"verify\", which checks the "
                                                "upstream's certificate; set that, or remove this key");
        sec.str("upstream_user", s.upstream_user);
        sec.path("upstream_password_file", s.upstream_password_file);
        sec.boolean("upstream_auth_in_clear", s.upstream_auth_in_clear);
        if (auto const* n = t->get("upstream_password_file");
            n && !s.upstream_password_file.empty() && s.upstream_user.empty())
            sec.fail(*n, "upstream_password_file: used only with upstream_user, whose password it holds; set that, "
                         "or remove this key");
        if (auto const* n = t->get("upstream_user");
            n && !s.upstream_user.empty() && s.upstream_starttls == upstream_tls::none && !s.upstream_auth_in_clear)
            sec.fail(*n, "upstream_user: with upstream_starttls = \"none\" the password would go in clear; use "
                         "\"opportunistic\", \"required\" or \"verify\", or allow it with upstream_auth_in_clear = true");
        sec.duration("upstream_timeout", s.upstream_timeout, 1, 3600);
        sec.duration("upstream_data_done_timeout", s.upstream_data_done_timeout, 1, 3600);
        sec.duration("upstream_reuse_time", s.upstream_reuse_time, 0, 300);
        sec.networks("no_grant_networks", s.no_grant_networks);
        sec.boolean("grant_requires_tls", s.grant_requires_tls);
        sec.integer("grant_max_messages_per_hour", s.grant_max_messages_per_hour, 0, 1000000);
        sec.integer("grant_max_recipients_per_hour", s.grant_max_recipients_per_hour, 0, 1000000);
        sec.integer("max_grants_per_user", s.max_grants_per_user, 0, 1000000);
        sec.choice("grant_limit_action", s.grant_limit,
                   {{"replace-oldest", grant_limit_action::replace_oldest}, {"refuse", grant_limit_action::refuse}});
    }
    if (auto const* t = sub_table(root, "auth", errs)) {
        section sec(*t, "auth", errs);
        read_plaintext(sec, s.plaintext);
        sec.boolean("loopback_is_secure", s.loopback_is_secure);
        sec.boolean("apop", s.apop);
        sec.boolean("cram_md5", s.cram_md5);
        sec.duration("failure_delay_ms", s.failure_delay, 0, 60000);
        sec.duration("failure_delay_max_ms", s.failure_delay_max, 0, 600000);
        // Set below the first delay, the cap would never apply. Left at its
        // default under a larger first delay, it rises to it (as before).
        if (auto const* n = sec.get("failure_delay_max_ms"); n && s.failure_delay_max < s.failure_delay)
            sec.fail(*n, "failure_delay_max_ms (" + std::to_string(s.failure_delay_max.count()) +
                             ") is below failure_delay_ms (" + std::to_string(s.failure_delay.count()) +
                             "): the first failure would wait longer than the most any may");
        sec.duration("failure_window", s.failure_window, 1, 86400);
        sec.integer("max_failures_per_user", s.max_failures_per_user, 1, 1000000);
        sec.integer("max_failures_per_ip", s.max_failures_per_ip, 1, 1000000);
        sec.integer("max_users_per_ip", s.max_users_per_ip, 1, 1000000);
        sec.duration("block_time", s.block_time, 1, 86400);
        sec.duration("credential_cache_ttl", s.credential_cache_ttl, 0, 86400);
    }
    if (auto const* t = sub_table(root, "limits", errs)) {
        section sec(*t, "limits", errs);
        sec.integer("max_sessions", s.max_sessions, 1, 1000000);
        sec.integer("max_service_sessions", s.max_service_sessions, 1, 1000000);
        sec.integer("max_sessions_per_ip", s.max_sessions_per_ip, 1, 1000000);
        sec.integer("max_connections_per_minute", s.max_connections_per_minute, 0, 1000000);
        sec.integer("max_junk_commands", s.max_junk_commands, 1, 1000000);
        // RFC 1939 §3: the autologout timer is at least 10 minutes; tests may
        // shorten it, so the floor is 1 second with the default at 600.
        sec.duration("pop3_idle_timeout", s.pop3_idle_timeout, 1, 86400);
        sec.duration("smtp_idle_timeout", s.smtp_idle_timeout, 1, 86400);
        sec.duration("policy_idle_timeout", s.policy_idle_timeout, 1, 86400);
        sec.duration("http_idle_timeout", s.http_idle_timeout, 1, 86400);
        sec.duration("data_timeout", s.data_timeout, 1, 86400);
        sec.duration("tls_handshake_timeout", s.tls_handshake_timeout, 1, 600);
        sec.duration("command_timeout", s.command_timeout, 1, 3600);
        sec.integer("max_slow_sessions_per_ip", s.max_slow_sessions_per_ip, 0, 1000000);
        sec.integer("pop3_max_line", s.pop3_max_line, 255, 65536);
        sec.integer("smtp_max_line", s.smtp_max_line, 512, 65536);
        sec.integer("max_message_size", s.max_message_size, 1024, std::int64_t{1} << 40);
        sec.integer("max_recipients", s.max_recipients, 100, 100000);
        sec.integer("max_data_in_flight", s.max_data_in_flight, 1024, std::int64_t{1} << 50);
        // A message that can never fit would get 451 at every try until its
        // sender gives up days later, while SIZE announces that it fits.
        if (s.max_data_in_flight < s.max_message_size) {
            auto const* n = t->get("max_data_in_flight");
            if (!n) n = t->get("max_message_size");
            if (n)
                sec.fail(*n, "max_data_in_flight (" + std::to_string(s.max_data_in_flight) +
                                 ") is smaller than max_message_size (" + std::to_string(s.max_message_size) +
                                 "): a message between the two would get 451 at every try; make max_data_in_flight "
                                 "at least max_message_size");
        }
        sec.integer("max_bad_commands", s.max_bad_commands, 1, 100000);
    }
    if (auto const* t = sub_table(root, "log", errs)) {
        section sec(*t, "log", errs);
        sec.str("level", s.log_level, [](auto const& v) {
            return v == "trace" || v == "debug" || v == "info" || v == "warn" || v == "error";
        }, "expected \"trace\", \"debug\", \"info\", \"warn\" or \"error\"");
        sec.str("file", s.log_file);
        s.log_to = s.log_file.empty() ? log_target::stderr_stream : log_target::file;
        sec.choice("target", s.log_to,
                   {{"stderr", log_target::stderr_stream}, {"file", log_target::file}, {"syslog", log_target::syslog}});
        if (auto const* n = t->get("target"); n && n->is_string()) {
            if (s.log_to == log_target::file && s.log_file.empty())
                sec.fail(*n, "target: \"file\" needs log.file");
            if (s.log_to != log_target::file && !s.log_file.empty())
                sec.fail(*n, "target: log.file is only written with target = \"file\"");
        }
    }
    if (errs.empty() && s.listeners.empty())
        errs.push_back({0, 0, "no [[listener]] configured: the daemon would serve nothing"});
    for (auto const& l : s.listeners)
        if (auto const why = nobody_can_log_in(s, l); !why.empty())
            errs.push_back({l.line, 0, "listener '" + l.name + "': no client could ever log in here: " + why});
    if (!errs.empty()) {
        std::stable_sort(errs.begin(), errs.end(), [](auto const& a, auto const& b) { return a.line < b.line; });
        return r;
    }
    r.value = std::move(s);
    return r;
}

bool is_postgresql_uri(std::string_view database) noexcept
{
    return database.starts_with("postgresql://") || database.starts_with("postgres://");
}

bool settings::database_is_postgresql() const { return is_postgresql_uri(database.native()); }

bool settings::uses_tls() const
{
    return std::ranges::any_of(listeners, [](listener const& l) { return l.tls != tls_mode::none; });
}

bool looks_like_conninfo(std::string_view d)
{
    // libpq decides: what it parses is a connection string (its whole
    // grammar, every keyword of this libpq, quoting included). A string it
    // refuses still counts when any word of it is one of libpq's keywords
    // followed by '=' ("host=db dbnme=gw password=..." misspelt): it may
    // hold a password all the same. A path with no '=' is a file name.
    if (d.find('=') == std::string_view::npos || is_postgresql_uri(d)) return false;
    std::string const text(d);
    char* err = nullptr;
    if (PQconninfoOption* parsed = PQconninfoParse(text.c_str(), &err)) {
        PQconninfoFree(parsed);
        return true;
    }
    PQfreemem(err);
    // Every keyword this libpq knows, with no defaults looked up.
    std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> const known(PQconninfoParse("", nullptr),
                                                                              PQconninfoFree);
    if (!known) return true;  // out of memory: refusing is the safe side
    auto const keyword = [&](std::string_view key) {
        for (auto const* o = known.get(); o->keyword; ++o)
            if (key == o->keyword) return true;
        return false;
    };
    auto const space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
    auto const word = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
    // A keyword starts the string or follows a space or a ';' (the
    // Host=db;Password=... of other drivers' connection strings), in any
    // case; "password" (ODBC's "pwd") after any other character too (a path
    // holds none).
    for (std::size_t i = 0; i < d.size(); ++i) {
        if (i > 0 && word(d[i - 1])) continue;
        bool const separated = i == 0 || space(d[i - 1]) || d[i - 1] == ';';
        std::size_t j = i;
        while (j < d.size() && word(d[j])) ++j;
        auto const key = proto::ascii_lowered(d.substr(i, j - i));
        while (j < d.size() && space(d[j])) ++j;
        if (j < d.size() && d[j] == '=' &&
            ((separated && keyword(key)) || key == "password" || key == "sslpassword" || key == "pwd"))
            return true;
    }
    return false;
}

std::string_view uri_scheme(std::string_view d) noexcept
{
    auto const sep = d.find("://");
    if (sep == std::string_view::npos || sep == 0) return {};
    auto const scheme = d.substr(0, sep);
    bool const word = std::all_of(scheme.begin(), scheme.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '+' || c == '-' ||
               c == '.';
    });
    return word ? scheme : std::string_view{};
}

std::string_view uri_userinfo(std::string_view uri) noexcept
{
    auto const sep = uri.find("://");
    if (sep == std::string_view::npos) return {};
    auto const rest = uri.substr(sep + 3);
    // The last '@' there: a host list with "u2:pw@h2" after the first host
    // is no host libpq can read, and its error would quote the password.
    auto const authority = rest.substr(0, std::max(rest.find('/'), rest.find_first_of("?#")));
    auto const at = authority.rfind('@');
    return at == std::string_view::npos ? std::string_view{} : authority.substr(0, at);
}

bool looks_like_uri_without_slashes(std::string_view d)
{
    // After any blanks, in any case; a "://" further on (in a password, in
    // a query value) does not make it a URI.
    auto const start = d.find_first_not_of(" \t\r\n\f\v");
    if (start == std::string_view::npos) return false;
    auto const lowered = proto::ascii_lowered(d.substr(start, 13));
    for (std::string_view const scheme : {"postgresql:", "postgres:"})
        if (lowered.starts_with(scheme)) return lowered.substr(scheme.size(), 2) != "//" || start > 0;
    return false;
}

std::string database_problem(std::string const& d)
{
    if (!is_postgresql_uri(d)) {
        // A node that would share nothing with the others. Not echoed: it
        // may hold a password.
        if (looks_like_conninfo(d))
            return "a libpq key=value connection string is not read: write it as a postgresql:// URI "
                   "(postgresql://USER@HOST:PORT/DBNAME?passfile=FILE)";
        if (looks_like_uri_without_slashes(d))
            return "not a postgresql:// URI (the '//' after the scheme is missing, or blanks before it), nor a "
                   "SQLite file path to take: write postgresql://USER@HOST:PORT/DBNAME";
        if (d.find("://") != std::string::npos) {
            // The scheme is shown only when it is one: "u:pw@h://" is not.
            auto const scheme = uri_scheme(d);
            return (scheme.empty() ? std::string("a string with '://'") : "'" + std::string(scheme) + "://'") +
                   " is not a database popgate knows: give a SQLite file path or a postgresql:// URI";
        }
        return d.empty() ? "empty: give a SQLite file path or a postgresql:// URI" : "";
    }
    // A password written here would sit in a world-readable config and in
    // every message that names the database.
    constexpr char const* refused =
        "a password in the URI is refused: put it in a passfile (?passfile=/etc/popgate/pgpass, mode 0600) or "
        "PGPASSFILE; for sslpassword=, give sslkey a key without a passphrase that only popgate's user may read";
    if (uri_userinfo(d).find(':') != std::string_view::npos) return refused;
    if (auto const q = d.find('?'); q != std::string::npos) {
        std::string_view query = std::string_view(d).substr(q + 1);
        while (!query.empty()) {
            auto const amp = query.find('&');
            auto const param = query.substr(0, amp);
            if (is_password_parameter(param.substr(0, param.find('=')))) return refused;
            query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        }
    }
    return "";
}

std::string busy_timeout_problem(settings const& s)
{
    if (!s.database_is_postgresql() || s.busy_timeout.count() != 0) return "";
    return "busy_timeout_ms: 0 is SQLite's \"do not wait\"; with PostgreSQL it would be no statement timeout at "
           "all, and a held lock would stall logins and decisions for ever: give at least 1";
}

bool is_password_parameter(std::string_view written_name)
{
    auto const hex = [](char h) {
        if (h >= '0' && h <= '9') return h - '0';
        if (h >= 'a' && h <= 'f') return h - 'a' + 10;
        if (h >= 'A' && h <= 'F') return h - 'A' + 10;
        return -1;
    };
    std::string name;
    for (std::size_t i = 0; i < written_name.size(); ++i) {
        char c = written_name[i];
        if (c == '%' && i + 2 < written_name.size() && hex(written_name[i + 1]) >= 0 && hex(written_name[i + 2]) >= 0) {
            c = static_cast<char>(hex(written_name[i + 1]) * 16 + hex(written_name[i + 2]));
            i += 2;
        }
        name += c;
    }
    // "password%3Dsecret" is a parameter without '=' for libpq, which
    // refuses it and quotes it whole: the name is what comes before the
    // '=' it decodes to.
    name = name.substr(0, name.find('='));
    // libpq refuses "Password", "password ", "password+" or a name with a
    // NUL in it, and quotes the parameter, value and all: any name that
    // holds the word, in any case, is one to refuse and to hide (no other
    // keyword of libpq's does).
    return proto::ascii_lowered(name).find("password") != std::string::npos;
}

bool listener::serves(net::ip_address const& peer) const noexcept
{
    return std::any_of(trusted_networks.begin(), trusted_networks.end(),
                       [&](net::cidr const& n) { return n.contains(peer); });
}

std::vector<net::cidr> listener::default_http_trusted()
{
    return {*net::parse_cidr("127.0.0.0/8"), *net::parse_cidr("::1/128")};
}

namespace {
// The first line of an HTTP listener's api_key_file, read with the rest of
// the configuration (at start, as root, and at every reload).
void read_api_keys(load_result& r)
{
    for (auto& l : r.value->listeners) {
        if (l.api_key_file.empty()) continue;
        std::ifstream in(l.api_key_file, std::ios::binary);
        if (!in.is_open()) {
            r.errors.push_back({l.api_key_file_line, 0,
                                "listener '" + l.name + "': cannot read api_key_file " + l.api_key_file.string()});
            continue;
        }
        std::string key;
        std::getline(in, key);
        while (!key.empty() && (key.back() == '\r' || key.back() == ' ' || key.back() == '\t')) key.pop_back();
        // Dovecot writes it into a header line: no spaces, colons or control characters.
        bool const bad_char = std::any_of(key.begin(), key.end(), [](unsigned char c) {
            return c <= ' ' || c == ':' || c == 0x7f;
        });
        if (key.size() < 16 || key.size() > 256 || bad_char)
            r.errors.push_back({l.api_key_file_line, 0,
                                "listener '" + l.name + "': api_key_file " + l.api_key_file.string() +
                                    ": the first line must be the secret, 16 to 256 characters without "
                                    "spaces, colons or control characters"});
        l.api_key = std::move(key);
    }
    if (!r.errors.empty()) r.value.reset();
}
}  // namespace

load_result load(std::filesystem::path const& file)
{
    // A directory opens as a stream that reads nothing: it would pass for
    // an empty file ("no [[listener]] configured").
    std::error_code ec;
    if (std::filesystem::is_directory(file, ec))
        return {std::nullopt, {{0, 0, "cannot read " + file.string() + ": a directory"}}};
    std::ifstream in(file, std::ios::binary);
    if (!in) return {std::nullopt, {{0, 0, "cannot read " + file.string()}}};
    std::ostringstream ss;
    ss << in.rdbuf();
    auto r = parse(ss.str(), file);
    if (r.value) read_api_keys(r);
    return r;
}

}  // namespace popgate::config

namespace popgate::config {

namespace {

// Whether this process runs the binary of a build tree (build/<preset>/popgate)
// rather than an installed copy: /proc/self/exe below the build directory
// CMake compiled in. A copy moved anywhere else counts as installed.
bool running_from_build_tree()
{
#ifdef POPGATE_BINARY_DIR
    std::error_code ec;
    auto const exe = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) return false;
    auto const tree = std::filesystem::weakly_canonical(POPGATE_BINARY_DIR, ec).string();
    if (ec || tree.empty()) return false;
    auto const path = exe.string();
    return path.size() > tree.size() && path.starts_with(tree) && path[tree.size()] == '/';
#else
    return false;
#endif
}

}  // namespace

std::filesystem::path system_config_file()
{
#ifdef POPGATE_SYSTEM_CONFIG
    return POPGATE_SYSTEM_CONFIG;
#else
    return "/etc/popgate/popgate.toml";
#endif
}

std::filesystem::path default_config_file()
{
    if (!running_from_build_tree()) return system_config_file();
    if (std::filesystem::exists("config/popgate.toml")) return "config/popgate.toml";
    return {};
}

load_result load_effective(std::string const& file)
{
    if (!file.empty()) return load(file);
    auto const found = default_config_file();
    if (found.empty()) return parse(embedded_default(), "(built-in default)");
    if (!std::filesystem::exists(found))
        return {std::nullopt, {{0, 0, "does not exist; give a configuration file with -c FILE"}}};
    return load(found);
}

std::string format_errors(load_result const& r, std::string const& file)
{
    std::string out;
    std::string name = file;
    if (name.empty()) name = default_config_file().string();
    if (name.empty()) name = "(built-in default)";
    for (auto const& e : r.errors) {
        out += name;
        if (e.line) out += ":" + std::to_string(e.line) + ":" + std::to_string(e.column);
        out += ": " + e.message + "\n";
    }
    return out;
}

}  // namespace popgate::config
