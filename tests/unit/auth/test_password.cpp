#include "popgate/auth/authenticator.hpp"
#include "popgate/auth/password.hpp"
#include "popgate/store/sqlite_store.hpp"

#include "temp_dir.hpp"

#include <boost/test/data/monomorphic.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>

using namespace popgate;
using namespace popgate::auth;
namespace fs = std::filesystem;
namespace bdata = boost::unit_test::data;
using namespace std::chrono_literals;

namespace {

// `openssl passwd -6 -salt saltsalt secret`
constexpr std::string_view sha512_vector =
    "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
constexpr std::string_view sha512_vector_password = "secret";

// RFC 1939 §7 and RFC 2195 §2 examples.
constexpr std::string_view rfc1939_timestamp = "<1896.697170952@dbc.mtview.ca.us>";
constexpr std::string_view rfc1939_secret = "tanstaaf";
constexpr std::string_view rfc1939_digest = "c4c9334bac560ecc979e58001b3e22fb";
constexpr std::string_view rfc2195_challenge = "<1896.697170952@postoffice.reston.mci.net>";
constexpr std::string_view rfc2195_secret = "tanstaaftanstaaf";
constexpr std::string_view rfc2195_digest = "b913a602c7eda7a495b4e6e7334d3890";

using popgate::test::temp_dir;

std::string outcome_name(outcome o)
{
    switch (o) {
    case outcome::ok: return "ok";
    case outcome::failed: return "failed";
    case outcome::apop_required: return "apop_required";
    case outcome::no_secret: return "no_secret";
    case outcome::unavailable: return "unavailable";
    }
    return "?";
}

std::string upper(std::string s)
{
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
}

// Users (hashes made once: crypt(3) is slow on purpose):
//   alice   password "wonderland", shared secret "tanstaaf"
//   bob     password "builder", no shared secret
//   dis     password "pw-disabled", secret "s3cret", disabled
//   apo     password "pw-apop", secret "apop-secret", apop-only
//   apo2    no password, secret "only-secret", apop-only
//   nopw    no password, secret "nopw-secret"
struct auth_fixture {
    temp_dir tmp;
    std::unique_ptr<store::store> db = store::open_sqlite_store(tmp.path / "popgate.db");
    authenticator a{*db};

    static std::string const& hash_of(std::string_view pw)
    {
        static std::string const alice = hash_password("wonderland", hash_scheme::sha512_crypt);
        static std::string const bob = hash_password("builder", hash_scheme::sha512_crypt);
        static std::string const dis = hash_password("pw-disabled", hash_scheme::sha512_crypt);
        static std::string const apo = hash_password("pw-apop", hash_scheme::sha512_crypt);
        if (pw == "wonderland") return alice;
        if (pw == "builder") return bob;
        if (pw == "pw-disabled") return dis;
        return apo;
    }

    void add(std::string name, std::optional<std::string> hash, std::optional<std::string> secret,
             bool disabled = false, bool apop_only = false)
    {
        store::user_record u;
        u.name = std::move(name);
        u.password_hash = std::move(hash);
        u.shared_secret = std::move(secret);
        u.disabled = disabled;
        u.apop_only = apop_only;
        db->add_user(u);
    }

    auth_fixture()
    {
        add("alice", hash_of("wonderland"), "tanstaaf");
        add("bob", hash_of("builder"), std::nullopt);
        add("dis", hash_of("pw-disabled"), "s3cret", true);
        add("apo", hash_of("pw-apop"), "apop-secret", false, true);
        add("apo2", std::nullopt, "only-secret", false, true);
        add("nopw", std::nullopt, "nopw-secret");
    }
};

#define CHECK_OUTCOME(expr, want)                                                                   \
    do {                                                                                            \
        auto const r_ = (expr);                                                                     \
        BOOST_TEST((r_.what == (want)), #expr << " gave " << outcome_name(r_.what) << " (" << r_.reason \
                                               << "), want " << outcome_name(want));               \
    } while (0)

}  // namespace

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(auth_password, *boost::unit_test::label("unit"))

