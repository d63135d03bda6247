#include "cli/app.h"

int main(int argc, char** argv) { return kadr::cli::Run(argc, argv); }
