// Addresses and networks: whatever parses prints back to text that parses to
// the same value, and a network contains its own base address.
#include "fuzz_support.hpp"
#include "popgate/net/ip.hpp"

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    using namespace popgate::net;
    auto const in = as_view(data, size);
    if (auto a = parse_ip(in)) {
        auto const again = parse_ip(a->to_string());
        POPGATE_FUZZ_CHECK(again && *again == *a);
        POPGATE_FUZZ_CHECK(grant_key(*a, 64).v4 == a->v4);
    }
    if (auto c = parse_cidr(in, nullptr, true)) {
        POPGATE_FUZZ_CHECK(c->prefix <= c->max_prefix());
        POPGATE_FUZZ_CHECK(c->contains(c->base));
        auto const again = parse_cidr(c->to_string());
        POPGATE_FUZZ_CHECK(again && *again == *c);
    }
    return 0;
}
