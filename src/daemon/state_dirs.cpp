#include "popgate/daemon/state_dirs.hpp"

#include "popgate/mail/maildir.hpp"

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <vector>

namespace popgate::daemon {
namespace {

namespace fs = std::filesystem;

std::string user_name(uid_t uid)
{
    if (passwd const* pw = ::getpwuid(uid)) return pw->pw_name;
    return std::to_string(uid);
}

std::string group_name(gid_t gid)
{
    if (group const* gr = ::getgrgid(gid)) return gr->gr_name;
    return std::to_string(gid);
}

std::string octal(mode_t m)
{
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
    return buf;
}

struct fd_holder {
    int fd = -1;
    fd_holder() = default;
    explicit fd_holder(int f) : fd(f) {}
    fd_holder(fd_holder&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
    fd_holder& operator=(fd_holder&& o) noexcept
    {
        if (this != &o) {
            if (fd >= 0) ::close(fd);
            fd = std::exchange(o.fd, -1);
        }
        return *this;
    }
    ~fd_holder()
    {
        if (fd >= 0) ::close(fd);
    }
};

// Sets the mode (and, with `a`, hands to the account) the directory or file
// that `fd` (O_PATH) holds. fchmod refuses an O_PATH descriptor; its /proc
// name reaches the file itself.
bool set_owner_mode(int fd, std::optional<mode_t> mode, service_account const* a)
{
    if (mode && ::chmod(("/proc/self/fd/" + std::to_string(fd)).c_str(), *mode) != 0) return false;
    return !a || !a->switches || ::fchownat(fd, "", a->uid, a->gid, AT_EMPTY_PATH) == 0;
}

// What open_dir_trusted makes when a directory is missing.
struct make_spec {
    mode_t last_mode;  // the last directory's; 0750 above it
    service_account const* account;
};

// Where the symbolic link `name` in the directory `dir` leads, when root may
// follow it: root owns it and the directory, which no group and no one else
// may write (an administrator's /var/lib/popgate -> /srv/popgate). Nothing
// when it is another's link, or in a directory others may change, or
// unreadable.
std::optional<std::string> trusted_link_target(int dir, char const* name)
{
    struct stat link {}, holder {};
    if (::fstatat(dir, name, &link, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISLNK(link.st_mode) || link.st_uid != 0 ||
        ::fstat(dir, &holder) != 0 || holder.st_uid != 0 || (holder.st_mode & (S_IWGRP | S_IWOTH)) != 0)
        return std::nullopt;
    std::string target(4096, '\0');
    auto const n = ::readlinkat(dir, name, target.data(), target.size());
    if (n <= 0 || static_cast<std::size_t>(n) >= target.size()) return std::nullopt;
    target.resize(static_cast<std::size_t>(n));
    return target;
}

// An O_PATH descriptor of the directory `dir`, reached as root may trust:
// component by component through real directories (openat, O_NOFOLLOW),
// and through a symbolic link only when root owns it and the directory
// holding it, which no group and no one else may write (an administrator's
// /var/lib/popgate -> /srv/popgate). A link someone else made, or could
// have put in place, is not followed: a directory of the account's on the
// way cannot lead root elsewhere, however it is swapped meanwhile. With
// `make`, a missing directory is made through the descriptor of the one
// above it, then chmodded and handed over through its own. Invalid (with
// `why`) when it cannot.
fd_holder open_dir_trusted(fs::path const& dir, std::optional<make_spec> const& make, std::string& why)
{
    std::vector<std::string> todo;  // components left, the next one last
    auto const push = [&todo](fs::path const& p) {
        std::vector<std::string> parts;
        for (auto const& c : p)
            if (auto const n = c.string(); !n.empty() && n != "/" && n != ".") parts.push_back(n);
        todo.insert(todo.end(), parts.rbegin(), parts.rend());
    };
    auto const from_root = [](bool absolute) {
        return fd_holder(::open(absolute ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
    };
    fd_holder at = from_root(dir.is_absolute());
    push(dir);
    int links = 0;
    bool others = false;  // a directory passed may be changed by someone other than root
    while (at.fd >= 0 && !todo.empty()) {
        std::string const name = todo.back();
        todo.pop_back();
        struct stat here {};
        if (::fstat(at.fd, &here) == 0 && (here.st_uid != 0 || (here.st_mode & (S_IWGRP | S_IWOTH)) != 0))
            others = true;
        // Its owner may move such a directory elsewhere meanwhile: what is
        // above it then is wherever they put it.
        if (name == ".." && others) {
            why = "'..' after a directory that someone other than root may change";
            return {};
        }
        fd_holder next(::openat(at.fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (next.fd < 0 && errno == ENOENT && make) {
            mode_t const m = todo.empty() ? make->last_mode : 0750;
            bool const made = ::mkdirat(at.fd, name.c_str(), m) == 0;
            if (!made && errno != EEXIST) {
                why = "cannot create " + name + ": " + std::strerror(errno);
                return {};
            }
            next = fd_holder(::openat(at.fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            // Only what this process made (someone may have put their own in
            // its place between the two calls: left as it is).
            struct stat st {};
            if (made && next.fd >= 0 && ::fstat(next.fd, &st) == 0 && st.st_uid == ::geteuid() &&
                !set_owner_mode(next.fd, m, make->account)) {
                why = "cannot set the owner and mode of " + name + ": " + std::strerror(errno);
                return {};
            }
        }
        if (next.fd < 0 && (errno == ELOOP || errno == ENOTDIR)) {
            struct stat link {};
            if (::fstatat(at.fd, name.c_str(), &link, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(link.st_mode)) {
                auto const target = trusted_link_target(at.fd, name.c_str());
                if (!target) {
                    why = name + " is a symbolic link that only root, in a directory only root may write, may make "
                                 "for popgate to follow as root";
                    return {};
                }
                if (++links > 40) {
                    why = name + ": too many symbolic links on the way (a loop?)";
                    return {};
                }
                if (fs::path(*target).is_absolute()) at = from_root(true);
                push(*target);
                continue;
            }
        }
        if (next.fd < 0) {
            why = name + ": " + std::strerror(errno);
            return {};
        }
        at = std::move(next);
    }
    if (at.fd < 0) why = std::strerror(errno);
    return at;
}

// Makes every missing directory of `dir`: the last one with `mode`, those
// above it 0750, each chmod'ed after mkdir so that the umask does not decide,
// and handed to the account when the daemon is about to switch to it. As
// root, through open_dir_trusted: a directory of the account's on the way
// (the packaged /var/lib/popgate) cannot lead root to chown another. Not as
// root, by path: the process can change only what it could anyway.
void make_dirs(fs::path const& dir, mode_t mode, service_account const& a, char const* key)
{
    if (dir.empty()) return;
    if (::geteuid() == 0) {
        std::string why;
        if (open_dir_trusted(dir, make_spec{mode, &a}, why).fd < 0)
            throw std::runtime_error(std::string(key) + ": " + dir.string() + ": " + why);
        return;
    }
    fs::path prefix;
    auto const last = std::prev(dir.end());
    for (auto it = dir.begin(); it != dir.end(); ++it) {
        prefix /= *it;
        if (it->empty() || *it == it->root_directory() || *it == "." || *it == "..") continue;
        mode_t const m = it == last ? mode : 0750;
        if (::mkdir(prefix.c_str(), m) != 0) {
            if (errno == EEXIST) continue;
            throw std::runtime_error(std::string(key) + ": cannot create " + prefix.string() + ": " +
                                     std::strerror(errno));
        }
        if (::chmod(prefix.c_str(), m) != 0)
            throw std::runtime_error(std::string(key) + ": cannot set the mode of " + prefix.string() + ": " +
                                     std::strerror(errno));
    }
}

struct verdict {
    std::string why;
    fs::path culprit;  // the directory to look at: `dir` or one above it
};

// Why the account cannot use `dir` as a directory it writes into; nothing if
// it can. Run under as_account.
std::optional<verdict> unusable(fs::path const& dir)
{
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) {
        int const err = errno;
        if (err == EACCES) {
            // A directory on the way is not searchable: name that one.
            if (!dir.is_absolute() && ::faccessat(AT_FDCWD, ".", X_OK, AT_EACCESS) != 0)
                return verdict{"cannot search the directory it was started from: " + std::string(std::strerror(EACCES)),
                               "."};
            fs::path prefix;
            for (auto it = dir.begin(); it != dir.end() && std::next(it) != dir.end(); ++it) {
                prefix /= *it;
                if (::faccessat(AT_FDCWD, prefix.c_str(), X_OK, AT_EACCESS) != 0)
                    return verdict{"cannot search " + prefix.string() + ": " + std::strerror(EACCES), prefix};
            }
        }
        return verdict{std::strerror(err), dir};
    }
    if (!S_ISDIR(st.st_mode)) return verdict{"not a directory", dir};
    // AT_EACCESS: the effective ids, which as_account set (the real uid is still root).
    if (::faccessat(AT_FDCWD, dir.c_str(), R_OK | W_OK | X_OK, AT_EACCESS) != 0)
        return verdict{std::strerror(errno), dir};
    return std::nullopt;
}

// "PATH (owner USER:GROUP, mode 0700)" as root sees it, for messages.
std::string describe(fs::path const& p)
{
    std::error_code ec;
    auto const shown = p == "." ? fs::current_path(ec) : p;
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) return shown.string();
    return shown.string() + " (owner " + user_name(st.st_uid) + ":" + group_name(st.st_gid) + ", mode " +
           octal(st.st_mode) + ")";
}

// The process's effective or supplementary groups include `gid`.
bool in_group(gid_t gid)
{
    if (::getegid() == gid) return true;
    int const n = ::getgroups(0, nullptr);
    if (n <= 0) return false;
    std::vector<gid_t> groups(static_cast<std::size_t>(n));
    int const got = ::getgroups(n, groups.data());
    return got > 0 && std::find(groups.begin(), groups.begin() + got, gid) != groups.begin() + got;
}

struct state_dir {
    char const* key;
    fs::path dir;
    mode_t mode;
    bool maildir_root;  // its entries are the users' Maildirs (or a level above them)
    bool maildir;       // is itself a Maildir: tmp/, new/, cur/ are checked too when present
};

fs::path database_dir(config::settings const& s)
{
    return s.database.has_parent_path() ? s.database.parent_path() : fs::path(".");
}

}  // namespace

service_account find_service_account(config::settings const& s)
{
    service_account a;
    if (::geteuid() != 0 || s.run_as_user.empty()) {
        a.uid = ::geteuid();
        a.gid = ::getegid();
        a.name = user_name(a.uid);
        return a;
    }
    passwd const* pw = ::getpwnam(s.run_as_user.c_str());
    if (!pw) throw std::runtime_error("server.user '" + s.run_as_user + "' does not exist");
    a.name = s.run_as_user;
    a.uid = pw->pw_uid;
    a.gid = pw->pw_gid;
    if (!s.run_as_group.empty()) {
        group const* gr = ::getgrnam(s.run_as_group.c_str());
        if (!gr) throw std::runtime_error("server.group '" + s.run_as_group + "' does not exist");
        a.gid = gr->gr_gid;
    }
    a.switches = true;
    return a;
}

as_account::as_account(service_account const& a) : active_{a.switches}
{
    if (!active_) return;
    if (::setgroups(0, nullptr) != 0 || ::setegid(a.gid) != 0 || ::seteuid(a.uid) != 0) {
        int const err = errno;
        if (::seteuid(0) != 0 || ::setegid(0) != 0) std::abort();
        throw std::runtime_error("cannot take the ids of " + a.name + ": " + std::strerror(err));
    }
}

as_account::~as_account()
{
    // Back to root (the saved uid); without it nothing else at start works.
    if (active_ && (::seteuid(0) != 0 || ::setegid(0) != 0)) std::abort();
}

void become_account(service_account const& a)
{
    if (!a.switches) return;
    // Group first (after setuid we could no longer change it), then verify
    // that root cannot be regained.
    if (::setgroups(0, nullptr) != 0 || ::setgid(a.gid) != 0 || ::setuid(a.uid) != 0)
        throw std::runtime_error("cannot drop privileges to " + a.name + ": " + std::strerror(errno));
    if (::setuid(0) == 0) throw std::runtime_error("privilege drop did not stick");
}

namespace {

// The account's groups, supplementary ones included: who it is, for what it
// could do in a shell of its own, not only as the daemon (which drops them).
std::vector<gid_t> groups_of(service_account const& a)
{
    int n = 32;
    std::vector<gid_t> g(static_cast<std::size_t>(n));
    if (::getgrouplist(a.name.c_str(), a.gid, g.data(), &n) < 0) {
        g.resize(static_cast<std::size_t>(n));
        if (::getgrouplist(a.name.c_str(), a.gid, g.data(), &n) < 0) n = 0;
    }
    g.resize(static_cast<std::size_t>(std::max(n, 0)));
    // server.group, and the user's own (passwd) group when server.group is another.
    std::vector<gid_t> own{a.gid};
    if (passwd const* pw = ::getpwnam(a.name.c_str())) own.push_back(pw->pw_gid);
    for (gid_t const o : own)
        if (std::find(g.begin(), g.end(), o) == g.end()) g.push_back(o);
    return g;
}

// The account could add, remove or rename entries in the directory `st`
// describes: it owns it (an owner may always chmod it writable again), or
// its group or others may write it; but in a sticky directory (/tmp) only
// the entries it owns, so not when the entry on the way (`entry_uid`, none
// for a name not there yet) is another's.
bool account_may_change(fs::path const& dir, struct stat const& st, service_account const& a,
                        std::vector<gid_t> const& groups, std::optional<uid_t> entry_uid)
{
    if (st.st_uid == a.uid) return true;
    bool writable = (st.st_mode & S_IWOTH) != 0 ||
                    ((st.st_mode & S_IWGRP) != 0 && std::find(groups.begin(), groups.end(), st.st_gid) != groups.end());
    if (!writable) {
        // What the mode bits do not say (an ACL entry for the account).
        as_account const as(a);
        writable = ::faccessat(AT_FDCWD, dir.c_str(), W_OK, AT_EACCESS) == 0;
    }
    if (!writable) return false;
    if ((st.st_mode & S_ISVTX) == 0 || !entry_uid) return true;
    return *entry_uid == a.uid;
}

}  // namespace

bool account_can_redirect(fs::path const& file, service_account const& a)
{
    if (!a.switches) return false;
    auto const groups = groups_of(a);
    // The directory the files are in: a new name there (a -journal) is
    // enough. Above it, the entry on the way must be one the account can
    // replace. Both the path as written and the one its links lead to.
    // A link met on the way (root's /etc/popgate/tls -> the account's
    // /var/lib/popgate/tls) is checked where it leads as well: the account
    // may change what is there.
    int links = 0;
    std::function<bool(fs::path const&)> check = [&](fs::path const& dir) {
        fs::path d = dir;
        std::optional<uid_t> entry;  // the owner of the entry below `d` on the way; none for the files' own
        for (;;) {
            struct stat st {};
            if (::lstat(d.c_str(), &st) == 0) {
                if (S_ISDIR(st.st_mode) && account_may_change(d, st, a, groups, entry)) return true;
                if (S_ISLNK(st.st_mode) && st.st_uid == a.uid) return true;
                if (S_ISLNK(st.st_mode)) {
                    std::error_code ec;
                    auto const target = fs::read_symlink(d, ec);
                    if (ec || ++links > 40) return true;  // unreadable or a loop: not trusted
                    if (check(target.is_absolute() ? target : d.parent_path() / target)) return true;
                }
                entry = st.st_uid;
            } else {
                entry.reset();  // missing: whoever may write the directory above may make it
            }
            if (d == d.root_path() || !d.has_relative_path()) return false;
            d = d.parent_path();
        }
    };
    // As written, not lexically normalised: "l/.." is the parent of where
    // the link l leads, which lstat() resolves as the kernel does. Then
    // the path the kernel resolves, as far as it exists (a missing
    // database directory included).
    auto const dir = fs::absolute(file).parent_path();
    if (check(dir)) return true;
    std::error_code ec;
    auto const real = fs::weakly_canonical(dir, ec);
    return !ec && real != dir && check(real);
}

int open_to_read(fs::path const& file, service_account const& a, std::string& why)
{
    if (::geteuid() != 0 || !a.switches) {
        // By path, but a FIFO put there must not hold check-config, the
        // start or a SIGHUP's reload: a regular file only.
        fd_holder f(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
        struct stat st {};
        if (f.fd < 0 || ::fstat(f.fd, &st) != 0) {
            why = std::strerror(errno);
            return -1;
        }
        if (!S_ISREG(st.st_mode)) {
            why = "not a regular file";
            return -1;
        }
        return std::exchange(f.fd, -1);
    }
    // Root, about to become the account: every directory through the walk,
    // and the file's own name followed only where open_dir_trusted follows
    // a link (root's link, in a directory only root may write: an
    // administrator's /etc/popgate/key.pem -> /etc/letsencrypt/...). A link
    // there that leads into the account's directory is walked on from
    // there, under the same rule.
    fs::path path = file;
    for (int hops = 0; hops <= 40; ++hops) {
        fd_holder const dir =
            open_dir_trusted(path.has_parent_path() ? path.parent_path() : fs::path("."), std::nullopt, why);
        if (dir.fd < 0) return -1;
        struct stat holder {};
        if (::fstat(dir.fd, &holder) != 0) {
            why = std::strerror(errno);
            return -1;
        }
        // Only root could have put a name here.
        bool const roots_only = holder.st_uid == 0 && (holder.st_mode & (S_IWGRP | S_IWOTH)) == 0;
        auto const name = path.filename();
        // O_NONBLOCK: a FIFO put there must not hold the start (refused below).
        fd_holder f(::openat(dir.fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
        if (f.fd < 0 && errno == ELOOP) {
            auto const target = trusted_link_target(dir.fd, name.c_str());
            if (!target) {
                why = "a symbolic link that someone other than root could have made, which root does not follow "
                      "for " + a.name + ": name the file itself";
                return -1;
            }
            path = fs::path(*target).is_absolute() ? fs::path(*target) : path.parent_path() / *target;
            continue;
        }
        if (f.fd < 0) {
            why = std::strerror(errno);
            return -1;
        }
        struct stat st {};
        if (::fstat(f.fd, &st) != 0) {
            why = std::strerror(errno);
            return -1;
        }
        if (!S_ISREG(st.st_mode)) {
            why = "not a regular file";
            return -1;
        }
        // A hard link someone made to another's file (where the kernel
        // allows it: fs.protected_hardlinks = 0), in a directory not root's
        // alone.
        if (st.st_nlink > 1 && st.st_uid != a.uid && !roots_only) {
            why = "a file with other names, owned by another user than " + a.name + ", in a directory someone " +
                  "other than root may change: give it one name, or keep it where only root may write";
            return -1;
        }
        return std::exchange(f.fd, -1);
    }
    why = "too many symbolic links on the way (a loop?)";
    return -1;
}

int prepare_log_file(fs::path const& file, service_account const& a)
{
    if (file.empty()) return -1;
    if (file.has_parent_path()) make_dirs(file.parent_path(), 0750, a, "log.file");
    // As root, through the directory reached as root may trust (make_dirs).
    fd_holder dir;
    bool const root = ::geteuid() == 0;
    if (root) {
        std::string why;
        dir = open_dir_trusted(file.has_parent_path() ? file.parent_path() : fs::path("."), std::nullopt, why);
        if (dir.fd < 0) throw std::runtime_error("log.file: " + file.string() + ": " + why);
    }
    // O_NONBLOCK: a FIFO put there must not hold the start until someone
    // reads it (refused below, as anything but a regular file).
    constexpr int flags = O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
    int const at = dir.fd >= 0 ? dir.fd : AT_FDCWD;
    auto const name = dir.fd >= 0 ? file.filename() : file;
    int fd = ::openat(at, name.c_str(), flags | O_CREAT | O_EXCL, 0640);
    if (fd >= 0) {
        bool const ok = ::fchmod(fd, 0640) == 0 && (!a.switches || ::fchown(fd, a.uid, a.gid) == 0);
        int const err = errno;
        if (!ok) {
            ::close(fd);
            throw std::runtime_error("log.file: cannot set the owner and mode of " + file.string() + ": " +
                                     std::strerror(err));
        }
    } else if (errno == EEXIST && root) {
        fd = ::openat(at, name.c_str(), flags);
    }
    if (fd < 0 && (root || errno != EEXIST))
        throw std::runtime_error("log.file: cannot open " + file.string() + ": " + std::strerror(errno));
    if (struct stat st {}; fd >= 0 && (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
        ::close(fd);
        throw std::runtime_error("log.file: " + file.string() + " is not a regular file");
    }
    if (fd >= 0) ::fcntl(fd, F_SETFL, O_WRONLY | O_APPEND);  // blocking writes from here on
    if (!root && fd >= 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

namespace {

std::vector<state_dir> state_dirs_of(config::settings const& s)
{
    std::vector<state_dir> dirs;
    // SQLite makes the -wal and -shm files (and a journal) beside the database.
    if (!s.database_is_postgresql()) {
        auto const db_dir = s.database.has_parent_path() ? s.database.parent_path() : fs::path(".");
        dirs.push_back({"storage.database", db_dir, 0750, false, false});
    }
    dirs.push_back({"mail.maildir", mail::maildir_prefix(s.maildir), 0700, true, false});
    if (s.upstream_host.empty()) dirs.push_back({"mail.relay_drop", s.relay_drop, 0700, false, true});
    return dirs;
}

}  // namespace

bool surely_missing(fs::path const& p)
{
    std::error_code ec;
    return !fs::exists(p, ec) && !ec;
}

bool makes_self_signed(config::tls_settings const& t)
{
    return t.self_signed && surely_missing(t.cert_file) && surely_missing(t.key_file);
}

std::string why_not_creatable(fs::path const& dir)
{
    // make_dirs runs before the switch, as whoever started the daemon: the
    // nearest existing path must be a directory (a file there stops root
    // too); then root makes anything, anyone else needs it writable.
    std::error_code ec;
    fs::path p = dir.empty() ? fs::path(".") : dir;
    while (!fs::exists(p, ec) && p.has_relative_path()) p = p.has_parent_path() ? p.parent_path() : fs::path(".");
    if (fs::exists(p, ec) && !fs::is_directory(p, ec)) return "cannot be created: " + p.string() + " is not a directory";
    if (::geteuid() == 0) return {};
    if (::access(p.c_str(), W_OK | X_OK) == 0) return {};
    return "cannot be created: " + describe(p) + " is not writable by " + user_name(::geteuid());
}

std::vector<std::string> check_state_dirs(config::settings const& s, service_account const& a)
{
    std::vector<std::string> problems;
    auto dirs = state_dirs_of(s);
    if (fs::path const log(s.log_file); !log.empty())
        dirs.push_back({"log.file", log.has_parent_path() ? log.parent_path() : fs::path("."), 0750, false, false});
    // Missing ones as the starter (who makes them), existing ones as the account.
    std::vector<state_dir> existing;
    for (auto const& d : dirs) {
        if (std::error_code ec; fs::exists(d.dir, ec)) {
            existing.push_back(d);
        } else if (auto why = why_not_creatable(d.dir); !why.empty()) {
            problems.push_back(std::string(d.key) + ": " + d.dir.string() + " " + why);
        }
    }
    if (!s.database_group.empty() && !s.database_is_postgresql()) {
        if (auto why = why_not_shareable(s); !why.empty()) problems.push_back(std::move(why));
        group const* gr = ::getgrnam(s.database_group.c_str());
        if (!gr)
            problems.push_back("storage.group '" + s.database_group + "' does not exist");
        else if (::geteuid() != 0 && !in_group(gr->gr_gid))
            problems.push_back("storage.group: " + a.name + " is not a member of group " + s.database_group +
                               ", so it cannot give it the database (start popgate as root, or add the group: "
                               "SupplementaryGroups=" + s.database_group +
                               " in deploy/systemd/popgate.service.d/postfix-sqlite.conf)");
    }
    as_account const as(a);
    for (auto const& d : existing) {
        if (auto const v = unusable(d.dir))
            problems.push_back(std::string(d.key) + ": " + d.dir.string() + " is not usable by " + a.name + ": " +
                               v->why + "; " + describe(v->culprit));
    }
    return problems;
}

void prepare_state_dirs(config::settings const& s, service_account const& a)
{
    // Before anything is made: share_database would refuse it later anyway.
    if (auto const why = why_not_shareable(s); !why.empty()) throw std::runtime_error(why);
    // share_database gives the directory to storage.group: not through a
    // link, and refused before anything is made there. (The files are
    // handed over through change_file, which refuses links and hard links.)
    if (a.switches && !s.database_is_postgresql() && !s.database_group.empty()) {
        struct stat st {};
        if (::lstat(database_dir(s).c_str(), &st) == 0 && S_ISLNK(st.st_mode))
            throw std::runtime_error("storage.database: its directory " + database_dir(s).string() +
                                     " is a symbolic link; name the directory itself (storage.group gives it to " +
                                     s.database_group + ")");
    }
    auto const dirs = state_dirs_of(s);
    for (auto const& d : dirs) make_dirs(d.dir, d.mode, a, d.key);

    struct problem {
        char const* key;
        fs::path path;
        std::string why;
        fs::path culprit;
    };
    std::vector<problem> problems;
    std::vector<fs::path> bad_maildirs;
    std::size_t bad_maildir_count = 0;
    {
        as_account const as(a);
        for (auto const& d : dirs) {
            std::vector<fs::path> check{d.dir};
            if (d.maildir)
                for (char const* sub : {"tmp", "new", "cur"})
                    if (std::error_code ec; fs::exists(d.dir / sub, ec)) check.push_back(d.dir / sub);
            bool ok = true;
            for (auto const& p : check)
                if (auto const v = unusable(p)) {
                    problems.push_back({d.key, p, v->why, v->culprit});
                    ok = false;
                    break;
                }
            if (!ok || !d.maildir_root) continue;
            // Maildirs left by a run as another user: their logins would get
            // -ERR [SYS/TEMP]. Worth a warning, not a refusal: the others work.
            std::error_code ec;
            for (auto it = fs::directory_iterator(d.dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
                std::error_code ignored;
                if (it->is_symlink(ignored) || !it->is_directory(ignored) || !unusable(it->path())) continue;
                if (bad_maildirs.size() < 3) bad_maildirs.push_back(it->path());
                ++bad_maildir_count;
            }
        }
    }
    if (!problems.empty()) {
        // Owners and modes as root sees them, so that the administrator knows what to change.
        std::string msg;
        for (auto const& p : problems)
            msg += (msg.empty() ? "" : "; ") + std::string(p.key) + ": " + p.path.string() + " is not usable by " +
                   a.name + ": " + p.why + "; " + describe(p.culprit);
        throw std::runtime_error(msg + "; each must be a directory " + a.name +
                                 " can reach, read, write and search (for example: chown " + a.name + " DIR)");
    }
    if (bad_maildir_count) {
        std::string names;
        for (auto const& p : bad_maildirs) names += (names.empty() ? "" : ", ") + describe(p);
        spdlog::warn("mail.maildir: {} Maildir(s) under {} are not usable by {}, their logins will fail: {}{}",
                     bad_maildir_count, mail::maildir_prefix(s.maildir).string(), a.name, names,
                     bad_maildir_count > bad_maildirs.size() ? ", ..." : "");
    }
}

namespace {

fs::path normal(fs::path const& p)
{
    std::error_code ec;
    auto a = fs::absolute(p, ec);
    a = (ec ? p : a).lexically_normal();
    if (!a.has_filename() && a.has_parent_path() && a != a.root_path()) a = a.parent_path();  // "x/" is "x"
    return a;
}

// `inner` is `dir` or below it.
bool within(fs::path const& dir, fs::path const& inner)
{
    auto const d = normal(dir);
    auto const i = normal(inner);
    auto [de, ie] = std::mismatch(d.begin(), d.end(), i.begin(), i.end());
    return de == d.end();
}

// The directories systemd manages for the unit (StateDirectory= and the
// like, announced in these variables, ':'-separated): it sets their mode at
// every start and hands them and everything in them back to User:Group
// when the top one's owner differs.
std::optional<std::string> systemd_managed(fs::path const& dir)
{
    for (char const* var : {"STATE_DIRECTORY", "RUNTIME_DIRECTORY", "CACHE_DIRECTORY", "LOGS_DIRECTORY",
                            "CONFIGURATION_DIRECTORY"}) {
        char const* v = std::getenv(var);
        if (!v) continue;
        std::string_view list(v);
        while (!list.empty()) {
            auto const end = std::min(list.find(':'), list.size());
            auto const one = list.substr(0, end);
            if (!one.empty() && normal(fs::path(one)) == normal(dir))
                return std::string(one) + " is systemd's " + var;
            list.remove_prefix(std::min(end + 1, list.size()));
        }
    }
    return std::nullopt;
}

}  // namespace

std::string why_not_shareable(config::settings const& s)
{
    if (s.database_group.empty() || s.database_is_postgresql()) return {};
    std::string const fix = "; put the database in a directory of its own (for example " +
                            (database_dir(s) / "db" / s.database.filename()).string() + ")";
    auto const dir = database_dir(s);
    // The directory becomes group-owned and setgid: every file made in it
    // later would be the MTA's to read, and a systemd-managed one goes back
    // to User:Group (recursively) at the next start.
    if (auto const why = systemd_managed(dir))
        return "storage.group: the database's directory " + dir.string() + " is not popgate's to give to group " +
               s.database_group + ": " + *why + " (systemd sets its owner and mode at every start)" + fix;
    struct other {
        char const* key;
        fs::path path;
    };
    std::vector<other> others{{"mail.maildir", mail::maildir_prefix(s.maildir)},
                              {"tls.key_file", s.tls.key_file},
                              {"tls.cert_file", s.tls.cert_file}};
    if (s.upstream_host.empty()) others.push_back({"mail.relay_drop", s.relay_drop});
    if (!s.log_file.empty()) others.push_back({"log.file", s.log_file});
    for (auto const& o : others)
        if (!o.path.empty() && within(dir, o.path))
            return "storage.group: the database's directory " + dir.string() + " also holds " + o.key + " (" +
                   o.path.string() + "), which group " + s.database_group + " must not get" + fix;
    return {};
}

namespace {

// Changes the owner, and with `mode` the mode, of `f` (a regular file, or
// with `directory` a directory) through an O_PATH descriptor. As root, `f`
// itself, never what a link there points to, and never a file with other
// names (a hard link): the directory it is in may be the service
// account's, and what the account plants there must not hand root's files
// to it. Not as root, links are followed: the process can change only what
// it could anyway. And the daemon may have the file open under SQLite's
// POSIX locks: closing an ordinary descriptor of a file drops every such
// lock the process holds on it (fcntl(2)), and the next sqlite3 or popgate
// process would then take the database for unused and delete the WAL under
// the daemon; Linux keeps them when an O_PATH descriptor closes. "" when
// done or when `f` does not exist, else why not.
std::string change_file(std::string const& f, uid_t uid, gid_t gid, std::optional<mode_t> mode,
                        bool directory = false, int dir_fd = AT_FDCWD)
{
    bool const root = ::geteuid() == 0;
    int const fd = ::openat(dir_fd, f.c_str(), O_PATH | O_CLOEXEC | (root ? O_NOFOLLOW : 0));
    if (fd < 0) return errno == ENOENT ? std::string() : std::string(std::strerror(errno));
    struct stat st {};
    std::string why;
    if (::fstat(fd, &st) != 0)
        why = std::strerror(errno);
    else if (S_ISLNK(st.st_mode))
        why = directory ? "it is a symbolic link; name the directory itself in storage.database"
                        : "it is a symbolic link; name the file itself in storage.database";
    else if (directory ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
        why = directory ? "not a directory" : "not a regular file";
    else if (!directory && st.st_nlink != 1 && root)
        why = "it has other names (hard links): give the database a file of its own";
    else if (::fchownat(fd, "", uid, gid, AT_EMPTY_PATH) != 0)
        why = std::strerror(errno);
    // fchmod refuses an O_PATH descriptor; its /proc name reaches the file itself.
    else if (mode && ::chmod(("/proc/self/fd/" + std::to_string(fd)).c_str(), *mode) != 0)
        why = errno == ENOENT ? std::string("its mode cannot be set without /proc mounted") : std::strerror(errno);
    ::close(fd);
    return why;
}

}  // namespace

std::string unusable_database_file(std::string const& database, service_account const& a)
{
    for (char const* suffix : {"", "-wal", "-shm", "-journal"}) {
        auto const f = database + suffix;
        struct stat st {};
        if (::lstat(f.c_str(), &st) != 0) continue;
        if (::faccessat(AT_FDCWD, f.c_str(), R_OK | W_OK, AT_EACCESS) == 0) continue;
        // No chown advice for a name the account may have planted: it
        // would give away what the link or the other names lead to.
        std::string const fix = S_ISLNK(st.st_mode) ? "it is a symbolic link: remove it, and name the file itself"
                                : st.st_nlink != 1  ? "it has other names (hard links): remove this one"
                                                    : "chown " + a.name + " " + f;
        return f + " is not readable and writable by " + a.name + ", which opens it: " + describe(f) + "; " + fix;
    }
    return {};
}

void check_database_usable(config::settings const& s, service_account const& a)
{
    if (!a.switches || s.database_is_postgresql()) return;
    as_account const as(a);
    if (auto const why = unusable_database_file(s.database.string(), a); !why.empty())
        throw std::runtime_error("storage.database: " + why + " (root does not hand over files in a directory " +
                                 a.name + " may change)");
}

void hand_database_to(config::settings const& s, std::string const& database, service_account const& a)
{
    if (!a.switches || config::is_postgresql_uri(database)) return;
    // The group stays storage.group's when one is set: the MTA's lookup
    // table reads the files through it.
    gid_t const group = s.database_group.empty() ? a.gid : static_cast<gid_t>(-1);
    // Through the directory reached as root may trust (open_dir_trusted),
    // never by path.
    fs::path const path(database);
    std::string why;
    fd_holder const dir = open_dir_trusted(path.has_parent_path() ? path.parent_path() : fs::path("."), std::nullopt,
                                           why);
    if (dir.fd < 0) throw std::runtime_error("storage.database: cannot hand " + database + " to " + a.name + ": " + why);
    for (char const* suffix : {"", "-wal", "-shm", "-journal"}) {
        auto const f = database + suffix;
        if (auto const no = change_file(fs::path(f).filename().string(), a.uid, group, std::nullopt, false, dir.fd);
            !no.empty())
            throw std::runtime_error("storage.database: cannot hand " + f + " to " + a.name + ": " + no);
    }
}

void share_database(config::settings const& s, service_account const& a)
{
    if (s.database_group.empty() || s.database_is_postgresql()) return;
    group const* gr = ::getgrnam(s.database_group.c_str());
    if (!gr) throw std::runtime_error("storage.group '" + s.database_group + "' does not exist");
    if (auto const why = why_not_shareable(s); !why.empty()) throw std::runtime_error(why);
    gid_t const gid = gr->gr_gid;
    uid_t const owner = a.switches ? a.uid : static_cast<uid_t>(-1);
    auto const refuse = [&](fs::path const& p, mode_t mode, std::string const& why) {
        // The advice about privileges only where they were what was missing.
        std::string const advice = why == std::strerror(EPERM)
                                       ? " (popgate must start as root, or as a member of " + s.database_group +
                                             "; under systemd see deploy/systemd/popgate.service.d/postfix-sqlite.conf)"
                                       : std::string();
        throw std::runtime_error("storage.group: cannot give " + p.string() + " to group " + s.database_group +
                                 " with mode " + octal(mode) + ": " + why + "; " + describe(p) + advice);
    };
    // As root, the directory is reached as root may trust (open_dir_trusted:
    // the one above it may be the account's, the packaged layout
    // /var/lib/popgate/db, which could swap a directory on the way for a
    // link), once; it and the files are changed through that descriptor,
    // never by path. Not as root, by path: only what the process could
    // change anyway.
    auto const db_dir = database_dir(s);
    fd_holder dir;
    if (::geteuid() == 0) {
        std::string why;
        dir = open_dir_trusted(db_dir, std::nullopt, why);
        if (dir.fd < 0) refuse(db_dir, 02750, why);
    } else {
        dir = fd_holder(::open(db_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (dir.fd < 0) refuse(db_dir, 02750, std::strerror(errno));
    }
    if (auto const why = change_file(".", owner, gid, 02750, true, dir.fd); !why.empty()) refuse(db_dir, 02750, why);
    for (char const* suffix : {"", "-wal", "-shm"}) {
        fs::path const f = s.database.string() + suffix;
        if (auto const why = change_file(f.filename().string(), owner, gid, 0640, false, dir.fd); !why.empty())
            refuse(f, 0640, why);
    }
}

}  // namespace popgate::daemon
