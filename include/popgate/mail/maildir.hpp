#pragma once
// Maildir storage (https://cr.yp.to/proto/maildir.html) for POP3 reading and
// local delivery. Blocking filesystem calls: run off the event loop.
#include "popgate/proto/pop3.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace popgate::mail {

struct message_entry {
    std::string uid;              // RFC 1939 UIDL: 1..70 chars in 0x21..0x7E
    std::filesystem::path path;   // current location under cur/
    std::uint64_t size;           // octets with CRLF line ends (RFC 1939 LIST/STAT)
};

// Remembers the CRLF size of messages whose names carry no ",W=" field (a
// legacy MTA's local delivery agent does not write one), so a client that
// leaves its mail on the server does not make every login read every message.
// Keyed by device and inode, checked against the file's size and mtime;
// Maildir messages never change in place. Thread-safe; bounded: when full it
// starts over.
class size_cache {
public:
    static constexpr std::size_t max_entries = 200000;

    // The CRLF size of `p`, from the cache or by reading the file; nullopt
    // when the file vanished meanwhile.
    std::optional<std::uint64_t> wire_size(std::filesystem::path const& p);
    std::size_t size() const;

private:
    struct key {
        std::uint64_t dev, ino;
        friend bool operator==(key const&, key const&) = default;
    };
    struct key_hash {
        std::size_t operator()(key const& k) const noexcept { return std::hash<std::uint64_t>{}(k.ino * 31 + k.dev); }
    };
    struct entry {
        std::uint64_t stored_size;
        std::int64_t mtime_ns;
        std::uint64_t wire;
    };
    mutable std::mutex mutex_;
    std::unordered_map<key, entry, key_hash> map_;
};

// The exclusive-access lock on one maildrop (RFC 1939 §8), held from a
// successful login until the session ends. An open file description lock
// (Linux fcntl F_OFD_SETLK) on <maildir>/popgate-pop3.lock: it conflicts with
// every other open of that file, so a second session in this process, another
// popgate on this host and, where the Maildirs sit on a filesystem whose locks
// reach across hosts (NFSv4, CephFS, GFS2), a popgate on another node all see
// it. The kernel drops it when the holder closes the file or dies: a crash
// leaves no stale lock. Blocking (the filesystem): take it off the event loop.
class maildrop_lock {
public:
    static constexpr char const* file_name = "popgate-pop3.lock";

    maildrop_lock() = default;
    maildrop_lock(maildrop_lock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    maildrop_lock& operator=(maildrop_lock&& other) noexcept;
    maildrop_lock(maildrop_lock const&) = delete;
    maildrop_lock& operator=(maildrop_lock const&) = delete;
    ~maildrop_lock() { release(); }

    bool held() const noexcept { return fd_ >= 0; }
    void release() noexcept;

    enum class status { ok, in_use, failed };
    struct outcome;
    // Locks the maildrop at `root`, creating the Maildir (tmp/, new/, cur/)
    // when it is missing, since the lock file lives in it.
    static outcome take(std::filesystem::path const& root);

private:
    explicit maildrop_lock(int fd) noexcept : fd_(fd) {}
    int fd_ = -1;
};

struct maildrop_lock::outcome {
    status what = status::failed;
    maildrop_lock lock;  // held when what == ok
    std::string error;   // why, when what == failed
};

class maildir {
public:
    explicit maildir(std::filesystem::path root);

    // Creates root (and missing parents), tmp/, new/ and cur/ with mode 0700.
    // Throws std::system_error on failure.
    void ensure() const;

    // Moves every new/ message to cur/ (appending ":2,"), then lists cur/:
    // dotfiles and non-regular files skipped, sorted in delivery order (file
    // name, with the leading seconds and .M<usec> compared as numbers).
    // Sizes come from the ",W=" field, else from `sizes`, else by reading the file.
    // Base names (the UIDs) are made unique: a new/ message whose base name
    // cur/ has, or whose name is too long for ":2,", and every cur/ file but
    // the first of one base name, move under a fresh name; each such move
    // is described in `notes`, for the log.
    std::vector<message_entry> scan(size_cache* sizes = nullptr, std::vector<std::string>* notes = nullptr);

    // Removes what a delivery agent that died left in tmp/: regular files
    // whose inode last changed (ctime, which utime(2) cannot set back, as
    // Dovecot sets the mtime to the received date) more than stale_tmp_age
    // before `now`, as the Maildir convention says (36 hours). Best effort:
    // a missing tmp/ or a file that cannot go is skipped. Returns how many went.
    std::size_t remove_stale_tmp(std::chrono::system_clock::time_point now) const noexcept;

    // Unlinks the message. ENOENT is fine: another session removed it first.
    void remove(message_entry const& m) const;

