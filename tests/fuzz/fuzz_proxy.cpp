// PROXY protocol headers (what a trusted load balancer sends first): the
// verdict does not depend on bytes after a complete header, `incomplete` is
// never given for more than the longest header, and every prefix of a
// complete header is incomplete (the frame reads it in pieces).
#include "fuzz_support.hpp"
#include "popgate/net/proxy_header.hpp"

#include <string>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    using namespace popgate::net;
    auto const in = as_view(data, size);
    auto const r = parse_proxy_header(in);
    if (r.status == proxy_status::incomplete) POPGATE_FUZZ_CHECK(in.size() < proxy_header_max);
    if (r.status == proxy_status::invalid) POPGATE_FUZZ_CHECK(!r.why.empty());
    if (r.status != proxy_status::complete) return 0;
    POPGATE_FUZZ_CHECK(r.header.length > 0 && r.header.length <= in.size() && r.header.length <= proxy_header_max);
    POPGATE_FUZZ_CHECK(r.header.version == 1 || r.header.version == 2);
    auto const header = in.substr(0, r.header.length);
    auto const again = parse_proxy_header(header);
    POPGATE_FUZZ_CHECK(again.status == proxy_status::complete && again.header.length == r.header.length);
    POPGATE_FUZZ_CHECK(again.header.source == r.header.source && again.header.port == r.header.port);
    for (std::size_t n = 0; n < header.size(); ++n)
        POPGATE_FUZZ_CHECK(parse_proxy_header(header.substr(0, n)).status == proxy_status::incomplete);
    return 0;
}
