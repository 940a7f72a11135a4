"""A model folder's Jinja chat template, rendered in a sandbox and within a time and size budget.

A chat template is code from a model folder. Jinja's immutable sandbox already keeps it away from
Python internals and from changing its inputs; this module also keeps it from hanging or eating
memory, which the sandbox does not:

- time: every loop step, call, attribute lookup and operator ticks a budget; past
  `MAX_SECONDS` the render stops (nested loops, exponential macro recursion);
- size: no string or list built while rendering, and not the output, may exceed `MAX_CHARS`;
  the operators and filters that multiply sizes (`'x' * 4000000000`, `2 ** 10 ** 9`,
  `|replace`, `|join`, `~` in a loop, format widths such as `'%999999999s'`) are checked
  before they allocate, the rest after;
- structure: `include`, `import` and `extends` are refused (there is no other template to load),
  and unbounded recursion is a one-line error, not a RecursionError.

Every failure is one `LightftError` line naming the model folder; `raise_exception(...)` in a
template becomes that line with the template's message (escaped, cut short).
"""

from __future__ import annotations

import functools
import math
import re
import time
from typing import Any, Callable

from jinja2 import Environment, nodes
from jinja2.visitor import NodeTransformer
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lightft.errors import LightftError, escape_for_terminal

MAX_SECONDS = 2.0  # one render (a normal template takes well under a millisecond)
MAX_CHARS = 10_000_000  # the output, and any one string or list made while rendering
MAX_INT_BITS = 100_000  # integers made by * and ** (Python prints at most 4300 digits, ~14k bits, anyway)
_TICKS_PER_CLOCK = 256  # read the clock every this many steps
_WIDTH = re.compile(r"\d{8,}")  # a width or precision of 10^7 or more in a %-format or {}-format spec
_PASSED = (Context, EvalContext, Environment)  # what Jinja hands a filter before its value


class BudgetExceeded(Exception):
    """The template went over its time or size budget (turned into a LightftError by `render`)."""


class Budget:
    """The deadline of one render; `tick()` is called at every step the template takes."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks % _TICKS_PER_CLOCK == 0 and time.monotonic() > self.deadline:
            raise BudgetExceeded(f"took longer than {MAX_SECONDS:g} s (a loop or recursion that does not end?)")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple, dict)) else 0


def _check_size(n: float, what: str) -> None:
    if n > MAX_CHARS:
        raise BudgetExceeded(f"{what} would hold {n:.3g} items, over the limit of {MAX_CHARS:,}")


def _check_numbers(args: tuple, kwargs: dict) -> None:
    """Integer arguments of a call or filter are widths and counts: bound them like sizes."""
    for a in (*args, *kwargs.values()):
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_CHARS:
            raise BudgetExceeded(f"a call was given the number {a:.3g}, over the limit of {MAX_CHARS:,}")


def _check_format(fmt: str, args: tuple = ()) -> None:
    """`'%999999999s' % x` / `'{:>999999999}'.format(x)`: the width alone would allocate gigabytes."""
    specs = "".join(re.findall(r"%[^a-zA-Z%]*", fmt) + re.findall(r"\{[^{}]*\}", fmt))
    if _WIDTH.search(specs):
        raise BudgetExceeded(f"a format width or precision over {MAX_CHARS:,}")
    _check_numbers(tuple(args) if isinstance(args, (tuple, list)) else (args,), {})


def _estimate_filter(name: str, args: tuple) -> None:
    """Pre-allocation estimates for the filters whose output can be far larger than their input."""
    if not args:
        return
    value = args[0]
    if name == "replace" and isinstance(value, str) and len(args) >= 3 and isinstance(args[1], str):
        growth = max(0, len(str(args[2])) - len(args[1]))
        _check_size(len(value) + value.count(args[1]) * growth, "|replace")
    elif name == "indent" and isinstance(value, str) and len(args) >= 2 and isinstance(args[1], str):
        _check_size(len(value) + (value.count("\n") + 1) * len(args[1]), "|indent")


class BudgetedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox plus the time and size budget of one render (`self.budget`)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True)
        self.budget = Budget(MAX_SECONDS)
        filters = {**self.filters, "join": _join(self.filters["join"])}
        self.filters = {name: self._budgeted_filter(name, f) for name, f in filters.items()}
        self.globals["__lightft_iter"] = self._ticking_iter
        self.globals["__lightft_concat"] = self._concat

    # --- every step ticks ------------------------------------------------------------------------
    def _ticking_iter(self, iterable: Any) -> Any:
        for item in iterable:
            self.budget.tick()
            yield item

    def _concat(self, *parts: Any) -> str:
        """`a ~ b ~ c`, with its size known before the string is built."""
        texts = [str(p) for p in parts]
        _check_size(sum(map(len, texts)), "a ~ concatenation")
        return "".join(texts)

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.budget.tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.budget.tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's signature)
        __self.budget.tick()
        if getattr(__obj, "__self__", None) is __self:  # the budget's own helpers (loops, ~) check themselves
            return __context.call(__obj, *args, **kwargs)
        _check_numbers(args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        _check_size(_size(result), "a call's result")
        return result

    def wrap_str_format(self, value: Any) -> Any:
        """`'{:>999999999}'.format(x)`: the sandbox's safe str.format, with its widths checked first."""
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None

        @functools.wraps(wrapper)
        def checked(*args: Any, **kwargs: Any) -> str:
            _check_format(value.__self__, args)
            return wrapper(*args, **kwargs)

        return checked

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        self.budget.tick()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if _size(seq) and isinstance(n, int):
                    _check_size(_size(seq) * n, "a * repetition")
        if operator in ("*", "**") and isinstance(left, int) and isinstance(right, int):
            bits = (right * math.log2(abs(left)) if operator == "**" and abs(left) > 1 and right > 0
                    else left.bit_length() + right.bit_length())
            if bits > MAX_INT_BITS:
                raise BudgetExceeded(f"a {operator} of integers would need about {bits:.3g} bits, over {MAX_INT_BITS:,}")
        elif operator == "+" and _size(left) and _size(right):
            _check_size(_size(left) + _size(right), "a + concatenation")
        elif operator == "%" and isinstance(left, str):
            _check_format(left, right)
        return super().call_binop(context, operator, left, right)

    def _budgeted_filter(self, name: str, f: Callable) -> Callable:
        @functools.wraps(f)  # keeps Jinja's pass_context / pass_environment marks
        def run(*args: Any, **kwargs: Any) -> Any:
            self.budget.tick()
            plain = tuple(a for a in args if not isinstance(a, _PASSED))  # drop a passed context / environment
            _check_numbers(plain[1:], kwargs)
            _estimate_filter(name, plain)
            result = f(*args, **kwargs)
            _check_size(_size(result), f"|{name}")
            return result

        return run


