#include "popgate/mail/maildir.hpp"

#include <openssl/evp.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <map>
#include <optional>
#include <cstdio>   // renameat2, RENAME_NOREPLACE (glibc >= 2.28)
#include <stdexcept>
#include <system_error>
#include <tuple>
#include <unordered_set>
#include <utility>

namespace popgate::mail {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void throw_errno(int err, std::string const& what)
{
    throw std::system_error(err, std::generic_category(), what);
}

// mkdir that accepts an existing directory (another process may race us).
void make_dir(fs::path const& p)
{
    if (::mkdir(p.c_str(), 0700) == 0) return;
    int const err = errno;
    struct stat st {};
    if (err == EEXIST && ::stat(p.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) return;
        throw_errno(ENOTDIR, "maildir: not a directory: " + p.string());
    }
    throw_errno(err, "maildir: mkdir " + p.string());
}

// rename(2) silently replaces an existing target, which would lose a message
// on a name clash; RENAME_NOREPLACE (or link(2) where the filesystem lacks
// it) fails with EEXIST instead. Returns 0 or an errno value.
int move_no_replace(fs::path const& from, fs::path const& to) noexcept
{
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return errno;
    if (::link(from.c_str(), to.c_str()) != 0) return errno;
    ::unlink(from.c_str());
    return 0;
}

bool same_file(fs::path const& a, fs::path const& b) noexcept
{
    struct stat sa {}, sb {};
    return ::lstat(a.c_str(), &sa) == 0 && ::lstat(b.c_str(), &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

void fsync_dir(fs::path const& dir)
{
    int const fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) throw_errno(errno, "maildir: open " + dir.string());
    int const rc = ::fsync(fd);
    int const err = errno;
    ::close(fd);
    if (rc != 0) throw_errno(err, "maildir: fsync " + dir.string());
}

std::string_view base_name(std::string_view file_name) noexcept
{
    return file_name.substr(0, file_name.find(':'));
}

// Dovecot-style ",W=<n>" field: the size with CRLF line ends, saves reading the file.
std::optional<std::uint64_t> size_field(std::string_view base) noexcept
{
    auto const pos = base.find(",W=");
    if (pos == base.npos) return std::nullopt;
    auto const digits = base.substr(pos + 3, base.find(',', pos + 3) - (pos + 3));
    if (digits.empty() || digits.size() > 19) return std::nullopt;
    std::uint64_t v = 0;
    for (char const c : digits) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
}

// Returns nullopt when the file vanished (another session deleted it).
std::optional<std::uint64_t> computed_size(fs::path const& p)
{
    int const fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT) return std::nullopt;
        throw_errno(errno, "maildir: open " + p.string());
    }
    proto::crlf_counter counter;
    std::array<char, 65536> buf;
    for (;;) {
        auto const n = ::read(fd, buf.data(), buf.size());
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            int const err = errno;
            ::close(fd);
            throw_errno(err, "maildir: read " + p.string());
        }
        counter.feed({buf.data(), static_cast<std::size_t>(n)});
    }
    ::close(fd);
    return counter.size();
}

// Delivery order: "<sec>.M<usec>..." names compare by number, so the order
// stays right even if the digit counts differ; other names sort after, by name.
struct order_key {
    std::uint64_t sec = ~std::uint64_t{0};
    std::uint64_t usec = 0;
    std::string name;

    friend bool operator<(order_key const& a, order_key const& b)
    {
        return std::tie(a.sec, a.usec, a.name) < std::tie(b.sec, b.usec, b.name);
    }
};

std::uint64_t leading_number(std::string_view s, std::size_t& i) noexcept
{
    std::uint64_t v = 0;
    std::size_t const start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9' && i - start < 19)
        v = v * 10 + static_cast<std::uint64_t>(s[i++] - '0');
    return v;
}

