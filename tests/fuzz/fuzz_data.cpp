// The DATA reader: whatever the split of the bytes, the same message, the same
// end, and no message ever ends before a CRLF.CRLF (the smuggling invariant).
#include "fuzz_support.hpp"
#include "popgate/proto/smtp.hpp"

#include <string>

namespace {
struct run {
    popgate::proto::data_reader::status st;
    std::size_t used;
    std::string out;
    bool error;
};

run feed_in_chunks(std::string_view in, std::size_t chunk)
{
    popgate::proto::data_reader r(1 << 16, 1000);
    run res{popgate::proto::data_reader::status::more, 0, {}, false};
    std::size_t pos = 0;
    while (pos < in.size()) {
        std::size_t consumed = 0;
        auto const part = in.substr(pos, chunk);
        res.st = r.feed(part, consumed, res.out);
        POPGATE_FUZZ_CHECK(consumed <= part.size());
        pos += consumed;
        if (res.st == popgate::proto::data_reader::status::done) break;
        POPGATE_FUZZ_CHECK(consumed == part.size());
    }
    res.used = pos;
    res.error = r.error().has_value();
    return res;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    auto const in = as_view(data, size);
    auto const whole = feed_in_chunks(in, in.size() + 1);
    auto const bytewise = feed_in_chunks(in, 1);
    POPGATE_FUZZ_CHECK(whole.st == bytewise.st);
    POPGATE_FUZZ_CHECK(whole.used == bytewise.used);
    POPGATE_FUZZ_CHECK(whole.error == bytewise.error);
    if (!whole.error) POPGATE_FUZZ_CHECK(whole.out == bytewise.out);
    if (whole.st == popgate::proto::data_reader::status::done) {
        auto const consumed = in.substr(0, whole.used);
        // The end is the terminator: ".\r\n" alone at the start, or "\r\n.\r\n".
        POPGATE_FUZZ_CHECK(consumed == ".\r\n" ||
                           (consumed.size() >= 5 && consumed.substr(consumed.size() - 5) == "\r\n.\r\n"));
    }
    return 0;
}
