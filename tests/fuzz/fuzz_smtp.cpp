// SMTP command line and path/parameter parsers.
#include "fuzz_support.hpp"
#include "popgate/proto/smtp.hpp"

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    using namespace popgate::proto;
    auto const in = as_view(data, size);
    if (auto c = parse_smtp(in, 4096)) {
        if (c->verb == smtp_verb::mail) {
            if (auto m = parse_mail_from(c->args)) {
                POPGATE_FUZZ_CHECK(m->path.local.size() <= 66);  // 64 plus quotes
                (void)m->path.to_string();
            }
        }
        if (c->verb == smtp_verb::rcpt) {
            if (auto r = parse_rcpt_to(c->args)) POPGATE_FUZZ_CHECK(!r->path.null_path);
        }
    }
    (void)parse_mail_from(in);
    (void)parse_rcpt_to(in);
    (void)parse_size_param(in);
    reply_parser rp;
    (void)rp.feed(in);
    return 0;
}
