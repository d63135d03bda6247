# kadr_test(NAME SOURCES ... DEPS ... LABEL unit|integration|browser)
# One GoogleTest binary per component; every test case is registered with CTest.
# Each binary also joins the target <LABEL>_tests (unit_tests, integration_tests), so one label's
# binaries build alone: `cmake --build --preset release --target unit_tests` (scripts/test.sh unit).
function(kadr_test name)
  cmake_parse_arguments(ARG "" "LABEL" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gtest_main GTest::gmock)
  target_compile_definitions(${name} PRIVATE KADR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  kadr_warnings(${name})
  kadr_sanitize(${name})
  include(GoogleTest)
  gtest_discover_tests(${name} PROPERTIES LABELS ${ARG_LABEL} DISCOVERY_TIMEOUT 60)
  if(NOT TARGET ${ARG_LABEL}_tests)
    add_custom_target(${ARG_LABEL}_tests)
  endif()
  add_dependencies(${ARG_LABEL}_tests ${name})
endfunction()
