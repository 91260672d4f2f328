#include "popgate/io/ticket_keys.hpp"

#include <boost/test/unit_test.hpp>

#include <chrono>

using popgate::io::ticket_keys;
using namespace std::chrono_literals;

BOOST_AUTO_TEST_SUITE(ticket_keys_rotation, *boost::unit_test::label("unit"))

// Interval 100 s: periods are [0,100), [100,200), ... of the wall clock.
BOOST_AUTO_TEST_CASE(current_and_previous_decrypt_older_keys_do_not)
{
    ticket_keys k{100s};
    auto const k0 = k.encrypting(1000);  // period 10
    BOOST_TEST(k.generation() == 1u);
    // Same period: the same key encrypts and decrypts as current.
    BOOST_TEST((k.encrypting(1099).name == k0.name));
    auto f = k.decrypting(k0.name.data(), 1099);
    BOOST_TEST_REQUIRE(f.has_value());
    BOOST_TEST((f->which == ticket_keys::age::current));
    BOOST_TEST((f->key.aes == k0.aes));
    BOOST_TEST((f->key.hmac == k0.hmac));

    // Next period: a new key encrypts; k0 is the previous one and still decrypts.
    auto const k1 = k.encrypting(1100);
    BOOST_TEST(!(k1.name == k0.name));
    BOOST_TEST(!(k1.aes == k0.aes));
    f = k.decrypting(k0.name.data(), 1150);
    BOOST_TEST_REQUIRE(f.has_value());
    BOOST_TEST((f->which == ticket_keys::age::previous));

    // Two rotations later k0 is gone, k1 is the previous one.
    BOOST_TEST(!k.decrypting(k0.name.data(), 1200).has_value());
    f = k.decrypting(k1.name.data(), 1200);
    BOOST_TEST_REQUIRE(f.has_value());
    BOOST_TEST((f->which == ticket_keys::age::previous));
    BOOST_TEST(k.generation() == 3u);
}

BOOST_AUTO_TEST_CASE(a_silence_of_two_periods_drops_both_keys)
{
    // No handshake for a while: the key from two periods ago must not count
    // as "previous" just because no rotation happened in between.
    ticket_keys k{100s};
    auto const k0 = k.encrypting(1000);
    BOOST_TEST(!k.decrypting(k0.name.data(), 1200).has_value());
    auto const k2 = k.encrypting(1201);
    BOOST_TEST(!(k2.name == k0.name));
}

BOOST_AUTO_TEST_CASE(unknown_name_is_refused)
{
    ticket_keys k{100s};
    (void)k.encrypting(5);
    unsigned char junk[popgate::io::ticket_key::name_size] = {1, 2, 3};
    BOOST_TEST(!k.decrypting(junk, 5).has_value());
}

BOOST_AUTO_TEST_CASE(a_new_interval_keeps_the_current_key)
{
    // A reload that changes tls.ticket_key_rotation does not throw away the
    // tickets clients hold.
    ticket_keys k{100s};
    auto const k0 = k.encrypting(1000);
    k.set_interval(3600s);
    BOOST_TEST(k.interval() == 3600s);
    auto f = k.decrypting(k0.name.data(), 1001);
    BOOST_TEST_REQUIRE(f.has_value());
    BOOST_TEST((f->which == ticket_keys::age::current));
    BOOST_TEST((k.encrypting(1002).name == k0.name));
    // The next multiple of 3600 rotates.
    BOOST_TEST(!(k.encrypting(3600).name == k0.name));
    BOOST_TEST(k.decrypting(k0.name.data(), 3600).has_value());
}

BOOST_AUTO_TEST_SUITE_END()
