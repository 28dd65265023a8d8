"""Damaged copies of the example policies (policies/*/): byte, line, token and YAML-value mutations.

`mutant(rng)` picks a case and applies one to three mutations to one of its files. Input number `i` of
seed `s` is always the same damage (`random.Random(f"{s}:{i}")`), so a finding is reproduced by its number.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"

YAML_VALUES = [
    '!!int "abc"', '!!float ""', '!!bool "maybe"', "!!int 1.5", "!!str", "!!null x", "!!binary x", "!!timestamp x",
    "!!python/object:os.system x", "!!set {a}", "!!omap [a]", "!<tag:yaml.org,2002:int> x", "!custom x",
    "1" * 5000, "-" + "9" * 4301, "1e999", "-1e999", ".nan", ".inf", "0x10", "0o17", "0b11", "1_000", "+1", "-1",
    "0", "4294967296", "18446744073709551616", "9223372036854775808", "3.14", "yes", "no", "on", "off", "~",
    "null", "[]", "{}", "[[[[[]]]]]", "{a: {b: {c: {}}}}", '""', "''", '"\\U0001F600"', "\U0001F600",
    '"\\e[31mred\\e[0m"', '"\\r\\n"', '"\\0"', '"a\\x00b"', "'%s%d%%'", "'{{ x }}'", "'${HOME}'", "*nowhere",
    "&a x", "'" + "x" * 100_000 + "'", "|\n  block", ">-\n  folded", "? complex\n: key", "1:2:3", "2001-12-14",
    "'../../etc/passwd'", "'/dev/null'", "'\U0010FFFF'", "'\\ud800'", '"\\ud83d\\ude00"', "!!int", "=", "<<: *x",
    "0.00001", "99.99995", "100.0001", "1e-4", "-0.0", "1500ms", "4294967296s", "10.0.0.1/8", "::/129", "[v1, {service: x}]",
]
"""Values that replace a YAML scalar: explicit tags with bad values, huge integers, non-BMP text, escapes, and
the values issue 15's fields refuse or must take exactly (a fifth decimal, keepalive not in whole seconds, a CIDR
with host bits, a caller list with odd entries)."""

CONTROL = ["\x00", "\x01", "\x07", "\x1b", "\x1b[2J", "\r", "\x7f", "\x85", "\u2028", "\ufeff", "\t", "\x0b"]
UNICODE = ["\U0001F600", "\u00e9", "\u03bb", "\u200b", "\U0010FFFF", "\ufffd", "\u202e", "e\u0301"]

PYTHON_STATEMENTS = [
    "raise KeyboardInterrupt", "raise SystemExit(0)", "raise SystemExit(1)", "raise SystemExit('bye')",
    "import sys; sys.exit(0)", "raise GeneratorExit", "raise MemoryError", "raise RecursionError",
    "raise StopIteration", "1/0", "raise BaseException('x')",
    "class E(Exception):\n    def __str__(self): raise ValueError('no str')\nraise E()",
    "class B(BaseException):\n    def __str__(self): raise RuntimeError('no str')\nraise B()",
    "port = Service(name='big', port=10**5000)", "s = Service(name='x', port=10**5000, app_port=1)",
    "evil = Service.model_construct(name='../x', port=9999, app_port=9998)",
    "evil2 = Service.model_construct(name='x', port='abc')",
    "def f(): return f()\nf()", "x = [Mesh(name='m')] * 3", "__all__ = 5", "mesh = None", "mesh = object()",
    "mesh = Mesh.model_construct(name='UPPER')", "from compiler.policy import *", "import nonexistent_module",
]
"""Module-level statements added to a Python policy (exits and exceptions of every kind, validation bypass)."""

PYTHON_LITERALS = ["10**5000", "-1", "0", "None", "True", "'\\x1b[2J'", "'\U0001F600'", "[]", "{}", "1.5", "'a' * 100000",
                   "float('nan')", "object()", "b'bytes'", "(1,)", "'../x'", "2**32"]


@dataclass
class Mutant:
    case: str
    files: dict[str, bytes]
    steps: list[str]

    def describe(self) -> str:
        return f"{self.case}: " + "; ".join(self.steps)


def seeds() -> dict[str, dict[str, bytes]]:
    """Every example case: folder name -> {file name: bytes}."""
    out = {}
    for case in sorted(p for p in POLICIES.iterdir() if p.is_dir()):
        out[case.name] = {f.name: f.read_bytes() for f in sorted(case.iterdir()) if f.suffix in (".yaml", ".yml", ".py")}
    return out


def _pos(rng: random.Random, data: bytes) -> int:
    return rng.randrange(len(data) + 1)


def byte_mutation(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    op = rng.choice(["flip", "insert", "delete", "control", "unicode", "truncate", "repeat"])
    i = _pos(rng, data)
    if op == "flip" and data:
        i = min(i, len(data) - 1)
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1:], f"flip byte {i}"
    if op == "insert":
        b = bytes([rng.randrange(256)])
        return data[:i] + b + data[i:], f"insert byte {b!r} at {i}"
    if op == "delete":
        n = rng.randint(1, 16)
        return data[:i] + data[i + n:], f"delete {n} bytes at {i}"
    if op == "control":
        c = rng.choice(CONTROL)
        return data[:i] + c.encode() + data[i:], f"insert {c!r} at {i}"
    if op == "unicode":
        u = rng.choice(UNICODE)
        return data[:i] + u.encode("utf-8", "surrogatepass") + data[i:], f"insert {u!r} at {i}"
    if op == "repeat":
        j = min(len(data), i + rng.randint(1, 64))
        return data[:j] + data[i:j] * rng.randint(2, 50) + data[j:], f"repeat bytes {i}-{j}"
    return data[:i], f"truncate at {i}"


def line_mutation(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    lines = data.split(b"\n")
    i = rng.randrange(len(lines))
    op = rng.choice(["delete", "duplicate", "swap", "indent", "dedent"])
    if op == "delete":
        del lines[i]
    elif op == "duplicate":  # a duplicated key when the line is `key: value`
        lines.insert(i, lines[i])
    elif op == "swap":
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "indent":
        lines[i] = b"  " + lines[i]
    else:
        lines[i] = lines[i].lstrip()
    return b"\n".join(lines), f"{op} line {i + 1}"


_YAML_VALUE = re.compile(rb"^(\s*-?\s*[A-Za-z_][\w-]*:\s)(.+)$|^(\s*-\s)(.+)$", re.M)
_YAML_KEY = re.compile(rb"^(\s*-?\s*)([A-Za-z_][\w-]*)(:)", re.M)


def yaml_mutation(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    op = rng.choice(["value", "value", "value", "key", "swap-type"])
    if op == "key":
        keys = list(_YAML_KEY.finditer(data))
        if keys:
            m = rng.choice(keys)
            new = rng.choice([m.group(2) + b"x", m.group(2)[:-1], m.group(2).upper(), b"kind", b"name", b"\xf0\x9f\x98\x80"])
            return data[:m.start(2)] + new + data[m.end(2):], f"rename key {m.group(2)!r} -> {new!r}"
    values = list(_YAML_VALUE.finditer(data))
    if not values:
        return byte_mutation(rng, data)
    m = rng.choice(values)
    group = 2 if m.group(2) is not None else 4
    old = m.group(group)
    if op == "swap-type":
        new = {True: b"[" + old + b"]", False: b"{x: " + old + b"}"}[rng.random() < 0.5]
    else:
        new = rng.choice(YAML_VALUES).encode("utf-8", "surrogatepass")
    return data[:m.start(group)] + new + data[m.end(group):], f"value {old[:40]!r} -> {new[:40]!r}"


_PY_LITERAL = re.compile(rb"(?<![\w.])(\d+|\"[^\"\n]*\"|'[^'\n]*')")


def python_mutation(rng: random.Random, data: bytes) -> tuple[bytes, str]:
    if rng.random() < 0.5:
        stmt = rng.choice(PYTHON_STATEMENTS)
        lines = data.split(b"\n")
        tops = [i for i, line in enumerate(lines) if line and not line[:1].isspace() and not line.startswith((b")", b"]", b"}"))]
        at = rng.choice(tops + [len(lines)])
        lines.insert(at, stmt.encode())
        return b"\n".join(lines), f"insert statement {stmt!r} at line {at + 1}"
    literals = list(_PY_LITERAL.finditer(data))
    if not literals:
        return line_mutation(rng, data)
    m = rng.choice(literals)
    new = rng.choice(PYTHON_LITERALS).encode()
    return data[:m.start()] + new + data[m.end():], f"literal {m.group()[:40]!r} -> {new[:40]!r}"


def mutant(rng: random.Random, cases: dict[str, dict[str, bytes]]) -> Mutant:
    python = sorted(c for c, files in cases.items() if any(n.endswith(".py") for n in files))
    # Python policies run code: a fifth of the mutants go to them (they are 1 case in 20)
    case = rng.choice(python) if python and rng.random() < 0.2 else rng.choice(sorted(cases))
    files = dict(cases[case])
    name = rng.choice(sorted(files))
    data = files[name]
    steps = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kinds = [byte_mutation, line_mutation] + ([python_mutation] * 2 if name.endswith(".py") else [yaml_mutation] * 3)
        data, step = rng.choice(kinds)(rng, data)
        steps.append(f"{name}: {step}")
    files[name] = data
    if rng.random() < 0.02:  # a file the loader cannot read
        steps.append(f"{name}: unreadable (mode 000)")
        files[name + "\0unreadable"] = b""
    return Mutant(case, files, steps)
