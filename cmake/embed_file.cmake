# Writes IN as a C++ raw string named NAME into OUT (namespace popgate::generated).
file(READ ${IN} text)
file(WRITE ${OUT} "// generated from ${IN}: do not edit\n#pragma once\n#include <string_view>\nnamespace popgate::generated {\ninline constexpr std::string_view ${NAME} = R\"popgate_embed(${text})popgate_embed\";\n}\n")
