"""ops/conveyor.env.example documents every environment variable Conveyor reads.

A CONVEYOR_*, MAX_* or ANALYSIS_* name in a string literal of Sources/**/*.swift (the way the
CLI reads variables: env("NAME"), setting(flag, "NAME", …)), in the handlers or in the units
must have its own `# NAME=default` line in the example, so a new variable cannot ship
undocumented. The defaults the example shows must be the ones `--help` states.
"""

import re

import pytest

from deploy_support import ENV_EXAMPLE, REPO, UNITS, UNITS_DIR, help_text, parse_unit, swift_string_literals, values

NAME = re.compile(r"(?<![A-Za-z0-9_])((?:CONVEYOR|MAX|ANALYSIS)_[A-Z0-9_]*[A-Z0-9])(?![A-Za-z0-9_])")
# Names that can appear in a Swift string literal without being environment variables.
NOT_VARIABLES = set()


def documented():
    """{NAME: default shown} for every `NAME=value` or `# NAME=value` line of the example."""
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            out.setdefault(m.group(1), m.group(2))
    return out


def swift_variables():
    found = {}
    for path in sorted((REPO / "Sources").rglob("*.swift")):
        for literal in swift_string_literals(path.read_text(encoding="utf-8")):
            for name in NAME.findall(literal):
                found.setdefault(name, path.relative_to(REPO))
    return found


def test_literal_scanner_finds_the_known_variables():
    found = swift_variables()
    for name in ("CONVEYOR_BROKER", "CONVEYOR_DATA_DIR", "MAX_CONCURRENT_ANALYSIS_TASKS", "ANALYSIS_QUEUE_MAX_SIZE",
                 "ANALYSIS_TASK_TIMEOUT", "CONVEYOR_API_TOKENS", "CONVEYOR_PROGRESS_FD"):
        assert name in found, name


def test_every_variable_in_the_swift_sources_is_documented():
    doc = documented()
    missing = {n: str(p) for n, p in swift_variables().items() if n not in doc and n not in NOT_VARIABLES}
    assert not missing, ("variables read in Sources/ but not documented in ops/conveyor.env.example "
                         "(add a commented `# NAME=default` block): %s" % missing)


def test_handler_and_unit_variables_are_documented():
    doc = documented()
    names = set()
    for path in (REPO / "ops" / "handlers").iterdir():
        if path.suffix in (".py", ".sh"):
            names |= set(re.findall(r"\b(CONVEYOR_[A-Z0-9_]*[A-Z0-9])\b", path.read_text()))
    for name in UNITS:
        for line in values(parse_unit(UNITS_DIR / name), "Service", "Environment"):
            names |= set(re.findall(r"\b([A-Z][A-Z0-9_]*)=", line))
    names -= {"PYTHONDONTWRITEBYTECODE"}
    assert names and not names - set(doc), sorted(names - set(doc))


def test_readme_configuration_names_are_documented():
    readme = (REPO / "README.md").read_text()
    names = set(NAME.findall(readme))
    assert "CONVEYOR_RESULT_TTL" in names
    doc = documented()
    assert not names - set(doc), sorted(names - set(doc))


def test_announced_variables_are_documented():
    # Being added by other changes; documented ahead so their authors find the place.
    doc = documented()
    for name in ("CONVEYOR_TYPE_CONCURRENCY", "CONVEYOR_RATE_LIMITS", "CONVEYOR_COST_LIMITS", "CONVEYOR_AGING",
                 "CONVEYOR_CURVE_DIR", "CONVEYOR_CURVE_KEY", "CONVEYOR_CURVE_SERVER_KEY", "CONVEYOR_ENV_FILE"):
        assert name in doc, name
    assert doc["CONVEYOR_TYPE_CONCURRENCY"] == "youtube=2,pdf=3"
    assert doc["CONVEYOR_RATE_LIMITS"] == "youtube=15/min,pdf=2/s"
    assert doc["CONVEYOR_COST_LIMITS"] == "youtube=1000000/min"


@pytest.mark.parametrize("sub", ["broker", "worker", "gateway", "submit", "events"])
def test_defaults_match_help(sub):
    doc = documented()
    text = " ".join(help_text(sub).split())
    pairs = re.findall(r"\(env ([A-Z][A-Z0-9_]*), default ([^)\s;]+)\)", text)
    for name, default in pairs:
        assert name in doc, name
        assert doc[name] == default.rstrip(".,"), "%s: example shows %r, `conveyor %s --help` says %r" % (
            name, doc[name], sub, default)


def test_example_is_a_valid_environment_file():
    # systemd EnvironmentFile= and `set -a; . FILE` both read it: KEY=value lines and comments only,
    # and nothing is switched on by copying it unchanged.
    for n, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pytest.fail("line %d is an active setting, the example must only document: %r" % (n, line))
    for name, value in documented().items():
        if " " in value:
            assert value[0] in "\"'" and value[-1] == value[0], "%s: quote values with spaces: %r" % (name, value)


def test_every_block_has_a_description():
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^# ?([A-Z][A-Z0-9_]*)=", line)
        if m and (m.group(1).startswith(("CONVEYOR_", "MAX_", "ANALYSIS_"))):
            j = i - 1
            while j >= 0 and re.match(r"^# ?[A-Z][A-Z0-9_]*=", lines[j]):
                j -= 1
            assert j >= 0 and lines[j].startswith("#") and len(lines[j]) > 3, \
                "%s needs a comment above it saying what it does" % m.group(1)
