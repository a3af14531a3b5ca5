"""The template language (TEMPLATES.md): rendering, errors, metadata, and fuzzed safety."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.config import LimitsConfig
from engine.core.links import find_urls
from engine.core.templates import (
    BUILTIN_FUNCTIONS,
    DEFAULT_LIMITS,
    TemplateLimits,
    check_template,
    compile_template,
    context_function,
    refuse_blank,
)
from engine.errors import PluginError, TemplateError
from engine.runner import COMPILE_THREADS

SPEC_EXAMPLE = (
    '{if lead._city equal "Moscow"} We invite you in Moscow on June 30!'
    "{else}We invite you in your city!{end}"
)


def render(source: str, **ctx: Any) -> str:
    return compile_template(source).render(ctx)


def compile_error(source: str, **kwargs: Any) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        compile_template(source, **kwargs)
    return info.value


# --- the spec's SMS example ------------------------------------------------------------------


def test_spec_example_renders_exactly_in_both_branches() -> None:
    tpl = compile_template(SPEC_EXAMPLE)
    assert tpl.render({"lead": {"_city": "Moscow"}}) == " We invite you in Moscow on June 30!"
    assert tpl.render({"lead": {"_city": "Kazan"}}) == "We invite you in your city!"
    assert tpl.render({}) == "We invite you in your city!"


def test_spec_example_multiline_keeps_every_newline_and_space() -> None:
    source = (
        "Hello, {lead._fname}!\n"
        '{if lead._city equal "Moscow"}\n'
        " We invite you in Moscow on June 30!\n"
        "{else}\n"
        "We invite you in your city!\n"
        "{end}\n"
        "Reply STOP to opt out.\n"
    )
    tpl = compile_template(source)
    assert tpl.render({"lead": {"_fname": "Ivan", "_city": "Moscow"}}) == (
        "Hello, Ivan!\n\n We invite you in Moscow on June 30!\n\nReply STOP to opt out.\n"
    )
    assert tpl.render({"lead": {"_fname": "Anna", "_city": "Kazan"}}) == (
        "Hello, Anna!\n\nWe invite you in your city!\n\nReply STOP to opt out.\n"
    )


# --- text ------------------------------------------------------------------------------------


def test_spaces_around_tags_are_kept() -> None:
    assert render("{if a} X{else}Y{end}", a=1) == " X"
    assert render("{if a} X{else}Y{end}", a=0) == "Y"
    assert render("  {a}  \n", a="v") == "  v  \n"


@pytest.mark.parametrize(
    "source",
    ["{ }", '{"a":1}', "{1}", "{", "}", "a { b", "{-x}", "{{", "}}", "{Привет}", "{ lead._fname }"],
)
def test_brace_not_followed_by_a_letter_is_literal(source: str) -> None:
    assert render(source, lead={"_fname": "Ivan"}) == source


def test_backslash_escapes() -> None:
    assert render(r"\{lead._fname}", lead={"_fname": "Ivan"}) == "{lead._fname}"
    assert render(r"a\\b", lead={}) == "a\\b"
    assert render(r"\\{lead._fname}", lead={"_fname": "Ivan"}) == "\\Ivan"
    # Any other backslash is printed as written.
    assert render(r"C:\temp\n \} end\\") == "C:\\temp\\n \\} end\\"


def test_template_text_is_never_code() -> None:
    source = "\"'; import os; {lead.x} \\n \"\"\" ''' %s {0} {}"
    assert render(source, lead={"x": "ok"}) == "\"'; import os; ok \\n \"\"\" ''' %s {0} {}"


# --- output values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        ("", ""),
        (None, ""),
        (42, "42"),
        (-7, "-7"),
        (0, "0"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (100.0, "100"),
        (1e20, "1e+20"),
        (2.5e-7, "2.5e-07"),
        (True, "true"),
        (False, "false"),
        ([1, "a", None, True], '[1,"a",null,true]'),
        ({"a": {"b": [1.5]}}, '{"a":{"b":[1.5]}}'),
        ({"город": "Москва"}, '{"город":"Москва"}'),
        ([], "[]"),
        ({}, "{}"),
    ],
)
def test_values_render_per_spec(value: Any, expected: str) -> None:
    assert render("{json.v}", json={"v": value}) == expected


def test_missing_fields_and_paths_render_empty() -> None:
    tpl = compile_template("[{lead._fname}|{lead.a.b.c}|{json.items.5.name}|{mailing.id}]")
    assert tpl.render({}) == "[|||]"
    assert tpl.render({"lead": None, "json": {"items": None}}) == "[|||]"
    assert tpl.render({"lead": "str", "json": {"items": {"5": {"name": "n"}}}}) == "[||n|]"
    assert tpl.render({"lead": [1, 2], "json": 5, "mailing": []}) == "[|||]"


def test_paths_index_lists_by_dot_or_bracket() -> None:
    data = {"items": [{"name": "a"}, {"name": "b"}], "a b": {"c": 1}, "x-y": 2, "0": "zero"}
    tpl = compile_template(
        "{json.items.0.name} {json.items[1].name} {json.items[-1].name} {json.items.2.name}|"
        '{json["a b"].c} {json["x-y"]} {json.0}'
    )
    assert tpl.render({"json": data}) == "a b b |1 2 zero"


def test_keywords_are_fine_as_field_names() -> None:
    assert render("{lead.end}{lead.if}{lead.in}", lead={"end": 1, "if": 2, "in": 3}) == "123"


def test_data_is_never_reached_through_attributes() -> None:
    tpl = compile_template("[{lead.__class__}{lead.__class__.__name__}{json.items.__len__}]")
    assert tpl.render({"lead": {"a": 1}, "json": {"items": [1]}}) == "[]"
    assert tpl.render({"lead": {"__class__": "k"}}) == "[k]"


def test_all_context_roots() -> None:
    tpl = compile_template(
        "{lead._fname} {subscription.phone} {apicontent.order.id} {json.x.y} "
        "{mailing.name} {resource.name}"
    )
    ctx = {
        "lead": {"_fname": "Ivan"},
        "subscription": {"phone": "+79990001122"},
        "apicontent": {"order": {"id": 7}},
        "json": {"x": {"y": "z"}},
        "mailing": {"name": "June"},
        "resource": {"name": "Shop"},
    }
    assert tpl.render(ctx) == "Ivan +79990001122 7 z June Shop"


def test_context_that_is_not_a_dict() -> None:
    from types import MappingProxyType

    tpl = compile_template("{lead._fname}")
    assert tpl.render(MappingProxyType({"lead": {"_fname": "Ivan"}})) == "Ivan"
    assert tpl.render(None) == ""  # type: ignore[arg-type]


# --- conditions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "truthy"),
    [
        (None, False),
        ("", False),
        (0, False),
        (0.0, False),
        (False, False),
        ([], False),
        ({}, False),
        ("0", True),
        ("false", True),
        (" ", True),
        (1, True),
        (-1.5, True),
        (True, True),
        ([0], True),
        ({"a": None}, True),
    ],
)
def test_truthiness(value: Any, truthy: bool) -> None:
    assert render("{if json.v}T{else}F{end}", json={"v": value}) == ("T" if truthy else "F")
    assert render("{if json.missing}T{else}F{end}", json={"v": value}) == "F"


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ('json.s equal "abc"', True),
        ('json.s == "abc"', True),
        ('json.s not equal "abc"', False),
        ('json.s != "abd"', True),
        ("json.n equal 10", True),
        ('json.n equal "10.0"', True),  # numeric strings compare numerically
        ('json.ns equal "10"', True),
        ('json.ns greater "9"', True),  # "10" > "9" as numbers, not as text
        ("json.ns greater 9", True),
        ("json.ns < 9.5", False),
        ("json.n >= 10", True),
        ("json.n <= 9", False),
        ("json.f > 1", True),
        ('json.s greater "abb"', True),  # text order
        ('json.s less "b"', True),
        ('json.s > "9"', True),  # not both numeric: compared as text
        ("json.b equal true", True),
        ('json.b equal "true"', True),
        ("json.b equal 1", False),  # booleans are not numbers
        ('json.missing equal ""', True),
        ("json.missing greater 0", False),
        ('json.s contains "bc"', True),
        ('json.s not contains "bc"', False),
        ('json.l contains "2"', True),  # list membership uses equal
        ('json.l contains "x"', False),
        ('"b" in json.l', True),
        ("3 not in json.l", True),
        ('"bc" in json.s', True),
        ('"zz" in json.s', False),
        ('json.o contains "k"', True),  # object keys
        ('json.n contains "1"', True),  # substring of the rendered number
    ],
)
def test_comparisons(condition: str, expected: bool) -> None:
    data = {"s": "abc", "n": 10, "ns": "10", "f": 1.5, "b": True, "l": [1, 2, "b"], "o": {"k": 0}}
    assert render(f"{{if {condition}}}Y{{else}}N{{end}}", json=data) == ("Y" if expected else "N")


def test_logic_precedence_not_over_and_over_or() -> None:
    tpl = compile_template("{if a or b and not c}Y{else}N{end}")
    assert tpl.render({"a": 1}) == "Y"
    assert tpl.render({"b": 1}) == "Y"
    assert tpl.render({"b": 1, "c": 1}) == "N"
    assert tpl.render({"a": 1, "b": 1, "c": 1}) == "Y"  # a or (b and not c)
    assert render("{if not a equal b}Y{else}N{end}", a=1, b=1) == "N"  # not (a equal b)


def test_altcraft_style_nested_parentheses() -> None:
    tpl = compile_template("{if a and (b and (c and d))}Y{else}N{end}")
    assert tpl.render({"a": 1, "b": 1, "c": 1, "d": 1}) == "Y"
    assert tpl.render({"a": 1, "b": 1, "c": 1, "d": 0}) == "N"
    assert render("{if (a or b) and c}Y{else}N{end}", a=1, c=0) == "N"
    assert render("{if not (a or b)}Y{else}N{end}") == "Y"


def test_elif_chain_and_nesting() -> None:
    tpl = compile_template(
        "{if lead.n greater 100}big{elif lead.n greater 10}mid{elif lead.n}small{else}none{end}"
        "|{if lead.vip}{if lead.n}VIP{lead.n}{else}VIP0{end}{end}"
    )
    assert tpl.render({"lead": {"n": 500}}) == "big|"
    assert tpl.render({"lead": {"n": "50"}}) == "mid|"
    assert tpl.render({"lead": {"n": 5, "vip": True}}) == "small|VIP5"
    assert tpl.render({"lead": {"vip": True}}) == "none|VIP0"


def test_conditions_in_output_render_true_or_false() -> None:
    assert render("{a equal b} {not a} {a and b}", a=1, b=2) == "false false true"
    assert render("{true}{false}") == "truefalse"


# --- loops -----------------------------------------------------------------------------------


def test_spec_loop_examples() -> None:
    products = [{"name": "Tea", "price": 3.5}, {"name": "Cake", "price": 12}]
    tpl = compile_template(
        "{for item in json.products}{item.name} - {item.price}{if not loop.last}, {end}{end}"
    )
    assert tpl.render({"json": {"products": products}}) == "Tea - 3.5, Cake - 12"
    prices = compile_template("{for key, value in json.prices}{key}={value};{end}")
    assert prices.render({"json": {"prices": {"tea": 3.5, "cake": 12}}}) == "tea=3.5;cake=12;"


def test_loop_variables() -> None:
    tpl = compile_template(
        "{for x in json.l}[{loop.index} {loop.index0} {loop.first} {loop.last} "
        "{loop.length} {x}]{end}"
    )
    assert tpl.render({"json": {"l": ["a", "b", "c"]}}) == (
        "[1 0 true false 3 a][2 1 false false 3 b][3 2 false true 3 c]"
    )


def test_nested_loops_loop_means_innermost_and_outer_vars_stay_visible() -> None:
    tpl = compile_template(
        "{for row in json.rows}{for cell in row.cells}"
        "{row.name}{loop.index}={cell}{if not loop.last},{end}{end};{end}"
    )
    data = {"rows": [{"name": "r", "cells": [1, 2]}, {"name": "s", "cells": [3]}]}
    assert tpl.render({"json": data}) == "r1=1,r2=2;s1=3;"


def test_loop_variables_shadow_outer_names() -> None:
    tpl = compile_template("{for lead in json.people}{lead._fname} {end}| {lead._fname}")
    ctx = {"json": {"people": [{"_fname": "A"}, {"_fname": "B"}]}, "lead": {"_fname": "Me"}}
    assert tpl.render(ctx) == "A B | Me"
    assert tpl.variables == {"json.people", "lead._fname"}


def test_loop_over_missing_or_non_iterable_renders_nothing() -> None:
    tpl = compile_template("<{for x in json.v}{x}{end}>")
    for value in (None, "abc", 42, 1.5, True):
        assert tpl.render({"json": {"v": value}}) == "<>"
    assert tpl.render({}) == "<>"
    assert tpl.render({"json": {"v": {"k1": 1, "k2": 2}}}) == "<k1k2>"  # object: its keys


def test_key_value_loop_over_a_list_gives_positions() -> None:
    assert render("{for i, x in json.l}{i}:{x} {end}", json={"l": ["a", "b"]}) == "0:a 1:b "


def test_loop_body_text_and_empty_loop() -> None:
    assert render("{for x in json.l}-{end}", json={"l": [1, 2, 3]}) == "---"
    assert render("{for x in json.l}{end}!", json={"l": [1, 2]}) == "!"


# --- functions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{default(lead._fname "friend")}', "friend"),
        ('{default(lead.empty "friend")}', "friend"),
        ('{default(lead.zero "friend")}', "0"),
        ('{default(lead.name, "friend")}', "Ivan"),
        ("{upper(lead.name)}", "IVAN"),
        ('{lower("ÀBC")}', "àbc"),
        ("{capitalize(lead.lower)}", "McDonald"),
        ("{capitalize(lead.missing)}", ""),
        ("{truncate(lead.long 5)}", "abcde"),
        ('{truncate(lead.long 5 "…")}', "abcd…"),
        ("{truncate(lead.name 5)}", "Ivan"),
        ('{date(lead.day "%d.%m.%Y")}', "30.06.2024"),
        ("{date(lead.day)}", "30.06.2024"),
        ('{date(lead.moment "%Y-%m-%d %H:%M %z")}', "2024-06-30 18:05 +0300"),
        ('{date(lead.utc "%H:%M")}', "10:05"),
        ('{date(lead.name "%Y")}', ""),
        ("{len(lead.list)}", "3"),
        ("{len(lead.name)}", "4"),
        ("{len(lead.missing)}", "0"),
        ("{upper(default(lead._fname lead.name))}", "IVAN"),
    ],
)
def test_builtin_functions(source: str, expected: str) -> None:
    lead = {
        "name": "Ivan",
        "empty": "",
        "zero": 0,
        "lower": "mcDonald",
        "long": "abcdefgh",
        "day": "2024-06-30",
        "moment": "2024-06-30T18:05:00+03:00",
        "utc": "2024-06-30T10:05:00Z",
        "list": [1, 2, 3],
    }
    assert render(source, lead=lead) == expected


def test_jsonpath_subset() -> None:
    doc = {
        "store": {
            "books": [
                {"title": "A", "price": 5, "tags": ["x"]},
                {"title": "B", "price": 7.5, "author": {"name": "N"}},
            ],
            "name": "S",
        }
    }
    cases = {
        '"$.store.name"': "S",
        '"$.store.books[1].title"': "B",
        '"$.store.books[-1].price"': "7.5",
        "\"$['store']['books'][0]['title']\"": "A",
        '"$.store.books[*].title" "array"': '["A","B"]',
        '"$.store.books.*.price" "array"': "[5,7.5]",
        '"$..name" "array"': '["S","N"]',
        '"$..title"': "A",
        '"$.store.nothing"': "",
        '"$.store.nothing" "array"': "[]",
        '"$"': '{"store":{"books":[{"title":"A","price":5,"tags":["x"]},'
        '{"title":"B","price":7.5,"author":{"name":"N"}}],"name":"S"}}',
    }
    for args, expected in cases.items():
        assert render(f"{{jsonpath(json.doc {args})}}", json={"doc": doc}) == expected, args
    as_text = '{"a":[{"b":1}]}'
    assert render('{jsonpath(json.raw "$.a[0].b")}', json={"raw": as_text}) == "1"


def test_jsonpath_with_a_path_from_data_fails_quietly() -> None:
    tpl = compile_template("<{jsonpath(json.doc json.path)}>")
    assert tpl.render({"json": {"doc": {"a": 1}, "path": "$.a"}}) == "<1>"
    assert tpl.render({"json": {"doc": {"a": 1}, "path": "$[?(@.a)]"}}) == "<>"
    assert tpl.render({"json": {"doc": "not json", "path": "$.a"}}) == "<>"


def test_unsubscribe_renders_the_resource_link() -> None:
    tpl = compile_template("Stop: {unsubscribe}|{unsubscribe()}")
    assert tpl.render({"resource": {"unsubscribe_url": "https://u.example/x"}}) == (
        "Stop: https://u.example/x|https://u.example/x"
    )
    assert tpl.render({}) == "Stop: |"
    assert tpl.roots == {"resource"}


def test_plugin_functions_are_called_and_checked_for_arity() -> None:
    def greet(name: Any, greeting: Any = "Hello") -> str:
        return f"{greeting}, {name}!"

    functions = {"greet": greet}
    tpl = compile_template('{greet(lead._fname)} {greet(lead._fname "Hi")}', functions=functions)
    assert tpl.render({"lead": {"_fname": "Ivan"}}) == "Hello, Ivan! Hi, Ivan!"
    error = compile_error("{greet()}", functions=functions)
    assert error.message == "greet() takes 1 or 2 arguments (0 given)"
    error = compile_error('{greet(a "b" "c")}', functions=functions)
    assert error.message == "greet() takes 1 or 2 arguments (3 given)"


def test_plugin_function_that_raises_renders_empty() -> None:
    def boom(value: Any) -> str:
        raise RuntimeError("plugin bug")

    tpl = compile_template(
        "[{boom(lead.x)}]{if boom(lead.x)}T{else}F{end}", functions={"boom": boom}
    )
    assert tpl.render({"lead": {"x": 1}}) == "[]F"


def test_plugin_function_may_override_a_builtin_and_read_context() -> None:
    @context_function("lead._fname")
    def hello(name: Any, punctuation: Any = "!") -> str:
        return f"Hello {name}{punctuation}"

    tpl = compile_template(
        '{upper("x")} {hello} {hello(".")}', functions={"upper": lambda v: "U", "hello": hello}
    )
    assert tpl.render({"lead": {"_fname": "Ivan"}}) == "U Hello Ivan! Hello Ivan."
    assert tpl.variables == {"lead._fname"}
    assert BUILTIN_FUNCTIONS["upper"]("x") == "X"  # the built-in table is untouched


def test_broken_plugin_functions_are_plugin_errors() -> None:
    with pytest.raises(PluginError, match="not callable"):
        compile_template("x", functions={"f": "not a function"})  # type: ignore[dict-item]
    with pytest.raises(PluginError, match="is a keyword or not a valid name"):
        compile_template("x", functions={"and": lambda a: a})
    with pytest.raises(PluginError, match="keyword-only"):
        compile_template("x", functions={"f": lambda a, *, b: a})


def test_loop_variable_may_shadow_a_function_name() -> None:
    assert render("{for upper in json.l}{upper}{end}", json={"l": ["a", "b"]}) == "ab"


# --- compile errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message", "line", "col"),
    [
        ("Hi {lead._fname, welcome", "unclosed tag: '{' has no matching '}'", 1, 4),
        ("Hi {lead._fname\n{end}", "unclosed tag: '{' has no matching '}'", 1, 4),
        ("a\n{else}", "{else} without {if}", 2, 1),
        ("{elif x}", "{elif} without {if}", 1, 1),
        ("{if a}x{else}y{else}z{end}", "{else} after {else} in the same {if}", 1, 15),
        ("{if a}x{else}y{elif b}z{end}", "{elif} after {else} in the same {if}", 1, 15),
        ("{end}", "{end} without {if} or {for}", 1, 1),
        (
            "ok\n  {if a}\nmissing end",
            "missing {end}: the {if} opened at 2:3 is never closed",
            2,
            3,
        ),
        (
            "{for x in l}{if x}{end}",
            "missing {end}: the {for} opened at 1:1 is never closed",
            1,
            1,
        ),
        ("{frobnicate(x)}", "unknown function 'frobnicate'", 1, 2),
        ("{lowr(x)}", "unknown function 'lowr'; did you mean 'lower'?", 1, 2),
        ("{upper(a b)}", "upper() takes 1 argument (2 given)", 1, 2),
        ("{truncate(a)}", "truncate() takes 2 or 3 arguments (1 given)", 1, 2),
        ("{unsubscribe(x)}", "unsubscribe() takes no arguments (1 given)", 1, 2),
        ("{len}", "len() takes 1 argument (0 given)", 1, 2),
        ('{default(x "a\\n")}', "bad string escape '\\n' (only \\\" and \\\\ are allowed)", 1, 14),
        ('{default(x "abc)}', "unterminated string (strings end on the line they start)", 1, 12),
        ("{if a equal}x{end}", "expected a value before '}'", 1, 12),
        ("{if}x{end}", "expected a condition after 'if'", 1, 4),
        ("{if a b}x{end}", "unexpected 'b'; expected '}'", 1, 7),
        ("{if a = b}x{end}", "unexpected '='; compare with '==' or 'equal'", 1, 7),
        ("{a equal b equal c}", "unexpected 'equal'; expected '}'", 1, 12),
        ("{if (a and b}x{end}", "unexpected end of tag; expected ')'", 1, 13),
        ("{upper(a}", "missing ')' to close upper(", 1, 2),
        ("{else x}", "unexpected 'x'; {else} takes nothing", 1, 7),
        ("{lead.}", "unexpected end of tag; expected a field name after '.'", 1, 7),
        ("{json.items[x]}", "unexpected 'x'; expected a number or a \"key\" inside [ ]", 1, 13),
        ("{for in x}{end}", "expected a loop variable name, found a keyword", 1, 6),
        ("{for loop in x}{end}", "expected a loop variable name, found 'loop'", 1, 6),
        ("{for a, a in x}{end}", "the two loop variables must differ", 1, 9),
        ("{for x of y}{end}", "unexpected 'of'; expected 'in' after the loop variable", 1, 8),
        (
            "{for x in y}{loop.count}{end}",
            "loop has only index, index0, first, last, length",
            1,
            14,
        ),
        ("{lead.x @ 2}", "unexpected character '@' in tag", 1, 9),
        ("{for x in}{end}", "expected what to loop over after 'in'", 1, 10),
        ("{if a equal " + "9" * 101 + "}x{end}", "number too long (at most 100 characters)", 1, 13),
        ("{json.items." + "1" * 101 + "}", "index too long (at most 100 digits)", 1, 13),
        ('{jsonpath(d "$..[?(@.a)]")}', "bad JSONPath", 1, 13),
        ('{jsonpath(d "$.a" "first")}', 'jsonpath() mode must be "item" or "array"', 1, 19),
        ("{truncate(x -1)}", "truncate() length must be a whole number >= 0", 1, 13),
    ],
)
def test_compile_errors_name_the_problem_and_point_at_it(
    source: str, message: str, line: int, col: int
) -> None:
    error = compile_error(source)
    assert error.message.startswith(message)
    assert (error.line, error.col) == (line, col)
    source_line = source.split("\n")[line - 1]
    assert error.source_line == source_line
    assert str(error).startswith(f"{line}:{col}: {message}")
    shown_line, caret = str(error).split("\n")[1:3]
    assert shown_line.strip() == source_line.strip()
    # The caret sits right under the column the error names.
    assert caret.index("^") - shown_line.index(source_line) == col - 1


def test_nesting_limits_are_compile_errors_not_crashes() -> None:
    assert "nest too deeply" in compile_error("{if a}" * 17 + "{end}" * 17).message
    assert (
        "nests too deeply" in compile_error("{if " + "(" * 40 + "a" + ")" * 40 + "}{end}").message
    )
    assert "nests too deeply" in compile_error("{" + "upper(" * 40 + "a" + ")" * 40 + "}").message
    deep_loops = "".join(f"{{for x{i} in json.l}}" for i in range(16)) + "." + "{end}" * 16
    assert render(deep_loops, json={"l": [1]}) == "."


def test_large_template_compiles_and_renders() -> None:
    source = "".join(f"{{lead.f{i}}}-" for i in range(3000))
    tpl = compile_template(source, limits=None)  # over [limits] template_variables
    assert tpl.render({"lead": {f"f{i}": i for i in range(3000)}}) == "".join(
        f"{i}-" for i in range(3000)
    )


# --- bounds: [limits] and linear compiling ------------------------------------------------------


def test_default_limits_are_those_of_the_limits_table() -> None:
    assert TemplateLimits.of(LimitsConfig()) == DEFAULT_LIMITS == TemplateLimits()


def test_a_path_past_template_path_depth_is_an_error_naming_the_bound() -> None:
    ok = "{json" + ".a" * 31 + "}"  # 32 parts
    nested: Any = "deep"
    for _ in range(31):
        nested = {"a": nested}
    assert render(ok, json=nested) == "deep"
    err = compile_error("Hi\n {json" + ".a" * 39 + "}")
    assert err.message == "a path has 40 parts; [limits] template_path_depth is 32"
    assert (err.line, err.col) == (2, 3)
    loop = compile_error("{for x in json.l}{x" + "[0]" * 32 + "}{end}")
    assert "33 parts; [limits] template_path_depth is 32" in loop.message
    small = compile_error("{lead.a.b}", limits=TemplateLimits(template_path_depth=2))
    assert "a path has 3 parts" in small.message
    assert compile_template("{lead" + ".a" * 500 + "}", limits=None).variables


def test_distinct_variables_past_template_variables_is_an_error_at_the_first_one_past() -> None:
    many = "".join(f"{{lead.v{i}}}" for i in range(1000))
    assert len(compile_template(many + many).variables) == 1000  # repeats are not new
    err = compile_error(many + " {lead.one_more}")
    assert err.message == (
        "the template reads more than 1000 distinct variables; [limits] template_variables is"
        " 1000"
    )
    assert err.col == len(many) + 3  # at "lead"
    limits = TemplateLimits(template_variables=2)
    assert compile_error("{lead.a}{lead.a}{json.b}{mailing.id}", limits=limits).col == 26
    loop_vars = "{for p in json.l}" + "".join(f"{{p.x{i}}}" for i in range(50)) + "{end}"
    compile_template(loop_vars, limits=limits)  # loop variables read no context


def test_a_template_past_template_bytes_is_an_error_at_the_first_byte_past() -> None:
    assert compile_template("x" * 100_000).render({}) == "x" * 100_000
    err = compile_error("x" * 100_001)
    assert err.message == "the template is 100001 bytes; [limits] template_bytes is 100000"
    assert (err.line, err.col) == (1, 100_001)
    limits = TemplateLimits(template_bytes=10)
    cyrillic = compile_error("ab\nПривет!", limits=limits)  # 2-byte letters: 3 fit
    assert (cyrillic.line, cyrillic.col) == (2, 4)
    assert "16 bytes" in cyrillic.message
    assert not check_template("x" * 11, limits=limits).ok
    assert check_template("x" * 11, limits=None).ok


def _peak_bytes(source: str) -> int:
    tracemalloc.start()
    try:
        compile_template(source, limits=None)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "shape",
    [
        lambda n: "{lead" + ".a" * n + "}",
        lambda n: "{for x in json.l}{x" + ".a" * n + "}{end}",
        lambda n: "".join(f"{{lead.v{i}}}" for i in range(n // 4)),
        lambda n: "{if lead.a}a" + "".join(f'{{elif lead.a equal "{i}"}}{i}' for i in range(n // 4))
        + "{end}",
    ],
    ids=["one-path", "loop-path", "variables", "elif-chain"],
)
def test_compiling_is_linear_in_memory(shape: Any) -> None:
    # Memory counted by tracemalloc, not time: 10 times the template takes about 10 times
    # the memory (it took 100 times when each prefix of a path was built as a tuple).
    small, large = _peak_bytes(shape(1_000)), _peak_bytes(shape(10_000))
    assert large < 20 * small


def test_an_unbounded_long_path_compiles_to_a_small_function_that_reads_it() -> None:
    path = ".a" * 5_000
    nested: Any = "end"
    for _ in range(5_000):
        nested = {"a": nested}
    tpl = compile_template("{lead" + path + "}|{lead" + path[:-2] + ".b}", limits=None)
    assert tpl.render({"lead": nested}) == "end|"
    assert tpl.python_source.count("\n") < 50  # the shared run is one _path() call
    assert tpl.render({"lead": {"a": [1]}}) == "|"


def test_a_long_elif_chain_takes_the_right_branch() -> None:
    source = "{if lead.a}A" + "".join(f'{{elif lead.n equal {i}}}{i}' for i in range(2000))
    tpl = compile_template(source + "{else}none{end}")
    assert tpl.render({"lead": {"n": 0}}) == "0"
    assert tpl.render({"lead": {"n": 1999}}) == "1999"
    assert tpl.render({"lead": {"n": 777, "a": True}}) == "A"
    assert tpl.render({"lead": {"n": 2000}}) == "none"
    assert compile_template(source + "{end}").render({"lead": {"n": -1}}) == ""


def test_blocks_nest_16_deep_of_any_kind_and_no_deeper() -> None:
    for kinds in ("for", "if", "mixed"):
        def opening(d: int, kinds: str = kinds) -> str:
            loop = kinds == "for" or (kinds == "mixed" and d % 2 == 0)
            return f"{{for x{d} in json.l}}" if loop else "{if (((json.l)))}"
        inner = "{" + "upper(" * 31 + '"x"' + ")" * 31 + "}"
        source = "".join(opening(d) for d in range(16)) + inner + "{end}" * 16
        tpl = compile_template(source)
        assert tpl.render({"json": {"l": [1]}}) == "X"
        err = compile_error(source.replace(inner, opening(16) + inner + "{end}"))
        assert "at most 16 levels" in err.message


def test_pathological_expressions_never_raise_past_template_error() -> None:
    sources = [
        "{if " + " and ".join(["lead.a"] * 20_000) + "}x{end}",
        "{if " + " or ".join(["not (not (lead.a equal 1))"] * 5_000) + "}x{end}",
        "{" + "default(" * 32 + "lead.a" + ' "x")' * 32 + "}",
        "{lead.a}" * 12_000,
    ]
    for source in sources:
        try:
            compile_template(source)
        except TemplateError:
            pass


@pytest.mark.anyio
async def test_herald_applies_the_workspace_limits_in_compile_and_compile_async(
    open_herald: Callable[..., Any],
) -> None:
    async with await open_herald(extra="\n[limits]\ntemplate_path_depth = 3\n") as herald:
        assert herald.compile("{lead.a.b}").render({"lead": {"a": {"b": 1}}}) == "1"
        with pytest.raises(TemplateError, match=r"template_path_depth is 3"):
            herald.compile("{lead.a.b.c}")
        compiled = await herald.compile_async("{lead.a.b}")
        assert compiled.render({"lead": {"a": {"b": 2}}}) == "2"
        with pytest.raises(TemplateError, match=r"4 parts; \[limits\] template_path_depth"):
            await herald.compile_async("{lead.a.b.c}")


@pytest.mark.anyio
async def test_compile_async_leaves_the_loop_free_meanwhile(
    open_herald: Callable[..., Any],
) -> None:
    source = "".join(f"{{lead.v{i}}}" for i in range(3_000))
    results: list[Any] = []
    beats = 0

    async def compile_one() -> None:
        results.append(await herald.compile_async(source))

    extra = "\n[limits]\ntemplate_variables = 100000\n"
    async with await open_herald(extra=extra) as herald, anyio.create_task_group() as tg:
        for _ in range(2 * COMPILE_THREADS):  # more than run at once: they queue, off the loop
            tg.start_soon(compile_one)
        while len(results) < 2 * COMPILE_THREADS:
            await anyio.lowlevel.checkpoint()
            beats += 1
    assert beats > 10  # the loop ran other tasks all along
    assert [len(t.variables) for t in results] == [3_000] * (2 * COMPILE_THREADS)


# --- metadata: variables, roots, urls, check ---------------------------------------------------


def test_variables_and_roots() -> None:
    tpl = compile_template(
        "{lead._fname} {if subscription.custom.level greater 2}{json.items[0].name}{end}"
        '{for p in json.products}{p.name}{loop.index}{end}{default(lead.city "-")}'
    )
    assert tpl.variables == {
        "lead._fname",
        "subscription.custom.level",
        "json.items.0.name",
        "json.products",
        "lead.city",
    }
    assert tpl.roots == {"lead", "subscription", "json"}
    assert tpl.source.startswith("{lead._fname}")


def test_urls_in_literal_text_are_found_at_compile_time() -> None:
    tpl = compile_template(
        "Sale! https://shop.example/sale. Track: http://t.example/o?id={lead._id} "
        "{if a}(see https://shop.example/faq){end} again https://shop.example/sale"
    )
    assert tpl.urls == (
        "https://shop.example/sale",
        "http://t.example/o?id=",
        "https://shop.example/faq",
    )
    assert compile_template('{default(x "https://in.string/")}').urls == ()


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("go https://a.example/x.", ["https://a.example/x"]),
        ("go https://a.example/x, then", ["https://a.example/x"]),
        ("(https://a.example/x)", ["https://a.example/x"]),
        ("https://en.wikipedia.org/wiki/Foo_(bar)!", ["https://en.wikipedia.org/wiki/Foo_(bar)"]),
        ("HTTP://A.EXAMPLE/Path?q=1&r=%20#f", ["HTTP://A.EXAMPLE/Path?q=1&r=%20#f"]),
        ("«https://пример.рф/путь»", ["https://пример.рф/путь"]),
        ('<a href="https://a.example/">', ["https://a.example/"]),
        ("two http://a.example\nhttps://b.example/", ["http://a.example", "https://b.example/"]),
        ("nohttps://a.example", []),
        ("ftp://a.example https:// http://.", []),
    ],
)
def test_find_urls(text: str, urls: list[str]) -> None:
    assert [text[start:end] for start, end in find_urls(text)] == urls


def test_check_template_reports_variables_and_unresolvable_names() -> None:
    report = check_template(
        "{lead.fname} {lead._fname} {promo.code} {loop.index}"
        "{for x in json.items}{x.name}{loop.index}{end}"
    )
    assert report.ok
    assert report.errors == []
    assert report.variables == [
        "json.items",
        "lead._fname",
        "lead.fname",
        "loop.index",
        "promo.code",
    ]
    assert report.warnings == [
        "1:2: 'lead.fname' reads a custom field; the standard field is 'lead._fname'",
        "1:29: cannot resolve 'promo.code': 'promo' is neither a loop variable nor a known root "
        "(apicontent, json, lead, mailing, resource, subscription)",
        "1:42: cannot resolve 'loop.index': loop.* exists only inside {for}",
    ]


def test_check_template_reports_the_compile_error() -> None:
    report = check_template("Hi {if lead.x}")
    assert not report.ok
    assert [(e.line, e.col) for e in report.errors] == [(1, 4)]
    assert report.variables == []


BLANK_MESSAGE = ("every message would be empty: the template holds only whitespace and"
                 " tags that output nothing")


@pytest.mark.parametrize("source", [
    "", "   ", "\n\r\n\t", "\u3000", "{if lead.x}{end}", " {if lead.x} {else}\n{end} ",
    "{if lead.a}{elif lead.b} {end}", "{for x in lead.items} {end}",
    "{for x in lead.items}{if x}{end}{end}",
])
def test_a_template_that_can_only_render_blanks_is_refused_at_1_1(source: str) -> None:
    template = compile_template(source)
    assert template.blank
    report = check_template(source)
    assert not report.ok
    assert [(e.line, e.col, e.message) for e in report.errors] == [(1, 1, BLANK_MESSAGE)]
    with pytest.raises(TemplateError, match=r"^1:1: every message would be empty"):
        refuse_blank(template)


@pytest.mark.parametrize("source", [
    ".", "{lead.x}", " {lead.x} ", "{if lead.x}Hi{end}", "{if lead.x}{else}Hi{end}",
    "{if lead.a}{elif lead.b}Hi{end}", "{for x in lead.items}{x}{end}", "{unsubscribe}",
    "{lead.a equal 1}", "{upper(lead.a)}", "\\{",
])
def test_a_template_that_may_render_text_is_not_blank(source: str) -> None:
    template = compile_template(source)
    assert not template.blank
    assert check_template(source).ok
    assert refuse_blank(template) is template


# --- properties ------------------------------------------------------------------------------

SYNTAX_PIECES = [
    *'{}()[]\\".,=!<> \n_aZ09-',
    *["if ", "else", "elif ", "end", "for ", " in ", "not ", "and ", "or ", "equal "],
    *["lead.", "x", "loop.index", "upper(", '\\"', '"s"', "1" * 4400, ".5"],
]


@given(st.text().map(lambda s: s.replace("{", "").replace("\\", "")))
def test_text_without_tags_renders_to_itself(text: str) -> None:
    assert render(text, lead={"_fname": "x"}) == text


@given(st.text())
def test_escaped_text_renders_to_itself(text: str) -> None:
    escaped = text.replace("\\", "\\\\").replace("{", "\\{")
    assert render(escaped) == text


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(SYNTAX_PIECES), max_size=40).map("".join) | st.text(max_size=60))
def test_any_input_compiles_or_raises_template_error(source: str) -> None:
    try:
        tpl = compile_template(source)
    except TemplateError as error:
        lines = source.split("\n")
        assert 1 <= error.line <= len(lines)
        assert 1 <= error.col <= len(lines[error.line - 1]) + 1
    else:
        assert isinstance(tpl.render({}), str)


# Odd data: anything JSON can hold plus what a careless caller might pass.
odd_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**4400, max_value=10**4401)  # too long for str()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5)
    | st.binary(max_size=3)
    | st.just(object())
)
odd_data = st.recursive(
    odd_leaves,
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(st.sampled_from(["a", "b", "0", "name", "_fname"]), children, max_size=3)
        | st.dictionaries(st.integers(-1, 1), children, max_size=2)
        | st.frozensets(st.integers(0, 3), max_size=2)
    ),
    max_leaves=10,
)

PATHS = st.sampled_from(
    [
        "lead._fname",
        "lead.a",
        "lead.a.b",
        "json.a.0.name",
        "json.b[1]",
        'json["a"].b',
        "apicontent.name",
        "unknown.x",
        "x",
        "x.a",
        "x.0.b.name.a",
        "loop.index",
        "loop.last",
    ]
)
OPERANDS = (
    PATHS
    | st.sampled_from(['"abc"', '"10"', "3", "-1.5", "true", "false"])
    | st.sampled_from(
        [
            "upper(lead.a)",
            'default(lead.a "d")',
            "len(json.a)",
            'jsonpath(json "$..name" "array")',
            'date(lead.a "%Y")',
            "truncate(lead.a 2)",
            "unsubscribe",
        ]
    )
)
OPS = st.sampled_from(
    [
        "equal",
        "not equal",
        "==",
        "!=",
        ">",
        "<",
        ">=",
        "<=",
        "greater",
        "less",
        "contains",
        "not contains",
        "in",
        "not in",
    ]
)
CONDITIONS = st.recursive(
    OPERANDS | st.builds("{} {} {}".format, OPERANDS, OPS, OPERANDS),
    lambda inner: (
        st.builds("not {}".format, inner)
        | st.builds("({})".format, inner)
        | st.builds("{} and {}".format, inner, inner)
        | st.builds("{} or {}".format, inner, inner)
    ),
    max_leaves=4,
)
TEMPLATES = st.recursive(
    st.sampled_from(["Hi ", ", ", "\n", "{ }", "\\{x}", " "]) | OPERANDS.map("{{{}}}".format),
    lambda inner: (
        st.lists(inner, min_size=1, max_size=4).map("".join)
        | st.builds("{{if {}}}{}{{else}}{}{{end}}".format, CONDITIONS, inner, inner)
        | st.builds("{{if {}}}{}{{elif {}}}{}{{end}}".format, CONDITIONS, inner, CONDITIONS, inner)
        | st.builds("{{for x in {}}}{}{{end}}".format, PATHS, inner)
        | st.builds("{{for k, x in {}}}{{k}}{}{{end}}".format, PATHS, inner)
    ),
    max_leaves=8,
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(
    TEMPLATES,
    st.dictionaries(
        st.sampled_from(["lead", "json", "apicontent", "resource", "x"]), odd_data, max_size=4
    ),
)
def test_rendering_odd_data_never_raises(source: str, ctx: dict[str, Any]) -> None:
    tpl = compile_template(source)
    out = tpl.render(ctx)
    assert isinstance(out, str)
    assert out == tpl.render(ctx)  # rendering is a pure function of the data


# Mostly whitespace, so that many are blank and the rest are nearly so.
BLANKISH = st.recursive(
    st.sampled_from([" ", "\n", "\r\n", "\t", "\u00a0", "", "x"]) | OPERANDS.map("{{{}}}".format),
    lambda inner: (
        st.lists(inner, min_size=1, max_size=4).map("".join)
        | st.builds("{{if {}}}{}{{else}}{}{{end}}".format, CONDITIONS, inner, inner)
        | st.builds("{{if {}}}{}{{elif {}}}{}{{end}}".format, CONDITIONS, inner, CONDITIONS, inner)
        | st.builds("{{for x in {}}}{}{{end}}".format, PATHS, inner)
    ),
    max_leaves=6,
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(
    BLANKISH,
    st.dictionaries(
        st.sampled_from(["lead", "json", "apicontent", "resource", "x"]), odd_data, max_size=4
    ),
)
def test_a_blank_template_renders_blank_whatever_the_data(
    source: str, ctx: dict[str, Any]
) -> None:
    tpl = compile_template(source)
    if tpl.blank:
        assert tpl.render(ctx).strip() == ""
    elif tpl.render(ctx).strip():
        assert check_template(source).ok


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_render_in_round_trip_form(value: float) -> None:
    out = render("{json.v}", json={"v": value})
    assert float(out) == value
    if value.is_integer() and abs(value) < 1e16:
        assert out == str(int(value))
    else:
        assert out == repr(value)


def test_an_error_in_a_long_line_shows_only_the_part_around_it() -> None:
    source = "x" * 40_000 + "{if}" + "y" * 40_000
    with pytest.raises(TemplateError) as info:
        compile_template(source)
    text = str(info.value)
    assert len(text) < 400  # not the 100 KB line
    _, shown, caret = text.split("\n")
    assert shown[caret.index("^")] in "{if}"  # the caret still points at the tag


@pytest.mark.parametrize(("source", "never"), [
    ("Hi {lead.x}", True), ("{lead.x}", False), ("{if lead.a}x{end}", False),
    ("  {lead.x}  ", False),
])
def test_a_template_with_literal_text_is_never_blank(source: str, never: bool) -> None:
    template = compile_template(source)
    assert template.never_blank is never
    if never:  # so the engine may skip looking at each text: it really never is blank
        assert template.render({}).strip()


# --- an email's HTML: output escaped ------------------------------------------------------------

HTML_TEMPLATE = ('<p class="{lead.c}">{lead.v}{if lead.v}|{lead.v}{end}'
                 '{for x in json.l}[{x}]{end}{upper(lead.v)}{default(lead.none "<&>")}</p>')


@given(st.text(max_size=40), st.lists(st.text(max_size=8), max_size=3))
def test_escaped_output_is_the_plain_output_as_html_text(value: str, items: list[str]) -> None:
    """Whatever the data, an escaped template's text reads (as HTML) as the plain
    template's, and data never writes a tag or leaves an attribute."""
    import html
    from html.parser import HTMLParser

    ctx = {"lead": {"v": value, "c": value}, "json": {"l": items}}
    plain = compile_template(HTML_TEMPLATE).render(ctx)
    escaped = compile_template(HTML_TEMPLATE, escape_html=True).render(ctx)
    assert html.unescape(escaped) == html.unescape(plain)
    tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append((tag, attrs))

        def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append((tag, attrs))

    Tags(convert_charrefs=True).feed(escaped)
    assert tags == [("p", [("class", value)])], escaped


def test_raw_prints_as_is_only_as_the_outermost_call() -> None:
    ctx = {"lead": {"b": "<b>x</b>"}}
    template = compile_template("{raw(lead.b)}{upper(raw(lead.b))}", escape_html=True)
    assert template.render(ctx) == "<b>x</b>&lt;B&gt;X&lt;/B&gt;"
    assert template.escapes_html and not compile_template("{lead.b}").escapes_html