struct scheme_case {
    hash_scheme scheme;
    std::string_view name;
    std::string_view prefix;
};
std::ostream& operator<<(std::ostream& os, scheme_case const& c) { return os << c.name; }
constexpr scheme_case schemes[]{{hash_scheme::yescrypt, "yescrypt", "$y$"},
                                {hash_scheme::sha512_crypt, "sha512-crypt", "$6$"},
                                {hash_scheme::bcrypt, "bcrypt", "$2b$"}};

BOOST_DATA_TEST_CASE(hash_and_verify, bdata::make(schemes), c)
{
    auto const h = hash_password("correct horse", c.scheme);
    BOOST_TEST(h.starts_with(c.prefix), h);
    BOOST_TEST(is_crypt_hash(h));
    BOOST_TEST(verify_password("correct horse", h));
    BOOST_TEST(!verify_password("correct horsf", h));
    BOOST_TEST(!verify_password("Correct horse", h));
    BOOST_TEST(!verify_password("", h));
    BOOST_TEST(h.find("correct") == std::string::npos);
    // Salted: the same password hashes differently each time.
    auto const h2 = hash_password("correct horse", c.scheme);
    BOOST_TEST(h != h2);
    BOOST_TEST(verify_password("correct horse", h2));
    auto const parsed = parse_scheme(c.name);
    BOOST_TEST_REQUIRE(parsed.has_value());
    BOOST_TEST((*parsed == c.scheme));
}

