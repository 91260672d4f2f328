// The TOML config loader: any text gives settings or line-numbered errors.
#include "fuzz_support.hpp"
#include "popgate/config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size)
{
    auto const r = popgate::config::parse(as_view(data, size), "fuzz.toml");
    POPGATE_FUZZ_CHECK(r.value.has_value() == r.errors.empty());
    for (auto const& e : r.errors) POPGATE_FUZZ_CHECK(!e.message.empty());
    return 0;
}