order_key make_order_key(std::string name)
{
    order_key k;
    std::size_t i = 0;
    auto const sec = leading_number(name, i);
    if (i > 0) {
        k.sec = sec;
        // The microseconds are the M<digits> of the unique part (up to the
        // host): right after the dot in Dovecot's and popgate's names
        // (1000.M5P1Q0.host), after the device and inode in Postfix's
        // (1000.V801I1a2bM5.host; V and I are hex, which has no M).
        if (i < name.size() && name[i] == '.') {
            auto const end = name.find('.', i + 1);
            auto const m = name.find('M', i + 1);
            if (m != std::string::npos && m < end) {
                i = m + 1;
                k.usec = leading_number(name, i);
            }
        }
    }
    k.name = std::move(name);
    return k;
}

std::string escape_host(std::string_view host)
{
    // Maildir spec: '/' -> \057 and ':' -> \072; ',' -> \054 as well because
    // ,S= and ,W= fields follow the host.
    if (host.empty()) host = "localhost";
    std::string out;
    for (char const c : host) {
        if (c == '/') out += "\\057";
        else if (c == ':') out += "\\072";
        else if (c == ',') out += "\\054";
        else if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) out += '_';
        else out += c;
    }
    return out;
}

std::atomic<std::uint64_t> delivery_counter{0};

// A base name in the delivery scheme (time, microseconds, pid, counter,
// host): unique as long as the clocks and pids of the Maildir's writers are.
std::string unique_base(std::string_view hostname)
{
    auto const now = std::chrono::system_clock::now().time_since_epoch();
    auto const sec = std::chrono::duration_cast<std::chrono::seconds>(now);
    auto const usec = std::chrono::duration_cast<std::chrono::microseconds>(now - sec);
    // A file name holds 255 octets (NAME_MAX) and a host name 253, escapes
    // aside: the name also carries the time, ",S=...,W=..." and the flags,
    // so the host is cut short, the rest of the name keeps it unique.
    auto host = escape_host(hostname);
    if (host.size() > 100) host.resize(100);
    return std::to_string(sec.count()) + ".M" + std::to_string(usec.count()) + "P" + std::to_string(::getpid()) +
           "Q" + std::to_string(delivery_counter.fetch_add(1, std::memory_order_relaxed)) + "." + host;
}

std::string this_host()
{
    std::array<char, 256> host{};
    if (::gethostname(host.data(), host.size() - 1) != 0) return "localhost";
    return host.data();
}

// Moves `from` into `dir` under a fresh base name with `info` (":2,S"),
// trying again if even that is taken. Returns the new path, or nullopt when
// `from` vanished meanwhile; throws on any other failure.
std::optional<fs::path> move_to_fresh_name(fs::path const& from, fs::path const& dir, std::string_view info)
{
    auto const host = this_host();
    for (int attempt = 0;; ++attempt) {
        auto to = dir / (unique_base(host) + std::string{info});
        int const err = move_no_replace(from, to);
        if (err == 0) return to;
        if (err == ENOENT) return std::nullopt;
        if (err != EEXIST || attempt == 8) throw_errno(err, "maildir: move " + from.string() + " to " + to.string());
    }
}

// The info part of a Maildir name (":2,S"), or an empty one for a name
// still without it.
std::string info_of(std::string_view name)
{
    auto const colon = name.find(':');
    return colon == name.npos ? std::string{":2,"} : std::string{name.substr(colon)};
}

// The messages of one Maildir folder: regular files we own, not dot-files.
// Symlinks are skipped.
std::vector<fs::path> messages_in(fs::path const& dir)
{
    std::vector<fs::path> out;
    for (auto const& e : fs::directory_iterator(dir)) {
        auto const& p = e.path();
        auto const name = p.filename().native();
        if (name.empty() || name.front() == '.') continue;
        std::error_code ec;
        if (e.symlink_status(ec).type() != fs::file_type::regular) continue;
        out.push_back(p);
    }
    return out;
}

}  // namespace

