#include "popgate/cli/check_config.hpp"

#include "popgate/config/config.hpp"
#include "popgate/daemon/state_dirs.hpp"
#include "popgate/io/tls.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string_view>
#include <stdexcept>
#include <utility>
#include <vector>

namespace popgate::cli {
namespace {

namespace fs = std::filesystem;

// As serve does at start, before it switches users: the files are read by
// whoever starts the daemon. Both missing with self_signed: made at start,
// so their directory must be one the starter can make or write.
void check_tls(config::settings const& s, daemon::service_account const& a, std::vector<std::string>& problems)
{
    if (!s.uses_tls()) return;
    auto const& t = s.tls;
    std::error_code ec;
    bool const made_at_start = daemon::makes_self_signed(t);
    if (made_at_start) {
        for (auto const& [key, file] : {std::pair{"tls.cert_file", t.cert_file}, std::pair{"tls.key_file", t.key_file}}) {
            auto const dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
            bool const dir_ok = fs::exists(dir, ec) ? ::access(dir.c_str(), W_OK | X_OK) == 0 || ::geteuid() == 0
                                                    : daemon::why_not_creatable(dir).empty();
            if (!dir_ok)
                problems.push_back(std::string(key) + ": " + file.string() +
                                   " is missing and tls.self_signed cannot make it: " + dir.string() +
                                   " is not writable");
        }
    }
    // The rest of [tls] (ciphers, suites, a second certificate) is tried on
    // what start will make, or the daemon would be the first to refuse it.
    try {
        // Read as the daemon reads them at start.
        io::file_opener const open = [&a](auto const& file, std::string& why) {
            return daemon::open_to_read(file, a, why);
        };
        auto const material =
            made_at_start ? io::self_signed_material(t, s.hostname, open) : io::read_tls_material(t, open);
        io::make_server_tls(t, material);  // a certificate, a key, and the pair matches
    } catch (std::exception const& e) {
        problems.push_back(e.what());
    }
}

// What every new upstream connection reads: with relay.upstream_starttls =
// "verify" the CA file (or the system's CAs) must load, and with
// relay.upstream_user the password file must be there, or every relayed
// message would get 451 at its first recipient.
void check_upstream(config::settings const& s, std::vector<std::string>& problems)
{
    if (s.upstream_host.empty()) return;
    if (s.upstream_starttls == config::upstream_tls::verify) {
        try {
            io::make_client_tls(s);
        } catch (std::exception const& e) {
            problems.push_back(e.what());
        }
    }
    std::error_code ec;
    if (!s.upstream_user.empty() && !fs::is_regular_file(s.upstream_password_file, ec))
        problems.push_back("relay.upstream_password_file: " +
                           (s.upstream_password_file.empty() ? std::string("not set, but relay.upstream_user is")
                                                             : s.upstream_password_file.string() + " is not a file"));
}

// " (owner USER:GROUP, mode 0600)" as this process sees `p`.
std::string owner_and_mode(fs::path const& p)
{
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) return {};
    struct passwd const* pw = ::getpwuid(st.st_uid);
    struct group const* gr = ::getgrgid(st.st_gid);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return std::string(" (owner ") + (pw ? pw->pw_name : std::to_string(st.st_uid)) + ":" +
           (gr ? gr->gr_name : std::to_string(st.st_gid)) + ", mode " + mode + ")";
}

// Started as root with server.user, the daemon reads the certificate and key
// before it switches; but a reload (SIGHUP) reads them again as server.user,
// and the packaged unit (User=popgate) starts it as that user in the first
// place, where a file only root can read stops the start. The upstream's
// password and CA files are read as server.user at every new upstream
// connection, and an HTTP listener's api_key_file at every reload (a reload
// that cannot read it is refused whole). So each existing file must be
// readable by the account as well.
// Opened in a child that takes the account's ids for good: this process keeps
// its own.
void check_files_as_account(config::settings const& s, daemon::service_account const& a,
                            std::vector<std::string>& problems)
{
    if (!a.switches) return;
    std::vector<std::pair<std::string, fs::path>> files;
    if (s.uses_tls()) {
        files.emplace_back("tls.cert_file", s.tls.cert_file);
        files.emplace_back("tls.key_file", s.tls.key_file);
    }
    if (!s.upstream_host.empty() && !s.upstream_user.empty())
        files.emplace_back("relay.upstream_password_file", s.upstream_password_file);
    if (!s.upstream_host.empty() && s.upstream_starttls == config::upstream_tls::verify && !s.upstream_ca_file.empty())
        files.emplace_back("relay.upstream_ca_file", s.upstream_ca_file);
    for (auto const& l : s.listeners)
        if (!l.api_key_file.empty()) files.emplace_back("listener '" + l.name + "': api_key_file", l.api_key_file);
    if (files.empty()) return;
    std::vector<int> err(files.size() + 1, 0);  // per file: 0 readable, else errno; last: errno of taking the ids
    auto const bytes = static_cast<ssize_t>(err.size() * sizeof(int));
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    pid_t const pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        ::close(fds[0]);
        if (::setgroups(0, nullptr) != 0 || ::setgid(a.gid) != 0 || ::setuid(a.uid) != 0) {
            err.back() = errno;
        } else {
            for (std::size_t i = 0; i < files.size(); ++i) {
                // O_NONBLOCK: a FIFO there must not hold the check (and this
                // child) until someone writes to it.
                int const fd = ::open(files[i].second.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
                err[i] = fd < 0 ? errno : 0;
                if (fd >= 0) ::close(fd);
            }
        }
        bool const sent = ::write(fds[1], err.data(), err.size() * sizeof(int)) == bytes;
        ::_exit(sent ? 0 : 1);
    }
    ::close(fds[1]);
    bool const got = ::read(fds[0], err.data(), err.size() * sizeof(int)) == bytes;
    ::close(fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!got) throw std::runtime_error("cannot check the files as " + a.name);
    if (err.back() != 0) throw std::runtime_error("cannot take the ids of " + a.name + ": " + std::strerror(err.back()));
    for (std::size_t i = 0; i < files.size(); ++i) {
        auto const& [key, file] = files[i];
        std::error_code ec;
        if (err[i] == 0 || !fs::exists(file, ec)) continue;  // a missing one is reported (or made) elsewhere
        std::string_view const when =
            key.starts_with("tls.") ? " when the packaged unit starts it (User=) and on every reload (SIGHUP)"
            : key.starts_with("relay.")
                ? " for every new connection to the upstream"
                : " when the packaged unit starts it (User=) and on every reload (SIGHUP), which it refuses whole "
                  "when it cannot";
        problems.push_back(key + ": " + file.string() + " is not readable by " + a.name + ": " +
                           std::strerror(err[i]) + owner_and_mode(file) + "; the daemon reads it as " + a.name +
                           std::string(when));
    }
}

}  // namespace

