#!/usr/bin/env python3
"""The configuration table in docs/operations.md matches the binary's settings.

Usage: settings_doc_test.py KADR_BINARY OPERATIONS_MD

Reads `kadr --help` and `kadr <command> --help` for every subcommand listed by `kadr --help`
(CLI11 prints each option's environment variable as `(Env:KADR_X)`), reads the one table under
"## Configuration" in docs/operations.md, and checks:

  a. every option except --help / --version has a KADR_* environment variable, except those of
     the one-shot tools `detect` and `models` (arguments of one run, not settings of a
     service; any of their options that has a variable is checked like the others);
  b. the table's environment names are exactly the binary's (missing and extra both reported);
  c. each environment name has exactly one row;
  d. a row's commands are the commands that accept its option ("all" for global options);
  e. a row's flag cell names exactly the option names the binary uses for that variable;
  f. a row's setting is the variable without KADR_, in lower case (`--config` has none: "–");
  g. every default the binary prints (`--x INT=8080`) appears in the row's default cell.

Then it checks that the checks can fail: the table with a row removed, a bogus row added and
a row duplicated must each be rejected. Exit 0 when everything holds, 1 otherwise.
Python 3 standard library only.
"""

import os
import re
import subprocess
import sys

SKIPPED_OPTIONS = {"--help", "--version"}
OPTION_LINE = re.compile(r"^  (-[^\s]+)(.*)$")
ENV = re.compile(r"\(Env:([A-Za-z0-9_]+)\)")
ENV_NAME = re.compile(r"\bKADR_[A-Z0-9_]+\b")
LONG_FLAG = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")
DEFAULT = re.compile(r"=(\S+)")


def run_help(binary, args):
    # A KADR_* variable of the caller (KADR_CONFIG naming a missing file, ...) must not make
    # --help fail; the help text does not depend on the environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KADR_")}
    p = subprocess.run([binary] + args + ["--help"], capture_output=True, text=True, env=env,
                       timeout=30)
    if p.returncode != 0:
        raise SystemExit(f"FAIL: `kadr {' '.join(args + ['--help'])}` exited {p.returncode}:\n"
                         f"{p.stdout}{p.stderr}")
    return p.stdout


def parse_subcommands(text):
    names, inside = [], False
    for line in text.splitlines():
        if line.strip() == "Subcommands:":
            inside = True
            continue
        if inside:
            if not line.strip():
                break
            m = re.match(r"^  (\S+)", line)
            if m:
                names.append(m.group(1))
    return names


def parse_options(text):
    """[(flag, env or None, default or None)] for each option line of a CLI11 help text."""
    out = []
    for line in text.splitlines():
        m = OPTION_LINE.match(line)
        if not m:
            continue
        names = [n for n in re.sub(r"\{.*\}$", "", m.group(1)).split(",") if n]
        flag = next((n for n in names if n.startswith("--")), names[0])
        rest = m.group(2)
        env = ENV.search(rest)
        # The name column ends at two spaces (then the description) or the line's end; a
        # default is printed as TYPE=VALUE inside it.
        column = re.split(r"\s{2,}", rest.strip())[0] if rest.strip() else ""
        column = ENV.sub("", column)
        default = None
        d = DEFAULT.search(column)
        if d and d.group(1) not in ("[]", "{}", '""'):
            default = d.group(1)
        out.append((flag, env.group(1) if env else None, default))
    return out


def binary_settings(binary):
    """({env: {"commands": set, "flags": set, "defaults": set}}, [options without env])."""
    top = run_help(binary, [])
    commands = parse_subcommands(top)
    if not commands:
        raise SystemExit("FAIL: no subcommands found in `kadr --help`:\n" + top)
    settings, missing_env = {}, []

    def add(command_set, label, options):
        for flag, env, default in options:
            if flag in SKIPPED_OPTIONS:
                continue
            if not env or not env.startswith("KADR_"):
                missing_env.append(f"{label} {flag}" + (f" (env {env})" if env else ""))
                continue
            s = settings.setdefault(env, {"commands": set(), "flags": set(), "defaults": set()})
            s["commands"] |= command_set
            s["flags"].add(flag)
            if default is not None:
                s["defaults"].add(default)

    add(set(commands), "kadr (global)", parse_options(top))
    for c in commands:
        add({c}, f"kadr {c}", parse_options(run_help(binary, [c])))
    return settings, missing_env, commands


