#include "popgate/mail/maildir.hpp"

#include "temp_dir.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <ostream>
#include <stdexcept>
#include <string>
#include <system_error>

using namespace popgate::mail;
namespace fs = std::filesystem;
namespace bdata = boost::unit_test::data;

namespace {

// The CRLF size of a whole message, through the streaming counter.
std::uint64_t wire_size(std::string_view data)
{
    popgate::proto::crlf_counter c;
    c.feed(data);
    return c.size();
}

using popgate::test::temp_dir;

struct maildir_fixture {
    temp_dir tmp;
    fs::path root = tmp.path / "Maildir";
    maildir md{root};
    maildir_fixture() { md.ensure(); }
};

void put(fs::path const& p, std::string_view data)
{
    std::ofstream f{p, std::ios::binary};
    f << data;
}

std::string slurp(fs::path const& p)
{
    std::ifstream f{p, std::ios::binary};
    return {std::istreambuf_iterator<char>{f}, {}};
}

std::size_t count_files(fs::path const& dir)
{
    return static_cast<std::size_t>(std::distance(fs::directory_iterator{dir}, fs::directory_iterator{}));
}

// Permission bits as a number so a failure prints them in octal-able form.
unsigned mode_of(fs::path const& p)
{
    return static_cast<unsigned>(fs::status(p).permissions() & fs::perms::all);
}

std::string escaped(std::string_view s)
{
    std::string out;
    for (char const c : s) {
        if (c == '\r') out += "\\r";
        else if (c == '\n') out += "\\n";
        else out += c;
    }
    return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(maildir_store, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(ensure_creates_private_dirs_and_parents)
{
    temp_dir tmp;
    maildir md{tmp.path / "example.org" / "alice"};
    md.ensure();
    md.ensure();   // idempotent
    for (auto const* sub : {"", "tmp", "new", "cur"}) {
        auto const p = md.root() / sub;
        BOOST_TEST_CONTEXT(p)
        {
            BOOST_TEST(fs::is_directory(p));
            BOOST_TEST(mode_of(p) == 0700u);
        }
    }
}

BOOST_AUTO_TEST_CASE(ensure_fails_on_file_in_the_way)
{
    temp_dir tmp;
    put(tmp.path / "file", "x");
    BOOST_CHECK_THROW(maildir{tmp.path / "file"}.ensure(), std::system_error);
    BOOST_CHECK_THROW(maildir{tmp.path / "file" / "sub"}.ensure(), std::system_error);
}

BOOST_FIXTURE_TEST_CASE(scan_moves_new_to_cur_and_orders_by_delivery, maildir_fixture)
{
    put(root / "new" / "1000.M5P1Q0.host", "Subject: a\n\nbody\n");          // 17 stored, 20 on wire
    put(root / "new" / "999.M1P1Q0.host,S=3,W=42", "x\n");                  // size from W=
    put(root / "new" / "1000.M40P1Q1.host", "no newline");
    put(root / "new" / ".hidden", "skip me");
    put(root / "tmp" / "1.M1P1Q9.host", "being delivered");
    put(root / "cur" / "998.M1P1Q0.host:2,S", "seen\r\n");                  // info kept

    auto const msgs = md.scan();
    BOOST_TEST_REQUIRE(msgs.size() == 4u);
    BOOST_TEST(msgs[0].uid == "998.M1P1Q0.host");
    BOOST_TEST(msgs[0].size == 6u);
    BOOST_TEST(msgs[0].path.filename() == "998.M1P1Q0.host:2,S");
    BOOST_TEST(msgs[1].uid == "999.M1P1Q0.host,S=3,W=42");
    BOOST_TEST(msgs[1].size == 42u);
    BOOST_TEST(msgs[2].uid == "1000.M5P1Q0.host");   // 5 usec before 40 usec, numerically
    BOOST_TEST(msgs[2].size == 20u);
    BOOST_TEST(msgs[2].path == root / "cur" / "1000.M5P1Q0.host:2,");
    BOOST_TEST(msgs[3].uid == "1000.M40P1Q1.host");
    BOOST_TEST(msgs[3].size == 10u);

    // Only the dotfile stays in new/; tmp/ is untouched.
    BOOST_TEST(count_files(root / "new") == 1u);
    BOOST_TEST(fs::exists(root / "new" / ".hidden"));
    BOOST_TEST(fs::exists(root / "tmp" / "1.M1P1Q9.host"));
    BOOST_TEST(fs::exists(root / "cur" / "999.M1P1Q0.host,S=3,W=42:2,"));
}

// Postfix's local(8) names a message <sec>.V<dev>I<inode>M<usec>.<host>:
// two in one second came out in the order of their inodes as text.
BOOST_FIXTURE_TEST_CASE(postfix_names_order_by_their_microseconds, maildir_fixture)
{
    put(root / "new" / "1796600000.V801I100000M900000.pf.example", "later\n");
    put(root / "new" / "1796600000.V801I99999M100000.pf.example", "earlier\n");
    put(root / "new" / "1796600000.M500000P7.dovecot.example", "between\n");
    auto const msgs = md.scan();
    BOOST_TEST_REQUIRE(msgs.size() == 3u);
    BOOST_TEST(msgs[0].uid == "1796600000.V801I99999M100000.pf.example");
    BOOST_TEST(msgs[1].uid == "1796600000.M500000P7.dovecot.example");
    BOOST_TEST(msgs[2].uid == "1796600000.V801I100000M900000.pf.example");
}

BOOST_FIXTURE_TEST_CASE(size_cache_reads_each_message_once, maildir_fixture)
{
    put(root / "new" / "1000.M1P1Q0.host", "a\nb\n");           // 4 stored, 6 on the wire
    put(root / "new" / "1001.M1P1Q0.host,S=2,W=3", "x\n");      // W=: never cached
    size_cache sizes;
    auto msgs = md.scan(&sizes);
    BOOST_TEST_REQUIRE(msgs.size() == 2u);
    BOOST_TEST(msgs[0].size == 6u);
    BOOST_TEST(sizes.size() == 1u);

    // Same inode, size and mtime: the cached figure, so the file was not read
    // again (its new bytes would count 4).
    auto const p = msgs[0].path;
    auto const mtime = fs::last_write_time(p);
    put(p, "abcd");
    fs::last_write_time(p, mtime);
    msgs = md.scan(&sizes);
    BOOST_TEST(msgs[0].size == 6u);

    // A changed mtime: read again.
    fs::last_write_time(p, mtime + std::chrono::seconds(5));
    msgs = md.scan(&sizes);
    BOOST_TEST(msgs[0].size == 4u);
    BOOST_TEST(md.scan().at(0).size == 4u);  // without a cache: read every time
}

BOOST_FIXTURE_TEST_CASE(uids_stable_across_scans, maildir_fixture)
{
    put(root / "new" / "1.M1P1Q0.h", "a\n");
    auto const first = md.scan();
    put(root / "new" / "2.M1P1Q0.h", "b\n");
    auto const second = md.scan();
    BOOST_TEST_REQUIRE(first.size() == 1u);
    BOOST_TEST_REQUIRE(second.size() == 2u);
    BOOST_TEST(first[0].uid == second[0].uid);
    BOOST_TEST(first[0].path == second[0].path);
    BOOST_TEST(second[1].uid == "2.M1P1Q0.h");

    // A flag change by another agent renames the file but keeps the UID.
    fs::rename(second[0].path, root / "cur" / "1.M1P1Q0.h:2,S");
    auto const third = md.scan();
    BOOST_TEST_REQUIRE(third.size() == 2u);
    BOOST_TEST(third[0].uid == first[0].uid);
}

BOOST_FIXTURE_TEST_CASE(base_names_taken_twice_get_fresh_ones, maildir_fixture)
{
    // A new/ message whose base name cur/ already has (a restore, two
    // delivery agents): listed under a fresh name, never a repeated UIDL, and
    // not left in new/ where it would never be listed.
    put(root / "cur" / "1700000005.M1P1.gw:2,S", "first\n");
    put(root / "new" / "1700000005.M1P1.gw", "second\n");
    // Two cur/ files of one base name (another program made them).
    put(root / "cur" / "1700000001.M1P1.gw:2,", "third\n");
    put(root / "cur" / "1700000001.M1P1.gw:2,RS", "fourth\n");
    // A new/ name too long to take ":2,".
    std::string const long_name = "1700000009.M1P1." + std::string(238, 'h');  // 254 octets: fits, with ":2," not
    put(root / "new" / long_name, "fifth\n");

    std::vector<std::string> notes;
    auto const msgs = md.scan(nullptr, &notes);
    BOOST_TEST_REQUIRE(msgs.size() == 5u);
    std::set<std::string> uids, bodies;
    for (auto const& m : msgs) {
        uids.insert(m.uid);
        bodies.insert(slurp(m.path));
        BOOST_TEST(m.path.parent_path() == root / "cur");
    }
    BOOST_TEST(uids.size() == 5u);
    BOOST_TEST(bodies == (std::set<std::string>{"first\n", "second\n", "third\n", "fourth\n", "fifth\n"}));
    BOOST_TEST(count_files(root / "new") == 0u);
    BOOST_TEST(notes.size() == 3u);
    // The file that kept the name is still there; its flags are kept.
    BOOST_TEST(fs::exists(root / "cur" / "1700000005.M1P1.gw:2,S"));
    BOOST_TEST(slurp(root / "cur" / "1700000005.M1P1.gw:2,S") == "first\n");

    // Stable from then on: the same UIDs at the next scan, nothing moved.
    notes.clear();
    auto const again = md.scan(nullptr, &notes);
    BOOST_TEST(notes.empty());
    BOOST_TEST_REQUIRE(again.size() == msgs.size());
    for (std::size_t i = 0; i < again.size(); ++i) BOOST_TEST(again[i].uid == msgs[i].uid);
}

BOOST_FIXTURE_TEST_CASE(a_move_by_link_cut_short_leaves_one_message, maildir_fixture)
{
    // Where renameat2 lacks RENAME_NOREPLACE (NFS) a move is link() then
    // unlink(); a crash between them leaves one file under both names. It
    // is one message with its UID, not a second one under a fresh name.
    put(root / "cur" / "1700000005.M1P1.gw:2,S", "only\n");
    fs::create_hard_link(root / "cur" / "1700000005.M1P1.gw:2,S", root / "new" / "1700000005.M1P1.gw");
    std::vector<std::string> notes;
    auto const msgs = md.scan(nullptr, &notes);
    BOOST_TEST_REQUIRE(msgs.size() == 1u);
    BOOST_TEST(msgs[0].uid == "1700000005.M1P1.gw");
    BOOST_TEST(notes.empty());
    BOOST_TEST(count_files(root / "new") == 0u);
    BOOST_TEST(count_files(root / "cur") == 1u);
    BOOST_TEST(fs::hard_link_count(root / "cur" / "1700000005.M1P1.gw:2,S") == 1u);
}

BOOST_FIXTURE_TEST_CASE(stale_tmp_files_go_after_36_hours, maildir_fixture)
{
    // What a delivery agent that died left in tmp/. The age is the inode's
    // change time, which cannot be set back: a file whose mtime an agent
    // set to an old received date is not taken for stale.
    put(root / "tmp" / "1700000000.M1P1.gw", "left behind\n");
    put(root / "tmp" / "1700000001.M1P1.gw", "being written\n");
    fs::last_write_time(root / "tmp" / "1700000001.M1P1.gw", fs::file_time_type::clock::now() - std::chrono::hours(72));
    fs::create_directory(root / "tmp" / "a-directory");
    auto const now = std::chrono::system_clock::now();
    // Within 36 hours of their change, nothing goes.
    BOOST_TEST(md.remove_stale_tmp(now + std::chrono::hours(35)) == 0u);
    BOOST_TEST(count_files(root / "tmp") == 3u);
    // After, the files go; a directory stays.
    BOOST_TEST(md.remove_stale_tmp(now + std::chrono::hours(37)) == 2u);
    BOOST_TEST(count_files(root / "tmp") == 1u);
    BOOST_TEST(fs::is_directory(root / "tmp" / "a-directory"));
    // No tmp/ at all: nothing to do, no error.
    fs::remove_all(root / "tmp");
    BOOST_TEST(md.remove_stale_tmp(now + std::chrono::hours(37)) == 0u);
}

BOOST_AUTO_TEST_CASE(uid_rules)
{
    BOOST_TEST(maildir_uid("1.M1P1Q0.host:2,S") == "1.M1P1Q0.host");
    BOOST_TEST(maildir_uid(std::string(70, 'x')) == std::string(70, 'x'));
    // RFC 1939 §7: longer than 70 chars or outside 0x21..0x7E -> hash.
    BOOST_TEST(maildir_uid(std::string(71, 'x') + ":2,") == "522966f2ff9ab1543c945d48ee25045b");
    BOOST_TEST(maildir_uid("a b") == "0cc9cd4dd26c5137b675a0d819cb9ab0");
    BOOST_TEST(maildir_uid(":2,") == "d41d8cd98f00b204e9800998ecf8427e");   // empty base
    BOOST_TEST(maildir_uid("caf\xc3\xa9").size() == 32u);
}

BOOST_FIXTURE_TEST_CASE(scan_hashes_odd_names, maildir_fixture)
{
    put(root / "new" / "5.M1P1Q0.with space", "x");
    auto const msgs = md.scan();
    BOOST_TEST_REQUIRE(msgs.size() == 1u);
    BOOST_TEST(msgs[0].uid == maildir_uid("5.M1P1Q0.with space"));
    BOOST_TEST(msgs[0].uid.size() == 32u);
}

BOOST_FIXTURE_TEST_CASE(remove_unlinks_and_tolerates_missing, maildir_fixture)
{
    put(root / "new" / "1.M1P1Q0.h", "a\n");
    put(root / "new" / "2.M1P1Q0.h", "b\n");
    auto msgs = md.scan();
    BOOST_TEST_REQUIRE(msgs.size() == 2u);
    md.remove(msgs[0]);
    BOOST_TEST(!fs::exists(msgs[0].path));
    BOOST_CHECK_NO_THROW(md.remove(msgs[0]));   // already gone

    // Renamed for a flag change after our scan: still removed by base name.
    fs::rename(msgs[1].path, root / "cur" / "2.M1P1Q0.h:2,S");
    md.remove(msgs[1]);
    BOOST_TEST(count_files(root / "cur") == 0u);
    BOOST_TEST(md.scan().empty());
}

// An IMAP client that flags or expunges every message made each RETR, TOP
// and DELE of a session list the whole of cur/ again (seconds for 20,000
// messages, on the I/O thread). renamed() lists it once, and again only
// when a name is missing and cur/ has changed since.
BOOST_FIXTURE_TEST_CASE(renamed_messages_are_found_from_one_listing, maildir_fixture)
{
    for (char const* n : {"1.M1P1Q0.h", "2.M1P1Q0.h", "3.M1P1Q0.h", "4.M1P1Q0.h"}) put(root / "new" / n, "x\n");
    auto const msgs = md.scan();
    BOOST_TEST_REQUIRE(msgs.size() == 4u);
    for (auto const& m : msgs) fs::rename(m.path, m.path.string() + "S");  // \Seen, as Dovecot's IMAP names it
    BOOST_TEST(md.renamed(msgs[0]).value_or(fs::path()) == fs::path(msgs[0].path.string() + "S"));
    md.remove(msgs[0]);  // through the index; the unlink is this object's own
    BOOST_TEST(!fs::exists(msgs[0].path.string() + "S"));
    // Expunged by the other client: gone. Nothing changed since, so a file
    // put back under that base name with cur/'s mtime as it was is not
    // looked for (no second listing)...
    fs::remove(msgs[3].path.string() + "S");
    BOOST_TEST(!md.renamed(msgs[3]).has_value());
    struct stat before {};
    BOOST_TEST_REQUIRE(::stat((root / "cur").c_str(), &before) == 0);
    put(msgs[3].path.string() + "T", "x\n");
    timespec const times[2] = {before.st_atim, before.st_mtim};
    BOOST_TEST_REQUIRE(::utimensat(AT_FDCWD, (root / "cur").c_str(), times, 0) == 0);
    BOOST_TEST(!md.renamed(msgs[3]).has_value());
    // ...while a change to cur/ is: renamed again by the other client.
    fs::rename(msgs[1].path.string() + "S", msgs[1].path.string() + "RS");
    BOOST_TEST(md.renamed(msgs[1]).value_or(fs::path()) == fs::path(msgs[1].path.string() + "RS"));
    BOOST_TEST(md.renamed(msgs[3]).value_or(fs::path()) == fs::path(msgs[3].path.string() + "T"));
    BOOST_TEST(md.renamed(msgs[2]).value_or(fs::path()) == fs::path(msgs[2].path.string() + "S"));
    md.remove(msgs[1]);
    md.remove(msgs[2]);
    BOOST_TEST(count_files(root / "cur") == 1u);
}

// A message the index knows, renamed again while this object's own unlink
// ran (its mtime check took the rename's change for the unlink's): still
// found, and so removed at QUIT. A review left hundreds of DELEd messages
// on disk this way, the client told "maildrop empty".
BOOST_FIXTURE_TEST_CASE(a_message_renamed_again_is_looked_for_whatever_the_mtime_says, maildir_fixture)
{
    for (char const* n : {"1.M1P1Q0.h", "2.M1P1Q0.h"}) put(root / "new" / n, "x\n");
    auto const msgs = md.scan();
    BOOST_TEST_REQUIRE(msgs.size() == 2u);
    for (auto const& m : msgs) fs::rename(m.path, m.path.string() + "S");
    BOOST_TEST(md.renamed(msgs[0]).value_or(fs::path()) == fs::path(msgs[0].path.string() + "S"));  // listed
    struct stat listed {};
    BOOST_TEST_REQUIRE(::stat((root / "cur").c_str(), &listed) == 0);
    fs::rename(msgs[1].path.string() + "S", msgs[1].path.string() + "F");
    timespec const times[2] = {listed.st_atim, listed.st_mtim};  // as if the change were absorbed
    BOOST_TEST_REQUIRE(::utimensat(AT_FDCWD, (root / "cur").c_str(), times, 0) == 0);
    md.remove(msgs[1]);
    BOOST_TEST(!fs::exists(msgs[1].path.string() + "F"));
}

BOOST_FIXTURE_TEST_CASE(delivery_commit_stores_lf_and_sizes, maildir_fixture)
{
    std::string_view const wire = "Subject: a\r\n\r\nbody\r\n.dot\r\nbare\rcr\r\n";
    std::string_view const stored = "Subject: a\n\nbody\n.dot\nbare\rcr\n";
    delivery d{root, "mx.example.org"};
    d.write("Subject: a\r");   // CRLF split across writes
    d.write("\n\r\nbody\r\n.dot\r");
    d.write("\nbare\rcr\r\n");
    auto const p = d.commit();

    BOOST_TEST(p.parent_path() == root / "new");
    BOOST_TEST(escaped(slurp(p)) == escaped(stored));
    auto const name = p.filename().string();
    BOOST_TEST(name.find(".mx.example.org,S=" + std::to_string(stored.size()) + ",W=" +
                         std::to_string(wire_size(stored))) != std::string::npos);
    BOOST_TEST(wire_size(stored) == wire.size());
    BOOST_TEST(name.find('P' + std::to_string(::getpid()) + 'Q') != std::string::npos);
    BOOST_TEST(mode_of(p) == 0600u);
    BOOST_TEST(count_files(root / "tmp") == 0u);

    auto const msgs = md.scan();
    BOOST_TEST_REQUIRE(msgs.size() == 1u);
    BOOST_TEST(msgs[0].size == wire.size());
}

// A copy taken back after a reader moved it from new/ to cur/ (as a POP3
// listing or Dovecot does) is gone all the same; other messages stay.
BOOST_FIXTURE_TEST_CASE(take_back_finds_a_copy_a_reader_moved_to_cur, maildir_fixture)
{
    delivery a{root, "h"};
    a.write("A: 1\r\n\r\nx\r\n");
    auto const in_new = a.commit();
    delivery b{root, "h"};
    b.write("B: 1\r\n\r\ny\r\n");
    auto const other = b.commit();
    fs::rename(in_new, root / "cur" / (in_new.filename().string() + ":2,S"));
    take_back(in_new);
    BOOST_TEST(count_files(root / "cur") == 0u);
    BOOST_TEST(fs::exists(other));
    take_back(other);  // still in new/
    BOOST_TEST(count_files(root / "new") == 0u);
}

// server.hostname may be 253 octets: the file name (at most 255) must still
// fit, in new/ and once a reader has added its flags in cur/.
BOOST_FIXTURE_TEST_CASE(delivery_with_the_longest_host_name_fits, maildir_fixture)
{
    std::string host;
    for (int i = 0; i < 4; ++i) host += std::string(62, 'a') + ".";
    host.pop_back();  // 4 labels of 62 and 3 dots: 251 octets
    delivery d{root, host};
    d.write("Subject: a\r\n\r\nbody\r\n");
    auto const p = d.commit();
    BOOST_TEST(p.parent_path() == root / "new");
    BOOST_TEST(p.filename().string().size() + 10 <= 255u);  // room for ":2,FRST" and more
}

BOOST_FIXTURE_TEST_CASE(delivery_handles_every_split, maildir_fixture)
{
    std::string_view const wire = "A: 1\r\n\r\nx\r\r\n\rz\r\n\r";
    std::string const want = "A: 1\n\nx\r\n\rz\n\r";
    for (std::size_t i = 0; i <= wire.size(); ++i) {
        delivery d{root, "h"};
        d.write(wire.substr(0, i));
        d.write(wire.substr(i));
        auto const p = d.commit();
        BOOST_TEST(escaped(slurp(p)) == escaped(want), "split at " << i);
        fs::remove(p);
    }
}

BOOST_FIXTURE_TEST_CASE(delivery_names_unique_and_host_escaped, maildir_fixture)
{
    delivery a{root, "a/b:c,d"};
    delivery b{root, "a/b:c,d"};
    auto const pa = a.commit();
    auto const pb = b.commit();
    BOOST_TEST(pa != pb);
    BOOST_TEST(pa.filename().string().find(".a\\057b\\072c\\054d,S=0,W=0") != std::string::npos);
    BOOST_TEST(count_files(root / "new") == 2u);
}

BOOST_FIXTURE_TEST_CASE(abort_and_destructor_leave_nothing, maildir_fixture)
{
    {
        delivery d{root, "h"};
        d.write("partial message\r\n");
        BOOST_TEST(count_files(root / "tmp") == 1u);
        d.abort();
        d.abort();   // harmless twice
        BOOST_CHECK_THROW(d.write("more"), std::logic_error);
        BOOST_CHECK_THROW(d.commit(), std::logic_error);
    }
    {
        delivery d{root, "h"};
        d.write(std::string(200000, 'x'));   // larger than the write buffer: really on disk
    }
    {
        delivery d{root, "h"};
        delivery moved{std::move(d)};
        moved.write("y\r\n");
    }
    BOOST_TEST(count_files(root / "tmp") == 0u);
    BOOST_TEST(count_files(root / "new") == 0u);
    BOOST_TEST(count_files(root / "cur") == 0u);
}

BOOST_FIXTURE_TEST_CASE(commit_twice_is_an_error, maildir_fixture)
{
    delivery d{root, "h"};
    d.write("x\n");
    auto const p = d.commit();
    BOOST_CHECK_THROW(d.commit(), std::logic_error);
    BOOST_TEST(fs::exists(p));   // a committed message survives the destructor
}

BOOST_AUTO_TEST_CASE(delivery_without_maildir_throws)
{
    temp_dir tmp;
    BOOST_CHECK_THROW((delivery{tmp.path / "missing", "h"}), std::system_error);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(maildrop_exclusive_lock, *boost::unit_test::label("unit"))

using status = maildrop_lock::status;

BOOST_AUTO_TEST_CASE(second_holder_is_refused_until_the_first_lets_go)
{
    temp_dir tmp;
    auto const root = tmp.path / "a" / "Maildir";
    auto first = maildrop_lock::take(root);
    BOOST_TEST((first.what == status::ok));
    BOOST_TEST(first.lock.held());
    BOOST_TEST(fs::is_directory(root / "cur"));  // a missing Maildir is made
    BOOST_TEST(mode_of(root / maildrop_lock::file_name) == 0600u);

    // Another open of the same file conflicts, even in this process.
    BOOST_TEST((maildrop_lock::take(root).what == status::in_use));
    // A plain open and close of the file elsewhere does not drop the lock
    // (it would with a classic per-process fcntl lock).
    ::close(::open((root / maildrop_lock::file_name).c_str(), O_RDONLY));
    BOOST_TEST((maildrop_lock::take(root).what == status::in_use));

    maildrop_lock moved = std::move(first.lock);
    BOOST_TEST(!first.lock.held());
    BOOST_TEST((maildrop_lock::take(root).what == status::in_use));
    moved.release();
    auto second = maildrop_lock::take(root);
    BOOST_TEST((second.what == status::ok));
}

BOOST_AUTO_TEST_CASE(move_assignment_releases_the_lock_it_replaces)
{
    temp_dir tmp;
    auto a = maildrop_lock::take(tmp.path / "a");
    auto b = maildrop_lock::take(tmp.path / "b");
    BOOST_REQUIRE((a.what == status::ok && b.what == status::ok));
    a.lock = std::move(b.lock);
    BOOST_TEST((maildrop_lock::take(tmp.path / "a").what == status::ok));
    BOOST_TEST((maildrop_lock::take(tmp.path / "b").what == status::in_use));
}

// Another process (another popgate, or a node on the shared filesystem)
// holding the lock is seen; when it dies the kernel drops the lock.
BOOST_AUTO_TEST_CASE(a_lock_held_by_another_process_is_seen_and_dies_with_it)
{
    temp_dir tmp;
    auto const root = tmp.path / "Maildir";
    int ready[2];
    BOOST_REQUIRE(::pipe(ready) == 0);
    pid_t const child = ::fork();
    BOOST_REQUIRE(child >= 0);
    if (child == 0) {
        auto held = maildrop_lock::take(root);
        char const c = held.what == status::ok ? 'y' : 'n';
        if (::write(ready[1], &c, 1) != 1) ::_exit(2);
        ::pause();  // until killed
        ::_exit(0);
    }
    ::close(ready[1]);
    char c = 0;
    BOOST_REQUIRE(::read(ready[0], &c, 1) == 1);
    ::close(ready[0]);
    BOOST_TEST(c == 'y');
    BOOST_TEST((maildrop_lock::take(root).what == status::in_use));
    ::kill(child, SIGKILL);
    int wstatus = 0;
    BOOST_REQUIRE(::waitpid(child, &wstatus, 0) == child);
    BOOST_TEST((maildrop_lock::take(root).what == status::ok));
}

BOOST_AUTO_TEST_CASE(an_unusable_path_fails_with_the_reason)
{
    temp_dir tmp;
    put(tmp.path / "file", "x");
    auto const r = maildrop_lock::take(tmp.path / "file" / "Maildir");
    BOOST_TEST((r.what == status::failed));
    BOOST_TEST(!r.lock.held());
    BOOST_TEST(r.error.find("Not a directory") != std::string::npos, r.error);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(maildir_template, *boost::unit_test::label("unit"))

struct expand_case {
    std::string_view templ;
    std::string_view user;
    std::string_view path;
};
std::ostream& operator<<(std::ostream& os, expand_case const& c) { return os << c.templ << " / " << c.user; }

static expand_case const expansions[]{
    {"var/mail/%d/%n", "alice@example.org", "var/mail/example.org/alice"},
    {"var/mail/%u", "alice@example.org", "var/mail/alice@example.org"},
    {"/srv/mail/%u/Maildir", "bob", "/srv/mail/bob/Maildir"},
    {"var/mail/%d/%n", "bob", "var/mail//bob"},
    {"var/%%/%n", "a.b@c", "var/%/a.b"},
    {"var/mail/%d/%n", "\"x@y\"@example.org", "var/mail/example.org/\"x@y\""},
    {"fixed", "carol", "fixed"},
};

BOOST_DATA_TEST_CASE(expands_template, bdata::make(expansions), c)
{
    BOOST_TEST(user_maildir(c.templ, c.user) == fs::path{c.path});
}

struct reject_case {
    std::string_view templ;
    std::string_view user;
};
std::ostream& operator<<(std::ostream& os, reject_case const& c) { return os << c.templ << " / " << escaped(c.user); }

static reject_case const rejected[]{
    {"var/mail/%u", ""},
    {"var/mail/%u", "../etc"},
    {"var/mail/%u", ".."},
    {"var/mail/%u", ".hidden"},
    {"var/mail/%u", "a/b"},
    {"var/mail/%u", "a/../../b"},
    {"var/mail/%d/%n", "x@.."},
    {"var/mail/%d/%n", "x@../etc"},
    {"var/mail/%d/%n", "..@example.org"},
    {"var/mail/%d/%n", "@example.org"},
    {"var/mail/%u", "a\nb"},
    {"var/mail/%x", "alice"},
    {"var/mail/%", "alice"},
};

BOOST_DATA_TEST_CASE(rejects_traversal_and_bad_templates, bdata::make(rejected), c)
{
    BOOST_CHECK_THROW(user_maildir(c.templ, c.user), std::invalid_argument);
}

struct prefix_case {
    std::string_view templ;
    std::string_view prefix;
};
std::ostream& operator<<(std::ostream& os, prefix_case const& c) { return os << c.templ; }

// The directory the daemon makes and checks at start: the template's fixed part up to the last '/'.
static prefix_case const prefixes[]{
    {"var/mail/%u", "var/mail"},
    {"var/mail/%d/%n", "var/mail"},
    {"var/mail/u%u", "var/mail"},
    {"/srv/mail/%u/Maildir", "/srv/mail"},
    {"var/%%/%n", "var/%"},
    {"var/mail//%u", "var/mail"},
    {"%u/Maildir", "."},
    {"/%u", "/"},
};

BOOST_DATA_TEST_CASE(prefix_is_the_fixed_directory, bdata::make(prefixes), c)
{
    BOOST_TEST(maildir_prefix(c.templ) == fs::path{c.prefix});
}

BOOST_AUTO_TEST_SUITE_END()