maildrop_lock& maildrop_lock::operator=(maildrop_lock&& other) noexcept
{
    if (this != &other) {
        release();
        fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
}

void maildrop_lock::release() noexcept
{
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
}

maildrop_lock::outcome maildrop_lock::take(fs::path const& root)
{
    outcome o;
    auto const path = root / file_name;
    auto const open_file = [&] { return ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600); };
    int fd = open_file();
    if (fd < 0 && errno == ENOENT) {
        try {
            maildir(root).ensure();  // a user who never had mail has no Maildir yet
        } catch (std::exception const& e) {
            o.error = e.what();
            return o;
        }
        fd = open_file();
    }
    if (fd < 0) {
        o.error = "maildir: open " + path.string() + ": " + std::generic_category().message(errno);
        return o;
    }
    // The whole file, write lock, never waiting: a held lock is [IN-USE] now.
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    if (::fcntl(fd, F_OFD_SETLK, &fl) != 0) {
        int const err = errno;
        ::close(fd);
        if (err == EAGAIN || err == EACCES) {
            o.what = status::in_use;
        } else {
            o.error = "maildir: lock " + path.string() + ": " + std::generic_category().message(err);
        }
        return o;
    }
    o.what = status::ok;
    o.lock = maildrop_lock(fd);
    return o;
}

std::string maildir_uid(std::string_view file_name)
{
    auto const base = base_name(file_name);
    bool ok = !base.empty() && base.size() <= 70;
    for (char const c : base)
        if (c < 0x21 || c > 0x7e) ok = false;
    if (ok) return std::string{base};

    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int len = 0;
    if (EVP_Digest(base.data(), base.size(), md.data(), &len, EVP_md5(), nullptr) != 1)
        throw std::runtime_error("maildir: MD5 unavailable");
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    for (unsigned int i = 0; i < len; ++i) {
        out += hex[md[i] >> 4];
        out += hex[md[i] & 0xf];
    }
    return out;
}

maildir::maildir(fs::path root) : root_{std::move(root)} {}

void maildir::ensure() const
{
    // Parents too: templates such as var/mail/%d/%n need the domain level.
    fs::path prefix;
    for (auto const& part : root_) {
        prefix /= part;
        if (part.empty() || part == part.root_directory() || part == "." || part == "..") continue;
        make_dir(prefix);
    }
    make_dir(root_ / "tmp");
    make_dir(root_ / "new");
    make_dir(root_ / "cur");
}

