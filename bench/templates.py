"""Template rendering, compiling and SMS measuring speed: Herald against Jinja2 in the same run.

    python bench/templates.py                  # everything
    python bench/templates.py --hostile        # only the hostile compiles
    python bench/templates.py --hostile --kb 40 --unbounded

Prints µs per render for Herald and for an equivalent Jinja2 template, and ``ratio=``
(Jinja2 time / Herald time; above 1 means Herald is faster), then µs per ``sms.measure``.
Goals: a 3-variable SMS template with one if/else renders in <= 0.5 µs; ``sms.measure`` of a
100-character text takes about 1 µs or less.

Then it compiles hostile templates of ``--kb`` KB (100 by default, the ``[limits]
template_bytes`` default) of several shapes, each in a fresh process, and prints seconds and
peak resident memory for each, rejected or not, and ``compile_100kb_worst_s=... peak_mb=...``.
Goal: under 0.5 s and 200 MB for every shape, with the default ``[limits]`` and with
``--unbounded`` (no limits: the compiler itself must be linear).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jinja2

from engine.core import sms
from engine.core.templates import TemplateLimits, compile_template
from engine.errors import TemplateError

SMS_HERALD = (
    'Hi {lead._fname}, {if lead._city equal "Moscow"}see you in Moscow'
    "{else}see you in {lead._city}{end}! Code {lead.code}"
)
SMS_JINJA = (
    "Hi {{ lead._fname }}, {% if lead._city == 'Moscow' %}see you in Moscow"
    "{% else %}see you in {{ lead._city }}{% endif %}! Code {{ lead.code }}"
)
LOOP_HERALD = "{for p in json.products}{p.name} - {p.price}{if not loop.last}, {end}{end}"
LOOP_JINJA = (
    "{% for p in json.products %}{{ p.name }} - {{ p.price }}"
    "{% if not loop.last %}, {% endif %}{% endfor %}"
)

CONTEXTS: list[dict[str, Any]] = [
    {"lead": {"_fname": "Ivan", "_city": "Moscow", "code": 48213}},
    {"lead": {"_fname": "Anna", "_city": "Kazan", "code": "A-17"}},
]
LOOP_CONTEXT = {"json": {"products": [{"name": f"item{i}", "price": i * 10} for i in range(5)]}}


def per_call(stmt: str, number: int, **names: Any) -> float:
    """Best µs per execution of ``stmt`` over five runs of ``number``."""
    return min(timeit.repeat(stmt, globals=names, number=number, repeat=5)) / number * 1e6


def compare(label: str, herald_src: str, jinja_src: str, contexts: list[dict[str, Any]]) -> None:
    env = jinja2.Environment(autoescape=False)
    herald = compile_template(herald_src).render
    jinja = env.from_string(jinja_src).render
    h_total = j_total = 0.0
    for ctx in contexts:
        h, j = herald(ctx), jinja(**ctx)
        assert h == j, (h, j)
        h_total += per_call("render(ctx)", 500_000, render=herald, ctx=ctx)
        j_total += per_call("render(**ctx)", 50_000, render=jinja, ctx=ctx)
    h_us, j_us = h_total / len(contexts), j_total / len(contexts)
    print(f"{label:<12} herald={h_us:.3f}µs jinja2={j_us:.3f}µs ratio={j_us / h_us:.1f}")


def bench_sms() -> None:
    texts = {
        "gsm7-ascii": ("Hi Ivan, see you in Moscow! Your code is 48213. " * 3)[:100],
        "gsm7-ext": ("Price [EUR] ~ 100 {net}; see you! Code 48213. " * 3)[:100],
        "gsm7-accent": ("Très bien, Jürgen! Ihr Code ist 48213. Bis später. " * 3)[:100],
        "ucs2-cyril": ("Привет, Иван! Ждём вас в Москве 30 июня. Код 48213. " * 3)[:100],
        "ucs2-emoji": ("Hi Ivan 🎉 see you in Moscow! Code 48213 " * 3)[:100],
    }
    for label, text in texts.items():
        info = sms.measure(text)
        us = per_call("measure(text)", 500_000, measure=sms.measure, text=text)
        print(
            f"sms.measure {label:<12} {us:.3f}µs "
            f"({info.encoding}, length={info.length}, segments={info.segments})"
        )


def _repeat(unit: Callable[[int], str], size: int, head: str = "", tail: str = "") -> str:
    """``head``, then ``unit(0)``, ``unit(1)``... while it fits in ``size`` bytes, ``tail``."""
    parts, used, i = [head], len(head.encode()) + len(tail.encode()), 0
    while True:
        piece = unit(i)
        if used + len(piece.encode()) > size:
            break
        parts.append(piece)
        used += len(piece.encode())
        i += 1
    parts.append(tail)
    return "".join(parts)


def _nested(size: int, depth: int) -> str:
    opening = "".join(
        "{if lead.a}" if d % 2 else f"{{for x{d} in json.items}}{{x{d}.name}}" for d in range(depth)
    )
    return _repeat(lambda i: opening + "{lead.b}" + "{end}" * depth, size)


#: Hostile template shapes: name -> source of about ``size`` bytes.
HOSTILE: dict[str, Callable[[int], str]] = {
    "text": lambda n: _repeat(lambda i: "Hello there, dear customer! ", n),
    "one-long-path": lambda n: _repeat(lambda i: ".a", n, "{lead", "}"),
    "long-loop-path": lambda n: _repeat(lambda i: ".a", n, "{for x in json.l}{x", "}{end}"),
    "long-paths": lambda n: _repeat(lambda i: "{json" + ".a" * 200 + f".b{i}}}", n),
    "many-variables": lambda n: _repeat(lambda i: f"{{lead.v{i}}}", n),
    "max-in-bounds": lambda n: _repeat(lambda i: f"{{lead.v{i % 1000}{'.a' * 30}}}", n),
    "many-outputs": lambda n: _repeat(lambda i: "{lead._fname}", n),
    "nested-16": lambda n: _nested(n, 16),
    "nested-over-bound": lambda n: _repeat(lambda i: "{if lead.a}", n),
    "elif-chain": lambda n: _repeat(
        lambda i: f'{{elif lead.a equal "{i}"}}{i}', n, '{if lead.b}b', "{end}"
    ),
    "long-condition": lambda n: _repeat(lambda i: " and lead.a", n, "{if lead.a", "}x{end}"),
    "many-calls": lambda n: _repeat(lambda i: '{default(upper(lead.a) "x")}', n),
    "many-urls": lambda n: _repeat(lambda i: f"https://example.com/p/{i} ", n),
}


def compile_once(shape: str, size: int, unbounded: bool) -> dict[str, Any]:
    """Compile one hostile template in this process: seconds, peak MB over the start."""
    source = HOSTILE[shape](size)
    limits = None if unbounded else TemplateLimits()
    start_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        compile_template(source, limits=limits)
        outcome = "compiled"
    except TemplateError as err:
        outcome = f"rejected: {err.message}"
    seconds = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_kb
    return {"shape": shape, "bytes": len(source.encode()), "s": seconds,
            "peak_mb": peak_kb / 1024, "outcome": outcome}


def bench_hostile(kb: int, unbounded: bool, timeout: float) -> None:
    label = "unbounded" if unbounded else "default [limits]"
    print(f"hostile compiles, {kb} KB each, {label}, one fresh process per shape:")
    worst_s = worst_mb = 0.0
    for shape in HOSTILE:
        command = [sys.executable, __file__, "--one", shape, "--kb", str(kb)]
        if unbounded:
            command.append("--unbounded")
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"  {shape:<18} over {timeout:.0f}s (killed)")
            worst_s = max(worst_s, timeout)
            continue
        if proc.returncode != 0:
            print(f"  {shape:<18} crashed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(proc.stdout)
        worst_s, worst_mb = max(worst_s, r["s"]), max(worst_mb, r["peak_mb"])
        print(f"  {shape:<18} {r['s']:7.3f}s peak={r['peak_mb']:7.1f}MB  {r['outcome'][:70]}")
    print(f"compile_{kb}kb_worst_s={worst_s:.3f} peak_mb={worst_mb:.1f}"
          f"{' (unbounded)' if unbounded else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hostile", action="store_true", help="only the hostile compiles")
    parser.add_argument("--kb", type=int, default=100, help="size of a hostile template")
    parser.add_argument("--unbounded", action="store_true", help="compile with limits=None")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per shape")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process of bench_hostile
    args = parser.parse_args()
    if args.one:
        print(json.dumps(compile_once(args.one, args.kb * 1000, args.unbounded)))
        return
    if not args.hostile:
        print(f"python {sys.version.split()[0]}, jinja2 {jinja2.__version__}")
        compare("sms-if-else", SMS_HERALD, SMS_JINJA, CONTEXTS)
        compare("loop-5", LOOP_HERALD, LOOP_JINJA, [LOOP_CONTEXT])
        compile_us = per_call("compile(src)", 2_000, compile=compile_template, src=SMS_HERALD)
        print(f"compile      herald={compile_us:.1f}µs (once per mailing)")
        bench_sms()
    bench_hostile(args.kb, args.unbounded, args.timeout)
    if not args.hostile or not args.unbounded:
        bench_hostile(args.kb, True, args.timeout)


if __name__ == "__main__":
    main()
