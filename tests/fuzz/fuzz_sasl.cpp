// base64 and the SASL mechanisms' response decoders.
#include "fuzz_support.hpp"
#include "popgate/proto/sasl.hpp"

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    using namespace popgate::proto;
    auto const in = as_view(data, size);
    if (auto d = base64_decode(in)) POPGATE_FUZZ_CHECK(base64_encode(*d) == in);
    POPGATE_FUZZ_CHECK(base64_decode(base64_encode(in)).value() == in);
    for (auto m : {sasl_mech::plain, sasl_mech::login, sasl_mech::cram_md5}) {
        sasl_server s(m, "<1.2@fuzz>");
        auto step = s.start(std::nullopt);
        // Feed the input line by line as client responses.
        std::size_t pos = 0;
        for (int i = 0; i < 4 && step.what == sasl_step::kind::challenge && pos <= in.size(); ++i) {
            auto const nl = in.find('\n', pos);
            step = s.next(in.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos));
            pos = nl == std::string_view::npos ? in.size() + 1 : nl + 1;
        }
        if (step.what == sasl_step::kind::check_password) POPGATE_FUZZ_CHECK(!step.authcid.empty());
        sasl_server t(m, "<1.2@fuzz>");
        (void)t.start(in);
    }
    (void)parse_plain(in);
    return 0;
}
