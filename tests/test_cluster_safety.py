"""Cluster safety, by construction: no transition touches a key it was not given.

A static check over every ``shared/scripts/*.lua`` (with ``lib.lua`` prepended, as the
scripts are loaded): the key argument of every ``redis.call``/``redis.pcall`` must be
*tag-bearing* — ``KEYS[n]``, a local alias of it (or a field of a local table of them),
an ``ARGV[n]`` the header documents as a prefix, or a concatenation that starts with one
of those. Parameters of the ``lib.lua`` helpers are tag-bearing when every call site
passes a tag-bearing value (or a table of them), found by iterating to a fixpoint. All
keys of one queue carry its hash tag ``{queue}``, so a script that passes this check
touches one Cluster slot. The checker is tested on deliberately bad snippets too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shared.lua import TRANSITIONS, source

SCRIPTS = Path(__file__).resolve().parents[1] / "shared" / "scripts"
NO_KEY = {"TIME", "PUBLISH"}
TWO_KEYS = {"LMOVE", "RPOPLPUSH", "SMOVE", "RENAME", "COPY", "BLMOVE"}
ALL_KEYS = {"DEL", "EXISTS", "UNLINK", "MGET", "TOUCH"}
FUNC_RE = re.compile(r"^local function (\w+)\(([^)]*)\)\n(.*?)^end\b", re.M | re.S)
LOOP_RE = re.compile(r"for\s+_\s*,\s*(\w+)\s+in\s+ipairs\(\{(.*)\}\)\s+do")
LOCAL_RE = re.compile(r"^\s*local\s+([\w\s,]+?)\s*=\s*(.+)$", re.M)
NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?"


@dataclass
class Scope:
    name: str
    body: str
    params: list[str] = field(default_factory=list)
    before: str = ""  # the text before a helper's definition: its visible upvalues
    tagged: set[str] = field(default_factory=set)  # names holding tag-bearing strings
    tables: set[str] = field(default_factory=set)  # names of tables of tag-bearing strings


def split_args(text: str) -> list[str]:
    """Split at top-level commas (outside brackets and quotes)."""
    out, depth, quote, cur = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    return [*out, cur.strip()] if cur.strip() else out


def calls(body: str, callee: str) -> list[list[str]]:
    """The argument lists of every call ``callee(...)`` in ``body``."""
    found = []
    for match in re.finditer(rf"(?<![\w.]){re.escape(callee)}\s*\(", body):
        depth, i = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(body[i], 0)
            i += 1
        found.append(split_args(body[match.end():i - 1]))
    return found


def documented_prefixes(text: str) -> set[str]:
    return {f"ARGV[{n}]" for n, doc in re.findall(r"^-- ARGV\[(\d+)\]\s+(.*)$", text, re.M)
            if "prefix" in doc.lower()}


def is_tagged(expr: str, scope: Scope, prefixes: set[str]) -> bool:
    head = expr.split("..")[0].strip()
    if re.fullmatch(r"KEYS\[\d+\]", head) or head in prefixes or head in scope.tagged:
        return True
    base, _, attr = head.partition(".")
    return bool(attr) and base in scope.tables


def collect_locals(scope: Scope, prefixes: set[str], main: Scope) -> None:
    declared = {n for names, _ in LOCAL_RE.findall(scope.before) for n in split_names(names)}
    upvalues = declared - set(scope.params)
    scope.tagged |= upvalues & main.tagged
    scope.tables |= upvalues & main.tables
    for var, items in LOOP_RE.findall(scope.body):
        elements = split_args(items)
        if elements and all(is_tagged(e, scope, prefixes) for e in elements):
            scope.tagged.add(var)
        elif elements and all(e.startswith("{") and is_tagged(split_args(e[1:-1])[0], scope,
                                                              prefixes) for e in elements):
            scope.tagged.add(f"{var}[1]")
    changed = True
    while changed:
        changed = False
        for names, values in LOCAL_RE.findall(scope.body):
            for var, value in zip(split_names(names), split_args(values), strict=False):
                changed |= classify_local(scope, var, value, prefixes)


def split_names(names: str) -> list[str]:
    return [n.strip() for n in names.split(",")]


def classify_local(scope: Scope, var: str, value: str, prefixes: set[str]) -> bool:
    if value.startswith("{") and "=" in value:
        fields = [f.split("=", 1) for f in split_args(value[1:-1])]
        tagged = all(is_tagged(v.strip(), scope, prefixes) for _, v in fields)
        if fields and tagged and var not in scope.tables:
            scope.tables.add(var)
            return True
        return False
    if var not in scope.tagged and is_tagged(value, scope, prefixes):
        scope.tagged.add(var)
        return True
    return False


def join_braces(text: str) -> str:
    """Join the lines of a table constructor that spans several lines."""
    out: list[str] = []
    pending = ""
    for line in text.splitlines():
        pending = f"{pending} {line.strip()}" if pending else line
        if pending.count("{") <= pending.count("}"):
            out.append(pending)
            pending = ""
    return "\n".join([*out, pending])


def scopes_of(text: str) -> list[Scope]:
    text = join_braces(text)
    funcs = [Scope(m.group(1), m.group(3), split_names(m.group(2)) if m.group(2) else [],
                   FUNC_RE.sub("", text[:m.start()])) for m in FUNC_RE.finditer(text)]
    return [*funcs, Scope("<main>", FUNC_RE.sub("", text))]


def live(scopes: list[Scope]) -> list[Scope]:
    """The main chunk (first) and every helper it calls, directly or not."""
    alive = [s for s in scopes if s.name == "<main>"]
    grew = True
    while grew:
        more = [s for s in scopes if s not in alive
                and any(calls(c.body, s.name) for c in alive)]
        alive += more
        grew = bool(more)
    return alive


def infer(scopes: list[Scope], prefixes: set[str]) -> None:
    """Fixpoint: a helper's parameter is tag-bearing (or a table) if every call site says so."""
    scopes = live(scopes)
    funcs = {s.name: s for s in scopes if s.name != "<main>"}
    changed = True
    while changed:
        changed = False
        for scope in scopes:
            collect_locals(scope, prefixes, scopes[0])
        for func in funcs.values():
            sites = [(caller, args) for caller in scopes for args in calls(caller.body, func.name)]
            for i, param in enumerate(func.params):
                args = [(c, a[i]) for c, a in sites if i < len(a)]
                if not args or len(args) < len(sites):
                    continue
                if param not in func.tagged and all(is_tagged(a, c, prefixes) for c, a in args):
                    func.tagged.add(param)
                    changed = True
                if param not in func.tables and all(a in c.tables for c, a in args):
                    func.tables.add(param)
                    changed = True