std::size_t maildir::remove_stale_tmp(std::chrono::system_clock::time_point now) const noexcept
{
    auto const cutoff = std::chrono::system_clock::to_time_t(now - stale_tmp_age);
    int const fd = ::open((root_ / "tmp").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return 0;
    DIR* d = ::fdopendir(fd);
    if (!d) {
        ::close(fd);
        return 0;
    }
    std::size_t removed = 0;
    while (dirent const* e = ::readdir(d)) {
        struct stat st {};
        if (e->d_name[0] == '.' || ::fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (S_ISREG(st.st_mode) && st.st_ctim.tv_sec < cutoff && ::unlinkat(fd, e->d_name, 0) == 0) ++removed;
    }
    ::closedir(d);  // closes fd
    return removed;
}

std::optional<std::uint64_t> size_cache::wire_size(fs::path const& p)
{
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) {
        if (errno == ENOENT) return std::nullopt;
        throw_errno(errno, "maildir: stat " + p.string());
    }
    key const k{static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
    auto const mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    auto const stored = static_cast<std::uint64_t>(st.st_size);
    {
        std::lock_guard lock(mutex_);
        auto const it = map_.find(k);
        if (it != map_.end() && it->second.stored_size == stored && it->second.mtime_ns == mtime)
            return it->second.wire;
    }
    auto const wire = computed_size(p);
    if (!wire) return std::nullopt;
    std::lock_guard lock(mutex_);
    if (map_.size() >= max_entries) map_.clear();
    map_[k] = {stored, mtime, *wire};
    return wire;
}

std::size_t size_cache::size() const
{
    std::lock_guard lock(mutex_);
    return map_.size();
}

std::vector<message_entry> maildir::scan(size_cache* sizes, std::vector<std::string>* notes)
{
    auto const new_dir = root_ / "new";
    auto const cur_dir = root_ / "cur";
    auto const note = [&](std::string text) {
        if (notes) notes->push_back(std::move(text));
    };

    // new/ before cur/: a message another program (Dovecot's IMAP, which
    // does not see our lock) moves from new/ to cur/ meanwhile is then in
    // one list or the other.
    auto const incoming = messages_in(new_dir);
    std::vector<fs::path> listed = messages_in(cur_dir);

    // RFC 1939 §7: a unique-id names one message of the maildrop, and ours is
    // the base name (before ':'). A new/ message whose base name cur/ already
    // has (a restore, or two delivery agents that clash), or whose name is
    // too long to take ":2,", moves under a fresh name, as Dovecot does:
    // left in new/, it would never be listed.
    if (!incoming.empty()) {
        bool moved_by_another = false;
        std::map<std::string, fs::path, std::less<>> taken;  // base name -> its file in cur/
        for (auto const& p : listed) taken.emplace(base_name(p.filename().string()), p);
        for (auto const& from : incoming) {
            auto const name = from.filename().string();
            auto const info = info_of(name);
            auto to = cur_dir / (std::string{base_name(name)} + info);
            auto const clash = taken.find(base_name(name));
            // The same file under both names: a move by link(2) (a filesystem
            // without RENAME_NOREPLACE, such as NFS) that a crash cut short
            // before its unlink. The message is in cur/ already.
            if (clash != taken.end() && same_file(from, clash->second)) {
                ::unlink(from.c_str());
                continue;
            }
            int const err = clash != taken.end() ? EEXIST : move_no_replace(from, to);
            if (err == ENOENT) {  // another program moved it first, maybe after cur/ was read
                moved_by_another = true;
                continue;
            }
            if (err == EEXIST || err == ENAMETOOLONG) {
                auto const fresh = move_to_fresh_name(from, cur_dir, info);
                if (!fresh) {
                    moved_by_another = true;
                    continue;
                }
                to = *fresh;
                note("new/" + name + (err == EEXIST ? ": its name was taken in cur/" : ": name too long") +
                     "; moved to cur/" + to.filename().string());
            } else if (err != 0) {
                throw_errno(err, "maildir: move " + from.string());
            }
            taken.emplace(base_name(to.filename().string()), to);
            listed.push_back(std::move(to));
        }
        // Rare: read cur/ again rather than leave that message out.
        if (moved_by_another) listed = messages_in(cur_dir);
    }

    std::vector<std::pair<order_key, message_entry>> found;
    found.reserve(listed.size());
    for (auto& path : listed) {
        auto name = path.filename().string();
        auto size = size_field(base_name(name));
        if (!size) size = sizes ? sizes->wire_size(path) : computed_size(path);
        if (!size) continue;   // vanished meanwhile
        message_entry m{maildir_uid(name), std::move(path), *size};
        found.emplace_back(make_order_key(std::move(name)), std::move(m));
    }
    auto const by_delivery = [](auto const& a, auto const& b) { return a.first < b.first; };
    std::sort(found.begin(), found.end(), by_delivery);

    // Two cur/ files of one UIDL (another program made them): the first in
    // delivery order keeps it, the others get fresh names, so that no UIDL
    // repeats and a message renamed meanwhile is found again unambiguously.
    // The set views the entries' own UIDs; `found` does not grow meanwhile.
    std::unordered_set<std::string_view> seen;
    std::vector<std::size_t> vanished;
    bool renamed_any = false;
    for (std::size_t i = 0; i < found.size(); ++i) {
        auto& [key, m] = found[i];
        if (seen.insert(m.uid).second) continue;
        auto const name = m.path.filename().string();
        auto const to = move_to_fresh_name(m.path, cur_dir, info_of(name));
        if (!to) {
            vanished.push_back(i);
            continue;
        }
        note("cur/" + name + ": its base name was taken; moved to cur/" + to->filename().string());
        auto fresh = to->filename().string();
        m = message_entry{maildir_uid(fresh), *to, m.size};
        key = make_order_key(std::move(fresh));
        seen.insert(m.uid);
        renamed_any = true;
    }
    for (auto i = vanished.rbegin(); i != vanished.rend(); ++i)
        found.erase(found.begin() + static_cast<std::ptrdiff_t>(*i));
    if (renamed_any) std::sort(found.begin(), found.end(), by_delivery);

    std::vector<message_entry> out;
    out.reserve(found.size());
    for (auto& f : found) out.push_back(std::move(f.second));
    return out;
}

namespace {

std::optional<std::pair<std::int64_t, std::int64_t>> mtime_of(fs::path const& dir)
{
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0) return std::nullopt;
    return std::pair<std::int64_t, std::int64_t>{st.st_mtim.tv_sec, st.st_mtim.tv_nsec};
}

}  // namespace

void maildir::remove(message_entry const& m) const
{
    if (unlink_tracked(m.path) == 0) return;
    if (errno != ENOENT) throw_errno(errno, "maildir: unlink " + m.path.string());
    // Renamed again between the lookup and the unlink: looked for afresh, a
    // few times, as Dovecot retries its maildir operations.
    for (int tries = 0; tries < renamed_tries; ++tries) {
        auto const now = renamed(m, tries > 0);
        if (!now) return;  // gone
        if (unlink_tracked(*now) == 0) return;
        if (errno != ENOENT) throw_errno(errno, "maildir: unlink " + now->string());
    }
}

int maildir::unlink_tracked(fs::path const& p) const
{
    if (!indexed_at_) return ::unlink(p.c_str());
    // Another agent's change between the two stats makes cur/ look unchanged
    // since the listing: at worst a message it renamed then is taken for
    // gone (not deleted, or "no longer available"), never another one.
    bool const unchanged = mtime_of(root_ / "cur") == indexed_at_;
    int const rc = ::unlink(p.c_str());
    int const err = errno;
    if (rc == 0 && unchanged) indexed_at_ = mtime_of(root_ / "cur");
    errno = err;
    return rc;
}

std::optional<fs::path> maildir::renamed(message_entry const& m, bool fresh) const
{
    auto const base = std::string{base_name(m.path.filename().string())};
    bool stale = false;  // the index names it, and it is no longer there
    auto const look = [&]() -> std::optional<fs::path> {
        auto const it = cur_index_.find(base);
        if (it == cur_index_.end()) return std::nullopt;
        struct stat st {};
        if (::lstat(it->second.c_str(), &st) == 0) return it->second;
        stale = true;
        return std::nullopt;
    };
    if (indexed_at_ && !fresh) {
        if (auto found = look()) return found;
        // Not in cur/ when it was listed, and nothing changed since: gone.
        // A name the listing saw that has moved again is always looked for:
        // unlink_tracked() may have taken that move's mtime for its own.
        if (!stale && mtime_of(root_ / "cur") == indexed_at_) return std::nullopt;
    }
    // readdir(3) may miss a file renamed while the directory is read: a
    // listing during which cur/ changed and that did not find the name is
    // read again, a few times.
    for (int tries = 0; tries < renamed_tries; ++tries) {
        auto const before = mtime_of(root_ / "cur");
        cur_index_.clear();
        std::error_code ec;
        for (auto const& e : fs::directory_iterator(root_ / "cur", ec))
            cur_index_.emplace(std::string{base_name(e.path().filename().string())}, e.path());
        indexed_at_ = ec ? std::nullopt : before;  // a change made while listing is seen at the next miss
        if (auto found = look()) return found;
        if (!before || mtime_of(root_ / "cur") == before) break;  // a quiet listing: gone
    }
    return std::nullopt;
}

delivery::delivery(fs::path maildir_root, std::string_view hostname) : root_{std::move(maildir_root)}
{
    // Maildir spec: unique name from time, microseconds, pid and a
    // per-process counter (two deliveries in one microsecond still differ).
    base_ = unique_base(hostname);
    tmp_path_ = root_ / "tmp" / base_;
    fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd_ < 0) throw_errno(errno, "maildir: create " + tmp_path_.string());
}

