"""ops/DEPLOY.md and ops/handlers/README.md name only flags, variables and units that exist."""

import re

from deploy_support import ENV_EXAMPLE, REPO, UNITS, help_flags

DOCS = [REPO / "ops" / "DEPLOY.md", REPO / "ops" / "handlers" / "README.md"]
SUBCOMMANDS = ["broker", "worker", "gateway", "submit", "status", "cancel", "stats", "events", "dead", "keygen", "token new"]
# Flags of other programs the documents show (swift build, useradd, systemctl, yt-dlp).
OTHER_TOOLS = {"--static-swift-stdlib", "--product", "--system", "--user-group", "--home-dir", "--shell",
               "--now", "--sub-langs"}


def test_documented_flags_exist():
    known = set()
    for sub in SUBCOMMANDS:
        known |= help_flags(sub)
    for doc in DOCS:
        flags = {m for m in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", doc.read_text())}
        unknown = sorted(flags - known - OTHER_TOOLS)
        assert not unknown, "%s names flags no conveyor subcommand has: %s" % (doc.name, unknown)


def test_documented_variables_exist_in_the_example():
    example = ENV_EXAMPLE.read_text()
    for doc in DOCS:
        names = set(re.findall(r"\b((?:CONVEYOR|MAX|ANALYSIS|WORKER)_[A-Z0-9_]*[A-Z0-9])\b", doc.read_text()))
        names -= {"CONVEYOR_BIN"}  # the test suite's binary, not a setting
        missing = sorted(n for n in names if not re.search(r"^#? ?%s=" % n, example, re.M))
        assert not missing, "%s names variables ops/conveyor.env.example does not document: %s" % (doc.name, missing)


def test_deploy_guide_covers_the_essentials():
    text = (REPO / "ops" / "DEPLOY.md").read_text()
    for unit in UNITS:
        assert unit.replace("@.service", "@") in text, unit
    for port in ("5555", "5556", "5557", "8001"):
        assert port in text
    for nginx in ("proxy_buffering off", "proxy_read_timeout", "proxy_http_version 1.1", "$http_upgrade",
                  "Connection $connection_upgrade"):
        assert nginx in text, nginx
    for topic in ("Securing a deployment", "CONVEYOR_API_TOKENS", "conveyor-journal.sqlite", "journal backup",
                  "## Sizing", "## Upgrading without losing tasks", "## When a piece dies"):
        assert topic in text, topic
