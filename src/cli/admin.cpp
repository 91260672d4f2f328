#include "popgate/cli/admin.hpp"

#include "popgate/auth/password.hpp"
#include "popgate/cli/check_config.hpp"
#include "popgate/config/config.hpp"
#include "popgate/daemon/state_dirs.hpp"
#include "popgate/net/ip.hpp"
#include "popgate/proto/ascii.hpp"
#include "popgate/store/migrate.hpp"
#include "popgate/store/open.hpp"

#include <boost/json.hpp>
#include <signal.h>
#include <termios.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>

namespace popgate::cli {
namespace {

namespace json = boost::json;

// One clear line on stderr and exit 1: what every bad input gets.
struct user_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// The length of the well-formed UTF-8 sequence at the start of `s` (no
// overlong forms, surrogates or code points past U+10FFFF), or 0; its code
// point in `cp`.
std::size_t utf8_sequence(std::string_view s, char32_t& cp) noexcept
{
    auto const b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
    auto const len = b(0) < 0x80 ? 1u : b(0) >= 0xc2 && b(0) <= 0xdf ? 2u : (b(0) & 0xf0) == 0xe0 ? 3u
                     : b(0) >= 0xf0 && b(0) <= 0xf4                 ? 4u : 0u;
    if (len == 0 || len > s.size()) return 0;
    cp = len == 1 ? b(0) : b(0) & (0x7f >> len);
    for (std::size_t i = 1; i < len; ++i) {
        if ((b(i) & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (b(i) & 0x3f);
    }
    bool const overlong = (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return 0;
    return len;
}

// Text from the database as the CLI shows it: the audit log, grants and
// users hold what clients sent (a USER line, a Dovecot report's login) and
// what plain SQL wrote. Well-formed UTF-8 is kept; a byte that is not, and
// with `controls` a control character (C0, DEL, C1: a terminal would obey
// it) and the backslash, become \xNN and \\, so no row can move the cursor,
// retitle or clear the administrator's terminal, or break the columns.
std::string shown(std::string_view s, bool controls = true)
{
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(s.size());
    while (!s.empty()) {
        char32_t cp = 0;
        auto n = utf8_sequence(s, cp);
        bool const control = cp < 0x20 || (cp >= 0x7f && cp <= 0x9f);
        if (n > 0 && !(controls && (control || cp == '\\'))) {
            out.append(s.substr(0, n));
        } else if (n > 0 && cp == '\\') {
            out += "\\\\";
        } else {
            n = std::max<std::size_t>(n, 1);
            for (std::size_t i = 0; i < n; ++i) {
                auto const c = static_cast<unsigned char>(s[i]);
                out += "\\x";
                out += hex[c >> 4];
                out += hex[c & 0xf];
            }
        }
        s.remove_prefix(n);
    }
    return out;
}

// --json output: one array or object on one line (README "Machine-readable
// output"); times are Unix seconds, absent values null.
void print_json(json::value const& v) { std::cout << json::serialize(v) << "\n"; }

json::value json_time(std::optional<store::unix_time> t)
{
    if (!t) return nullptr;
    return *t;
}

// JSON escapes control characters itself; a byte that is not UTF-8 would
// make the output invalid JSON, and is written as the text \xNN instead.
json::string json_str(std::string_view s) { return json::string(shown(s, false)); }

json::value json_text(std::string const& s)
{
    if (s.empty()) return nullptr;
    return json_str(s);
}

void add_json_flag(CLI::App* list_or_show, global_options& g)
{
    list_or_show->add_flag("--json", g.json, "print one JSON array or object (field names: README)");
}

config::settings effective_settings(global_options const& g)
{
    auto r = config::load_effective(g.config_file);
    if (!r.value) throw user_error("invalid configuration:\n" + config::format_errors(r, g.config_file));
    return *r.value;
}

// Only `db migrate` (and `serve`) create a database. Any other command on a
// missing file names the file it looked for: an empty database made in the
// place of one deleted under a running daemon would take grants and users
// that daemon never sees. `report` opens an older schema as it is, for the
// commands that only say which it is.
enum class db_open { existing, report, migrated, create };

// What `db version` and `db check` say of an older schema. The writers
// (user, allow and grant changes, `db copy`'s destination) migrate it as the
// daemon does when it starts; the readers refuse it.
constexpr std::string_view pending_migrations_advice =
    "this database has migrations pending: run `popgate db migrate` (every node's daemon does at its start)";

// README "Exit codes": a database that is missing, locked, unreadable or
// newer than this binary is 3, whatever the command; the rest of the store's
// refusals (duplicate, not found, a constraint) are 1.
int exit_code_of(store::store_errc c)
{
    using enum store::store_errc;
    return c == unavailable || c == busy || c == schema_too_new ? exit_db_unavailable : exit_refused;
}

std::unique_ptr<store::store> open_named(config::settings const& s, std::string const& database, db_open how)
{
    if (auto const why = config::database_problem(database); !why.empty())
        throw user_error("database " + store::database_label(database) + ": " + why);
    // Run as root beside a server.user that could change the way to the
    // database (the packaged /var/lib/popgate is the account's), the command
    // goes on as the account, for good: SQLite run as root would follow what
    // the account put there, and the daemon opens the files as the account
    // anyway. Nothing is handed over by root here: by path, through the
    // account's directories, that could be led elsewhere too. A database
    // only root can reach (a copy under /root) is opened as root. An account
    // that does not exist has planted nothing.
    if (::geteuid() == 0 && !config::is_postgresql_uri(database) && ::getpwnam(s.run_as_user.c_str()) != nullptr) {
        auto const account = daemon::find_service_account(s);
        if (daemon::account_can_redirect(database, account)) {
            daemon::become_account(account);
            if (auto const why = daemon::unusable_database_file(database, account); !why.empty())
                throw user_error("database " + why + " (this command runs as " + account.name +
                                 ", whose directory it is in)");
        }
    }
    store::open_options o;
    o.busy_timeout = s.busy_timeout;
    o.must_exist = how != db_open::create;
    o.migrate = how == db_open::migrated || how == db_open::create;
    o.accept_older = how == db_open::report;
    o.keep_wal_files = !s.database_group.empty();  // an MTA reads the files while the daemon is down too
    o.max_connections = 1;
    return store::open_store(database, o);
}

std::unique_ptr<store::store> open_db(global_options const& g, db_open how = db_open::existing)
{
    auto const s = effective_settings(g);
    return open_named(s, g.db_path.empty() ? s.database.string() : g.db_path, how);
}

std::string format_time(std::optional<store::unix_time> t)
{
    if (!t) return "-";
    std::time_t const tt = *t;
    std::tm tm{};
    ::localtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

// "90" seconds, "30m", "12h", "7d".
std::int64_t parse_duration(std::string const& s)
{
    std::int64_t n = 0;
    auto const [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    std::string_view unit(end, static_cast<std::size_t>(s.data() + s.size() - end));
    std::int64_t mult = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : 0;
    if (ec != std::errc{} || end == s.data() || n <= 0 || mult == 0 || n > 100LL * 365 * 86400 / mult)
        throw user_error("bad duration '" + s + "' (write 90, 30m, 12h or 7d)");
    return n * mult;
}

// Unix seconds, "YYYY-MM-DD" (midnight, local time) or "YYYY-MM-DD HH:MM[:SS]".
store::unix_time parse_time(std::string const& s)
{
    auto const bad = [&s] {
        return user_error("bad time '" + s + "' (write 2026-12-04, '2026-12-04 18:00' or Unix seconds)");
    };
    if (!s.empty() && s.find_first_not_of("0123456789") == std::string::npos) {
        store::unix_time t = 0;
        auto const [end, ec] = std::from_chars(s.data(), s.data() + s.size(), t);
        // Up to the year 9999: beyond, no date prints or means anything.
        if (ec != std::errc{} || end != s.data() + s.size() || t > 253402300799) throw bad();
        return t;
    }
    for (char const* fmt : {"%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"}) {
        std::tm tm{};
        char const* end = ::strptime(s.c_str(), fmt, &tm);
        if (end && *end == '\0') {
            tm.tm_isdst = -1;
            std::tm const asked = tm;
            auto const t = std::mktime(&tm);
            // mktime moves 2027-02-31 to 2027-03-03 without a word: a date
            // that does not exist is refused, not moved.
            if (t == -1 || tm.tm_mday != asked.tm_mday || tm.tm_mon != asked.tm_mon || tm.tm_year != asked.tm_year)
                throw bad();
            return t;
        }
    }
    throw bad();
}

// The terminal as it was before a password prompt turned echo off: a signal
// that ends the program at the prompt (Ctrl-C, a hangup, a kill) puts it back
// first, so that the shell is not left without echo.
termios saved_terminal{};

extern "C" void restore_terminal_and_die(int sig)
{
    ::tcsetattr(STDIN_FILENO, TCSANOW, &saved_terminal);  // async-signal-safe
    ::signal(sig, SIG_DFL);
    ::raise(sig);
}

// A NUL byte would end the password for crypt(3): the hash would be of what
// comes before it (of "" for a password that starts with one), and the
// password as typed could never log in, since no login sends a NUL.
std::optional<std::string> password_problem(std::string_view pw)
{
    if (pw.empty()) return "empty password refused";
    if (pw.find('\0') != std::string_view::npos) return "password holding a NUL byte refused";
    return std::nullopt;
}

// Passwords never come from argv (visible in ps and shell history): from a
// prompt with echo off when stdin is a terminal, else the first line of stdin.
std::string read_password(std::string const& prompt, bool confirm)
{
    if (!::isatty(STDIN_FILENO)) {
        std::string line;
        if (!std::getline(std::cin, line)) throw user_error("no password on standard input");
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (auto const why = password_problem(line)) throw user_error(*why);
        return line;
    }
    auto ask = [](std::string const& p) {
        termios old{};
        ::tcgetattr(STDIN_FILENO, &old);
        saved_terminal = old;
        constexpr int fatal[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
        struct sigaction restore {}, before[std::size(fatal)], stop_before {};
        restore.sa_handler = restore_terminal_and_die;
        ::sigemptyset(&restore.sa_mask);
        for (std::size_t i = 0; i < std::size(fatal); ++i) ::sigaction(fatal[i], &restore, &before[i]);
        // Suspending (Ctrl-Z) at the prompt would leave the shell without
        // echo until the prompt resumes: ignored while it is up.
        struct sigaction ignore {};
        ignore.sa_handler = SIG_IGN;
        ::sigemptyset(&ignore.sa_mask);
        ::sigaction(SIGTSTP, &ignore, &stop_before);
        termios quiet = old;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        std::cerr << p << std::flush;
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        std::string line;
        std::getline(std::cin, line);
        ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        for (std::size_t i = 0; i < std::size(fatal); ++i) ::sigaction(fatal[i], &before[i], nullptr);
        ::sigaction(SIGTSTP, &stop_before, nullptr);
        std::cerr << "\n";
        return line;
    };
    auto pw = ask(prompt);
    if (auto const why = password_problem(pw)) throw user_error(*why);
    if (confirm && ask("again: ") != pw) throw user_error("passwords do not match");
    return pw;
}

void check_user_name(std::string const& name)
{
    if (name.empty() || name.size() > 255 || name.front() == '.' || name.find('/') != std::string::npos ||
        name.find_first_of(" \t:") != std::string::npos)
        throw user_error("bad user name '" + name + "' (printable, no '/', ':' or spaces, not starting with '.')");
    for (unsigned char c : name)
        if (c < 0x21 || c > 0x7e) throw user_error("bad user name: only printable ASCII is allowed");
}

// The grant key of `text` as the daemon looks it up (net::grant_key: the
// prefix's, or the address itself in relay.no_grant_networks).
std::string normalise_address(std::string const& text, unsigned ipv6_prefix,
                              std::span<net::cidr const> own_address_only = {})
{
    std::string why;
    auto a = net::parse_ip(text, &why);
    if (!a) throw user_error(why);
    return net::grant_key(*a, ipv6_prefix, own_address_only).to_string();
}

// What `grant add` and `allow add` write: only the canonical spelling, the
// one the daemon looks up and the table rules accept (sql/README.md), so that
// what an administrator types is what `list`, SQL and Postfix show.
net::ip_address canonical_address(std::string const& text)
{
    std::string why;
    auto a = net::parse_ip(text, &why);
    if (!a) throw user_error(why);
    if (auto const problem = net::spelling_problem(text, *a); !problem.empty()) throw user_error(problem);
    return *a;
}

net::cidr canonical_network(std::string const& text)
{
    std::string why;
    auto c = net::parse_cidr(text, &why);
    if (!c) throw user_error(why);
    if (auto const problem = net::spelling_problem(text, *c); !problem.empty()) throw user_error(problem);
    return *c;
}

// The allowed_networks rows, as written, that mean network `c` (as the
// daemon reads them: relay::decider).
std::vector<std::string> allowed_rows_of(store::store& db, net::cidr const& c)
{
    std::vector<std::string> out;
    for (auto const& n : db.list_networks())
        if (auto const row = net::parse_cidr(n.cidr); row && *row == c) out.push_back(n.cidr);
    return out;
}

// --- Dovecot passwd-file and shadow import ------------------------------

std::optional<store::user_record> parse_import_line(std::string line, std::size_t lineno)
{
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto const first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') return std::nullopt;
    auto const colon = line.find(':');
    if (colon == std::string::npos) throw user_error("line " + std::to_string(lineno) + ": expected 'user:password...'");
    store::user_record u;
    u.name = line.substr(0, colon);
    try {
        check_user_name(u.name);
    } catch (user_error const& e) {
        throw user_error("line " + std::to_string(lineno) + ": " + e.what());
    }
    auto const end = line.find(':', colon + 1);
    std::string pw = line.substr(colon + 1, end == std::string::npos ? std::string::npos : end - colon - 1);
    auto fail = [&](std::string const& why) {
        return user_error("line " + std::to_string(lineno) + " (" + u.name + "): " + why);
    };
    // shadow(5): '!' locks the account but keeps the hash.
    if (pw.starts_with("!")) {
        u.disabled = true;
        pw.erase(0, pw.find_first_not_of('!'));
        if (pw.empty() || pw == "*") return u;
    }
    std::string scheme;
    if (pw.starts_with("{")) {
        auto const close = pw.find('}');
        if (close == std::string::npos) throw fail("unterminated {SCHEME}");
        scheme = pw.substr(1, close - 1);
        std::transform(scheme.begin(), scheme.end(), scheme.begin(), proto::ascii_upper);
        pw.erase(0, close + 1);
    }
    if (scheme == "PLAIN" || scheme == "CLEARTEXT" || scheme == "CLEAR") {
        // A plaintext-equivalent secret: keep it for APOP/CRAM-MD5 (which need
        // it), and store a real hash for USER/PASS and AUTH PLAIN/LOGIN.
        if (auto const why = password_problem(pw)) throw fail("{PLAIN}: " + *why);
        u.shared_secret = pw;
        u.password_hash = auth::hash_password(pw, auth::hash_scheme::sha512_crypt);
        return u;
    }
    if (!scheme.empty() && scheme != "CRYPT" && scheme != "SHA512-CRYPT" && scheme != "SHA256-CRYPT" &&
        scheme != "BLF-CRYPT" && scheme != "MD5-CRYPT" && scheme != "BCRYPT")
        throw fail("password scheme {" + scheme + "} cannot be imported (crypt(3) hashes and {PLAIN} can)");
    if (pw == "*" || pw == "x" || pw.empty()) throw fail("no password hash (locked or shadowed entry)");
    // Traditional DES crypt: 13 characters of ./0-9A-Za-z, no '$'. libcrypt
    // could check it, but it reads 8 characters of a password and brute
    // forces in hours: refused by name, with what to do instead.
    if (pw.size() == 13 && std::ranges::all_of(pw, [](char c) {
            return c == '.' || c == '/' || (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        }))
        throw fail("a traditional DES crypt hash, refused (it keeps 8 characters of a password and is broken in "
                   "hours): set a new password with 'popgate user passwd', or import the password as {PLAIN}");
    if (!auth::is_crypt_hash(pw)) throw fail("not a crypt(3) hash this system can verify");
    u.password_hash = pw;
    return u;
}

// --- subcommands -----------------------------------------------------------

void add_user_commands(CLI::App& app, global_options& g, std::function<int()>& run)
{
    auto* user = app.add_subcommand("user", "manage users");
    user->require_subcommand(1);

    struct add_opts {
        std::string name, scheme = "yescrypt";
        bool shared = false, apop_only = false, disabled = false;
    };
    auto ao = std::make_shared<add_opts>();
    auto* add = user->add_subcommand("add", "add a user; the password is read from a prompt or stdin");
    add->add_option("name", ao->name, "user name")->required();
    add->add_option("--scheme", ao->scheme, "hash scheme: yescrypt, sha512-crypt, bcrypt");
    add->add_flag("--shared-secret", ao->shared,
                  "also keep the password as the APOP/CRAM-MD5 shared secret (plaintext-equivalent)");
    add->add_flag("--apop-only", ao->apop_only, "refuse every mechanism but APOP for this user");
    add->add_flag("--disabled", ao->disabled, "create the user disabled");
    add->callback([&, ao] {
        run = [&g, ao] {
            check_user_name(ao->name);
            auto scheme = auth::parse_scheme(ao->scheme);
            if (!scheme) throw user_error("unknown scheme '" + ao->scheme + "' (yescrypt, sha512-crypt, bcrypt)");
            auto db = open_db(g, db_open::migrated);
            if (db->find_user(ao->name)) throw user_error("user '" + ao->name + "' already exists");
            auto pw = read_password("password for " + ao->name + ": ", true);
            store::user_record u;
            u.name = ao->name;
            u.password_hash = auth::hash_password(pw, *scheme);
            if (ao->shared || ao->apop_only) u.shared_secret = pw;
            u.apop_only = ao->apop_only;
            u.disabled = ao->disabled;
            db->add_user(u);
            db->audit("admin", "", u.name, "user add");
            std::cout << "added user " << u.name << "\n";
            return 0;
        };
    });

    auto pname = std::make_shared<std::string>();
    auto* del = user->add_subcommand("del", "delete a user and revoke their grants");
    del->add_option("name", *pname)->required();
    del->callback([&, pname] {
        run = [&g, pname] {
            auto db = open_db(g);
            // The schema's trigger (sql/005) revokes them with the user, and
            // audits each; counted first for the message.
            auto const n = db->active_grants_of_user(*pname, store::now()).size();
            if (!db->delete_user(*pname)) throw user_error("no such user '" + *pname + "'");
            db->delete_grants_of_user(*pname);  // expired ones, and a database before schema 5
            db->audit("admin", "", *pname, "user del");
            std::cout << "deleted user " << *pname << " (" << n << " grants revoked)\n";
            return 0;
        };
    });

    struct passwd_opts {
        std::string name, scheme = "yescrypt";
        bool shared = false, no_shared = false;
    };
    auto po = std::make_shared<passwd_opts>();
    auto* passwd = user->add_subcommand("passwd", "set a user's password (prompt or stdin)");
    passwd->add_option("name", po->name)->required();
    passwd->add_option("--scheme", po->scheme, "hash scheme: yescrypt, sha512-crypt, bcrypt");
    passwd->add_flag("--shared-secret", po->shared, "also keep it as the APOP/CRAM-MD5 shared secret");
    passwd->add_flag("--no-shared-secret", po->no_shared, "remove the shared secret (APOP/CRAM-MD5 off)");
    passwd->callback([&, po] {
        run = [&g, po] {
            auto scheme = auth::parse_scheme(po->scheme);
            if (!scheme) throw user_error("unknown scheme '" + po->scheme + "'");
            auto db = open_db(g);
            auto u = db->find_user(po->name);
            if (!u) throw user_error("no such user '" + po->name + "'");
            auto pw = read_password("new password for " + po->name + ": ", true);
            u->password_hash = auth::hash_password(pw, *scheme);
            // A stale shared secret would keep the old password valid for APOP.
            if (po->shared || (u->shared_secret && !po->no_shared)) u->shared_secret = pw;
            if (po->no_shared) {
                if (u->apop_only) throw user_error("user '" + po->name + "' is apop-only and needs a shared secret");
                u->shared_secret.reset();
            }
            db->update_user(*u);
            db->audit("admin", "", u->name, "user passwd");
            std::cout << "password changed for " << u->name << "\n";
            return 0;
        };
    });

    struct set_opts {
        std::string name;
        std::optional<bool> disabled, apop_only;
    };
    auto so = std::make_shared<set_opts>();
    auto* set = user->add_subcommand("set", "change a user's flags");
    set->add_option("name", so->name)->required();
    set->add_option("--disabled", so->disabled, "true/false");
    set->add_option("--apop-only", so->apop_only, "true/false");
    set->callback([&, so] {
        // Nothing to change is a mistake on the command line, not an update.
        if (!so->disabled && !so->apop_only) throw CLI::RequiredError("--disabled or --apop-only");
        run = [&g, so] {
            auto db = open_db(g);
            auto u = db->find_user(so->name);
            if (!u) throw user_error("no such user '" + so->name + "'");
            if (so->disabled) u->disabled = *so->disabled;
            if (so->apop_only) u->apop_only = *so->apop_only;
            db->update_user(*u);
            if (u->disabled) db->delete_grants_of_user(u->name);
            db->audit("admin", "", u->name, "user set");
            std::cout << "updated user " << u->name << "\n";
            return 0;
        };
    });

    auto* list = user->add_subcommand("list", "list users");
    add_json_flag(list, g);
    list->callback([&] {
        run = [&g] {
            auto db = open_db(g);
            if (g.json) {
                json::array out;
                for (auto const& u : db->list_users())
                    out.push_back({{"name", json_str(u.name)}, {"disabled", u.disabled}, {"apop_only", u.apop_only},
                                   {"shared_secret", u.shared_secret.has_value()}});
                print_json(out);
                return 0;
            }
            for (auto const& u : db->list_users()) {
                std::cout << shown(u.name) << (u.disabled ? " disabled" : "") << (u.apop_only ? " apop-only" : "")
                          << (u.shared_secret ? " shared-secret" : "") << "\n";
            }
            return 0;
        };
    });

    auto* show = user->add_subcommand("show", "show one user (never the password)");
    show->add_option("name", *pname)->required();
    add_json_flag(show, g);
    show->callback([&, pname] {
        run = [&g, pname] {
            auto db = open_db(g);
            auto u = db->find_user(*pname);
            if (!u) throw user_error("no such user '" + *pname + "'");
            std::string scheme = "none";
            if (u->password_hash) scheme = u->password_hash->substr(0, u->password_hash->find('$', 1) + 1);
            if (g.json) {
                print_json({{"name", u->name}, {"hash_scheme", scheme}, {"shared_secret", u->shared_secret.has_value()},
                            {"disabled", u->disabled}, {"apop_only", u->apop_only},
                            {"created_at", json_time(u->created_at)}, {"updated_at", json_time(u->updated_at)}});
                return 0;
            }
            std::cout << "name: " << u->name << "\nhash scheme: " << scheme
                      << "\nshared secret: " << (u->shared_secret ? "yes" : "no")
                      << "\ndisabled: " << (u->disabled ? "yes" : "no")
                      << "\napop-only: " << (u->apop_only ? "yes" : "no")
                      << "\ncreated: " << format_time(u->created_at)
                      << "\nupdated: " << format_time(u->updated_at) << "\n";
            return 0;
        };
    });

    struct import_opts {
        std::string file = "-";
        bool replace = false;
    };
    auto io = std::make_shared<import_opts>();
    auto* imp = user->add_subcommand("import", "import Dovecot passwd-file or shadow lines (all or nothing)");
    imp->add_option("file", io->file, "file to read, - for stdin");
    imp->add_flag("--replace", io->replace, "overwrite users that already exist");
    imp->callback([&, io] {
        run = [&g, io] {
            std::ifstream f;
            std::istream* in = &std::cin;
            if (io->file != "-") {
                // A directory opens as a stream that reads nothing: "imported
                // 0 users" and exit 0 would hide the wrong path.
                std::error_code ec;
                if (std::filesystem::is_directory(io->file, ec)) throw user_error("cannot read " + io->file + ": a directory");
                f.open(io->file);
                if (!f) throw user_error("cannot read " + io->file);
                in = &f;
            }
            std::vector<store::user_record> users;
            // A name twice in one file is a mistake in it (which line is
            // meant?), with --replace too: it would silently take the last.
            std::map<std::string, std::size_t> first_line;
            std::string line;
            for (std::size_t n = 1; std::getline(*in, line); ++n) {
                auto u = parse_import_line(line, n);
                if (!u) continue;
                if (auto const [at, fresh] = first_line.emplace(u->name, n); !fresh)
                    throw user_error("line " + std::to_string(n) + ": user '" + u->name +
                                     "' appears twice (first on line " + std::to_string(at->second) + ")");
                users.push_back(std::move(*u));
            }
            if (in->bad()) throw user_error("cannot read " + io->file);
            auto db = open_db(g, db_open::migrated);
            db->import_users(users, io->replace);
            db->audit("admin", "", "", "user import " + std::to_string(users.size()));
            std::cout << "imported " << users.size() << " users\n";
            return 0;
        };
    });
}

void add_allow_commands(CLI::App& app, global_options& g, std::function<int()>& run)
{
    auto* allow = app.add_subcommand("allow", "manage networks allowed to relay");
    allow->require_subcommand(1);
    struct add_opts {
        std::string cidr, note, until, for_;
        bool force = false;
    };
    auto ao = std::make_shared<add_opts>();
    auto* add = allow->add_subcommand("add", "allow a network (CIDR) to relay");
    add->add_option("cidr", ao->cidr, "192.0.2.0/24, 2001:db8::/32 or one address")->required();
    add->add_option("--note", ao->note, "why (shown by list)");
    add->add_flag("--force", ao->force, "allow a network wider than /8 (IPv4) or /16 (IPv6)");
    auto* until = add->add_option("--until", ao->until, "expiry: 2026-12-04, '2026-12-04 18:00' or Unix seconds");
    auto* for_ = add->add_option("--for", ao->for_, "expiry as a duration: 90, 30m, 12h, 7d")->excludes(until);
    add->callback([&, ao, until, for_] {
        run = [&g, ao, until, for_] {
            auto const c = canonical_network(ao->cidr);
            // 0.0.0.0/0 is an open relay for the whole Internet: one typo
            // away from a blocklisting. Wide networks take --force.
            if (!ao->force && c.prefix < (c.base.v4 ? 8u : 16u))
                throw user_error("network " + c.to_string() + " is wider than /" + (c.base.v4 ? "8" : "16") +
                                 ": every client in it could relay; add --force if that is meant");
            store::network n;
            n.cidr = c.to_string();
            n.note = ao->note;
            // Opened first: on PostgreSQL store::now() is the server's time
            // once a connection has read it, this host's before.
            auto db = open_db(g, db_open::migrated);
            auto const t = store::now();
            // Given, even empty (an unset $DUR in a script): an expiry to
            // read, never a network allowed for good.
            if (until->count()) n.expires_at = parse_time(ao->until);
            if (for_->count()) n.expires_at = t + parse_duration(ao->for_);
            if (n.expires_at && *n.expires_at <= t) throw user_error("expiry " + format_time(n.expires_at) + " is in the past");
            // The table's UNIQUE compares text: a row written by hand as
            // "192.0.2.7" is the same network as "192.0.2.7/32".
            if (auto const rows = allowed_rows_of(*db, c); !rows.empty())
                throw user_error("network " + n.cidr + " is already allowed (as " + rows.front() + ")");
            db->add_network(n);
            db->audit("admin", n.cidr, "", "allow add");
            std::cout << "allowed " << n.cidr << (n.expires_at ? " until " + format_time(n.expires_at) : "") << "\n";
            return 0;
        };
    });
    auto cidr = std::make_shared<std::string>();
    auto* del = allow->add_subcommand("del", "remove an allowed network");
    del->add_option("cidr", *cidr)->required();
    del->callback([&, cidr] {
        run = [&g, cidr] {
            auto db = open_db(g);
            // Every row that means this network: rows written by hand may
            // lack the /32 that `allow add` adds, and both may be there.
            std::vector<std::string> rows{*cidr};
            if (auto const c = net::parse_cidr(*cidr)) rows = allowed_rows_of(*db, *c);
            std::size_t removed = 0;
            for (auto const& row : rows) {
                if (!db->delete_network(row)) continue;
                ++removed;
                db->audit("admin", row, "", "allow del");
                std::cout << "removed " << row << "\n";
            }
            if (removed == 0) throw user_error("network " + *cidr + " is not in the allow list");
            return 0;
        };
    });
    auto* list = allow->add_subcommand("list", "list allowed networks");
    add_json_flag(list, g);
    list->callback([&] {
        run = [&g] {
            auto db = open_db(g);
            auto const t = store::now();
            json::array out;
            for (auto const& n : db->list_networks()) {
                // As the daemon reads the row (relay::decider): rows from
                // before schema 3 may be ignored or spelt another way.
                std::string why, flag;
                if (auto const c = net::parse_cidr(n.cidr, &why); !c)
                    flag = " (INVALID: ignored by the daemon: " + why + ")";
                else if (auto const problem = net::spelling_problem(n.cidr, *c); !problem.empty())
                    flag = " (not canonical: " + problem + ")";
                if (g.json) {
                    // "problem": why the daemon ignores the row, or how it should be spelt.
                    out.push_back({{"cidr", json_str(n.cidr)}, {"note", json_str(n.note)}, {"created_at", n.created_at},
                                   {"expires_at", json_time(n.expires_at)},
                                   {"expired", n.expires_at && *n.expires_at <= t},
                                   {"problem", json_text(flag.empty() ? "" : flag.substr(2, flag.size() - 3))}});
                    continue;
                }
                std::cout << shown(n.cidr) << "\t"
                          << (n.expires_at ? "until " + format_time(n.expires_at) : "permanent")
                          << (n.expires_at && *n.expires_at <= t ? " (expired)" : "") << shown(flag) << "\t"
                          << shown(n.note) << "\n";
            }
            if (g.json) print_json(out);
            return 0;
        };
    });
}

void add_grant_commands(CLI::App& app, global_options& g, std::function<int()>& run)
{
    auto* grant = app.add_subcommand("grant", "manage relay grants");
    grant->require_subcommand(1);
    struct add_opts {
        std::string address, user, ttl;
    };
    auto ao = std::make_shared<add_opts>();
    auto* add = grant->add_subcommand("add", "let an address relay for a while");
    add->add_option("address", ao->address, "client IP address")->required();
    add->add_option("--user", ao->user, "user to record");
    auto* ttl = add->add_option("--ttl", ao->ttl, "lifetime: 90, 30m, 12h, 7d (default: relay.grant_ttl)");
    add->callback([&, ao, ttl] {
        run = [&g, ao, ttl] {
            auto const s = effective_settings(g);
            store::grant gr;
            // A client in relay.no_grant_networks by its own address: the
            // daemon looks up no grant of its prefix for it.
            gr.address =
                net::grant_key(canonical_address(ao->address), s.ipv6_prefix, s.no_grant_networks).to_string();
            gr.user = ao->user;
            gr.method = "cli";
            auto db = open_db(g, db_open::migrated);  // first: store::now() is then the server's time
            gr.granted_at = store::now();
            // Given, even empty, it is read (as allow add's --for).
            gr.expires_at = gr.granted_at + (ttl->count() ? parse_duration(ao->ttl) : s.grant_ttl.count());
            db->upsert_grant(gr);
            db->audit("grant", gr.address, gr.user, "cli");
            std::cout << "granted " << gr.address << " until " << format_time(gr.expires_at) << "\n";
            return 0;
        };
    });
    auto who = std::make_shared<std::string>();
    auto by_user = std::make_shared<bool>(false);
    auto* del = grant->add_subcommand("del", "revoke the grant of an address (or --user: every grant of a user)");
    del->add_option("address", *who, "client IP address, or a user name with --user")->required();
    del->add_flag("--user", *by_user, "revoke every grant of this user");
    del->callback([&, who, by_user] {
        run = [&g, who, by_user] {
            auto db = open_db(g);
            if (*by_user) {
                auto const n = db->delete_grants_of_user(*who);
                // As grant del ADDR and user del: nothing to act on is "not found".
                if (n == 0) throw user_error("no grants of " + *who);
                db->audit("revoke", "", *who, "cli");
                std::cout << "revoked " << n << " grants of " << *who << "\n";
                return 0;
            }
            auto const s = effective_settings(g);
            // A guest's own grant only: never the prefix grant of the hosts
            // around it.
            auto const key = normalise_address(*who, s.ipv6_prefix, s.no_grant_networks);
            // The grant key, the full IPv6 address, and the text as typed: the
            // daemon matches the first two, and a row written by hand before
            // schema 3 may be spelt otherwise. All of them go: a revoke that
            // left one would leave the client relaying.
            std::size_t removed = 0;
            std::vector<std::string> tried;
            for (auto const& k : {key, normalise_address(*who, 128), *who}) {
                if (std::find(tried.begin(), tried.end(), k) != tried.end()) continue;
                tried.push_back(k);
                if (!db->delete_grant(k)) continue;
                ++removed;
                db->audit("revoke", k, "", "cli");
                std::cout << "revoked " << k << "\n";
            }
            if (removed == 0) throw user_error("no grant for " + key);
            return 0;
        };
    });
    auto all = std::make_shared<bool>(false);
    auto* list = grant->add_subcommand("list", "list unexpired grants");
    list->add_flag("--all", *all, "include expired grants");
    add_json_flag(list, g);
    list->callback([&, all] {
        run = [&g, all] {
            auto const s = effective_settings(g);
            auto db = open_db(g, db_open::migrated);  // the columns of schema 5
            auto const t = store::now();
            json::array out;
            auto const hour = t - t % 3600;
            // "used" or "used/limit" of this clock hour (sql/005).
            auto const quota = [hour](store::grant const& gr, bool msgs, std::size_t limit) {
                auto const used = gr.quota_hour == hour ? (msgs ? gr.quota_messages : gr.quota_recipients) : 0;
                return std::to_string(used) + (limit ? "/" + std::to_string(limit) : std::string{});
            };
            for (auto const& gr : db->list_grants(*all, t)) {
                // A grant is looked up by its canonical text: any other never matches.
                std::string why;
                if (auto const a = net::parse_ip(gr.address, &why)) why = net::spelling_problem(gr.address, *a);
                if (g.json) {
                    // "problem" set: the row never matches a client (see the text output).
                    out.push_back({{"address", json_str(gr.address)}, {"user", json_text(gr.user)},
                                   {"method", json_str(gr.method)},
                                   {"tls", gr.tls}, {"listener", json_text(gr.listener)},
                                   {"granted_at", gr.granted_at}, {"expires_at", gr.expires_at},
                                   {"expired", gr.expires_at <= t}, {"hits", gr.hits},
                                   {"last_used", json_time(gr.last_used)}, {"problem", json_text(why)},
                                   {"quota_messages", quota(gr, true, 0)}, {"quota_recipients", quota(gr, false, 0)},
                                   {"users", gr.sharing_users}});
                    continue;
                }
                std::cout << shown(gr.address) << "\t" << (gr.user.empty() ? "-" : shown(gr.user)) << "\t"
                          << shown(gr.method)
                          << (gr.tls ? "+tls" : "") << "\tuntil " << format_time(gr.expires_at)
                          << (gr.expires_at <= t ? " (expired)" : "")
                          << (why.empty() ? "" : " (NEVER MATCHES: " + shown(why) + ")") << "\thits " << gr.hits
                          << "\tlistener " << (gr.listener.empty() ? "-" : shown(gr.listener)) << "\tthis hour "
                          << quota(gr, true, s.grant_max_messages_per_hour) << " messages "
                          << quota(gr, false, s.grant_max_recipients_per_hour) << " recipients\tusers "
                          << gr.sharing_users << "\n";
            }
            if (g.json) print_json(out);
            return 0;
        };
    });
    auto* purge = grant->add_subcommand("purge", "delete expired grants");
    purge->callback([&] {
        run = [&g] {
            auto db = open_db(g);
            auto const purged = db->purge_expired_grants(store::now());  // nothing on stdout if it fails
            std::cout << "purged " << purged << " expired grants\n";
            return 0;
        };
    });
}

void add_db_commands(CLI::App& app, global_options& g, std::function<int()>& run)
{
    auto* db = app.add_subcommand("db", "database maintenance");
    db->require_subcommand(1);
    db->add_subcommand("migrate", "create the database or apply pending migrations")->callback([&] {
        run = [&g] {
            // Run as root beside a server.user, the SQLite file made here is
            // the one the daemon (the packaged unit: User=popgate) opens as
            // that user: open_named made it as the account, or, in a
            // directory only root may change, it is handed over now.
            // The account is looked up first: a missing one fails before
            // the database is touched, not after.
            auto const s = effective_settings(g);
            auto const database = g.db_path.empty() ? s.database.string() : g.db_path;
            std::optional<daemon::service_account> account;
            if (::geteuid() == 0 && !config::is_postgresql_uri(database)) account = daemon::find_service_account(s);
            auto st = open_db(g, db_open::create);
            auto const version = st->schema_version();
            st.reset();
            if (account && ::geteuid() == 0) daemon::hand_database_to(s, database, *account);
            std::cout << "schema version " << version << "\n";
            return 0;
        };
    });
    auto* version = db->add_subcommand("version", "print the schema version");
    add_json_flag(version, g);
    version->callback([&] {
        run = [&g] {
            auto st = open_db(g, db_open::report);
            int const schema = st->schema_version();
            if (g.json) {
                print_json({{"schema_version", schema}, {"latest", store::latest_schema_version()}});
                return 0;
            }
            std::cout << schema << " (this popgate: " << store::latest_schema_version() << ")\n";
            if (schema < store::latest_schema_version()) std::cout << pending_migrations_advice << "\n";
            return 0;
        };
    });
    auto* check = db->add_subcommand("check", "check the database: engine, schema, a round trip, integrity");
    add_json_flag(check, g);
    check->callback([&] {
        run = [&g] {
            auto st = open_db(g, db_open::report);
            auto const t0 = std::chrono::steady_clock::now();
            int const schema = st->schema_version();
            auto const rtt = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            auto const engine = st->engine_version();
            bool const intact = st->integrity_ok();
            bool const current = schema == store::latest_schema_version();
            bool const ok = intact && current;
            if (g.json) {
                print_json({{"engine", engine}, {"schema_version", schema},
                            {"latest", store::latest_schema_version()}, {"round_trip_ms", rtt},
                            {"integrity_ok", intact}, {"ok", ok}});
                return ok ? 0 : 1;
            }
            char ms[32];
            std::snprintf(ms, sizeof ms, "%.3f", rtt);
            std::cout << "engine " << engine << "\nschema version " << schema << " (this popgate: "
                      << store::latest_schema_version() << ")\nround trip " << ms << " ms\n";
            if (!current) std::cout << pending_migrations_advice << "\n";
            if (!intact) std::cout << "integrity check FAILED\n";
            if (ok) std::cout << "ok\n";
            return ok ? 0 : 1;
        };
    });
    auto copy_args = std::make_shared<std::array<std::string, 2>>();
    auto copy_replace = std::make_shared<bool>(false);
    auto* copy = db->add_subcommand(
        "copy", "copy users, networks and unexpired grants from one database to another (SQLite or PostgreSQL), "
                "in one transaction");
    copy->add_option("source", (*copy_args)[0], "a SQLite file or a postgresql:// URI")->required();
    copy->add_option("destination", (*copy_args)[1], "an existing SQLite file (made by `db migrate`) or a postgresql:// URI; "
                                                     "migrated first")
        ->required();
    copy->add_flag("--replace", *copy_replace, "delete the destination's users, networks and grants first");
    add_json_flag(copy, g);
    copy->callback([&, copy_args, copy_replace] {
        run = [&g, copy_args, copy_replace] {
            auto const s = effective_settings(g);
            auto const& [from, to] = *copy_args;
            if (from == to) throw user_error("source and destination are the same database");
            // Checked (and shown) as open_named checks and shows it: a
            // conninfo string or a URI may hold a password.
            if (auto const why = config::database_problem(to); !why.empty())
                throw user_error("destination database " + store::database_label(to) + ": " + why);
            auto src = open_named(s, from, db_open::existing);
            // Only `db migrate` and `serve` make a database: a mistyped DEST
            // must not become a new file and a report of success.
            std::error_code ec;
            if (!config::is_postgresql_uri(to) && !std::filesystem::exists(to, ec))
                throw store::store_error(store::store_errc::unavailable,
                                         ec ? "cannot open destination database " + to + ": " + ec.message()
                                            : "destination database " + to + " does not exist: run `popgate --db " +
                                                  to + " db migrate` first");
            auto dst = open_named(s, to, db_open::migrated);
            auto const rows = src->read_site(store::now());
            dst->write_site(rows, *copy_replace);
            dst->audit("admin", "", "", "db copy from " + store::database_label(from) + ": " +
                                            std::to_string(rows.users.size()) + " users " +
                                            std::to_string(rows.networks.size()) + " networks " +
                                            std::to_string(rows.grants.size()) + " grants");
            if (g.json) {
                print_json({{"users", rows.users.size()}, {"networks", rows.networks.size()},
                            {"grants", rows.grants.size()}, {"logins", rows.logins.size()}});
                return 0;
            }
            std::cout << "copied " << rows.users.size() << " users, " << rows.networks.size() << " networks, "
                      << rows.grants.size() << " unexpired grants (" << rows.logins.size() << " logins) to "
                      << store::database_label(to) << "\n";
            return 0;
        };
    });
    auto limit = std::make_shared<std::size_t>(50);
    auto* audit = db->add_subcommand("audit", "show the newest audit events");
    audit->add_option("-n,--limit", *limit, "how many")->check(CLI::Range(std::size_t{1}, std::size_t{1000000}));
    add_json_flag(audit, g);
    audit->callback([&, limit] {
        run = [&g, limit] {
            auto st = open_db(g);
            if (g.json) {
                json::array out;
                for (auto const& e : st->list_audit(*limit))
                    out.push_back({{"at", e.at}, {"event", json_str(e.event)}, {"address", json_text(e.address)},
                                   {"user", json_text(e.user)}, {"detail", json_str(e.detail)}});
                print_json(out);
                return 0;
            }
            for (auto const& e : st->list_audit(*limit))
                std::cout << format_time(e.at) << "\t" << shown(e.event) << "\t"
                          << (e.address.empty() ? "-" : shown(e.address)) << "\t"
                          << (e.user.empty() ? "-" : shown(e.user)) << "\t" << shown(e.detail) << "\n";
            return 0;
        };
    });
    db->add_subcommand("purge-audit", "apply storage.audit_max_rows and audit_max_age_days now")->callback([&] {
        run = [&g] {
            auto const s = effective_settings(g);
            auto st = open_db(g);
            auto const n = st->purge_audit(s.audit_max_rows, store::now() - std::int64_t{86400} * s.audit_max_age_days);
            std::cout << "purged " << n << " audit rows\n";
            return 0;
        };
    });
}

}  // namespace

void add_admin_commands(CLI::App& app, global_options& g, std::function<int()>& outer_run)
{
    // Every action runs inside one handler that turns failures into one line.
    auto inner = std::make_shared<std::function<int()>>();
    auto wrap = [inner, &outer_run] {
        outer_run = [inner] {
            try {
                int const rc = (*inner)();
                // A list sent to a full disk or a closed pipe is not a success.
                if (!std::cout.flush()) {
                    std::cerr << "popgate: cannot write to standard output\n";
                    return exit_refused;
                }
                return rc;
            } catch (user_error const& e) {
                std::cerr << "popgate: " << e.what() << (std::string_view(e.what()).ends_with('\n') ? "" : "\n");
            } catch (store::store_error const& e) {
                std::cerr << "popgate: " << e.what() << "\n";
                return exit_code_of(e.code());
            } catch (std::exception const& e) {
                std::cerr << "popgate: error: " << e.what() << "\n";
            }
            return exit_refused;
        };
    };
    add_user_commands(app, g, *inner);
    add_allow_commands(app, g, *inner);
    add_grant_commands(app, g, *inner);
    add_db_commands(app, g, *inner);

    auto file = std::make_shared<std::string>();
    auto* check = app.add_subcommand("check-config", "validate a config file; errors carry line numbers");
    check->add_option("file", *file, "config file (default: -c, else as README \"Configuration file\")");
    check->callback([&g, file, inner] {
        *inner = [&g, file] { return check_config(file->empty() ? g.config_file : *file); };
    });
    for (auto* sub : app.get_subcommands({})) {
        if (sub->get_name() == "serve") continue;
        auto prev = sub->get_subcommands({});
        if (prev.empty()) {
            sub->parse_complete_callback(wrap);
        } else {
            for (auto* leaf : prev) leaf->parse_complete_callback(wrap);
        }
    }
}

}  // namespace popgate::cli