delivery::delivery(delivery&& other) noexcept
    : root_{std::move(other.root_)},
      base_{std::move(other.base_)},
      tmp_path_{std::move(other.tmp_path_)},
      fd_{std::exchange(other.fd_, -1)},
      buf_{std::move(other.buf_)},
      stored_size_{other.stored_size_},
      wire_size_{other.wire_size_},
      pending_cr_{other.pending_cr_},
      finished_{std::exchange(other.finished_, true)}   // moved-from owns nothing to abort
{
}

delivery::~delivery()
{
    if (!finished_) abort();
}

void delivery::write(std::string_view chunk)
{
    if (finished_ || fd_ < 0) throw std::logic_error("maildir: write after commit or abort");
    std::size_t i = 0;
    while (i < chunk.size()) {
        if (pending_cr_) {
            pending_cr_ = false;
            // CRLF is stored as LF; a CR followed by anything else is kept.
            if (chunk[i] != '\n') buf_ += '\r';
        }
        auto const cr = chunk.find('\r', i);
        auto const end = cr == chunk.npos ? chunk.size() : cr;
        buf_.append(chunk.data() + i, end - i);
        i = end;
        if (cr != chunk.npos) {
            pending_cr_ = true;   // decided by the next byte, maybe in the next chunk
            ++i;
        }
    }
    if (buf_.size() >= 65536) flush();
}

