#pragma once
// The files and directories the daemon writes, made or checked at start.
// Started as root with server.user, the daemon switches to that user after
// binding: everything it writes afterwards (the database and its -wal/-shm
// files, Maildirs, the relay drop) must be usable by that user, whatever the
// umask and whatever an earlier run as root left behind.
#include "popgate/config/config.hpp"

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace popgate::daemon {

// Who the daemon is once it runs: server.user (and server.group, else the
// user's group) when started as root, else whoever started it.
struct service_account {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
    bool switches = false;  // started as root with server.user: the ids change after binding
};

// Throws std::runtime_error when server.user or server.group does not exist.
service_account find_service_account(config::settings const& s);

// The process's effective ids become the account's while this object lives
// (nothing when the account does not switch), so that what it opens or
// checks meanwhile is opened or checked as the account will: root's real
// and saved uid stay, and the destructor takes root's ids back.
// Supplementary groups go for good: the switch drops them anyway. The ids
// are the process's, every thread's.
class as_account {
public:
    explicit as_account(service_account const& a);
    ~as_account();
    as_account(as_account const&) = delete;
    as_account& operator=(as_account const&) = delete;

private:
    bool active_;
};

// For good: the process becomes the account (groups, then gid, then uid),
// and root cannot be regained. Nothing when the account does not switch.
// Throws std::runtime_error when a step fails.
void become_account(service_account const& a);

// The account could change where `file`'s path leads: it owns or may write
// (with any of its groups) the directory `file` is in, or a directory above
// it where it may replace the entry on the way (in a sticky one, only an
// entry it owns), or owns a link on the way; along the path as written and
// along the one its links lead to. An owner counts whatever the mode: it may
// chmod. Root opening a SQLite database there would follow what the account
// put in its place (a hard link at -journal, a directory swapped for a link).
bool account_can_redirect(std::filesystem::path const& file, service_account const& a);

// Opens `file` to read it (a TLS certificate or key). Started as root with
// an account to switch to: through directories walked as root may trust
// (open_dir_trusted), the file's own name followed only if it is root's
// link in a directory only root may write, a regular file, and, outside such
// a directory, not one of several names of another user's file. Else by
// path. A descriptor, or -1 with `why`.
int open_to_read(std::filesystem::path const& file, service_account const& a, std::string& why);

// Makes the log file's missing directories (0750) and the file itself (0640),
// owned by the account; an existing file keeps its owner and mode.
// Started as root, it returns a descriptor of the file opened for appending
// through a directory it walked itself (log::setup takes it over): by path,
// a directory of the account's on the way could lead root's open elsewhere.
// Else -1 (the log opens the path).
int prepare_log_file(std::filesystem::path const& file, service_account const& a);

// The database directory, the Maildir root (mail.maildir up to its first
// placeholder) and, without an upstream, the relay drop: missing ones are made
// (directories above them 0750, the database directory 0750, the mail ones
// 0700), owned by the account. Then each is checked with the account's own ids
// (every directory on the way searchable, the last one readable, writable and
// searchable). Throws std::runtime_error naming the key, the path and what is
// wrong. Logs a warning for Maildirs right below the root that the account
// cannot use (their logins would fail). Call it before any thread starts: the
// check switches the process's effective ids for a moment.
void prepare_state_dirs(config::settings const& s, service_account const& a);

// Started as root with server.user and SQLite: the daemon opens the
// database with the account's ids, in a directory the account may change,
// so root hands nothing over there (by path, through the account's
// directories, a chown could be led to another file). Throws
// std::runtime_error naming the file, its owner and mode and the chown to
// run, when one of the database's files exists and the account cannot read
// and write it (a database root made there).
void check_database_usable(config::settings const& s, service_account const& a);

// "" when the process, with its effective ids (under as_account, or after
// become_account), can read and write each of the SQLite database's files
// that exist; else "FILE is not readable and writable by ACCOUNT, which
// opens it: FILE (owner, mode); what to do", with no chown advice for a link
// or a file with other names, which the account may have planted (it would
// give away what they lead to).
std::string unusable_database_file(std::string const& database, service_account const& a);

// A SQLite database (and its -wal, -shm and -journal files) made by root
// (`db migrate` in a directory only root may change), handed to the account
// that will open it next: its owner becomes the account, its group
// storage.group's when one is set, else the account's. Nothing for
// PostgreSQL, for files that are not there, or when the account does not
// switch. Throws std::runtime_error naming the file.
void hand_database_to(config::settings const& s, std::string const& database, service_account const& a);

// storage.group: lets that group (the MTA's: Postfix's sqlite: table) read
// the database and nobody else. The database directory becomes
// account:group 02750 (setgid: -wal/-shm files made later, by the daemon or
// by `popgate` run as another user, get the group too), the database and
// its -wal/-shm files account:group 0640 (SQLite gives new -wal/-shm files
// the database file's mode). Call it once the database exists. Nothing
// when the key is empty. Throws std::runtime_error naming the key and the
// path when the group does not exist or cannot be given (the daemon must
// run as root or be a member of it), and with why_not_shareable's reason.
void share_database(config::settings const& s, service_account const& a);

// "" when storage.group may be applied to the database's directory; else why
// not: the directory is one systemd manages for the unit (StateDirectory=
// and the like, from $STATE_DIRECTORY...: systemd resets its mode and hands
// it back to User:Group at every start), or it also holds (directly or
// below) the Maildirs, the relay drop, the TLS files or the log file, which
// the group must not get. The database needs a directory of its own.
std::string why_not_shareable(config::settings const& s);

// What `popgate check-config` reports, making nothing: each directory above
// (and log.file's) that exists but is not usable by the account, or is
// missing where the daemon could not make it; with storage.group, a group
// that does not exist, why_not_shareable, and (started as non-root) a
// process that is not a member of the group. One "KEY: PATH ..." per problem.
// Like prepare_state_dirs, it takes the account's ids for a moment.
std::vector<std::string> check_state_dirs(config::settings const& s, service_account const& a);

// "" when `dir` exists or the daemon, started as this process is, could make
// it; else why not.
std::string why_not_creatable(std::filesystem::path const& dir);

// Missing for sure: a file that cannot be looked at (in a directory only
// root may search) is not.
bool surely_missing(std::filesystem::path const& p);
// tls.self_signed and both files of the pair surely missing: the daemon's
// start makes a self-signed pair there (a reload never does in place of a
// certificate in service). serve and check-config judge it alike.
bool makes_self_signed(config::tls_settings const& t);

}  // namespace popgate::daemon