// What hash_password refuses, and why: bcrypt reads 72 bytes, so a longer
// password would share its hash with every one that starts the same.
BOOST_AUTO_TEST_CASE(bcrypt_past_72_bytes_and_libcrypts_limit_are_refused)
{
    std::string const p72(72, 'y');
    auto const h = hash_password(p72, hash_scheme::bcrypt);
    BOOST_TEST(verify_password(p72 + "anything", h));  // the reason
    BOOST_CHECK_THROW(hash_password(p72 + "z", hash_scheme::bcrypt), std::invalid_argument);
    BOOST_TEST(hash_password(p72 + "z", hash_scheme::yescrypt).starts_with("$y$"));
    BOOST_TEST(!verify_password(p72, hash_password(p72 + "z", hash_scheme::sha512_crypt)));
    BOOST_TEST(verify_password(std::string(511, 'x'), hash_password(std::string(511, 'x'), hash_scheme::yescrypt)));
    BOOST_CHECK_THROW(hash_password(std::string(512, 'x'), hash_scheme::yescrypt), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(parse_scheme_names)
{
    BOOST_TEST((parse_scheme("sha512").value() == hash_scheme::sha512_crypt));
    BOOST_TEST(!parse_scheme("md5").has_value());
    BOOST_TEST(!parse_scheme("").has_value());
    BOOST_TEST(!parse_scheme("YESCRYPT").has_value());
}

BOOST_AUTO_TEST_CASE(known_sha512_crypt_vector)
{
    BOOST_TEST(is_crypt_hash(sha512_vector));
    BOOST_TEST(verify_password(sha512_vector_password, sha512_vector));
    BOOST_TEST(!verify_password("Secret", sha512_vector));
    BOOST_TEST(!verify_password("secret ", sha512_vector));
    BOOST_TEST(!verify_password("", sha512_vector));
    // One character of the hash changed: no match.
    std::string tampered(sha512_vector);
    tampered.back() = tampered.back() == '1' ? '2' : '1';
    BOOST_TEST(!verify_password(sha512_vector_password, tampered));
}

BOOST_AUTO_TEST_CASE(password_with_nul_never_verifies)
{
    using namespace std::string_view_literals;
    // crypt(3) would see "secret" only.
    BOOST_TEST(!verify_password("secret\0tail"sv, sha512_vector));
}

BOOST_AUTO_TEST_CASE(password_with_nul_is_never_hashed)
{
    using namespace std::string_view_literals;
    // Hashed, "\0secret" would be the hash of "": a password anyone can send.
    BOOST_CHECK_THROW(hash_password("\0secret"sv, hash_scheme::sha512_crypt), std::invalid_argument);
    BOOST_CHECK_THROW(hash_password("secret\0tail"sv, hash_scheme::sha512_crypt), std::invalid_argument);
}

struct not_hash_case {
    std::string_view text;
};
std::ostream& operator<<(std::ostream& os, not_hash_case const& c) { return os << '\'' << c.text << '\''; }
constexpr not_hash_case not_hashes[]{
    {""},
    {"*"},
    {"!"},
    {"x"},
    {"!!"},
    {"*LK*"},
    {"abJnggxhB/yWI"},  // traditional DES
    {"!$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"},  // locked
    {"$6$"},
    {"plaintext-password"},
    {"$zz$abcdefghijklmnop"},  // no such method
};

BOOST_DATA_TEST_CASE(is_crypt_hash_refuses, bdata::make(not_hashes), c)
{
    BOOST_TEST(!is_crypt_hash(c.text));
    BOOST_TEST(!verify_password("", c.text));
    BOOST_TEST(!verify_password("secret", c.text));
    BOOST_TEST(!verify_password(c.text, c.text));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_AUTO_TEST_SUITE(auth_digest, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(apop_rfc1939_example)
{
    BOOST_TEST(apop_digest(rfc1939_timestamp, rfc1939_secret) == rfc1939_digest);
    BOOST_TEST(apop_digest(rfc1939_timestamp, "tanstaag") != rfc1939_digest);
    BOOST_TEST(apop_digest("<1896.697170953@dbc.mtview.ca.us>", rfc1939_secret) != rfc1939_digest);
    // MD5("") is well known.
    BOOST_TEST(apop_digest("", "") == "d41d8cd98f00b204e9800998ecf8427e");
}

BOOST_AUTO_TEST_CASE(cram_md5_rfc2195_example)
{
    BOOST_TEST(cram_md5_digest(rfc2195_challenge, rfc2195_secret) == rfc2195_digest);
    BOOST_TEST(cram_md5_digest(rfc2195_challenge, "tanstaaftanstaag") != rfc2195_digest);
    // HMAC, not MD5(challenge + secret).
    BOOST_TEST(cram_md5_digest(rfc2195_challenge, rfc2195_secret) != apop_digest(rfc2195_challenge, rfc2195_secret));
    // RFC 2104 test case 2: key "Jefe".
    BOOST_TEST(cram_md5_digest("what do ya want for nothing?", "Jefe") == "750c783e6ab0b503eaa86e310a5db738");
}

BOOST_AUTO_TEST_CASE(hex_is_lowercase)
{
    unsigned char const bytes[]{0x00, 0x0f, 0xa0, 0xff};
    BOOST_TEST(to_hex(bytes, 4) == "000fa0ff");
    BOOST_TEST(to_hex(bytes, 0) == "");
}

BOOST_AUTO_TEST_CASE(equal_ct_compares)
{
    BOOST_TEST(equal_ct("", ""));
    BOOST_TEST(equal_ct("abc", "abc"));
    BOOST_TEST(!equal_ct("abc", "abd"));
    BOOST_TEST(!equal_ct("abc", "abcd"));
    BOOST_TEST(!equal_ct("abcd", "abc"));
    BOOST_TEST(!equal_ct("", "a"));
    BOOST_TEST(!equal_ct("Abc", "abc"));
    using namespace std::string_view_literals;
    BOOST_TEST(!equal_ct("a\0b"sv, "a\0c"sv));  // compares past a NUL
    BOOST_TEST(equal_ct("a\0b"sv, "a\0b"sv));
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(auth_authenticator, auth_fixture, *boost::unit_test::label("unit"))

BOOST_AUTO_TEST_CASE(password_ok)
{
    auto const r = a.check_password("alice", "wonderland");
    BOOST_TEST((r.what == outcome::ok), r.reason);
    BOOST_TEST(r.user == "alice");
    CHECK_OUTCOME(a.check_password("bob", "builder"), outcome::ok);
}

BOOST_AUTO_TEST_CASE(password_wrong_or_unknown_user)
{
    auto const wrong = a.check_password("alice", "wonderlant");
    BOOST_TEST((wrong.what == outcome::failed));
    BOOST_TEST(wrong.user.empty());
    CHECK_OUTCOME(a.check_password("alice", ""), outcome::failed);
    CHECK_OUTCOME(a.check_password("alice", "builder"), outcome::failed);  // another user's password
    CHECK_OUTCOME(a.check_password("Alice", "wonderland"), outcome::failed);
    auto const unknown = a.check_password("mallory", "wonderland");
    BOOST_TEST((unknown.what == outcome::failed));
    BOOST_TEST(unknown.user.empty());
    CHECK_OUTCOME(a.check_password("nopw", "nopw-secret"), outcome::failed);  // a secret is not a password
}

BOOST_AUTO_TEST_CASE(disabled_user_fails)
{
    CHECK_OUTCOME(a.check_password("dis", "pw-disabled"), outcome::failed);
    CHECK_OUTCOME(a.check_password("dis", "wrong"), outcome::failed);
    CHECK_OUTCOME(a.check_apop("dis", "<1@x>", apop_digest("<1@x>", "s3cret")), outcome::failed);
    CHECK_OUTCOME(a.check_cram_md5("dis", "<2@x>", cram_md5_digest("<2@x>", "s3cret")), outcome::failed);
    // Re-enabled: the same credentials work.
    auto u = db->find_user("dis");
    BOOST_TEST_REQUIRE(u.has_value());
    u->disabled = false;
    db->update_user(*u);
    CHECK_OUTCOME(a.check_password("dis", "pw-disabled"), outcome::ok);
    CHECK_OUTCOME(a.check_apop("dis", "<1@x>", apop_digest("<1@x>", "s3cret")), outcome::ok);
}

BOOST_AUTO_TEST_CASE(apop_only_user_needs_apop)
{
    CHECK_OUTCOME(a.check_password("apo", "pw-apop"), outcome::apop_required);
    CHECK_OUTCOME(a.check_cram_md5("apo", "<3@x>", cram_md5_digest("<3@x>", "apop-secret")), outcome::apop_required);
    CHECK_OUTCOME(a.check_apop("apo", "<4@x>", apop_digest("<4@x>", "apop-secret")), outcome::ok);
    CHECK_OUTCOME(a.check_apop("apo", "<4@x>", apop_digest("<4@x>", "pw-apop")), outcome::failed);
}

BOOST_AUTO_TEST_CASE(apop_only_user_without_password_needs_apop)
{
    CHECK_OUTCOME(a.check_password("apo2", "anything"), outcome::apop_required);
    CHECK_OUTCOME(a.check_cram_md5("apo2", "<5@x>", cram_md5_digest("<5@x>", "only-secret")),
                  outcome::apop_required);
    CHECK_OUTCOME(a.check_apop("apo2", "<6@x>", apop_digest("<6@x>", "only-secret")), outcome::ok);
}

BOOST_AUTO_TEST_CASE(apop_with_and_without_shared_secret)
{
    auto const ok = a.check_apop("alice", rfc1939_timestamp, rfc1939_digest);  // alice's secret is tanstaaf
    BOOST_TEST((ok.what == outcome::ok), ok.reason);
    BOOST_TEST(ok.user == "alice");
    CHECK_OUTCOME(a.check_apop("alice", rfc1939_timestamp, upper(std::string(rfc1939_digest))), outcome::ok);
    CHECK_OUTCOME(a.check_apop("alice", "<other@x>", rfc1939_digest), outcome::failed);  // replay elsewhere
    CHECK_OUTCOME(a.check_apop("alice", rfc1939_timestamp, "c4c9334bac560ecc979e58001b3e22fc"), outcome::failed);
    CHECK_OUTCOME(a.check_apop("alice", rfc1939_timestamp, "c4c9334bac560ecc979e58001b3e22f"), outcome::failed);
    CHECK_OUTCOME(a.check_apop("alice", rfc1939_timestamp, ""), outcome::failed);
    CHECK_OUTCOME(a.check_apop("bob", rfc1939_timestamp, apop_digest(rfc1939_timestamp, "builder")),
                  outcome::no_secret);
    CHECK_OUTCOME(a.check_apop("mallory", rfc1939_timestamp, rfc1939_digest), outcome::failed);
    CHECK_OUTCOME(a.check_apop("nopw", "<7@x>", apop_digest("<7@x>", "nopw-secret")), outcome::ok);
}

BOOST_AUTO_TEST_CASE(cram_md5_with_and_without_shared_secret)
{
    auto u = db->find_user("alice");
    BOOST_TEST_REQUIRE(u.has_value());
    u->shared_secret = std::string(rfc2195_secret);
    db->update_user(*u);
    auto const ok = a.check_cram_md5("alice", rfc2195_challenge, rfc2195_digest);
    BOOST_TEST((ok.what == outcome::ok), ok.reason);
    BOOST_TEST(ok.user == "alice");
    CHECK_OUTCOME(a.check_cram_md5("alice", rfc2195_challenge, upper(std::string(rfc2195_digest))), outcome::ok);
    CHECK_OUTCOME(a.check_cram_md5("alice", "<other@x>", rfc2195_digest), outcome::failed);
    CHECK_OUTCOME(a.check_cram_md5("alice", rfc2195_challenge, apop_digest(rfc2195_challenge, rfc2195_secret)),
                  outcome::failed);
    CHECK_OUTCOME(a.check_cram_md5("bob", rfc2195_challenge, cram_md5_digest(rfc2195_challenge, "builder")),
                  outcome::no_secret);
    CHECK_OUTCOME(a.check_cram_md5("mallory", rfc2195_challenge, rfc2195_digest), outcome::failed);
}

BOOST_AUTO_TEST_CASE(cache_off_sees_a_changed_password)
{
    CHECK_OUTCOME(a.check_password("alice", "wonderland"), outcome::ok);
    auto u = db->find_user("alice");
    u->password_hash = hash_password("looking-glass", hash_scheme::sha512_crypt);
    db->update_user(*u);
    CHECK_OUTCOME(a.check_password("alice", "wonderland"), outcome::failed);
    CHECK_OUTCOME(a.check_password("alice", "looking-glass"), outcome::ok);
}

BOOST_AUTO_TEST_CASE(cache_on_a_changed_password_invalidates)
{
    a.set_cache_ttl(3600s);
    CHECK_OUTCOME(a.check_password("alice", "wonderland"), outcome::ok);
    CHECK_OUTCOME(a.check_password("alice", "wonderland"), outcome::ok);  // from the cache
    auto u = db->find_user("alice");
    BOOST_TEST_REQUIRE(u.has_value());
    u->password_hash = hash_password("looking-glass", hash_scheme::sha512_crypt);
    db->update_user(*u);
    CHECK_OUTCOME(a.check_password("alice", "wonderland"), outcome::failed);
    CHECK_OUTCOME(a.check_password("alice", "looking-glass"), outcome::ok);
    CHECK_OUTCOME(a.check_password("alice", "looking-glass"), outcome::ok);
    CHECK_OUTCOME(a.check_password("alice", "wonderland"), outcome::failed);
}

BOOST_AUTO_TEST_CASE(cache_on_a_wrong_password_still_fails)
{
    a.set_cache_ttl(3600s);
    CHECK_OUTCOME(a.check_password("alice", "wonderland"), outcome::ok);
    CHECK_OUTCOME(a.check_password("alice", "wonderlant"), outcome::failed);
    CHECK_OUTCOME(a.check_password("alice", ""), outcome::failed);
    CHECK_OUTCOME(a.check_password("alice", "wonderland"), outcome::ok);
}

BOOST_AUTO_TEST_CASE(cache_on_disabling_takes_effect)
{
    a.set_cache_ttl(3600s);
    CHECK_OUTCOME(a.check_password("alice", "wonderland"), outcome::ok);
    auto u = db->find_user("alice");
    u->disabled = true;  // same hash
    db->update_user(*u);
    CHECK_OUTCOME(a.check_password("alice", "wonderland"), outcome::failed);
    BOOST_TEST(db->delete_user("alice"));
    CHECK_OUTCOME(a.check_password("alice", "wonderland"), outcome::failed);
}

BOOST_AUTO_TEST_SUITE_END()