int check_config(std::string const& file)
{
    auto r = config::load_effective(file);
    if (!r.value) {
        std::cerr << config::format_errors(r, file);
        return 1;
    }
    auto const& s = *r.value;
    std::vector<std::string> problems;
    try {
        auto const account = daemon::find_service_account(s);
        check_tls(s, account, problems);
        check_upstream(s, problems);
        check_files_as_account(s, account, problems);
        for (auto& p : daemon::check_state_dirs(s, account)) problems.push_back(std::move(p));
    } catch (std::exception const& e) {
        problems.push_back(e.what());
    }
    std::string name = file.empty() ? config::default_config_file().string() : file;
    if (name.empty()) name = "(built-in default)";
    // Not a problem (health and /metrics work), but reports are refused.
    for (auto const& l : s.listeners)
        if (l.protocol == "http" && l.api_key_file.empty())
            std::cerr << name << ": note: listener '" << l.name
                      << "' has no api_key_file: it serves health and /metrics but refuses every Dovecot "
                         "auth-policy report (403)\n";
    // Not a problem either, but a typo in a path would be served as a
    // self-signed certificate by the first start.
    if (s.uses_tls() && daemon::makes_self_signed(s.tls))
        std::cerr << name << ": note: tls.cert_file " << s.tls.cert_file.string() << " and tls.key_file "
                  << s.tls.key_file.string()
                  << " are missing: the daemon's start makes a self-signed pair there (tls.self_signed); a reload "
                     "(SIGHUP) never replaces a certificate in service with one, and is refused\n";
    // A note, not a problem: the packaged unit runs check-config before
    // each start, and a CRL that ran out must not keep POP3 and the policy
    // service down too (relayed mail alone is refused, 451).
    if (!s.upstream_host.empty())
        for (auto const& why : io::expired_crls(s)) std::cerr << name << ": note: " << why << "\n";
    for (auto const& p : problems) std::cerr << name << ": " << p << "\n";
    if (!problems.empty()) return 1;
    std::cout << "configuration OK (" << s.listeners.size() << " listeners)\n";
    return 0;
}

}  // namespace popgate::cli
