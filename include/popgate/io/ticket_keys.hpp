#pragma once
// TLS session ticket keys (TLS 1.2 RFC 5077 tickets and TLS 1.3 stateless
// PSK tickets), held in memory only: never written to disk, never logged.
// A new key every `interval`, at multiples of it on the wall clock (so that
// the moment a key retires does not depend on when the daemon started or on
// traffic); the previous key still decrypts, older ones are gone. This is
// Postfix's scheme (tlsmgr: one key per session cache timeout, the previous
// one kept for decryption).
#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>

namespace popgate::io {

struct ticket_key {
    static constexpr std::size_t name_size = 16;  // OpenSSL's key_name
    std::array<unsigned char, name_size> name{};
    std::array<unsigned char, 32> aes{};   // AES-256-CBC
    std::array<unsigned char, 32> hmac{};  // HMAC-SHA256
};

class ticket_keys {
public:
    enum class age { current, previous };
    struct found {
        ticket_key key;
        age which;
    };

    explicit ticket_keys(std::chrono::seconds interval);
    ~ticket_keys();
    ticket_keys(ticket_keys const&) = delete;
    ticket_keys& operator=(ticket_keys const&) = delete;

    // A reload may change the interval; the keys held stay (current remains
    // current until the next multiple of the new interval).
    void set_interval(std::chrono::seconds interval);
    std::chrono::seconds interval() const;

    // The key that encrypts a ticket issued at `now` (unix seconds).
    ticket_key encrypting(std::int64_t now);
    // The key named `name` if it may still decrypt at `now`: the current or
    // the previous one. A ticket under an older key gets a full handshake.
    std::optional<found> decrypting(unsigned char const* name, std::int64_t now);

    // How many keys have been made (tests; not a secret).
    std::uint64_t generation() const;

private:
    void rotate_locked(std::int64_t now);

    mutable std::mutex m_;
    std::chrono::seconds interval_;
    std::int64_t period_ = -1;  // now / interval when current_ was made
    std::optional<ticket_key> current_, previous_;
    std::uint64_t made_ = 0;
};

// The daemon's one ring: the server contexts of every reload share it, so a
// SIGHUP does not invalidate the tickets clients hold.
ticket_keys& server_ticket_keys();

}  // namespace popgate::io
