"""Template rendering and SMS measuring speed: Herald against Jinja2 in the same run.

    python bench/templates.py

Prints µs per render for Herald and for an equivalent Jinja2 template, and ``ratio=``
(Jinja2 time / Herald time; above 1 means Herald is faster), then µs per ``sms.measure``.
Goals: a 3-variable SMS template with one if/else renders in <= 0.5 µs; ``sms.measure`` of a
100-character text takes about 1 µs or less.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jinja2

from engine.core import sms
from engine.core.templates import compile_template

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


def main() -> None:
    print(f"python {sys.version.split()[0]}, jinja2 {jinja2.__version__}")
    compare("sms-if-else", SMS_HERALD, SMS_JINJA, CONTEXTS)
    compare("loop-5", LOOP_HERALD, LOOP_JINJA, [LOOP_CONTEXT])
    compile_us = per_call("compile(src)", 2_000, compile=compile_template, src=SMS_HERALD)
    print(f"compile      herald={compile_us:.1f}µs (once per mailing)")
    bench_sms()


if __name__ == "__main__":
    main()
