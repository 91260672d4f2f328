// POP3 command parser, argument parsers and the RETR/TOP byte-stuffer.
#include "fuzz_support.hpp"
#include "popgate/proto/pop3.hpp"

#include <string>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    using namespace popgate::proto;
    auto const in = as_view(data, size);
    if (auto c = parse_pop3(in)) {
        POPGATE_FUZZ_CHECK(c->args.size() <= in.size());
        (void)parse_msg_number(c->args);
        (void)parse_top_args(c->args);
        (void)parse_apop_args(c->args);
    }
    // The stuffer must give the same bytes whatever the chunking, and every
    // line it emits ends in CRLF with the terminator last.
    std::string whole, split;
    pop3_stuffer a, b;
    a.feed(in, whole);
    a.finish(whole);
    std::size_t const cut = size ? data[0] % (size + 1) : 0;
    b.feed(in.substr(0, cut), split);
    b.feed(in.substr(cut), split);
    b.finish(split);
    POPGATE_FUZZ_CHECK(whole == split);
    POPGATE_FUZZ_CHECK(whole.size() >= 3 && whole.compare(whole.size() - 3, 3, ".\r\n") == 0);
    POPGATE_FUZZ_CHECK(whole.find("\r\n.\r\n") == whole.size() - 5 || whole == ".\r\n");
    return 0;
}