    // Where the message is now when it is no longer at m.path: another agent
    // (an IMAP server setting flags) may have renamed it within cur/, and the
    // base name before ':' still identifies it. nullopt: it is gone. cur/ is
    // listed once into an index of base names, and listed again when the
    // index's path for the name is gone too (renamed again), or when the
    // name is not in the index and cur/ has changed since (its mtime; the
    // object's own unlinks do not count): a client that flagged or expunged
    // every message costs one listing, not one per message.
    // `fresh`: list cur/ again whatever the index says (the path it gave
    // was gone when the caller used it).
    std::optional<std::filesystem::path> renamed(message_entry const& m, bool fresh = false) const;
    // How often a lookup is repeated while another agent keeps renaming.
    static constexpr int renamed_tries = 5;

    std::filesystem::path const& root() const noexcept { return root_; }

private:
    // unlink(2), keeping the index's view of cur/ current when nothing but
    // this unlink changed it.
    int unlink_tracked(std::filesystem::path const& p) const;

    std::filesystem::path root_;
    // renamed()'s index: base name -> path in cur/, and cur/'s mtime before
    // the listing. One session's, used by one thread at a time.
    mutable std::unordered_map<std::string, std::filesystem::path> cur_index_;
    mutable std::optional<std::pair<std::int64_t, std::int64_t>> indexed_at_;  // seconds, nanoseconds
};

inline constexpr std::chrono::hours stale_tmp_age{36};

// UIDL for a Maildir file name: the base name before ':', which survives the
// new -> cur move and flag changes; its lowercase hex MD5 when it would break
// the RFC 1939 §7 limits (more than 70 chars, or chars outside 0x21..0x7E).
std::string maildir_uid(std::string_view file_name);

// Writes one message into tmp/ and moves it to new/ on commit. Until commit()
// returns, nothing appears in new/; an abandoned delivery leaves nothing behind.
class delivery {
public:
    // Opens tmp/<unique name> (mode 0600). hostname becomes part of the file
    // name with '/', ':' and ',' escaped as the Maildir spec asks.
    delivery(std::filesystem::path maildir_root, std::string_view hostname);
    delivery(delivery&& other) noexcept;
    delivery(delivery const&) = delete;
    delivery& operator=(delivery const&) = delete;
    delivery& operator=(delivery&&) = delete;
    ~delivery();

    // Appends message bytes. CRLF becomes LF as stored (Maildir convention);
    // a CRLF split across two calls is still recognised.
    void write(std::string_view chunk);

    // fsync the file, rename it to new/<sec>.M<usec>P<pid>Q<n>.<host>,S=<stored>,W=<crlf>
    // and fsync new/. Returns the final path. Throws std::system_error (after
    // removing the tmp file) on failure. prepare() then publish().
    std::filesystem::path commit();

    // The two halves of commit(), for a message with several copies that
    // must all appear or none (mail::commit_all): prepare() writes what is
    // buffered, fsyncs and closes the tmp file, where a full disk, a quota
    // or an I/O error shows; publish() renames it into new/ and fsyncs new/.
    // Each throws std::system_error after removing what it made.
    void prepare();
    std::filesystem::path publish();

    // Removes the tmp file. Safe to call more than once.
    void abort() noexcept;

private:
    void flush();

    std::filesystem::path root_;
    std::string base_;            // unique name without the ,S= ,W= fields
    std::filesystem::path tmp_path_;
    int fd_ = -1;
    std::string buf_;
    std::uint64_t stored_size_ = 0;
    proto::crlf_counter wire_size_;
    bool pending_cr_ = false;
    bool finished_ = false;       // committed or aborted: nothing left to clean up
};

// Commits every copy of one message, or none: all are prepared before any
// is published, and a publish that fails takes back the copies already in
// new/. Throws what the failing copy threw; the caller aborts the rest.
// (A reader listing new/ in between may see a copy that is then taken back:
// as close to all or nothing as a filesystem allows.)
void commit_all(std::span<delivery> copies);

// Removes a copy that commit() put in new/, or, when a reader has moved it
// to cur/ since (adding flags), that file. Best effort.
void take_back(std::filesystem::path const& in_new) noexcept;

// Expands a configured maildir template: %u user name, %n local part, %d
// domain part (empty without '@'), %% a literal '%'. Rejects (throws
// std::invalid_argument) user names that could escape the template directory:
// containing '/', NUL or control chars, or whose name, local part or domain
// part starts with '.'; also an empty user or local part, and unknown escapes.
std::filesystem::path user_maildir(std::string_view templ, std::string_view user);

// The directory every user's Maildir lies under: the template up to its first
// placeholder, cut back to the last '/' ("var/mail/%u" and "var/mail/u%u" ->
// "var/mail"; "%u/Maildir" -> "."). The daemon makes and checks it at start.
std::filesystem::path maildir_prefix(std::string_view templ);

}  // namespace popgate::mail
