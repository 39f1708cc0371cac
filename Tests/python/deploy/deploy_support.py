"""Helpers of the deployment tests: the repository's paths, the conveyor binary, unit-file parsing."""

import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
UNITS_DIR = REPO / "ops" / "systemd"
UNITS = ["conveyor-broker.service", "conveyor-gateway.service", "conveyor-worker@.service"]
ENV_EXAMPLE = REPO / "ops" / "conveyor.env.example"
INSTALLED_BIN = "/usr/local/bin/conveyor"
BIN = Path(os.environ.get("CONVEYOR_BIN") or REPO / ".build" / "debug" / "conveyor")


def conveyor_bin(limit=90):
    """The conveyor binary; waits a while if it is being rebuilt, skips if there is none."""
    deadline = time.monotonic() + limit
    while not (BIN.is_file() and os.access(BIN, os.X_OK)):
        if time.monotonic() > deadline:
            pytest.skip("no conveyor binary at %s (set CONVEYOR_BIN, or build it with swift build)" % BIN)
        time.sleep(2)
    return BIN


_help_cache = {}


def help_text(sub):
    if sub not in _help_cache:
        proc = subprocess.run([str(conveyor_bin()), *sub.split(), "--help"], capture_output=True, timeout=30)
        assert proc.returncode == 0, (sub, proc.stderr)
        _help_cache[sub] = proc.stdout.decode()
    return _help_cache[sub]


def help_flags(sub):
    """The long flags `conveyor SUB --help` lists."""
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", help_text(sub)))


def parse_unit(path):
    """{section: [(key, value), …]} of a unit file (comments and blank lines dropped,
    backslash-continued lines joined)."""
    sections = {}
    current = None
    pending = ""
    for raw in Path(path).read_text().splitlines():
        line = pending + raw
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        s = line.strip()
        if not s or s[0] in "#;":
            continue
        if s.startswith("[") and s.endswith("]"):
            current = s[1:-1]
            sections.setdefault(current, [])
            continue
        key, sep, value = s.partition("=")
        assert sep and current, "%s: cannot parse %r" % (path, line)
        sections[current].append((key.strip(), value.strip()))
    return sections


def values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def specifiers(text, instance):
    return (text.replace("%i", instance).replace("%I", instance).replace("%H", "testhost")
            .replace("%S", "/var/lib").replace("%C", "/var/cache").replace("%%", "%"))


def unit_environment(unit, instance=""):
    """The variables the unit's Environment= lines set (EnvironmentFile= not read)."""
    env = {}
    for value in values(unit, "Service", "Environment"):
        for assignment in shlex.split(specifiers(value, instance)):
            k, _, v = assignment.partition("=")
            env[k] = v
    return env


def exec_start_argv(unit, env, instance=""):
    """ExecStart split into words as systemd does it: "${VAR}" is one word, "$VAR" splits."""
    lines = values(unit, "Service", "ExecStart")
    assert len(lines) == 1, lines
    argv = []
    for word in shlex.split(specifiers(lines[0].lstrip("-@:+!"), instance)):
        m = re.fullmatch(r"\$\{(\w+)\}", word)
        if m:
            argv.append(env.get(m.group(1), ""))
            continue
        m = re.fullmatch(r"\$(\w+)", word)
        if m:
            argv.extend(env.get(m.group(1), "").split())
            continue
        argv.append(re.sub(r"\$\{(\w+)\}", lambda mm: env.get(mm.group(1), ""), word))
    return argv


def exec_start_variables(unit):
    """The names of the variables ExecStart expands ($VAR and ${VAR})."""
    (line,) = values(unit, "Service", "ExecStart")
    return {a or b for a, b in re.findall(r"\$\{(\w+)\}|\$(\w+)", line)}


def swift_string_literals(src):
    """The contents of every string literal of a Swift source: "...", triple-quoted and
    raw (#"..."#) ones, including literals inside interpolations; comments are skipped."""
    out = []
    n = len(src)

    def code(i, in_interpolation):
        depth = 0
        while i < n:
            if src.startswith("//", i):
                j = src.find("\n", i)
                i = n if j < 0 else j
                continue
            if src.startswith("/*", i):
                level, i = 1, i + 2
                while i < n and level:
                    if src.startswith("/*", i):
                        level, i = level + 1, i + 2
                    elif src.startswith("*/", i):
                        level, i = level - 1, i + 2
                    else:
                        i += 1
                continue
            c = src[i]
            if c == '"' or (c == "#" and re.match(r'#+"', src[i:i + 8])):
                i = string(i)
                continue
            if in_interpolation:
                if c == "(":
                    depth += 1
                elif c == ")":
                    if depth == 0:
                        return i + 1
                    depth -= 1
            i += 1
        return i

    def string(i):
        hashes = 0
        while src[i] == "#":
            hashes, i = hashes + 1, i + 1
        multi = src.startswith('"""', i)
        i += 3 if multi else 1
        close = ('"""' if multi else '"') + "#" * hashes
        escape = "\\" + "#" * hashes
        buf = []
        while i < n:
            if src.startswith(close, i):
                i += len(close)
                break
            if src.startswith(escape, i):
                j = i + len(escape)
                if j < n and src[j] == "(":
                    buf.append(" ")
                    i = code(j + 1, True)
                    continue
                buf.append(src[i:j + 1])
                i = j + 1
                continue
            if not multi and src[i] == "\n":
                break
            buf.append(src[i])
            i += 1
        out.append("".join(buf))
        return i

    code(0, False)
    return out