def _join(join: Callable) -> Callable:
    """|join with its output size known first (a 100k-item list joined by a megabyte separator)."""

    @functools.wraps(join)
    def run(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
        items = list(value) if not isinstance(value, (list, tuple)) else value
        if attribute is None:
            _check_size(sum(len(str(x)) for x in items) + len(str(d)) * len(items), "|join")
        return join(eval_ctx, items, d, attribute)

    return run


class _Guard(NodeTransformer):
    """Refuses template loading, and routes loops and `~` through the budget (before compiling)."""

    def visit_Template(self, node: nodes.Template) -> nodes.Node:
        for bad in (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends):
            found = node.find(bad)
            if found is not None:
                raise LightftError(f"{type(found).__name__.lower()} is not allowed in a chat template "
                                   f"(line {found.lineno}); the template must be self-contained")
        return self.generic_visit(node)

    def visit_For(self, node: nodes.For) -> nodes.Node:
        node = self.generic_visit(node)
        node.iter = nodes.Call(nodes.Name("__lightft_iter", "load"), [node.iter], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        node = self.generic_visit(node)
        return nodes.Call(nodes.Name("__lightft_concat", "load"), list(node.nodes), [], None, None, lineno=node.lineno)


class ChatTemplate:
    """One compiled chat template; `render(**variables)` within the budget. `where` names its model folder."""

    def __init__(self, source: str, where: str):
        self.text, self.where = source, where
        self.env = BudgetedSandbox()

        def raise_exception(message: Any) -> None:
            raise LightftError(f"{where}: chat template: {escape_for_terminal(message, 300)}")

        self.env.globals["raise_exception"] = raise_exception
        try:
            tree = _Guard().visit(self.env.parse(source))
            tree.set_environment(self.env)
            self.template = self.env.template_class.from_code(self.env, self.env.compile(tree),
                                                              self.env.make_globals(None))
        except LightftError as e:
            raise LightftError(f"{where}: {e}") from None
        except Exception as e:  # a syntax error, or a constant the compiler could not fold
            raise self._error(e) from None

    def _error(self, e: BaseException) -> LightftError:
        if isinstance(e, RecursionError):
            reason = "recursion too deep (a macro or recursive loop that never stops)"
        else:
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return LightftError(f"{self.where}: chat template refused or broken ({escape_for_terminal(reason, 200)})")

    def render(self, **variables: Any) -> str:
        self.env.budget = Budget(MAX_SECONDS)
        out: list[str] = []
        total = 0
        try:
            for chunk in self.template.generate(**variables):
                total += len(chunk)
                _check_size(total, "the rendered text")
                out.append(chunk)
        except LightftError:
            raise
        except Exception as e:  # the template is input: anything it raises is its own fault, reported in one line
            raise self._error(e) from None
        return "".join(out)