void delivery::flush()
{
    wire_size_.feed(buf_);
    stored_size_ += buf_.size();
    std::size_t off = 0;
    while (off < buf_.size()) {
        auto const n = ::write(fd_, buf_.data() + off, buf_.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(errno, "maildir: write " + tmp_path_.string());
        }
        off += static_cast<std::size_t>(n);
    }
    buf_.clear();
}

fs::path delivery::commit()
{
    prepare();
    return publish();
}

void delivery::prepare()
{
    if (finished_ || fd_ < 0) throw std::logic_error("maildir: commit after commit or abort");
    try {
        if (pending_cr_) buf_ += '\r';   // a trailing lone CR is content
        pending_cr_ = false;
        flush();
        // Maildir: the data must be on disk before the name appears in new/.
        if (::fsync(fd_) != 0) throw_errno(errno, "maildir: fsync " + tmp_path_.string());
        int const fd = std::exchange(fd_, -1);
        if (::close(fd) != 0) throw_errno(errno, "maildir: close " + tmp_path_.string());
    } catch (...) {
        abort();
        throw;
    }
}

fs::path delivery::publish()
{
    if (finished_ || fd_ >= 0) throw std::logic_error("maildir: publish before prepare, or after commit or abort");
    fs::path final_path;
    bool in_new = false;
    try {
        final_path = root_ / "new" /
                     (base_ + ",S=" + std::to_string(stored_size_) + ",W=" + std::to_string(wire_size_.size()));
        if (int const err = move_no_replace(tmp_path_, final_path); err != 0)
            throw_errno(err, "maildir: rename to " + final_path.string());
        in_new = true;
        // The rename itself is durable only once the directory is synced.
        fsync_dir(root_ / "new");
    } catch (...) {
        // Undelivered: the SMTP client gets a temporary error and retries, so
        // a copy left in new/ (or moved to cur/ by a reader) would become a
        // duplicate.
        if (in_new) take_back(final_path);
        abort();
        throw;
    }
    finished_ = true;
    return final_path;
}