def split_row(line):
    cells = re.split(r"(?<!\\)\|", line.strip())
    if cells and cells[0] == "":
        cells = cells[1:]
    if cells and cells[-1] == "":
        cells = cells[:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def configuration_table(doc_text):
    """The rows (dicts keyed by header) of the table under "## Configuration"."""
    section = re.search(r"^## Configuration\n(.*?)(?=^## |\Z)", doc_text, re.S | re.M)
    if not section:
        raise SystemExit("FAIL: no '## Configuration' section in the docs")
    lines = section.group(1).splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            continue
        header = [h.lower() for h in split_row(line)]
        if "environment" in header and "setting" in header:
            rows = []
            for row_line in lines[i + 2:]:
                if not row_line.startswith("|"):
                    break
                cells = split_row(row_line)
                rows.append(dict(zip(header, cells + [""] * (len(header) - len(cells)))))
            return header, rows
    raise SystemExit("FAIL: no table with 'setting' and 'environment' columns under "
                     "'## Configuration'")


def tokens(cell):
    return set(re.split(r"[^A-Za-z0-9._:/-]+", cell))


def check(settings, missing_env, commands, header, rows):
    errors = []
    for need in ("setting", "environment", "flag", "commands", "default", "meaning"):
        if need not in header:
            errors.append(f"the table has no '{need}' column (columns: {header})")
    if errors:
        return errors

    # a. every option has a KADR_* variable.
    for o in missing_env:
        errors.append(f"option without a KADR_* environment variable: {o}")

    # c. one row per variable, one variable per row.
    by_env = {}
    for r in rows:
        names = ENV_NAME.findall(r["environment"])
        if len(names) != 1:
            errors.append(f"row must name exactly one KADR_* variable, has {names}: "
                          f"{r['environment']!r}")
        for n in names:
            by_env.setdefault(n, []).append(r)
    for n, rs in sorted(by_env.items()):
        if len(rs) > 1:
            errors.append(f"{n} appears in {len(rs)} rows (want exactly one)")

    # b. the same variables as the binary.
    doc_envs, bin_envs = set(by_env), set(settings)
    for n in sorted(bin_envs - doc_envs):
        errors.append(f"missing from the docs table: {n} ({', '.join(sorted(settings[n]['flags']))}"
                      f" of {', '.join(sorted(settings[n]['commands']))})")
    for n in sorted(doc_envs - bin_envs):
        errors.append(f"in the docs table but not in the binary: {n}")

    all_commands = set(commands)
    for n in sorted(doc_envs & bin_envs):
        r, s = by_env[n][0], settings[n]
        # d. commands.
        words = tokens(r["commands"].replace("`", " "))
        listed = all_commands if "all" in words else words & all_commands
        if listed != s["commands"]:
            errors.append(f"{n}: commands column says {sorted(listed)}, the binary has it in "
                          f"{sorted(s['commands'])}")
        # e. flags.
        flags = set(LONG_FLAG.findall(r["flag"]))
        flags |= set(re.findall(r"(?<![\w-])(-[a-zA-Z])\b", r["flag"])) & s["flags"]
        if flags != s["flags"]:
            errors.append(f"{n}: flag column names {sorted(flags)}, the binary {sorted(s['flags'])}")
        # f. setting key.
        setting = r["setting"].strip("` ")
        want = "–" if n == "KADR_CONFIG" else n[len("KADR_"):].lower()
        if setting != want and not (want == "–" and setting in ("-", "—", "")):
            errors.append(f"{n}: setting column {r['setting']!r}, want `{want}`")
        # g. defaults.
        cell = tokens(r["default"].replace("`", " "))
        for d in sorted(s["defaults"]):
            if d not in cell:
                errors.append(f"{n}: the binary's default {d!r} is not in the default column "
                              f"{r['default']!r}")
    return errors


def mutations(header, rows):
    """Broken copies of the table, each of which the checks must reject."""
    bogus = dict(rows[0])
    bogus["environment"] = "`KADR_NO_SUCH_SETTING`"
    bogus["setting"] = "`no_such_setting`"
    yield "a row removed", rows[1:]
    yield "a bogus row added", rows + [bogus]
    yield "a row duplicated", rows + [dict(rows[-1])]


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    binary, doc = sys.argv[1], sys.argv[2]
    settings, missing_env, commands = binary_settings(binary)
    with open(doc, encoding="utf-8") as f:
        header, rows = configuration_table(f.read())
    print(f"binary: {len(commands)} commands ({', '.join(commands)}), {len(settings)} KADR_* "
          f"variables; docs table: {len(rows)} rows")

    errors = check(settings, missing_env, commands, header, rows)
    for e in errors:
        print("FAIL:", e)

    # The checks must be able to fail: these broken tables are rejected whatever the binary.
    for what, broken in mutations(header, rows):
        if rows and not check(settings, [], commands, header, broken):
            errors.append(f"self-check: the table with {what} was accepted")
            print(f"FAIL: self-check: the table with {what} was accepted")

    if errors:
        print(f"{len(errors)} problem(s): keep docs/operations.md's configuration table and the "
              f"CLI options in step")
        return 1
    print("ok: every option has a KADR_* variable and one row in docs/operations.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
