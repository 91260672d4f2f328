#include "popgate/proto/errc.hpp"

#include <string>

namespace popgate::proto {
namespace {

class category final : public boost::system::error_category {
public:
    char const* name() const noexcept override { return "popgate.proto"; }
    std::string message(int ev) const override
    {
        switch (static_cast<errc>(ev)) {
        case errc::empty_line: return "empty command line";
        case errc::line_too_long: return "line too long";
        case errc::unknown_command: return "unknown command";
        case errc::bad_arguments: return "invalid arguments";
        case errc::bare_cr_or_lf: return "bare CR or LF not allowed";
        case errc::nul_byte: return "NUL byte not allowed";
        case errc::bad_address: return "invalid address syntax";
        case errc::bad_parameter: return "invalid parameter";
        case errc::bad_number: return "invalid number";
        case errc::bad_base64: return "invalid base64";
        case errc::bad_cidr: return "invalid network (CIDR)";
        case errc::bad_address_literal: return "invalid IP address";
        case errc::too_long: return "too long";
        case errc::out_of_range: return "out of range";
        case errc::too_many_attributes: return "too many attributes";
        case errc::bad_attribute: return "malformed attribute";
        }
        return "unknown proto error";
    }
};

}  // namespace

boost::system::error_category const& proto_category() noexcept
{
    static category const c;
    return c;
}

}  // namespace popgate::proto