void commit_all(std::span<delivery> copies)
{
    for (auto& d : copies) d.prepare();
    std::vector<fs::path> published;
    published.reserve(copies.size());
    try {
        for (auto& d : copies) published.push_back(d.publish());
    } catch (...) {
        // Undelivered: the client gets a temporary error and sends again.
        for (auto const& p : published) take_back(p);
        throw;
    }
}

void take_back(fs::path const& in_new) noexcept
{
    try {
        fs::path dir = in_new.parent_path();  // whose unlink is to be made durable
        if (::unlink(in_new.c_str()) != 0 && errno == ENOENT) {
            // A reader (popgate's own listing, Dovecot) may have moved it to
            // cur/ meanwhile, with flags after the base name.
            auto const base = std::string{base_name(in_new.filename().string())};
            dir = in_new.parent_path().parent_path() / "cur";
            std::error_code ec;
            for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
                if (base_name(it->path().filename().string()) == base) {
                    ::unlink(it->path().c_str());
                    break;
                }
        }
        fsync_dir(dir);
    } catch (std::exception const&) {  // best effort: the error that failed the message is the one to tell
    }
}

void delivery::abort() noexcept
{
    if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    if (!finished_ && !tmp_path_.empty()) ::unlink(tmp_path_.c_str());
    finished_ = true;   // nothing left to do; also stops the destructor
    buf_.clear();
}

fs::path user_maildir(std::string_view templ, std::string_view user)
{
    auto const bad = [](std::string_view why) { throw std::invalid_argument("maildir: user name " + std::string{why}); };
    if (user.empty()) bad("is empty");
    for (char const c : user) {
        auto const u = static_cast<unsigned char>(c);
        if (c == '/') bad("contains '/'");
        if (u < 0x20 || u == 0x7f) bad("contains control characters");
    }
    // RFC 5321 local parts may hold a quoted '@'; the domain follows the last one.
    auto const at = user.rfind('@');
    auto const local = user.substr(0, at);
    auto const domain = at == user.npos ? std::string_view{} : user.substr(at + 1);
    // A leading '.' covers "." and "..": no component may climb out.
    if (user.front() == '.') bad("starts with '.'");
    if (local.empty()) bad("has an empty local part");
    if (local.front() == '.') bad("local part starts with '.'");
    if (!domain.empty() && domain.front() == '.') bad("domain starts with '.'");

    std::string out;
    for (std::size_t i = 0; i < templ.size(); ++i) {
        if (templ[i] != '%') {
            out += templ[i];
            continue;
        }
        if (++i == templ.size()) throw std::invalid_argument("maildir: template ends with '%'");
        switch (templ[i]) {
        case 'u': out += user; break;
        case 'n': out += local; break;
        case 'd': out += domain; break;
        case '%': out += '%'; break;
        default: throw std::invalid_argument(std::string{"maildir: unknown template escape %"} + templ[i]);
        }
    }
    return fs::path{out};
}

fs::path maildir_prefix(std::string_view templ)
{
    std::string fixed;
    for (std::size_t i = 0; i < templ.size(); ++i) {
        if (templ[i] != '%') {
            fixed += templ[i];
        } else if (i + 1 < templ.size() && templ[i + 1] == '%') {
            fixed += '%';
            ++i;
        } else {
            break;
        }
    }
    auto const slash = fixed.rfind('/');
    if (slash == std::string::npos) return ".";
    fixed.resize(slash);
    while (fixed.size() > 1 && fixed.back() == '/') fixed.pop_back();
    return fixed.empty() ? fs::path("/") : fs::path(fixed);
}

}  // namespace popgate::mail
