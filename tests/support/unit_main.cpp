#define BOOST_TEST_MODULE popgate
#include <boost/test/unit_test.hpp>
