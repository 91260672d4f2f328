// Boost.JSON's implementation, compiled once into popgate_core (Debian's
// libboost1.81-dev ships it as headers; no libboost_json is linked).
#include <boost/json/src.hpp>