def key_args(args: list[str]) -> list[str]:
    command = args[0].strip("'\"").upper()
    if command in NO_KEY:
        return []
    if command in ALL_KEYS:
        return args[1:]
    return args[1:3] if command in TWO_KEYS else args[1:2]


def violations(text: str) -> list[str]:
    """Every redis.call/pcall key argument that is not provably tag-bearing."""
    prefixes = documented_prefixes(text)
    scopes = live(scopes_of(text))  # a helper this script never calls is not checked here
    infer(scopes, prefixes)
    bad = []
    for scope in scopes:
        for callee in ("redis.call", "redis.pcall"):
            for args in calls(scope.body, callee):
                if not re.fullmatch(r"'[A-Za-z]+'|\"[A-Za-z]+\"", args[0]):
                    bad.append(f"{scope.name}: command name is not a literal: {args[0]}")
                    continue
                bad += [f"{scope.name}: {args[0]} key {k!r} is not from KEYS or a tagged prefix"
                        for k in key_args(args) if not is_tagged(k, scope, prefixes)]
    return bad


def test_every_script_file_is_a_checked_transition():
    files = {p.stem for p in SCRIPTS.glob("*.lua")} - {"lib"}
    assert files == set(TRANSITIONS)


@pytest.mark.parametrize("name", TRANSITIONS)
def test_transition_touches_only_keys_it_was_given(name):
    assert violations(source(name)) == []


def test_every_lib_helper_is_checked_by_some_transition():
    helpers = {m.group(1) for m in FUNC_RE.finditer((SCRIPTS / "lib.lua").read_text())}
    used = {h for h in helpers for name in TRANSITIONS if calls(source(name), h)}
    assert used == helpers


# -- the checker itself, on snippets ----------------------------------------------------

HEADER = "-- KEYS[1] list ready\n-- ARGV[1] job key prefix\n-- ARGV[2] worker id\n"
GOOD = HEADER + """local k_ready, job_prefix = KEYS[1], ARGV[1]
local k = {ready = KEYS[1]}
local jk = job_prefix .. ARGV[2]
redis.call('LPUSH', k_ready, 'x')
redis.call('LMOVE', k.ready, KEYS[1], 'RIGHT', 'LEFT')
redis.call('HSET', jk, 'state', 'queued')
redis.call('PUBLISH', 'phx:wake', 'q')
"""

BAD = {
    "literal key": "redis.call('SADD', 'phx:queues', 'q')",
    "undocumented ARGV": "redis.call('DEL', ARGV[2])",
    "built from a literal": "local k = 'phx:{' .. ARGV[2] .. '}:ready'\nredis.call('LLEN', k)",
    "second key of a move": "redis.call('LMOVE', KEYS[1], ARGV[2], 'RIGHT', 'LEFT')",
    "any key of a DEL": "redis.call('DEL', KEYS[1], 'other')",
    "computed command": "local c = 'DEL'\nredis.call(c, KEYS[1])",
    "helper passed a bad key": "local function touch(key)\n  redis.call('GET', key)\nend\n"
                               "touch(KEYS[1])\ntouch(ARGV[2])",
    "helper table with a bad field": "local function f(t)\n  redis.call('GET', t.a)\nend\n"
                                     "local k = {a = KEYS[1], b = ARGV[2]}\nf(k)",
    "loop over a bad key": "for _, z in ipairs({KEYS[1], ARGV[2]}) do redis.call('DEL', z) end",
    "closure over a bad upvalue": "local p = ARGV[2]\nlocal function f(id)\n"
                                  "  redis.call('DEL', p .. id)\nend\nf('x')",
    "helper defined before the alias": "local function f(id)\n  redis.call('DEL', p .. id)\n"
                                       "end\nlocal p = ARGV[1]\nf('x')",
}


def test_checker_accepts_a_good_snippet():
    assert violations(GOOD) == []


@pytest.mark.parametrize("snippet", BAD.values(), ids=BAD.keys())
def test_checker_rejects_a_bad_snippet(snippet):
    assert violations(HEADER + snippet) != []
