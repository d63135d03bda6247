# kadr_library(NAME SOURCES ... [PUBLIC_DEPS ...] [PRIVATE_DEPS ...])
# One static library per component, target kadr_<NAME>, alias kadr::<NAME>.
# Headers are included by module path ("imaging/decode.h") from src/.
# -Wno-restrict: GCC 12 at -O3 reports false positives inside std::string's operator+
# (GCC bug 105329); -Wno-deprecated-enum-enum-conversion: OpenCV 4.6's headers.
function(kadr_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                           -Wno-deprecated-enum-enum-conversion
                                           -Wno-missing-field-initializers -Wno-restrict)
  if(KADR_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

function(kadr_sanitize target)
  if(KADR_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer
                                             -fno-sanitize-recover=undefined)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()

function(kadr_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(kadr_${name} STATIC ${ARG_SOURCES})
  add_library(kadr::${name} ALIAS kadr_${name})
  target_include_directories(kadr_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(kadr_${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
  kadr_warnings(kadr_${name})
  kadr_sanitize(kadr_${name})
endfunction()

function(kadr_executable name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  kadr_warnings(${name})
  kadr_sanitize(${name})
endfunction()
